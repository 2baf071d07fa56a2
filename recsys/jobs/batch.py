"""Batch offline recommendation: every user (or a users file) scored in chunks, written in parts.

The job splits the user list into chunks of ``chunk_size`` users; chunk ``i`` becomes
part ``i`` of the output (see :mod:`recsys.jobs.output` for the layout). A chunk is
scored by the one recommend path, :meth:`recsys.pipeline.Pipeline.recommend_block` (the
component's own batched ``recommend`` underneath) — a matrix product over blocks of
users and a row-wise ``argpartition`` for the factor models, never a Python loop over
users — and converted to Arrow columns without going through Python objects. So a
user's list is exactly the one :meth:`Pipeline.recommend` gives, and memory is bounded
by the chunk size (times the number of chunks in flight), whatever the number of users.

Two engines run the chunks: ``"local"`` (a thread pool in this process; BLAS runs one
thread per chunk, so the pool's threads are the parallelism) and ``"dask"`` (tasks on a
``distributed`` cluster, see :mod:`recsys.jobs.dask_engine`). Both write the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from recsys.artifacts import MANIFEST, sha256_file, verify_artifact
from recsys.errors import ArtifactError, ConfigError, DataError, format_examples
from recsys.jobs.output import OutputLayout, PartResult, write_part
from recsys.types import IdMap, id_kind, warn_if_all_unknown

if TYPE_CHECKING:
    from distributed import Client

    from recsys.pipeline import Pipeline

__all__ = [
    "ArtifactInfo",
    "BatchResult",
    "BatchSpec",
    "LoadedArtifact",
    "compute_part",
    "recommend_table",
    "resolve_user_ids",
    "run_batch",
]

logger = logging.getLogger(__name__)

#: Users per part when nothing else is asked for.
DEFAULT_CHUNK_SIZE = 10_000
COLUMNS = ("user_id", "item_id", "rank", "score", "sources")
COLD_START_SOURCE = "popular"  # the value Pipeline.recommend gives unknown users


def worker_id() -> str:
    """``host:pid`` of this process, recorded with every part it writes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _id_type(t: pa.DataType) -> pa.DataType:
    """The output column type for ids of Arrow type ``t`` (string-likes become ``string``)."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_integer(t):
        return pa.int64()
    return t


def output_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    """Schema of every part: ``user_id, item_id, rank (int32), score (float32), sources``."""
    return pa.schema(
        [
            ("user_id", _id_type(user_type)),
            ("item_id", _id_type(item_type)),
            ("rank", pa.int32()),
            ("score", pa.float32()),
            ("sources", pa.string()),
        ]
    )


# ---------------------------------------------------------------------------- artifact
@dataclass(frozen=True)
class ArtifactInfo:
    """What the driver of a job needs to know about an artifact, without its models.

    Stability: internal

    Attributes
    ----------
    path
        Absolute artifact directory.
    manifest_sha256
        sha256 of its ``manifest.json``; the manifest lists every file's sha256, so this
        identifies the artifact's content (the worker cache is keyed by it).
    version
        :attr:`recsys.pipeline.Pipeline.version` of the artifact.
    components
        Component names, the primary first.
    user_map
        The user vocabulary.
    item_type
        Arrow type of the item ids.
    """

    path: Path
    manifest_sha256: str
    version: str
    components: tuple[str, ...]
    user_map: IdMap
    item_type: pa.DataType

    @classmethod
    def read(cls, path: Path | str) -> ArtifactInfo:
        """Verify an artifact's checksums and read its vocabularies and component list.

        Raises
        ------
        ArtifactError
            If the artifact is missing or damaged.
        """
        from recsys.pipeline import model_version, read_components, vocabulary_path

        root = Path(path).expanduser().absolute()
        manifest = verify_artifact(root)
        components = read_components(root)
        try:
            item_type = pq.read_schema(vocabulary_path(root, "items")).field("id").type
        except (OSError, KeyError, ValueError, pa.ArrowInvalid) as exc:
            raise ArtifactError(
                f"artifact {root}: cannot read its item vocabulary ({exc})"
            ) from exc
        return cls(
            path=root,
            manifest_sha256=sha256_file(root / MANIFEST),
            version=model_version(manifest),
            components=tuple(components),
            user_map=IdMap.load(vocabulary_path(root, "users")),
            item_type=item_type,
        )

    @classmethod
    def from_pipeline(cls, path: Path | str, pipe: Pipeline) -> ArtifactInfo:
        """The info of an artifact already loaded as ``pipe`` from ``path``."""
        root = Path(path).expanduser().absolute()
        return cls(
            path=root,
            manifest_sha256=sha256_file(root / MANIFEST),
            version=pipe.version,
            components=tuple(pipe.components),
            user_map=pipe.user_map,
            item_type=pa.array(pipe.item_map.ids[:1]).type,
        )

    def resolve_model(self, model: str | None) -> str:
        """The component that will answer: ``model``, or the primary one.

        Raises
        ------
        ConfigError
            If ``model`` is not a component of the artifact.
        """
        from recsys.pipeline import resolve_component

        return resolve_component(self.components, model)


@dataclass
class LoadedArtifact:
    """A loaded pipeline plus what scoring parts needs from it, built once per process.

    Stability: internal
    """

    pipeline: Pipeline
    manifest_sha256: str
    item_ids: pa.Array = field(init=False)

    def __post_init__(self) -> None:
        ids = pa.array(self.pipeline.item_map.ids)
        self.item_ids = ids.cast(_id_type(ids.type))


# ---------------------------------------------------------------------------- users
def _vocabulary_form(ids: NDArray[Any], user_map: IdMap) -> NDArray[Any]:
    """The ids in the vocabulary's form when every one takes it, else as they came.

    ``"196"`` read from a CSV users file becomes ``196`` for an integer vocabulary (so the
    output column is an integer one, like the artifact's); a file that also holds
    ``"newcomer"`` keeps its strings, since one output column cannot hold both. Matching is
    :meth:`IdMap.to_index`'s either way.
    """
    coerced = user_map.coerce(ids)
    if id_kind(coerced) == user_map.kind:
        return coerced
    return ids.astype(object) if ids.dtype.kind in "US" else ids


def resolve_user_ids(
    user_map: IdMap,
    users: ArrayLike | None = None,
    users_file: Path | str | None = None,
) -> NDArray[Any]:
    """The external user ids a job recommends for, in output order.

    Parameters
    ----------
    user_map
        The artifact's user vocabulary.
    users
        Explicit ids (kept in the given order).
    users_file
        A CSV or parquet file with a ``user_id`` column, read by
        :func:`recsys.data.read_users` (ids present and unique).

    With neither, every user of the vocabulary, in index order. Ids are matched by the
    one id rule (:meth:`IdMap.to_index`: ``"196"`` finds ``196``, ``"007"`` never ``7``) and
    returned in the vocabulary's form when every one takes it.

    Warns
    -----
    DataWarning
        When not one of the ids is in the vocabulary (also logged), naming the file and
        a few ids.

    Raises
    ------
    DataError
        Missing or duplicated ids, or an unreadable file.
    ConfigError
        Both ``users`` and ``users_file`` given.
    """
    if users is not None and users_file is not None:
        raise ConfigError("pass either users or users_file, not both")
    source = "user ids"
    if users_file is not None:
        from recsys.data import read_users

        source = str(users_file)
        frame = read_users(Path(users_file))
        ids = frame["user_id"].to_numpy()
    elif users is not None:
        ids = np.atleast_1d(np.asarray(users))
        series = pd.Series(ids, dtype=object)
        if series.isna().any():
            rows = np.flatnonzero(series.isna().to_numpy())
            raise DataError(f"user ids: {len(rows)} missing, at positions {format_examples(rows)}")
        dup = series[series.duplicated()].unique()
        if len(dup):
            raise DataError(f"user ids: {len(dup)} duplicated, e.g. {format_examples(dup)}")
    else:
        return user_map.ids
    ids = _vocabulary_form(np.asarray(ids), user_map)
    if len(ids) == 0:
        raise DataError("no users to recommend for (the users list is empty)")
    warn_if_all_unknown(
        user_map.to_index(ids),
        ids,
        user_map,
        source=source,
        column="user_id",
        consequence="every one gets the cold-start (popularity) list",
    )
    return ids


def _users_fingerprint(ids: NDArray[Any]) -> str:
    h = hashlib.sha256()
    h.update(f"{len(ids)}:{ids.dtype.kind}".encode())
    hashed = pd.util.hash_pandas_object(pd.Series(ids), index=False).to_numpy(np.uint64)
    h.update(hashed.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class BatchSpec:
    """Everything a part task needs besides its users; small and picklable (sent to Dask).

    Stability: internal

    Attributes
    ----------
    artifact, artifact_sha256
        Absolute artifact directory and the sha256 of its ``manifest.json``.
    model
        The component that answers (resolved, never ``None``).
    k, exclude_seen
        As for :meth:`recsys.pipeline.Pipeline.recommend`.
    layout
        Where parts go.
    n_parts
        Number of parts of the job (fixes the part names' width).
    schema
        Arrow schema of the parts.
    """

    artifact: str
    artifact_sha256: str
    model: str
    k: int
    exclude_seen: bool
    layout: OutputLayout
    n_parts: int
    schema: pa.Schema


def recommend_table(
    loaded: LoadedArtifact, user_ids: NDArray[Any], spec: BatchSpec
) -> tuple[pa.Table, int]:
    """Top-``k`` lists of ``user_ids`` as an Arrow table of the output schema.

    Rows are those of ``Pipeline.recommend(user_ids, k, model=..., exclude_seen=...)``:
    users in input order, ranks ``1..k``, fewer rows only where the catalogue has fewer
    eligible items; unknown users get the popularity list with ``sources == "popular"``.
    For a single model ``sources`` is a ``dictionary<int8, string>`` column of the
    output's values (the model, or ``"popular"``), which the part writer stores as the
    dictionary it is; written parts read back with the plain ``string`` type.

    Returns
    -------
    table, unknown_users
    """
    from recsys.pipeline import BLEND, HYBRID
    from recsys.recommend import RecommendQueries

    pipe = loaded.pipeline
    idx = pipe.user_map.to_index(user_ids)
    unknown = idx < 0
    per_item = spec.model in (HYBRID, BLEND)  # the hybrid tells each item's sources
    out = pipe.recommend_block(
        RecommendQueries.for_users(idx), spec.k, model=spec.model, exclude_seen=spec.exclude_seen
    )
    items, scores, sources = out.items, out.scores, out.sources
    valid = items >= 0
    n, width = items.shape
    user_type = spec.schema.field("user_id").type
    if valid.all():  # the common case: every list full, no boolean gathers
        ranks = np.tile(np.arange(1, width + 1, dtype=np.int32), n)
        item_idx, top_scores = items.reshape(-1), scores.reshape(-1)
        if pa.types.is_int64(user_type) and user_ids.dtype.kind in "iu":
            user_col = pa.array(np.repeat(user_ids.astype(np.int64), width))
        else:
            user_col = pa.array(user_ids, type=user_type).take(
                np.repeat(np.arange(n, dtype=np.int64), width)
            )
        row_unknown = np.repeat(unknown, width)
    else:
        counts = valid.sum(axis=1)
        rows = np.repeat(np.arange(n), counts)
        ranks = np.cumsum(valid, axis=1, dtype=np.int32)[valid]
        item_idx, top_scores = items[valid], scores[valid]
        user_col = pa.array(user_ids, type=user_type).take(rows)
        row_unknown = unknown[rows]
    item_col = loaded.item_ids.take(item_idx)
    if per_item:
        source_col = pa.array(sources[valid].tolist(), pa.string())
    else:
        values = (
            [spec.model] if spec.model == COLD_START_SOURCE else [spec.model, COLD_START_SOURCE]
        )
        codes = row_unknown.astype(np.int8) if len(values) == 2 else np.zeros(len(ranks), np.int8)
        source_col = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(values, pa.string()))
    fields = [f.with_type(source_col.type) if f.name == "sources" else f for f in spec.schema]
    table = pa.Table.from_arrays(
        [user_col, item_col, pa.array(ranks), pa.array(top_scores), source_col],
        schema=pa.schema(fields),
    )
    return table, int(unknown.sum())


def compute_part(
    loaded: LoadedArtifact,
    spec: BatchSpec,
    index: int,
    user_ids: NDArray[Any],
    *,
    artifact_loads: int = 1,
    worker: str | None = None,
) -> PartResult:
    """Score one chunk of users and write it as part ``index`` (atomically).

    ``worker`` names who computed it in the manifest (default ``host:pid``).
    """
    t0 = time.perf_counter()
    table, unknown = recommend_table(loaded, user_ids, spec)
    result = write_part(
        table,
        spec.layout.part_path(index, spec.n_parts),
        index=index,
        users=len(user_ids),
        unknown_users=unknown,
        worker=worker or worker_id(),
        artifact_loads=artifact_loads,
    )
    logger.debug(
        "wrote part=%d users=%d rows=%d elapsed=%.3fs",
        index,
        len(user_ids),
        result.rows,
        time.perf_counter() - t0,
    )
    return result


# ---------------------------------------------------------------------------- engines
PartTask = tuple[int, NDArray[Any]]


def _run_local(
    loaded: LoadedArtifact,
    spec: BatchSpec,
    tasks: Iterator[PartTask],
    on_result: Callable[[PartResult], None],
    threads: int,
) -> None:
    """Run part tasks on a pool of ``threads`` threads, at most ``2 * threads`` queued.

    BLAS is limited to one thread for the job: the chunks are the parallelism, so the
    non-BLAS half of the work (top-k selection, conversion, compression, writing; numpy
    and Arrow release the GIL there) runs in parallel too, and the small per-block
    products do not pay a BLAS thread pool's synchronisation, which costs far more than
    the product itself on a busy machine.
    """
    limit = threadpool_limits(1, "blas")
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="recsys-batch") as pool:
            pending: set[Future[PartResult]] = set()
            try:
                for index, users in tasks:
                    pending.add(pool.submit(compute_part, loaded, spec, index, users))
                    if len(pending) >= 2 * threads:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            on_result(fut.result())
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        on_result(fut.result())
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    finally:
        limit.restore_original_limits()


# ---------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class BatchResult:
    """Summary of a finished batch job.

    Stability: provisional

    Attributes
    ----------
    out
        The output path (parquet dataset directory or CSV file).
    users, unknown_users, rows, parts
        Totals over the whole output.
    resumed_parts
        Parts found complete on disk and not recomputed.
    seconds
        Wall time of this run.
    engine
        ``"local"`` or ``"dask"``.
    manifest
        The manifest as written.
    """

    out: Path
    users: int
    unknown_users: int
    rows: int
    parts: int
    resumed_parts: int
    seconds: float
    engine: str
    manifest: dict[str, Any]

    @property
    def users_per_second(self) -> float:
        """Users of the output per second of this run (resumed parts count as done)."""
        return self.users / self.seconds if self.seconds > 0 else float("inf")


def default_threads() -> int:
    """Threads of the local engine by default: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_batch(
    artifact: Path | str,
    out: Path | str,
    *,
    users: ArrayLike | None = None,
    users_file: Path | str | None = None,
    k: int = 10,
    model: str | None = None,
    exclude_seen: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    engine: Literal["local", "dask"] = "local",
    threads: int | None = None,
    scheduler: str | None = None,
    client: Client | None = None,
    dask_workers: int = 2,
    resume: bool = False,
    show_progress: bool = True,
) -> BatchResult:
    """Write top-``k`` recommendations for many users, part by part, with a manifest.

    Stability: provisional

    Parameters
    ----------
    artifact
        Artifact directory (from ``recsys train``). With ``engine="dask"`` it must be on
        storage every worker can read, at the same path.
    out
        ``*.parquet``/``*.pq``: a parquet dataset directory (``part-*.parquet`` plus
        ``_manifest.json``) that ``pandas.read_parquet(out)`` reads directly;
        ``*.csv``/``*.tsv``: one file (plus ``<out>.manifest.json``). See
        :mod:`recsys.jobs.output`. With Dask, on storage every worker can write.
    users, users_file
        The users, in output order: explicit ids, or a file with a ``user_id`` column.
        Default: every user of the artifact. Unknown ids get the popularity list.
    k, model, exclude_seen
        As for :meth:`recsys.pipeline.Pipeline.recommend`; ``model`` defaults to the
        primary component.
    chunk_size
        Users per part. Memory is bounded by it (per chunk in flight), not by the
        number of users; it is also the unit of resumption.
    engine
        ``"local"``: a thread pool here. ``"dask"``: tasks on a Dask cluster.
    threads
        Local engine: pool threads (default: the usable CPUs). Dask with a cluster
        started here: threads per worker (default 1).
    scheduler, client
        Dask: the scheduler address of an existing cluster, or a connected
        ``distributed.Client``. With neither, a ``LocalCluster`` of ``dask_workers``
        worker processes is started for the job and closed after it.
    dask_workers
        Workers of that ``LocalCluster``.
    resume
        Keep the parts of an earlier run of the same job (same artifact, users,
        ``k``, model, ``exclude_seen``, ``chunk_size``) and compute only the missing ones.
        A job killed at any point and resumed gives exactly the output of an
        uninterrupted run.
    show_progress
        A progress bar with users/s and the ETA.

    Returns
    -------
    BatchResult

    Raises
    ------
    ConfigError
        Bad parameters, an unknown component, or ``resume`` with other parameters.
    DataError
        A bad users list, or an output path holding something else.
    ArtifactError
        A missing or damaged artifact.

    Examples
    --------
    >>> result = run_batch("model/", "recs.parquet", k=100)  # doctest: +SKIP
    >>> pd.read_parquet("recs.parquet").shape  # doctest: +SKIP
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    if engine not in ("local", "dask"):
        raise ConfigError(f"engine must be 'local' or 'dask', got {engine!r}")
    if engine == "local" and (scheduler is not None or client is not None):
        raise ConfigError("a Dask scheduler or client needs engine='dask'")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    start = time.perf_counter()
    layout = OutputLayout.for_path(out)

    loaded: LoadedArtifact | None = None
    if engine == "local":
        from recsys.pipeline import Pipeline

        pipe = Pipeline.load(Path(artifact))
        info = ArtifactInfo.from_pipeline(artifact, pipe)
        loaded = LoadedArtifact(pipe, info.manifest_sha256)
    else:
        info = ArtifactInfo.read(artifact)
    loaded_at = time.perf_counter()
    name = info.resolve_model(model)
    user_ids = resolve_user_ids(info.user_map, users, users_file)
    n_users = len(user_ids)
    n_parts = math.ceil(n_users / chunk_size)
    try:
        user_type = pa.array(user_ids[:0] if user_ids.dtype.kind != "O" else user_ids).type
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"user ids: mixed or unsupported id types ({exc})") from exc
    spec = BatchSpec(
        artifact=str(info.path),
        artifact_sha256=info.manifest_sha256,
        model=name,
        k=k,
        exclude_seen=exclude_seen,
        layout=layout,
        n_parts=n_parts,
        schema=output_schema(user_type, info.item_type),
    )
    params = {
        "artifact_manifest_sha256": info.manifest_sha256,
        "model": name,
        "k": k,
        "exclude_seen": exclude_seen,
        "chunk_size": chunk_size,
        "n_users": n_users,
        "users_sha256": _users_fingerprint(user_ids),
        "n_parts": n_parts,
        "format": layout.fmt,
        "schema": {f.name: str(f.type) for f in spec.schema},
    }

    def chunk(i: int) -> NDArray[Any]:
        return user_ids[i * chunk_size : (i + 1) * chunk_size]

    if resume and (done_manifest := layout.completed_manifest(params)) is not None:
        logger.info("resume: %s is already complete, nothing to do", layout.out)
        return _result_from_manifest(layout, done_manifest, engine, time.perf_counter() - start)

    done = layout.prepare(params, resume=resume)
    results: dict[int, PartResult] = {}
    for index, part in done.items():  # found on disk: users and unknowns from the chunking
        ids = chunk(index)
        unknown = int((info.user_map.to_index(ids) < 0).sum())
        results[index] = replace(part, users=len(ids), unknown_users=unknown)
    if done:
        logger.info("resume: %d of %d parts already written in %s", len(done), n_parts, layout.out)

    todo = (i for i in range(n_parts) if i not in results)
    tasks = ((i, chunk(i)) for i in todo)
    lock = threading.Lock()
    bar = tqdm(
        total=n_users,
        initial=sum(r.users for r in results.values()),
        unit="user",
        unit_scale=True,
        desc="recommend",
        disable=not show_progress,
        smoothing=0.05,
    )

    def on_result(result: PartResult) -> None:
        with lock:
            results[result.index] = result
            bar.update(result.users)

    workers: dict[str, Any] = {}
    scoring_from = time.perf_counter()
    try:
        if engine == "local":
            assert loaded is not None
            n_threads = threads or default_threads()
            workers = {"threads": n_threads}
            _run_local(loaded, spec, tasks, on_result, n_threads)
        else:
            from recsys.jobs.dask_engine import run_dask

            workers = run_dask(
                spec,
                tasks,
                on_result,
                scheduler=scheduler,
                client=client,
                n_workers=dask_workers,
                threads_per_worker=threads or 1,
            )
    finally:
        bar.close()

    elapsed = time.perf_counter() - start
    parts = [results[i] for i in range(n_parts)]
    loads: dict[str, int] = {}
    for p in parts:
        if p.worker:
            loads[p.worker] = max(loads.get(p.worker, 0), p.artifact_loads)
    from recsys import __version__

    manifest = layout.finalize(
        {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "recsys_version": __version__,
            "params": params,
            "artifact": {
                "path": str(info.path),
                "version": info.version,
                "manifest_sha256": info.manifest_sha256,
            },
            "engine": {"name": engine, **workers},
            "columns": list(COLUMNS),
            "users": n_users,
            "unknown_users": sum(p.unknown_users for p in parts),
            "rows": sum(p.rows for p in parts),
            "resumed_parts": len(done),
            "artifact_loads": loads,
            "elapsed_seconds": round(elapsed, 3),
            "timings": {
                "load_seconds": round(loaded_at - start, 3),
                "recommend_seconds": round(elapsed - (scoring_from - start), 3),
            },
            "users_per_second": round(n_users / elapsed, 1) if elapsed > 0 else None,
        },
        parts,
        spec.schema,
    )
    elapsed = time.perf_counter() - start
    result = BatchResult(
        out=layout.out,
        users=n_users,
        unknown_users=int(manifest["unknown_users"]),
        rows=int(manifest["rows"]),
        parts=n_parts,
        resumed_parts=len(done),
        seconds=elapsed,
        engine=engine,
        manifest=manifest,
    )
    _log_summary(result)
    return result


def _result_from_manifest(
    layout: OutputLayout, manifest: dict[str, Any], engine: str, seconds: float
) -> BatchResult:
    result = BatchResult(
        out=layout.out,
        users=int(manifest["users"]),
        unknown_users=int(manifest["unknown_users"]),
        rows=int(manifest["rows"]),
        parts=len(manifest["parts"]),
        resumed_parts=len(manifest["parts"]),
        seconds=seconds,
        engine=engine,
        manifest=manifest,
    )
    _log_summary(result)
    return result


def _log_summary(result: BatchResult) -> None:
    logger.info(
        "batch recommend done: users=%d unknown_users=%d rows=%d parts=%d resumed_parts=%d "
        "seconds=%.2f users_per_s=%.0f engine=%s out=%s",
        result.users,
        result.unknown_users,
        result.rows,
        result.parts,
        result.resumed_parts,
        result.seconds,
        result.users_per_second,
        result.engine,
        result.out,
    )
