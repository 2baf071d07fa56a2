"""``recsys serve`` as a real process on 127.0.0.1 with the MovieLens 100K artifact, over HTTP.

Covers the HTTP contract, cold start, events (and their replay after a restart), hot reload
under load, damaged artifacts, admin auth and a suite of malformed requests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recsys.data import load_dataset
from recsys.pipeline import Pipeline
from recsys.serving.testing import ServerProcess
from recsys.testing import small_hybrid_config

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

ADMIN_KEY = "integration-admin-key"
ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hybrid pipeline (the small test configuration) trained on the bundled MovieLens
    100K, saved."""
    data = load_dataset("ml-100k")
    pipe = Pipeline.fit(
        data.interactions,
        items=data.items,
        users=data.users,
        item_relations=data.item_relations,
        config=small_hybrid_config(),
        show_progress=False,
    )
    return pipe.save(tmp_path_factory.mktemp("ml100k") / "artifact")


@pytest.fixture(scope="module")
def ml100k_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second artifact (first 90% of the ratings): another model version."""
    data = load_dataset("ml-100k")
    part = data.interactions.iloc[: int(0.9 * len(data.interactions))]
    pipe = Pipeline.fit(
        part, items=data.items, users=data.users, config=small_hybrid_config(), show_progress=False
    )
    return pipe.save(tmp_path_factory.mktemp("ml100k-other") / "artifact")


@pytest.fixture(scope="module")
def pipeline(ml100k: Path) -> Pipeline:
    """The artifact loaded in the test process (the oracle)."""
    return Pipeline.load(ml100k)


@pytest.fixture(scope="module")
def server(ml100k: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, with an admin key and a private events log."""
    tmp = tmp_path_factory.mktemp("server")
    proc = ServerProcess(
        ml100k,
        log_path=tmp / "server.log",
        env={"RECSYS_ADMIN_KEY": ADMIN_KEY},
        args=["--events-log", str(tmp / "events.jsonl")],
    )
    with proc:
        yield proc


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client of the module server."""
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


def ids(body: dict[str, Any]) -> list[Any]:
    return [it["item_id"] for it in body["items"]]


# ---------------------------------------------------------------------------- contract
def test_recommend_contract_with_integer_ids(http: httpx.Client, pipeline: Pipeline) -> None:
    r = http.get("/recommend/196", params={"k": 10})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == 196  # an int vocabulary answers with JSON numbers
    assert body["strategy"] == "personalized"
    assert body["model_version"] == pipeline.version
    assert len(body["items"]) == 10
    assert [it["rank"] for it in body["items"]] == list(range(1, 11))
    assert all(type(i) is int for i in ids(body))
    oracle = pipeline.recommend([196], k=10)
    assert pipeline.primary == "hybrid"
    assert ids(body) == oracle["item_id"].tolist()
    # every item carries the candidate sources that proposed it, as the pipeline tells
    assert [it["sources"] for it in body["items"]] == [s.split("|") for s in oracle["sources"]]
    assert all(it["sources"] and "popular" not in it["sources"][:1] for it in body["items"][:3])
    assert not set(ids(body)) & set(pipeline.history_of(196).tolist())
    for variant in ({"user_id": "196", "k": 10}, {"user_id": 196, "k": 10}):
        assert http.post("/recommend", json=variant).json() == body


def test_cold_start(http: httpx.Client, pipeline: Pipeline) -> None:
    body = http.get("/recommend/not-a-user?k=5").json()
    assert body["strategy"] == "cold_start"
    assert body["user_id"] == "not-a-user"
    assert {s for it in body["items"] for s in it["sources"]} == {"popular"}
    recent = [1, 50, 181]  # Toy Story, Star Wars, Return of the Jedi
    folded = http.post(
        "/recommend", json={"user_id": "not-a-user", "k": 5, "recent_items": recent}
    ).json()
    assert folded["strategy"] == "fold_in"  # a history, so not cold (issue 15)
    oracle_ids, _, oracle_sources = pipeline.recommend_for_history_lists([recent], k=5)
    assert ids(folded) == oracle_ids[0].tolist()
    assert [it["sources"] for it in folded["items"]] == [s.split("|") for s in oracle_sources[0]]
    assert folded["items"][0]["sources"] != ["popular"]  # neighbours of the recent items
    assert not set(ids(folded)) & set(recent)
    assert ids(folded) != ids(body)


def test_similar_items_and_filters(http: httpx.Client) -> None:
    similar = http.get("/similar-items/50?k=5&details=true").json()
    assert similar["strategy"] == "similar" and len(similar["items"]) == 5
    assert 50 not in ids(similar)
    assert http.get("/similar-items/999999?k=5").json()["strategy"] == "cold_start"
    horror = http.post(
        "/recommend",
        json={"user_id": 196, "k": 5, "filters": {"genres": ["Horror"]}, "details": True},
    ).json()
    assert len(horror["items"]) == 5
    assert all("Horror" in it["genres"] for it in horror["items"])


def test_batch(http: httpx.Client) -> None:
    reqs = [{"user_id": u, "k": 3} for u in (1, 2, "nobody", 943)]
    results = http.post("/recommend/batch", json={"requests": reqs}).json()["results"]
    assert [r["user_id"] for r in results] == [1, 2, "nobody", 943]
    assert [r["strategy"] for r in results] == ["personalized"] * 2 + ["cold_start", "personalized"]


# ---------------------------------------------------------------------------- events
def test_event_then_restart_replays_the_log(ml100k: Path, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    args = ["--events-log", str(log)]
    with ServerProcess(ml100k, log_path=tmp_path / "a.log", args=args) as first:
        with httpx.Client(base_url=first.url) as c:
            top = c.get("/recommend/22?k=3").json()["items"][0]["item_id"]
            receipt = c.post("/events", json={"user_id": "22", "item_id": top, "rating": 5})
            assert receipt.status_code == 201 and receipt.json()["known_item"] is True
            assert top not in ids(c.get("/recommend/22?k=10").json())
            new_user = c.post("/events", json={"user_id": "newcomer", "item_id": 50})
            assert new_user.json()["known_user"] is False
    # a graceful SIGTERM stop (uvicorn re-raises the signal once it has shut down)
    assert first.proc is not None and first.proc.returncode in (0, -15)
    assert "stopped serving" in first.log()
    with ServerProcess(ml100k, log_path=tmp_path / "b.log", args=args) as second:
        with httpx.Client(base_url=second.url) as c:
            assert top not in ids(c.get("/recommend/22?k=10").json())
            history = c.get("/users/22/history").json()
            assert history["items"][0] == {**history["items"][0], "item_id": top, "source": "event"}
            newcomer = c.get("/recommend/newcomer?k=5").json()
            assert newcomer["strategy"] == "fold_in"
            # folded in from the log: the hybrid's sources, not the popularity list
            assert newcomer["items"][0]["sources"] != ["popular"]
    assert "events=2" in second.log()
    assert "event consumer failed" not in first.log() + second.log()


# ---------------------------------------------------------------------------- reload
def test_reload_under_load_drops_nothing(
    server: ServerProcess, http: httpx.Client, ml100k: Path, ml100k_other: Path
) -> None:
    old = http.get("/readyz").json()["model_version"]
    other_version = Pipeline.load(ml100k_other).version
    failures: list[str] = []
    versions: set[str] = set()
    count = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal count
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            user = 1
            while not stop.is_set():
                try:
                    r = c.get(f"/recommend/{user}?k=10")
                    if r.status_code != 200 or len(r.json()["items"]) != 10:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        versions.add(r.json()["model_version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                count += 1
                user = user % 943 + 1

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        for target in (ml100k_other, ml100k, ml100k_other):
            r = http.post("/admin/reload", headers=ADMIN, json={"artifact": str(target)})
            assert r.status_code == 200, r.text
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert count > 20
    assert {old, other_version} <= versions
    assert http.get("/readyz").json()["model_version"] == other_version
    back = http.post("/admin/reload", headers=ADMIN, json={"artifact": str(ml100k)})
    assert back.json()["model_version"] == old


def test_damaged_artifact_is_refused_old_keeps_serving(
    server: ServerProcess, http: httpx.Client, ml100k: Path, tmp_path: Path
) -> None:
    damaged = Path(shutil.copytree(ml100k, tmp_path / "damaged"))
    state = damaged / "models" / "itemknn" / "state.npz"
    state.write_bytes(state.read_bytes()[:-10])
    before = http.get("/recommend/5?k=5").json()
    r = http.post("/admin/reload", headers=ADMIN, json={"artifact": str(damaged)})
    assert r.status_code == 409
    assert "checksum mismatch" in r.json()["detail"]
    assert http.get("/recommend/5?k=5").json() == before
    assert http.get("/readyz").json()["model_version"] == before["model_version"]
    assert "reload refused" in server.log()
    missing = http.post("/admin/reload", headers=ADMIN, json={"artifact": str(tmp_path / "no")})
    assert missing.status_code == 409


def test_cli_refuses_a_damaged_artifact(ml100k: Path, tmp_path: Path) -> None:
    damaged = Path(shutil.copytree(ml100k, tmp_path / "damaged"))
    (damaged / "vocab" / "users.parquet").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "recsys.serving.cli", "--artifact", str(damaged), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("recsys: error: artifact")
    assert "vocab/users.parquet" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_admin_auth(http: httpx.Client) -> None:
    assert http.post("/admin/reload").status_code == 401
    assert http.post("/admin/reload", headers={"X-API-Key": "nope"}).status_code == 403
    assert http.post("/admin/reload", headers=ADMIN).status_code == 200


# ---------------------------------------------------------------------------- malformed
def test_malformed_requests_never_5xx(server: ServerProcess, http: httpx.Client) -> None:
    json_type = {"content-type": "application/json"}
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/recommend", {"content": b"{oops", "headers": json_type}, 400),
        ("POST", "/recommend", {"content": b"null", "headers": json_type}, 422),
        ("POST", "/recommend", {"json": {"user_id": 196, "k": "many"}}, 422),
        ("POST", "/recommend", {"json": {"user_id": 196, "k": 10**9}}, 422),
        ("POST", "/recommend", {"json": {"user_id": [196]}}, 422),
        ("POST", "/recommend", {"json": {"user_id": 196, "exclude_items": {"a": 1}}}, 422),
        ("POST", "/recommend", {"content": b"x" * (2 << 20), "headers": json_type}, 413),
        ("POST", "/recommend/batch", {"json": {"requests": [{"user_id": 1}] * 1000}}, 422),
        ("POST", "/events", {"json": {"user_id": 196, "item_id": 50, "rating": "NaN"}}, 422),
        ("POST", "/events", {"json": {"user_id": 196, "item_id": 50, "timestamp": [1]}}, 422),
        ("GET", "/recommend/196?k=1000000", {}, 422),
        ("GET", "/recommend/196?k=", {}, 422),
        ("GET", "/similar-items/50?k=-1", {}, 422),
        ("GET", "/users/196/history?limit=abc", {}, 422),
        ("GET", "/recommend/%0a", {}, 422),
        ("PATCH", "/events", {}, 405),
    ]
    for method, url, kwargs, expected in cases:
        r = http.request(method, url, **kwargs)
        assert r.status_code == expected, (method, url, r.status_code, r.text[:300])
        assert r.json()["detail"], (method, url)
        assert "Traceback" not in r.text

    def chunked() -> Iterator[bytes]:  # no Content-Length: limited while streaming
        for _ in range(64):
            yield b" " * 65536

    r = http.post("/recommend", content=chunked(), headers=json_type)
    assert r.status_code == 413
    for raw in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%00", "caf%C3%A9%20%F0%9F%8E%AC"):
        r = http.get(f"/recommend/{raw}?k=3")
        assert r.status_code in (200, 404), (raw, r.status_code)
        if r.status_code == 200:
            assert r.json()["strategy"] == "cold_start"
    # a request that is not HTTP at all, and one with an absurd header
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        reply = sock.recv(1024)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4")
    r = http.get("/healthz", headers={"X-Pad": "y" * 60000})
    assert r.status_code < 500
    assert http.get("/healthz").status_code == 200  # still alive
    assert "Traceback" not in server.log()


def test_metrics_after_traffic(http: httpx.Client) -> None:
    http.get("/recommend/10")
    text = http.get("/metrics").text
    assert "# TYPE recsys_request_duration_seconds histogram" in text
    assert (
        'recsys_requests_total{route="/recommend/{user_id:path}",method="GET",status="200"}' in text
    )
    assert "recsys_cold_start_ratio" in text
    assert "recsys_model_info{version=" in text
