"""The Dask engine of the batch job: parts as tasks on a ``distributed`` cluster.

The driver (the process running :func:`recsys.jobs.run_batch`) reads only the artifact's
manifest and vocabularies; it partitions the users into chunks and submits one task per
chunk, keeping at most a few tasks per worker thread queued so memory stays bounded on
the driver and the scheduler. Each task runs on a worker, which

* loads the artifact **once per worker process**: :func:`worker_artifact` keeps the
  loaded pipeline in a process-level cache keyed by the artifact path and the sha256 of
  its ``manifest.json`` (so a retrained artifact at the same path is loaded afresh);
* scores its chunk with the same code as the local engine
  (:func:`recsys.jobs.batch.compute_part`);
* writes its part straight to the output on shared storage (temporary name, atomic
  rename), and returns only the part's row count and checksum.

So the output is byte-identical to the local engine's, and a failed or killed job
resumes the same way. Workers need ``recsys`` importable and the artifact and output
paths visible at the same absolute paths.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from recsys.artifacts import MANIFEST, sha256_file
from recsys.errors import ArtifactError, ConfigError
from recsys.jobs.batch import BatchSpec, LoadedArtifact, compute_part, worker_id
from recsys.jobs.output import PartResult

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["dask_client", "run_dask", "worker_artifact"]

logger = logging.getLogger(__name__)

_CACHE_SIZE = 2  # artifacts kept per worker process (a long-lived worker may serve several)
_cache: OrderedDict[tuple[str, str], LoadedArtifact] = OrderedDict()
_loads: dict[tuple[str, str], int] = {}
_cache_lock = threading.Lock()


def worker_artifact(path: str, manifest_sha256: str) -> tuple[LoadedArtifact, int]:
    """The artifact at ``path``, loaded at most once per process for a given manifest.

    Thread-safe: concurrent tasks of one worker wait for the single load.

    Parameters
    ----------
    path
        Absolute artifact directory.
    manifest_sha256
        sha256 of the artifact's ``manifest.json`` when the job started.

    Returns
    -------
    loaded, loads
        The loaded artifact and how many times this process has loaded it (1 unless
        it was evicted and loaded again).

    Raises
    ------
    ArtifactError
        If the artifact changed since the job started (its manifest differs), or is
        missing or damaged.
    """
    key = (path, manifest_sha256)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            from recsys.pipeline import Pipeline

            current = sha256_file(Path(path) / MANIFEST)
            if current != manifest_sha256:
                raise ArtifactError(
                    f"artifact {path} changed since the job started (manifest sha256 "
                    f"{current[:12]}, expected {manifest_sha256[:12]}); rerun the job"
                )
            loaded = LoadedArtifact(Pipeline.load(Path(path)), manifest_sha256)
            _cache[key] = loaded
            _loads[key] = _loads.get(key, 0) + 1
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
            logger.info("loaded artifact path=%s loads=%d", path, _loads[key])
        else:
            _cache.move_to_end(key)
        return loaded, _loads[key]


def _run_part(spec: BatchSpec, index: int, user_ids: NDArray[Any]) -> PartResult:
    """The task: score and write one part on a worker."""
    from distributed import get_worker

    loaded, loads = worker_artifact(spec.artifact, spec.artifact_sha256)
    name = f"{get_worker().address} ({worker_id()})"
    return compute_part(loaded, spec, index, user_ids, artifact_loads=loads, worker=name)


@contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
) -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of a ``LocalCluster`` started here.

    Parameters
    ----------
    scheduler
        Address such as ``"tcp://10.0.0.5:8786"``; ``None`` starts a
        ``distributed.LocalCluster`` of ``n_workers`` processes with
        ``threads_per_worker`` threads each, closed on exit.

    Raises
    ------
    ConfigError
        If ``distributed`` is not installed (``pip install 'recsys[dask]'``).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - the dask extra is installed in dev
        raise ConfigError(
            "engine 'dask' needs dask.distributed: pip install 'recsys[dask]'"
        ) from exc
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    if n_workers < 1 or threads_per_worker < 1:
        raise ConfigError(
            f"a local Dask cluster needs n_workers >= 1 and threads_per_worker >= 1, "
            f"got {n_workers} and {threads_per_worker}"
        )
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_dask(
    spec: BatchSpec,
    tasks: Iterator[tuple[int, NDArray[Any]]],
    on_result: Callable[[PartResult], None],
    *,
    scheduler: str | None = None,
    client: Client | None = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
) -> dict[str, Any]:
    """Run part tasks on Dask workers; ``on_result`` gets each part as it completes.

    Parameters
    ----------
    spec
        The job (artifact, model, output layout, ...).
    tasks
        ``(part index, user ids)`` pairs, consumed lazily.
    on_result
        Called on the driver with each written part.
    scheduler, client
        An existing cluster (address or connected client); with neither, a
        ``LocalCluster`` (``n_workers`` x ``threads_per_worker``) for this call.

    Returns
    -------
    dict
        ``{"workers": n, "threads": total worker threads, "scheduler": address}``.
    """
    if client is not None:
        return _submit_all(client, spec, tasks, on_result)
    with dask_client(scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker) as own:
        return _submit_all(own, spec, tasks, on_result)


def _submit_all(
    client: Client,
    spec: BatchSpec,
    tasks: Iterator[tuple[int, NDArray[Any]]],
    on_result: Callable[[PartResult], None],
) -> dict[str, Any]:
    from distributed import as_completed

    info = client.scheduler_info()
    n_threads = sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()) or 1
    token = uuid.uuid4().hex[:12]
    max_in_flight = 2 * n_threads
    pending: set[Any] = set()
    queue = as_completed()

    def submit_next() -> bool:
        nxt = next(tasks, None)
        if nxt is None:
            return False
        index, users = nxt
        fut = client.submit(
            _run_part,
            spec,
            index,
            np.asarray(users),
            key=f"recsys-batch-{token}-part-{index}",
            pure=False,
            retries=1,  # parts are idempotent: a lost worker's part is simply redone
        )
        pending.add(fut)
        queue.add(fut)
        return True

    try:
        while len(pending) < max_in_flight and submit_next():
            pass
        for fut in queue:
            pending.discard(fut)
            on_result(fut.result())
            if len(pending) < max_in_flight:
                submit_next()
    except BaseException:
        if pending:
            client.cancel(list(pending))
        raise
    logger.debug("dask job token=%s workers=%d threads=%d", token, len(info["workers"]), n_threads)
    return {
        "workers": len(info.get("workers", {})),
        "threads": n_threads,
        "scheduler": str(info.get("address", "")),
    }
