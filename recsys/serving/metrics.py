"""Request and model metrics in the Prometheus text exposition format (version 0.0.4).

Written by hand (a few counters and histograms) rather than pulling in a client library.
Metrics are per process: with ``--workers N`` each worker answers for itself.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency histogram bucket upper bounds, in seconds.
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    """Thread-safe counters and latency histograms of one server process.

    Stability: internal
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self._strategies: dict[str, int] = defaultdict(int)
        self._events = 0
        self._reloads: dict[str, int] = defaultdict(int)
        self._model_calls = 0
        self._model_call_lists = 0
        self._cache = {"hit": 0, "miss": 0}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and record its latency under its route template."""
        with self._lock:
            self._requests[(route, method, str(status))] += 1
            self._latency[route].observe(seconds)

    def count_recommendation(self, strategy: str, n: int = 1) -> None:
        """Count ``n`` recommendation lists answered with ``strategy``."""
        with self._lock:
            self._strategies[strategy] += n

    def count_model_call(self, n_lists: int) -> None:
        """Count one batched model call that answered ``n_lists`` recommendation lists."""
        with self._lock:
            self._model_calls += 1
            self._model_call_lists += n_lists

    def count_cache(self, hit: bool) -> None:
        """Count one lookup of the plain-list cache."""
        with self._lock:
            self._cache["hit" if hit else "miss"] += 1

    def count_event(self) -> None:
        """Count one accepted event."""
        with self._lock:
            self._events += 1

    def count_reload(self, result: str) -> None:
        """Count one reload attempt by result (``ok``, ``refused``, ``busy``)."""
        with self._lock:
            self._reloads[result] += 1

    def render(self, *, model_version: str | None, loaded_at: float | None) -> str:
        """The whole exposition as text."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("recsys_requests_total", "counter", "HTTP requests by route, method, status.")
            for (route, method, status), n in sorted(self._requests.items()):
                lab = _labels(route=route, method=method, status=status)
                out.append(f"recsys_requests_total{lab} {n}")
            family(
                "recsys_request_duration_seconds",
                "histogram",
                "Request latency by route template.",
            )
            for route, h in sorted(self._latency.items()):
                cum = 0
                for bound, count in zip((*BUCKETS, math.inf), h.counts, strict=True):
                    cum += count
                    lab = _labels(route=route, le=_num(bound))
                    out.append(f"recsys_request_duration_seconds_bucket{lab} {cum}")
                lab = _labels(route=route)
                out.append(f"recsys_request_duration_seconds_sum{lab} {h.total!r}")
                out.append(f"recsys_request_duration_seconds_count{lab} {h.n}")
            family(
                "recsys_recommendations_total",
                "counter",
                "Recommendation lists answered, by strategy.",
            )
            for strategy in sorted({"personalized", "fold_in", "cold_start", *self._strategies}):
                lab = _labels(strategy=strategy)
                out.append(f"recsys_recommendations_total{lab} {self._strategies[strategy]}")
            total = sum(self._strategies.values())
            family(
                "recsys_cold_start_ratio",
                "gauge",
                "Share of recommendation lists answered by the cold-start strategy.",
            )
            ratio = self._strategies["cold_start"] / total if total else 0.0
            out.append(f"recsys_cold_start_ratio {ratio!r}")
            family(
                "recsys_model_calls_total",
                "counter",
                "Batched model calls of plain recommendation requests.",
            )
            out.append(f"recsys_model_calls_total {self._model_calls}")
            family(
                "recsys_model_call_lists_total",
                "counter",
                "Lists answered by those calls (divided by the calls: the mean batch size).",
            )
            out.append(f"recsys_model_call_lists_total {self._model_call_lists}")
            family(
                "recsys_recommend_cache_total",
                "counter",
                "Lookups of the plain top-list cache by result (hit, miss).",
            )
            for result in ("hit", "miss"):
                out.append(
                    f"recsys_recommend_cache_total{_labels(result=result)} {self._cache[result]}"
                )
            family("recsys_events_total", "counter", "Interaction events accepted.")
            out.append(f"recsys_events_total {self._events}")
            family("recsys_reloads_total", "counter", "Artifact reload attempts by result.")
            for result in sorted({"ok", "refused", *self._reloads}):
                out.append(f"recsys_reloads_total{_labels(result=result)} {self._reloads[result]}")
        family("recsys_model_info", "gauge", "The loaded model version (value 1).")
        if model_version is not None:
            out.append(f"recsys_model_info{_labels(version=model_version)} 1")
        family("recsys_model_loaded_timestamp_seconds", "gauge", "When the model was loaded.")
        if loaded_at is not None:
            out.append(f"recsys_model_loaded_timestamp_seconds {loaded_at!r}")
        family("recsys_process_start_time_seconds", "gauge", "When this process started.")
        out.append(f"recsys_process_start_time_seconds {self.started!r}")
        return "\n".join(out) + "\n"
