"""The online service: one object owns the loaded artifact, the online state and metrics.

Endpoints are thin: they validate a request body and call one method here. A request reads
the current :class:`ServingState` once and uses it to the end, so a hot reload (which builds
a new state beside the old one and swaps one reference) never changes a model under a
request in flight.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import ArtifactError, ConfigError
from recsys.pipeline import COLD_START_SOURCE, Pipeline
from recsys.recommend import COLD_START, PERSONALIZED, RecommendQueries
from recsys.serving.catalog import ItemCatalog, catalog_from_pipeline
from recsys.serving.errors import NotReadyError, ReloadBusyError
from recsys.serving.events import EventLog, EventRecord, OnlineState
from recsys.serving.ids import IdCodec, JsonId
from recsys.serving.metrics import Metrics
from recsys.serving.schemas import (
    EventIn,
    EventReceipt,
    GenresResponse,
    HistoryItem,
    HistoryResponse,
    RecommendRequest,
    ReloadResponse,
    UsersResponse,
)
from recsys.serving.settings import Settings

__all__ = ["LoadedModel", "RecommendService", "ServingState"]

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
#: How long the micro-batcher waits for returning clients after a batched flush: the
#: in-process cost of a call is ~10 ms fixed plus ~5 ms per user, so a batch of 8 pays
#: for a few ms of waiting many times over (cache-off HTTP benchmark, issue 15).
_LINGER_S = 0.006
_T = TypeVar("_T")

SIMILAR = "similar"


#: A top list: item indices, scores and each item's sources (``|``-separated strings).
_List = tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.object_]]


class ListCache:
    """A bounded LRU of plain top lists of one loaded model: ``(user_idx, component)`` ->
    ``(items, scores, sources)``, the longest list computed for that user.

    Lists are sorted with deterministic tie-breaking, so the first ``k`` entries of a longer
    list are exactly the top-``k`` list: one entry answers every ``k`` up to its length.
    Users with online events or ``recent_items`` take the fold-in path and never reach the
    cache, and every loaded model has its own cache. Arrays are read-only.

    Stability: internal

    Parameters
    ----------
    max_size
        Most lists kept; 0 disables the cache.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._data: OrderedDict[tuple[int, str | None], _List] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, str | None], k: int) -> _List | None:
        """The top-``k`` list of ``key``, or ``None`` when no list of ``k`` or more is kept."""
        if not self.max_size:
            return None
        with self._lock:
            value = self._data.get(key)
            if value is None or len(value[0]) < k:
                return None
            self._data.move_to_end(key)
        return (value[0][:k], value[1][:k], value[2][:k])

    def put(self, key: tuple[int, str | None], value: _List) -> None:
        """Keep a read-only copy of ``value`` (unless a longer list is kept), evicting the
        least recently used entry."""
        if not self.max_size:
            return
        # never pin a whole batch's arrays
        value = (value[0].copy(), value[1].copy(), value[2].copy())
        for arr in value:
            arr.setflags(write=False)
        with self._lock:
            kept = self._data.get(key)
            if kept is not None and len(kept[0]) > len(value[0]):
                value = kept
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A loaded, verified artifact plus the lookup tables serving needs.

    Stability: internal

    Attributes
    ----------
    pipeline
        The artifact's pipeline.
    path
        Its directory.
    version
        ``Pipeline.version`` (creation time and data fingerprint prefix).
    users, items
        Id codecs of the user and item vocabularies.
    catalog
        Item titles and genres.
    seen
        The ``(n_users, n_items)`` binary training matrix (CSR).
    loaded_at, load_seconds
        When and how fast it was loaded.
    cache
        This model's cache of plain top lists.
    """

    pipeline: Pipeline
    path: Path
    version: str
    users: IdCodec
    items: IdCodec
    catalog: ItemCatalog
    seen: sp.csr_matrix
    loaded_at: float
    load_seconds: float
    cache: ListCache

    @classmethod
    def load(
        cls, path: Path, *, cache_size: int = 0, warm_users: int = 0, warm_k: int = 20
    ) -> LoadedModel:
        """Load and verify an artifact (every checksum first).

        ``cache_size`` bounds the cache of plain top lists (0: no cache). ``warm_users``
        of the most active users get their top-``warm_k`` list computed now, in batches
        (:meth:`warm`), so the first requests do not each pay for a model call.

        Raises
        ------
        ArtifactError
            If the directory is missing, damaged, or cannot be read for any reason.
        """
        t0 = time.perf_counter()
        try:
            pipeline = Pipeline.load(path)
            catalog = catalog_from_pipeline(pipeline)
            seen = sp.csr_matrix(pipeline.training_matrix())
        except ArtifactError:
            raise
        except Exception as exc:  # a file that passed its checksum but does not parse
            raise ArtifactError(
                f"artifact {path} refused: cannot load it ({type(exc).__name__}: {exc})"
            ) from exc
        model = cls(
            pipeline=pipeline,
            path=Path(path),
            version=pipeline.version,
            users=IdCodec(pipeline.user_map.ids),
            items=IdCodec(pipeline.item_map.ids),
            catalog=catalog,
            seen=seen,
            loaded_at=time.time(),
            load_seconds=time.perf_counter() - t0,
            cache=ListCache(cache_size),
        )
        model.warm(warm_users, warm_k)
        return model

    def warm(self, n_users: int, k: int, *, block: int = 1024) -> int:
        """Fill the list cache with the top-``k`` lists of the ``n_users`` most active users.

        Lists are computed in blocks of users by the pipeline's batched path (the batch
        job's), at most as many as the cache holds. Returns how many were computed.
        """
        n = min(n_users, self.cache.max_size, self.seen.shape[0])
        if n <= 0:
            return 0
        t0 = time.perf_counter()
        k = min(k, len(self.items))
        activity = np.diff(self.seen.indptr)
        users = np.sort(np.argsort(-activity, kind="stable")[:n])
        for lo in range(0, n, block):
            chunk = users[lo : lo + block]
            items, scores, sources = self.pipeline.recommend_lists(chunk, k)
            for r, u in enumerate(chunk.tolist()):
                self.cache.put((u, None), (items[r], scores[r], sources[r]))
        logger.info("warmed list cache users=%d k=%d seconds=%.2f", n, k, time.perf_counter() - t0)
        return n

    def feed_feature_store(self, records: list[EventRecord]) -> None:
        """Fold events into the feature store's online view (``FeatureStore.append``), so
        online features (activity, behaviour sequences) include them.

        Records whose ids cannot have the vocabulary's type (a non-numeric id for an integer
        vocabulary) are left out of the store; they stay in the log.
        """
        store = self.pipeline.features
        append = getattr(store, "append", None)
        if append is None:
            return
        users = [self.users.parse(r.user_id) for r in records]
        items = [self.items.parse(r.item_id) for r in records]
        keep = [
            self.users.fits(u) and self.items.fits(i) for u, i in zip(users, items, strict=True)
        ]
        if not any(keep):
            return
        rows = [r for r, ok in zip(records, keep, strict=True) if ok]
        frame = pd.DataFrame(
            {
                "user_id": self.users.array([u for u, ok in zip(users, keep, strict=True) if ok]),
                "item_id": self.items.array([i for i, ok in zip(items, keep, strict=True) if ok]),
                "rating": np.array(
                    [np.nan if r.rating is None else r.rating for r in rows], np.float32
                ),
                "timestamp": np.array([r.timestamp for r in rows], np.int64),
            }
        )
        append(frame)

    def training_items(self, user_idx: int) -> NDArray[np.int64]:
        """Item indices of a known user's training history (empty for ``-1``)."""
        if user_idx < 0:
            return np.empty(0, np.int64)
        start, stop = self.seen.indptr[user_idx], self.seen.indptr[user_idx + 1]
        return np.asarray(self.seen.indices[start:stop], np.int64)

    def item_out(
        self, idx: int, score: float, rank: int, sources: list[str], details: bool
    ) -> dict[str, Any]:
        """One response item (:class:`RecommendedItem` as JSON-ready dict) for index ``idx``.

        A plain dict: every value comes from the artifact with its type already right, and
        building and validating ten models per request is measurable on the hot path.
        ``title`` and ``genres`` appear only with ``details`` (and a known title).
        """
        item: dict[str, Any] = {
            "item_id": self.items.values[idx],
            "score": score,
            "rank": rank,
            "sources": sources,
        }
        if details:
            title = self.catalog.titles[idx]
            if title is not None:
                item["title"] = title
            item["genres"] = list(self.catalog.genres[idx])
        return item


@dataclass(frozen=True, eq=False)
class ServingState:
    """What one request sees: a model and the online state parsed against its vocabulary."""

    model: LoadedModel
    online: OnlineState


def _freeze_heap(reason: str) -> None:
    """Collect once, then move every surviving object out of the cyclic GC's reach.

    A loaded artifact is ~10^5 long-lived objects; a full collection over them takes tens to
    hundreds of milliseconds, and the allocation churn of requests triggers one every few
    seconds, which shows up directly in tail latency. Frozen objects are still freed by
    reference counting; before refreezing, :meth:`RecommendService.reload` unfreezes so the
    old model's cycles can be collected.
    """
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    logger.debug(
        "froze heap reason=%s objects=%d elapsed_ms=%.1f",
        reason,
        gc.get_freeze_count(),
        1000 * (time.perf_counter() - t0),
    )


def _split_sources(source: str) -> list[str]:
    return [s for s in source.replace(",", "|").split("|") if s]


@dataclass(frozen=True, eq=False)
class _Row:
    """One query of the one recommend path (:class:`recsys.recommend.RecommendQueries`)."""

    uidx: int
    history: NDArray[np.int64] | None = None  # events + recent_items to fold in; None: plain
    exclude: NDArray[np.int64] | None = None
    blocked: NDArray[np.bool_] | None = None  # attribute filters

    @property
    def plain(self) -> bool:
        """A known user's (or the cold-start) list, unfiltered: what the list cache holds."""
        return self.history is None and self.exclude is None and self.blocked is None


#: What answered one row: its list (items, scores, sources) and its strategy.
_Answer = tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.object_], str]


@dataclass(frozen=True, eq=False)
class _Plan:
    """A resolved recommend request: its query row and how to answer it."""

    model: LoadedModel
    req: RecommendRequest
    user: JsonId
    row: _Row

    @property
    def cacheable(self) -> bool:
        """Whether the list goes through :class:`ListCache`: plain, unfiltered lists only."""
        return self.row.plain and self.model.cache.max_size > 0

    @property
    def cache_key(self) -> tuple[int, str | None]:
        """Key of the plain list in :class:`ListCache`."""
        return (self.row.uidx, self.req.model)

    def cached_strategy(self) -> str:
        """The strategy of a plain list (what :func:`recommend_block` says of it)."""
        return PERSONALIZED if self.row.uidx >= 0 else COLD_START


def _answer_rows(pipeline: Pipeline, model: str | None, rows: list[_Row], k: int) -> list[_Answer]:
    """Lists of several query rows with one call of the one recommend path.

    A row's list does not depend on the other rows of the call (lists are deterministic
    and each row is fetched as long as its own filters need).
    """
    queries = RecommendQueries(
        np.array([r.uidx for r in rows], np.int64),
        history=[r.history for r in rows],
        exclude=[r.exclude for r in rows],
        blocked=[r.blocked for r in rows],
    )
    out = pipeline.recommend_block(queries, k, model=model)
    answers: list[_Answer] = []
    for r in range(len(rows)):
        items, scores, sources = out.row(r)
        answers.append((items, scores, sources, str(out.strategy[r])))
    return answers


#: One waiter of the micro-batcher: pipeline, component, query row, k and its future.
_Waiter = tuple[Pipeline, str | None, _Row, int, "asyncio.Future[_Answer]"]
#: What a flush computed for one group of waiters: their positions and answers (or the error).
_GroupResult = tuple[list[int], list[_Answer] | BaseException]


class _MicroBatcher:
    """Coalesces recommend calls (plain and fold-in) into batched calls of the one recommend
    path that run off the event loop.

    The first call schedules a flush with ``call_soon``; every call made before the loop
    gets to it joins the batch. The flush hands the batch to the model executor (a worker
    thread), which makes one :meth:`Pipeline.recommend_block` call per (pipeline, component,
    k) and at most ``max_batch`` rows; the loop only awaits the result, so it keeps answering other
    requests (``/healthz``, ``/metrics``) meanwhile. At most ``max_in_flight`` flushes
    per loop compute at a time (the service uses one: requests made while it computes go
    out together in the next flush, so batches grow with the load). When a flush that served
    several waiters returns, the next one lingers up to ``linger_s`` for those clients'
    next requests (ending as soon as as many are pending), so 8 closed-loop clients make
    one batch of 8 rather than two cohorts of 4 taking turns; a lone client never waits.

    Stability: internal

    Parameters
    ----------
    loop
        The event loop whose requests it batches.
    executor
        Where model calls run; ``None``: the loop's default executor.
    max_batch
        Most lists per model call.
    metrics
        Counts model calls and their lists, if given.
    max_in_flight
        Most flushes computing at once.
    linger_s
        Longest wait for returning clients after a flush of several waiters (0: none).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        executor: Executor | None = None,
        max_batch: int = 256,
        metrics: Metrics | None = None,
        max_in_flight: int = 1,
        linger_s: float = 0.0,
    ) -> None:
        self._loop = loop
        self._executor = executor
        self._max_batch = max_batch
        self._metrics = metrics
        self._max_in_flight = max(1, max_in_flight)
        self._linger_s = max(0.0, linger_s)
        self._pending: list[_Waiter] = []
        self._scheduled = False  # a flush is scheduled on the loop
        self._in_flight = 0  # flushes computing
        self._lingering: asyncio.TimerHandle | None = None
        self._expected = 0  # waiters the lingering flush waits for

    def submit(
        self, pipeline: Pipeline, model: str | None, row: _Row, k: int
    ) -> asyncio.Future[_Answer]:
        """A future of ``(items, scores, sources, strategy)`` for one query row."""
        future: asyncio.Future[_Answer] = self._loop.create_future()
        self._pending.append((pipeline, model, row, k, future))
        if self._lingering is not None and len(self._pending) >= self._expected:
            self._lingering.cancel()  # everyone it waited for is back: go now
            self._lingering = None
            self._loop.call_soon(self._flush)
        self._schedule()
        return future

    def _schedule(self) -> None:
        if self._pending and not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send every pending call to the executor (on the loop; never computes)."""
        self._scheduled = False
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        pending, self._pending = self._pending, []
        pending = [w for w in pending if not w[4].done()]  # clients that went away
        if not pending:
            return
        self._in_flight += 1
        try:
            done = self._loop.run_in_executor(self._executor, self._compute, pending)
        except Exception as exc:  # e.g. the executor was shut down
            self._deliver(pending, [(list(range(len(pending))), exc)])
            return
        done.add_done_callback(functools.partial(self._computed, pending))

    def _compute(self, pending: list[_Waiter]) -> list[_GroupResult]:
        """The model calls of one flush (in a worker thread): one per group of at most
        ``max_batch`` calls to the same (pipeline, component, k)."""
        groups: dict[tuple[int, str | None, int], list[int]] = {}
        for pos, (pipeline, model, _, k, _) in enumerate(pending):
            groups.setdefault((id(pipeline), model, k), []).append(pos)
        out: list[_GroupResult] = []
        for (_, model, k), members in groups.items():
            for lo in range(0, len(members), self._max_batch):
                positions = members[lo : lo + self._max_batch]
                try:
                    answers = _answer_rows(
                        pending[positions[0]][0], model, [pending[p][2] for p in positions], k
                    )
                except Exception as exc:  # every waiter of the group gets the error
                    out.append((positions, exc))
                    continue
                if self._metrics is not None:
                    self._metrics.count_model_call(len(positions))
                out.append((positions, answers))
        return out

    def _computed(self, pending: list[_Waiter], done: asyncio.Future[list[_GroupResult]]) -> None:
        """On the loop: hand the lists to their waiters, then flush what queued meanwhile."""
        try:
            results = done.result()
        except BaseException as exc:  # the executor itself failed
            results = [(list(range(len(pending))), exc)]
        self._deliver(pending, results)

    def _deliver(self, pending: list[_Waiter], results: list[_GroupResult]) -> None:
        for positions, lists in results:
            for n, p in enumerate(positions):
                future = pending[p][4]
                if future.done():  # the client may have gone away
                    continue
                if isinstance(lists, asyncio.CancelledError):
                    future.cancel()  # the executor was shut down under it
                elif isinstance(lists, BaseException):
                    future.set_exception(lists)
                else:
                    future.set_result(lists[n])
        self._in_flight -= 1
        served = len(pending)
        if self._linger_s and served > 1 and self._in_flight == 0 and not self._scheduled:
            # Concurrent clients just got their answers and send their next requests within
            # a moment: wait for them (at most linger_s) so they share the next call instead
            # of splitting into cohorts that take turns. One client at a time never waits.
            self._scheduled = True
            self._expected = served
            self._lingering = self._loop.call_later(self._linger_s, self._flush)
        else:
            self._schedule()


class RecommendService:
    """The online recommend service.

    Stability: provisional

    Model work never runs on the event loop: the async entry points (:meth:`recommend_async`,
    :meth:`run_model`) compute in the service's model executor, a small pool of worker
    threads, and the loop only awaits the result, so ``/healthz`` and ``/metrics`` answer
    while models compute. The pool is small on purpose: the loop thread competes with the
    workers for the GIL, and every extra busy worker is one more thread ahead of it.

    Parameters
    ----------
    settings
        Server settings (artifact, events log, limits, model threads).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._state: ServingState | None = None
        self._log: EventLog | None = None
        self._reload_lock = threading.Lock()
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _MicroBatcher] = (
            weakref.WeakKeyDictionary()
        )
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def _load_model(self, path: Path) -> LoadedModel:
        """Load an artifact with this server's cache settings (and warm its list cache)."""
        st = self.settings
        return LoadedModel.load(
            path,
            cache_size=st.recommend_cache_size,
            warm_users=st.recommend_warm_users,
            warm_k=st.recommend_warm_k,
        )

    def start(self) -> None:
        """Load the configured artifact and replay the event log.

        Raises
        ------
        ArtifactError
            If the artifact is missing or damaged (the server must not start).
        """
        model = self._load_model(self.settings.artifact)
        self._log = EventLog(self.settings.events_path)
        self._state = self._new_state(model)
        _freeze_heap("start")
        logger.info(
            "serving artifact=%s version=%s n_users=%d n_items=%d events=%d load_s=%.2f",
            model.path,
            model.version,
            len(model.users),
            len(model.items),
            self._state.online.n_events,
            model.load_seconds,
        )

    def close(self) -> None:
        """Release the event log and the model executor's threads (the state stays
        readable; a later :meth:`run_model` starts a new executor)."""
        if self._log is not None:
            self._log.close()
        with self._executor_lock:
            executor, self._executor = self._executor, None
            self._batchers.clear()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def model_threads(self) -> int:
        """Worker threads of the model executor: ``settings.model_threads``, or by default
        ``min(2, CPUs)``."""
        configured = self.settings.model_threads
        return configured if configured is not None else max(1, min(2, os.cpu_count() or 1))

    def _model_executor(self) -> ThreadPoolExecutor:
        """The executor that runs model work off the event loop (created on first use)."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.model_threads, thread_name_prefix="recsys-model"
                )
            return self._executor

    async def run_model(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn(*args, **kwargs)`` in the model executor and await its result.

        For endpoints whose work is a model call (or may be): the event loop stays free
        while it computes.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        return await loop.run_in_executor(self._model_executor(), call)

    def _new_state(self, model: LoadedModel) -> ServingState:
        assert self._log is not None
        online = OnlineState(
            self._log,
            model.users.parse,
            model.items.parse,
            self.settings.max_events_per_user,
            on_records=model.feed_feature_store,
        )
        online.sync()  # replay every event accepted so far
        return ServingState(model, online)

    @property
    def state(self) -> ServingState:
        """The current state; raises :class:`NotReadyError` before start-up finished."""
        state = self._state
        if state is None:
            raise NotReadyError("no model is loaded yet; retry when /readyz answers 200")
        return state

    @property
    def ready(self) -> bool:
        """Whether a model is loaded."""
        return self._state is not None

    @property
    def model_version(self) -> str | None:
        """Version of the loaded model, if any."""
        state = self._state
        return None if state is None else state.model.version

    def render_metrics(self) -> str:
        """The Prometheus exposition of this process, with the loaded model's version."""
        state = self._state
        return self.metrics.render(
            model_version=None if state is None else state.model.version,
            loaded_at=None if state is None else state.model.loaded_at,
        )

    # ------------------------------------------------------------------ recommending
    def recommend(self, req: RecommendRequest) -> dict[str, Any]:
        """Recommendations for one user, computed now: a JSON-ready dict of the
        :class:`RecommendResponse` shape."""
        state = self.state
        state.online.sync()
        plan = self._plan(state, req)
        answer = self._cached(plan)
        if answer is None:
            answer = _answer_rows(plan.model.pipeline, req.model, [plan.row], req.k)[0]
            self.metrics.count_model_call(1)
            self._remember(plan, answer)
        return self._finish(plan, answer)

    def _cached(self, plan: _Plan) -> _Answer | None:
        if not plan.cacheable:
            return None
        hit = plan.model.cache.get(plan.cache_key, plan.req.k)
        self.metrics.count_cache(hit is not None)
        if hit is None:
            return None
        keep = hit[0] >= 0  # warmed lists of a catalogue shorter than k are padded
        return (hit[0][keep], hit[1][keep], hit[2][keep], plan.cached_strategy())

    @staticmethod
    def _remember(plan: _Plan, answer: _Answer) -> None:
        if plan.cacheable:
            plan.model.cache.put(plan.cache_key, answer[:3])  # type: ignore[arg-type]

    async def recommend_async(self, req: RecommendRequest) -> dict[str, Any]:
        """As :meth:`recommend`, awaited on the event loop with the model work in the model
        executor: requests (plain or fold-in) made while a batch is pending share one call
        of the one recommend path."""
        state = self.state
        state.online.sync()
        plan = self._plan(state, req)
        answer = self._cached(plan)
        if answer is None:
            answer = await self._batcher().submit(plan.model.pipeline, req.model, plan.row, req.k)
            self._remember(plan, answer)
        return self._finish(plan, answer)

    def recommend_batch(self, reqs: list[RecommendRequest]) -> dict[str, Any]:
        """Recommendations for several users, all from the same model (a JSON-ready dict of
        the :class:`BatchResponse` shape): one call of the one recommend path per
        (component, k)."""
        state = self.state
        state.online.sync()
        plans = [self._plan(state, r) for r in reqs]
        results: list[dict[str, Any] | None] = [None] * len(plans)
        groups: dict[tuple[str | None, int], list[int]] = {}
        for pos, plan in enumerate(plans):
            cached = self._cached(plan)
            if cached is not None:
                results[pos] = self._finish(plan, cached)
            else:
                groups.setdefault((plan.req.model, plan.req.k), []).append(pos)
        for (name, k), positions in groups.items():
            answers = _answer_rows(state.model.pipeline, name, [plans[p].row for p in positions], k)
            self.metrics.count_model_call(len(positions))
            for p, answer in zip(positions, answers, strict=True):
                self._remember(plans[p], answer)
                results[p] = self._finish(plans[p], answer)
        return {
            "results": [r for r in results if r is not None],
            "model_version": state.model.version,
        }

    def _batcher(self) -> _MicroBatcher:
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = _MicroBatcher(
                loop,
                self._model_executor(),
                metrics=self.metrics,
                linger_s=_LINGER_S,
            )
        return batcher

    def _plan(self, state: ServingState, req: RecommendRequest) -> _Plan:
        """Resolve ids, online events and filters into one query row."""
        m = state.model
        user, uidx = m.users.lookup(req.user_id)
        fresh = state.online.items_of(user)
        blocked = m.catalog.blocked(
            req.filters.genres if req.filters else None,
            req.filters.exclude_genres if req.filters else None,
        )
        exclude = None
        if req.exclude_items:
            excluded = m.items.indices(req.exclude_items)
            exclude = excluded[excluded >= 0] if (excluded >= 0).any() else None
        if req.model is not None and req.model not in m.pipeline.models:
            raise ConfigError(
                f"model {req.model!r} is not in this artifact; it has: "
                f"{', '.join(m.pipeline.components)}"
            )
        history = None
        if fresh or req.recent_items:
            # oldest first: the online events in arrival order, then recent_items as sent
            events = np.fromiter((m.items.index(v) for v in fresh), np.int64, count=len(fresh))
            history = np.concatenate([events, m.items.indices(req.recent_items)])
        return _Plan(model=m, req=req, user=user, row=_Row(uidx, history, exclude, blocked))

    def _finish(self, plan: _Plan, answer: _Answer) -> dict[str, Any]:
        """The response dict of a row's answer."""
        m, req = plan.model, plan.req
        idx, scores, sources, strategy = answer
        out = [
            m.item_out(i, s, r, _split_sources(str(src)), req.details)
            for r, (i, s, src) in enumerate(
                zip(idx.tolist(), scores.tolist(), sources.tolist(), strict=True), start=1
            )
        ]
        self.metrics.count_recommendation(strategy)
        return {
            "user_id": plan.user,
            "items": out,
            "strategy": strategy,
            "model_version": m.version,
        }

    def similar_items(self, item_id: JsonId, k: int, *, details: bool = False) -> dict[str, Any]:
        """Items most similar to ``item_id``; popular items for an unknown item (a JSON-ready
        dict of the :class:`SimilarItemsResponse` shape)."""
        m = self.state.model
        item, iidx = m.items.lookup(item_id)
        strategy = SIMILAR
        out: list[dict[str, Any]] = []
        if iidx >= 0:
            frame = m.pipeline.similar_items(item, k)
            idx = m.items.indices(frame["item_id"].tolist())
            for rank, (i, s, src) in enumerate(
                zip(idx.tolist(), frame["score"].tolist(), frame["sources"].tolist(), strict=True),
                start=1,
            ):
                out.append(m.item_out(i, float(s), rank, _split_sources(str(src)), details))
        if not out:
            strategy = COLD_START
            items, scores = m.pipeline.recommend_indices(
                [-1], k, model=COLD_START_SOURCE if COLD_START_SOURCE in m.pipeline.models else None
            )
            keep = items[0] >= 0
            for rank, (i, s) in enumerate(
                zip(items[0][keep].tolist(), scores[0][keep].tolist(), strict=True), start=1
            ):
                out.append(m.item_out(i, s, rank, [COLD_START_SOURCE], details))
        return {"item_id": item, "items": out, "strategy": strategy, "model_version": m.version}

    def genres(self) -> GenresResponse:
        """Genre names of the catalogue (for ``filters``)."""
        return GenresResponse(genres=self.state.model.catalog.genre_names)

    # ------------------------------------------------------------------ users and events
    def users(self, limit: int, offset: int) -> UsersResponse:
        """A page of the vocabulary's user ids, in index order."""
        m = self.state.model
        return UsersResponse(user_ids=m.users.values[offset : offset + limit], total=len(m.users))

    def history(self, user_id: JsonId, limit: int) -> HistoryResponse:
        """A user's training items and online events, with titles and genres."""
        state = self.state
        state.online.sync()
        m = state.model
        user, uidx = m.users.lookup(user_id)
        rows: list[HistoryItem] = []
        events = state.online.items_of(user)
        for value in reversed(events):  # most recent event first
            i = m.items.index(value)
            rows.append(self._history_item(m, value, i, "event"))
        for i in m.training_items(uidx).tolist():
            rows.append(self._history_item(m, m.items.values[i], i, "training"))
        return HistoryResponse(
            user_id=user,
            known=uidx >= 0,
            n_items=len(rows),
            items=rows[:limit],
            model_version=m.version,
        )

    @staticmethod
    def _history_item(m: LoadedModel, value: Any, idx: int, source: str) -> HistoryItem:
        if idx < 0:
            return HistoryItem(item_id=value, source=source)
        return HistoryItem(
            item_id=value,
            source=source,
            title=m.catalog.titles[idx],
            genres=list(m.catalog.genres[idx]),
        )

    def add_event(self, event: EventIn) -> EventReceipt:
        """Append an event durably (fsync) and apply it; the next request sees it."""
        state = self.state
        assert self._log is not None
        received = time.time()
        record = EventRecord(
            user_id=event.user_id,
            item_id=event.item_id,
            timestamp=event.unix_seconds(received),
            rating=event.rating,
            received=received,
        )
        self._log.append(record)
        state.online.sync()
        self.metrics.count_event()
        m = state.model
        user, uidx = m.users.lookup(event.user_id)
        item, iidx = m.items.lookup(event.item_id)
        return EventReceipt(
            user_id=user,
            item_id=item,
            known_user=uidx >= 0,
            known_item=iidx >= 0,
            n_user_events=len(state.online.items_of(user)),
        )

    # ------------------------------------------------------------------ reload
    def reload(self, artifact: Path | None = None) -> ReloadResponse:
        """Load an artifact beside the current one and swap atomically.

        Requests in flight finish on the old model. A damaged artifact is refused and the
        old one keeps serving.

        Raises
        ------
        ReloadBusyError
            If another reload is running.
        ArtifactError
            If the new artifact is missing, damaged or unreadable.
        """
        if not self._reload_lock.acquire(blocking=False):
            self.metrics.count_reload("busy")
            raise ReloadBusyError("a reload is already in progress; retry when it finishes")
        try:
            old = self.state
            target = Path(artifact) if artifact is not None else old.model.path
            try:
                model = self._load_model(target)
            except ArtifactError as exc:
                self.metrics.count_reload("refused")
                logger.error(
                    "reload refused artifact=%s still_serving=%s reason=%s",
                    target,
                    old.model.version,
                    exc,
                )
                raise
            new = self._new_state(model)
            self._state = new  # the swap: one reference assignment
            previous = old.model.version
            del old  # requests in flight keep it alive until they finish
            _freeze_heap("reload")  # one pause here rather than many during serving
            self.metrics.count_reload("ok")
            logger.info(
                "reloaded artifact=%s version=%s previous=%s load_s=%.2f",
                model.path,
                model.version,
                previous,
                model.load_seconds,
            )
            return ReloadResponse(
                model_version=model.version,
                previous_version=previous,
                artifact=str(model.path),
                load_seconds=model.load_seconds,
            )
        finally:
            self._reload_lock.release()
