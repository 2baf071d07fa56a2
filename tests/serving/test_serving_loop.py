"""Model work runs off the event loop (issue 14): ``/healthz`` and ``/metrics`` answer while a
model call is in flight.

A real uvicorn server on 127.0.0.1 (in a thread of this process, so the test can reach the
loaded pipeline) serves the tiny artifact. One pipeline method is wrapped by a gate that holds
its first call on a :class:`threading.Event`: the request that reaches it stays in flight, on
the real code path, until the test releases it. If that call ran on the event loop, the loop
would be blocked and ``/healthz`` could not answer before the release.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from recsys.pipeline import Pipeline
from recsys.serving import Settings, create_app
from recsys.serving.service import RecommendService
from recsys.serving.testing import free_port

pytestmark = pytest.mark.integration

#: Generous bounds that only stop a broken server from hanging the test; on a working one
#: every call here takes milliseconds.
HELD_S = 20.0
ANSWER_S = 5.0


class Gate:
    """Wraps a pipeline method: its first call waits for :meth:`release`, later calls pass.

    Records the name of the thread that made the held call.
    """

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method = method
        self.entered = threading.Event()
        self.released = threading.Event()
        self.thread_name: str | None = None
        self._first = True
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            hold, self._first = self._first, False
        if hold:
            self.thread_name = threading.current_thread().name
            self.entered.set()
            self.released.wait(HELD_S)  # bounded: a blocked loop gets back after this
        return self.method(*args, **kwargs)

    def release(self) -> None:
        """Let the held call go on."""
        self.released.set()


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            thread.join(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _app(tiny_artifact: Path, tmp_path: Path) -> FastAPI:
    """An app over the tiny artifact with no list cache and no warm-up: every plain
    request is a model call."""
    return create_app(
        Settings(
            artifact=tiny_artifact,
            events_log=tmp_path / "events.jsonl",
            recommend_cache_size=0,
            recommend_warm_users=0,
        )
    )


def _hold_while_probing(
    base: str, gate: Gate, send: Callable[[httpx.Client], httpx.Response]
) -> httpx.Response:
    """Send one request that the gate holds; while it is held, ``/healthz`` and ``/metrics``
    must answer. Returns the held request's response once released."""
    held: dict[str, httpx.Response | BaseException] = {}

    def run() -> None:
        try:
            with httpx.Client(base_url=base, timeout=HELD_S + ANSWER_S) as c:
                held["response"] = send(c)
        except BaseException as exc:  # reported by the main thread
            held["response"] = exc

    sender = threading.Thread(target=run, name="held-request")
    sender.start()
    try:
        assert gate.entered.wait(ANSWER_S), "the request never reached the model"
        with httpx.Client(base_url=base, timeout=ANSWER_S) as probe:
            health = probe.get("/healthz")
            metrics = probe.get("/metrics")
        # both answered while the model call was still held
        assert not gate.released.is_set() and sender.is_alive()
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert metrics.status_code == 200 and "recsys_" in metrics.text
    finally:
        gate.release()
        sender.join(HELD_S + 2 * ANSWER_S)
    response = held["response"]
    if isinstance(response, BaseException):
        raise response
    assert gate.thread_name is not None and gate.thread_name.startswith("recsys-model")
    return response


def _pipeline(app: FastAPI) -> Pipeline:
    service: RecommendService = app.state.service
    return service.state.model.pipeline


def test_healthz_answers_while_a_fold_in_is_in_flight(
    tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(tiny_artifact, tmp_path)
    body = {"user_id": "newcomer", "k": 5, "recent_items": ["i01", "i02", "i07"]}
    with live_server(app) as base:
        pipeline = _pipeline(app)
        gate = Gate(pipeline.recommend_block)
        monkeypatch.setattr(pipeline, "recommend_block", gate)
        response = _hold_while_probing(base, gate, lambda c: c.post("/recommend", json=body))
        assert response.status_code == 200
        again = httpx.post(f"{base}/recommend", json=body, timeout=ANSWER_S)
    # the held answer is the one the same request gets unhindered
    assert response.json() == again.json()
    assert len(response.json()["items"]) == 5


def test_healthz_answers_while_a_batched_model_call_is_in_flight(
    tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(tiny_artifact, tmp_path)
    users = ["u03", "u05", "007", "newcomer"]
    with live_server(app) as base:
        pipeline = _pipeline(app)
        gate = Gate(pipeline.recommend_block)
        monkeypatch.setattr(pipeline, "recommend_block", gate)
        queued: dict[str, httpx.Response] = {}

        def send(c: httpx.Client) -> httpx.Response:
            return c.get("/recommend/u01", params={"k": 4})

        def queue_more() -> None:
            # sent while the first flush is held: they wait for the next flush
            assert gate.entered.wait(ANSWER_S)
            with httpx.Client(base_url=base, timeout=HELD_S + ANSWER_S) as c:
                for user in users:
                    queued[user] = c.get(f"/recommend/{user}", params={"k": 4})

        more = threading.Thread(target=queue_more, name="queued-requests")
        more.start()
        first = _hold_while_probing(base, gate, send)
        more.join(HELD_S + 2 * ANSWER_S)
        monkeypatch.undo()
        with httpx.Client(base_url=base, timeout=ANSWER_S) as c:
            expected = {u: c.get(f"/recommend/{u}", params={"k": 4}).json() for u in users}
            first_expected = c.get("/recommend/u01", params={"k": 4}).json()
    assert first.status_code == 200 and first.json() == first_expected
    assert {u: r.json() for u, r in queued.items()} == expected
    assert expected["u03"]["strategy"] == "personalized"
    assert expected["newcomer"]["strategy"] == "cold_start"
