"""The container image (``Dockerfile``) built with podman and run as a user would.

No image registry is reachable from the machines this runs on, so the base image is made
from Debian packages (``mmdebstrap --variant=minbase`` with python3, python3-venv and
ca-certificates: Debian bookworm, Python 3.11) and passed as ``--build-arg BASE``. pip inside
the build reaches the package index through the host's CA bundle (mounted), and torch's CPU
wheel comes from the host's local wheel directory (pip's ``find-links``), mounted at build
time. podman runs with ``runc``, the ``cgroupfs`` cgroup manager and raised ulimits, from a
private ``containers.conf`` (the host's podman configuration is not touched).

The test trains a small artifact on the host, runs the image's default command with
``--network host`` on 127.0.0.1, and checks ``/readyz``, ``/recommend``, an event landing on
the state volume, the healthcheck (on a non-default ``RECSYS_PORT``), the non-root user, the
read-only artifact, the compose file's batch job, and the image size; then removes the
container and volumes. Sizes and timings go to ``build/container-test.json``.

Run with ``make test-container`` (installs podman, runc and mmdebstrap with apt-get when
missing). Environment knobs: ``RECSYS_CONTAINER_BASE`` (an existing base image instead of
the Debian one), ``RECSYS_CONTAINER_ARTIFACT`` (serve this artifact, e.g. the demo's, instead
of the small one), ``RECSYS_CONTAINER_WHEELS`` (the wheel directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recsys.serving.testing import free_port

pytestmark = [pytest.mark.container, pytest.mark.realdata]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/recsys:test"
DEBIAN_BASE = "localhost/recsys-test-base:bookworm"
REPORT = ROOT / "build" / "container-test.json"
IMAGE_LIMIT_BYTES = 1_500_000_000
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
TOOLS = {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap"}

Podman = Callable[..., subprocess.CompletedProcess[str]]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _install_tools() -> None:
    """podman, runc and mmdebstrap from apt when missing; skip (saying why) when impossible."""
    missing = [pkg for exe, pkg in TOOLS.items() if _which(exe) is None]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{', '.join(missing)} missing and apt-get is unavailable (not root?)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600, env=env)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", *missing],
            capture_output=True,
            text=True,
            timeout=1800,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing {', '.join(missing)} with apt-get timed out")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        pytest.skip(f"could not install {', '.join(missing)} with apt-get: {tail[0]}")


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """``podman(*args)``: podman with this test's containers.conf; raises on failure."""
    _install_tools()
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def run(
        *args: str, timeout: float = 300, check: bool = True, log: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["podman", *args]
        if log is not None:  # long and chatty (builds): output to a file, its tail on failure
            with open(log, "w") as out:
                done = subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env
                )
            if check and done.returncode != 0:
                tail = "\n".join(log.read_text().splitlines()[-40:])
                raise AssertionError(f"{' '.join(cmd[:3])} ... failed ({log}):\n{tail}")
            return done
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    return run


@pytest.fixture(scope="module")
def base_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """RECSYS_CONTAINER_BASE, else Debian bookworm (minbase + python3, venv, CA certificates)
    made with mmdebstrap and imported; kept between runs (``podman rmi`` it to remake it)."""
    if os.environ.get("RECSYS_CONTAINER_BASE"):
        return os.environ["RECSYS_CONTAINER_BASE"]
    if podman("image", "exists", DEBIAN_BASE, check=False).returncode == 0:
        return DEBIAN_BASE
    tmp = tmp_path_factory.mktemp("base")
    done = subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")),
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            "bookworm",
            str(tmp / "base.tar"),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, f"mmdebstrap failed:\n{done.stderr[-3000:]}"
    podman("import", str(tmp / "base.tar"), DEBIAN_BASE, timeout=600)
    return DEBIAN_BASE


def _wheel_dir() -> Path | None:
    """The local directory holding torch's CPU wheel: RECSYS_CONTAINER_WHEELS, PIP_FIND_LINKS
    or pip's configured ``find-links``."""
    found = [os.environ.get("RECSYS_CONTAINER_WHEELS", ""), os.environ.get("PIP_FIND_LINKS", "")]
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    )
    for line in config.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            found.append(value.strip().strip("'\""))
    for entry in " ".join(found).split():
        path = Path(entry.removeprefix("file://"))
        if path.is_dir() and any(path.glob("torch-*+cpu-*.whl")):
            return path
    return None


def _ca_bundle() -> Path | None:
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return Path(os.environ[name])
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


@pytest.fixture(scope="module")
def image(podman: Podman, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The repository's Dockerfile built on the base image (HEALTHCHECK needs docker format)."""
    args = ["build", "--format", "docker", "--network", "host", *ULIMITS]
    args += ["--build-arg", f"BASE={base_image}", "-t", IMAGE]
    wheels = _wheel_dir()
    if wheels is not None:  # torch from the local wheel, not PyTorch's index
        args += ["-v", f"{wheels}:/wheels:ro", "--build-arg", "PIP_FIND_LINKS=/wheels"]
        args += ["--build-arg", "PIP_EXTRA_INDEX_URL="]
    ca = _ca_bundle()
    if ca is not None:
        args += ["-v", f"{ca}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    log = tmp_path_factory.mktemp("build") / "build.log"
    started = time.monotonic()
    podman(*args, str(ROOT), timeout=3600, log=log)
    _report(build_s=round(time.monotonic() - started, 1), base=base_image)
    return IMAGE


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RECSYS_CONTAINER_ARTIFACT, else the small hybrid trained on MovieLens 100K (seconds)."""
    if os.environ.get("RECSYS_CONTAINER_ARTIFACT"):
        return Path(os.environ["RECSYS_CONTAINER_ARTIFACT"]).resolve()
    from recsys.data import load_dataset
    from recsys.pipeline import Pipeline
    from recsys.testing import small_hybrid_config

    data = load_dataset("ml-100k")
    pipe = Pipeline.fit(
        data.interactions,
        items=data.items,
        users=data.users,
        config=small_hybrid_config(),
        show_progress=False,
    )
    path = pipe.save(tmp_path_factory.mktemp("container") / "artifact")
    for sub in [path, *path.rglob("*")]:  # readable by the image's user (uid 10001)
        sub.chmod(0o755 if sub.is_dir() else 0o644)
    return path


@pytest.fixture(scope="module")
def volumes(podman: Podman) -> Iterator[dict[str, tuple[str, Path]]]:
    """Two fresh named volumes, ``state`` and ``output``: (name, host path); removed after."""
    tag = uuid.uuid4().hex[:8]
    made = {}
    for key in ("state", "output"):
        name = f"recsys-test-{key}-{tag}"
        podman("volume", "create", name)
        where = podman("volume", "inspect", name, "--format", "{{.Mountpoint}}").stdout
        made[key] = (name, Path(where.strip()))
    yield made
    for name, _ in made.values():
        podman("volume", "rm", "--force", name, check=False)


def _get(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10.0) as reply:
        return reply.status, json.loads(reply.read())


def _report(**values: Any) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    REPORT.write_text(json.dumps({**old, **values}, indent=2) + "\n")
    print(f"container test: {values}")


@pytest.fixture(scope="module")
def server(
    podman: Podman, image: str, artifact: Path, volumes: dict[str, tuple[str, Path]]
) -> Iterator[tuple[str, str]]:
    """The image's default command on 127.0.0.1 (host network) at a non-default port:
    (container name, base URL). The container is removed afterwards."""
    name = f"recsys-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--env",
        "RECSYS_HOST=127.0.0.1",
        "--env",
        f"RECSYS_PORT={port}",
        "--volume",
        f"{artifact}:/artifact:ro",
        "--volume",
        f"{volumes['state'][0]}:/state",
        image,
    )
    try:
        deadline = started + 180
        while True:
            try:
                if _get(f"{url}/readyz", timeout=2.0)[0] == 200:
                    break
            except OSError:
                pass
            state = podman("inspect", name, "--format", "{{.State.Running}}", check=False)
            logs = podman("logs", name, check=False)
            assert state.stdout.strip() == "true", f"container exited:\n{logs.stdout}{logs.stderr}"
            assert time.monotonic() < deadline, f"not ready in 180 s:\n{logs.stderr[-3000:]}"
            time.sleep(0.2)
        _report(ready_s=round(time.monotonic() - started, 2), artifact=str(artifact))
        yield name, url
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)
    gone = podman("container", "exists", name, check=False)
    assert gone.returncode == 1, f"container {name} was not removed"


def test_image_size_and_user(podman: Podman, image: str) -> None:
    size = int(podman("image", "inspect", image, "--format", "{{.Size}}").stdout)
    config = json.loads(podman("image", "inspect", image, "--format", "{{json .Config}}").stdout)
    _report(image_bytes=size, image_mb=round(size / 1e6))
    assert size <= IMAGE_LIMIT_BYTES, f"image is {size / 1e6:.0f} MB, over 1500 MB"
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["recsys"]
    assert config["Cmd"] == ["serve", "--artifact", "/artifact"]
    health = podman("image", "inspect", image, "--format", "{{json .Config.Healthcheck}}").stdout
    assert "/healthz" in json.loads(health)["Test"][-1]  # needs --format docker at build


def test_serves_the_artifact(server: tuple[str, str]) -> None:
    _, url = server
    assert _get(f"{url}/healthz")[0] == 200
    assert _get(f"{url}/readyz")[0] == 200
    status, body = _get(f"{url}/recommend/196?k=5")
    assert status == 200
    assert body["strategy"] != "cold_start" and len(body["items"]) == 5
    assert [it["rank"] for it in body["items"]] == [1, 2, 3, 4, 5]
    status, cold = _get(f"{url}/recommend/no-such-user?k=3")
    assert status == 200 and cold["strategy"] == "cold_start"


def test_event_lands_on_the_state_volume(
    server: tuple[str, str], volumes: dict[str, tuple[str, Path]], artifact: Path
) -> None:
    _, url = server
    status, receipt = _post(f"{url}/events", {"user_id": 196, "item_id": 50, "rating": 5.0})
    assert status == 201 and receipt["accepted"]
    lines = (volumes["state"][1] / "events.jsonl").read_text().splitlines()
    assert any(json.loads(line)["user_id"] == 196 for line in lines)
    assert not (artifact / "state").exists()  # never into the artifact


def test_healthcheck_user_and_read_only_artifact(podman: Podman, server: tuple[str, str]) -> None:
    name, _ = server
    # the healthcheck follows RECSYS_PORT (the server is not on 8000 here)
    check = podman("healthcheck", "run", name, check=False)
    assert check.returncode == 0, f"healthcheck failed: {check.stdout}{check.stderr}"
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    touch = podman("exec", name, "touch", "/artifact/x", check=False)
    assert touch.returncode != 0


def test_batch_job_of_the_compose_file(
    podman: Podman, image: str, artifact: Path, volumes: dict[str, tuple[str, Path]]
) -> None:
    """``recommend`` (the compose file's batch command) writes recommendations to a volume."""
    import yaml  # pyyaml: a dependency of dask, in the dev environment

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    command = compose["services"]["batch"]["command"]
    out = next(arg for arg in command if arg.startswith("/output/"))
    podman(
        "run",
        "--rm",
        "--network",
        "host",
        "--volume",
        f"{artifact}:/artifact:ro",
        "--volume",
        f"{volumes['output'][0]}:/output",
        image,
        *command,
        timeout=600,
    )
    recs = pd.read_parquet(volumes["output"][1] / Path(out).name)
    assert list(recs.columns[:5]) == ["user_id", "item_id", "rank", "score", "sources"]
    k = int(command[command.index("--k") + 1])
    assert recs["user_id"].nunique() > 900  # MovieLens 100K: 943 users (fewer in a split)
    ranks = recs.groupby("user_id")["rank"]
    assert (ranks.min() == 1).all() and (ranks.max() == k).all() and (ranks.nunique() == k).all()
