"""The serving building blocks on their own: ids, the events log, metrics, filters, batching,
the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ArtifactError
from recsys.pipeline import Pipeline
from recsys.serving.catalog import ItemCatalog
from recsys.serving.cli import add_serve_parser, cmd_serve, main
from recsys.serving.errors import BadRequestError
from recsys.serving.events import EventLog, EventRecord, OnlineState
from recsys.serving.ids import IdCodec
from recsys.serving.metrics import Metrics
from recsys.serving.service import ListCache, LoadedModel, _answer_rows, _MicroBatcher, _Row


# ---------------------------------------------------------------------------- ids
def test_int_vocabulary_parses_decimal_strings() -> None:
    codec = IdCodec(np.array([7, 196, 943], dtype=np.int64))
    assert codec.kind == "int"
    assert codec.lookup("196") == (196, 1)
    assert codec.lookup(196) == (196, 1)
    assert codec.lookup("-5") == (-5, -1)
    for raw in ("abc", "1e3", "19 6", "0x10", "196.0", "../196", "", "9" * 30):
        value, idx = codec.lookup(raw)
        assert (value, idx) == (raw, -1)
    assert codec.indices(["943", "nope", 7]).tolist() == [2, -1, 0]
    assert codec.values == [7, 196, 943]
    assert all(type(v) is int for v in codec.values)


def test_string_vocabulary_keeps_ids_verbatim() -> None:
    codec = IdCodec(np.array(["007", "7", "a/b"], dtype=object))
    assert codec.kind == "str"
    assert codec.lookup("007") == ("007", 0)
    assert codec.lookup("7") == ("7", 1)
    assert codec.lookup(7) == ("7", 1)
    assert codec.lookup("a/b") == ("a/b", 2)
    assert codec.lookup("07") == ("07", -1)


def test_mixed_vocabulary() -> None:
    ids = np.empty(3, dtype=object)
    ids[:] = [5, "x", "10"]
    codec = IdCodec(ids)
    assert codec.kind == "mixed"
    assert codec.lookup("5") == (5, 0)
    assert codec.lookup("10") == ("10", 2)  # the int 10 is not there, the string is
    assert codec.lookup("x") == ("x", 1)


# ---------------------------------------------------------------------------- events
def record(user: str | int, item: str | int, ts: int = 1) -> EventRecord:
    return EventRecord(user_id=user, item_id=item, timestamp=ts, rating=None, received=0.0)


def test_event_log_round_trip_and_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "state" / "events.jsonl"
    log = EventLog(path)
    log.append(record("u1", "i1"))
    log.append(record(2, "ü"))
    records, offset = log.read_from(0)
    assert [(r.user_id, r.item_id) for r in records] == [("u1", "i1"), (2, "ü")]
    assert offset == path.stat().st_size
    with open(path, "ab") as fh:  # a write cut short by a crash: not yet a line
        fh.write(b'{"user_id": "u3", "item_')
    more, offset2 = log.read_from(offset)
    assert more == [] and offset2 == offset
    log.close()


def test_event_log_skips_malformed_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b'{"user_id": "a", "item_id": "x", "timestamp": 1}\n'
        b"garbage\n"
        b'{"user_id": true, "item_id": "x", "timestamp": 1}\n'
        b'{"user_id": "b", "item_id": 3, "timestamp": 2, "rating": 4.0}\n'
    )
    records, _ = EventLog(path).read_from(0)
    assert [(r.user_id, r.item_id, r.rating) for r in records] == [("a", "x", None), ("b", 3, 4.0)]
    assert caplog.text.count("skipping malformed event line") == 2


def test_online_state_follows_the_log(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    codec_u = IdCodec(np.array([1, 2], dtype=np.int64))
    writer, reader = EventLog(path), EventLog(path)  # e.g. two worker processes
    state = OnlineState(reader, codec_u.parse, str, max_per_user=3)
    writer.append(record("1", "a"))
    writer.append(record(1, "b"))
    writer.append(record("new", "a"))
    state.sync()
    assert state.items_of(1) == ["a", "b"]  # "1" and 1 are the same user of an int vocab
    assert state.items_of("new") == ["a"]
    for item in ("a", "c", "d"):  # a repeat moves to the end; at most 3 are kept
        writer.append(record(1, item))
    state.sync()
    assert state.items_of(1) == ["a", "c", "d"]
    assert state.n_events == 6
    path.unlink()  # e.g. the artifact directory was saved anew: the writer reopens
    state.sync()
    writer.append(record(2, "z"))
    state.sync()
    assert state.items_of(1) == ["a", "c", "d"]  # nothing accepted is forgotten
    assert state.items_of(2) == ["z"]
    assert [r.item_id for r in EventLog(path).read_from(0)[0]] == ["z"]


# ---------------------------------------------------------------------------- metrics
def test_metrics_exposition_format() -> None:
    m = Metrics()
    m.observe_request("/recommend", "GET", 200, 0.0007)
    m.observe_request("/recommend", "GET", 200, 0.03)
    m.observe_request('/we"ird\\', "POST", 422, 0.002)
    m.count_recommendation("personalized", 3)
    m.count_recommendation("cold_start")
    m.count_reload("refused")
    text = m.render(model_version="v1", loaded_at=123.0)
    line = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)+\})? [-+0-9.eInf]+$')
    for row in text.splitlines():
        assert row.startswith("# ") or line.match(row), row
    assert 'recsys_request_duration_seconds_bucket{route="/recommend",le="0.001"} 1' in text
    assert 'recsys_request_duration_seconds_bucket{route="/recommend",le="0.05"} 2' in text
    assert 'recsys_request_duration_seconds_count{route="/recommend"} 2' in text
    assert 'route="/we\\"ird\\\\"' in text
    assert "recsys_cold_start_ratio 0.25" in text
    assert 'recsys_reloads_total{result="refused"} 1' in text
    assert 'recsys_model_info{version="v1"} 1' in text


# ---------------------------------------------------------------------------- catalogue
def test_catalog_genre_filters() -> None:
    cat = ItemCatalog(["A", None, "C"], [("Comedy",), ("Drama", "Comedy"), ()])
    assert cat.genre_names == ["Comedy", "Drama"]
    assert cat.blocked(None, None) is None
    assert cat.blocked(["Drama"], None).tolist() == [True, False, True]
    assert cat.blocked(["Comedy"], ["Drama"]).tolist() == [False, True, True]
    with pytest.raises(BadRequestError, match="unknown genre 'Western'"):
        cat.blocked(["Western"], None)
    assert ItemCatalog.empty(2).blocked(None, []) is None


# ---------------------------------------------------------------------------- cache
def test_list_cache_is_a_bounded_lru() -> None:
    cache = ListCache(2)
    lists = [
        (np.arange(3, dtype=np.int64), np.ones(3, np.float32), np.array(["a", "b", "c|d"], object))
        for _ in range(3)
    ]
    cache.put((1, None), lists[0])
    cache.put((2, None), lists[1])
    assert cache.get((1, None), 3) is not None  # now the most recently used
    cache.put((3, None), lists[2])
    assert cache.get((2, None), 3) is None and len(cache) == 2
    items, _, sources = cache.get((1, None), 3)  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        items[0] = 7
    with pytest.raises(ValueError, match="read-only"):
        sources[0] = "x"
    assert lists[0][0].flags.writeable  # the caller's arrays are untouched
    # one list answers every shorter k; a longer k is a miss; a shorter put keeps the longer
    assert cache.get((1, None), 2)[0].tolist() == [0, 1]  # type: ignore[index]
    assert cache.get((1, None), 4) is None
    cache.put((1, None), (np.arange(1), np.ones(1, np.float32), np.array(["a"], object)))
    assert cache.get((1, None), 3) is not None
    off = ListCache(0)
    off.put((1, None), lists[0])
    assert off.get((1, None), 3) is None and len(off) == 0


def test_warm_cache_holds_the_pipeline_lists(tiny_artifact: Path, tiny_pipeline: Pipeline) -> None:
    model = LoadedModel.load(tiny_artifact, cache_size=1000, warm_users=8, warm_k=6)
    assert len(model.cache) == 8
    activity = np.diff(model.seen.indptr)
    warmed = [u for u in range(len(activity)) if model.cache.get((u, None), 1) is not None]
    # the most active users, and exactly the lists the pipeline gives for every k <= 6
    assert sorted(activity[warmed]) == sorted(np.sort(activity)[::-1][:8])
    for u in warmed[:3]:
        for k in (1, 3, 6):
            items, scores, sources = model.cache.get((u, None), k)  # type: ignore[misc]
            want_i, want_s, want_src = tiny_pipeline.recommend_lists([u], k)
            assert items.tolist() == want_i[0].tolist()
            np.testing.assert_allclose(scores, want_s[0], rtol=1e-6)
            assert sources.tolist() == want_src[0].tolist()
        assert model.cache.get((u, None), 7) is None  # longer than warmed: computed on demand
    cold = LoadedModel.load(tiny_artifact, cache_size=0, warm_users=8)
    assert len(cold.cache) == 0


# ---------------------------------------------------------------------------- batching
def test_micro_batch_equals_single_calls(tiny_pipeline: Pipeline) -> None:
    users = [0, 5, -1, 3, 5, 20]
    ks = [3, 10, 4, 1, 2, 7]

    histories: list[np.ndarray | None] = [None, None, None, None, np.array([1, 2]), None]

    async def run() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
        batcher = _MicroBatcher(asyncio.get_running_loop())
        futures = [
            batcher.submit(tiny_pipeline, None, _Row(u, h), k)
            for u, h, k in zip(users, histories, ks, strict=True)
        ]
        return list(await asyncio.gather(*futures))

    batched = asyncio.run(run())
    for (items, scores, sources, _), u, h, k in zip(batched, users, histories, ks, strict=True):
        (single_items, single_scores, single_sources, _) = _answer_rows(
            tiny_pipeline, None, [_Row(u, h)], k
        )[0]
        assert items.tolist() == single_items.tolist()
        # exact by construction: the tiny artifact scores with sparse products and fixed-order
        # trees only, and batch and single call take the one path
        assert scores.tobytes() == single_scores.tobytes()
        assert sources.tolist() == single_sources.tolist()
        if h is None:
            want_i, _, want_src = tiny_pipeline.recommend_lists([u], k)
            assert sources.tolist() == want_src[0][want_i[0] >= 0].tolist()
            assert items.tolist() == want_i[0][want_i[0] >= 0].tolist()
    assert batched[4][3] == "personalized" and batched[2][3] == "cold_start"
    popular = _answer_rows(tiny_pipeline, "popular", [_Row(1), _Row(2)], 5)
    assert [len(a[0]) for a in popular] == [5, 5]


def test_micro_batch_lingers_for_returning_clients_only(tiny_pipeline: Pipeline) -> None:
    """After a flush of several waiters the next flush waits for as many requests (not for
    the timer), so closed-loop clients share calls; a lone client never waits (#15)."""
    sizes: list[int] = []

    async def run() -> float:
        loop = asyncio.get_running_loop()
        batcher = _MicroBatcher(loop, linger_s=30.0)
        compute = batcher._compute

        def counted(pending: list) -> list:  # type: ignore[type-arg]
            sizes.append(len(pending))
            return compute(pending)

        batcher._compute = counted  # type: ignore[method-assign]
        t0 = loop.time()
        await batcher.submit(tiny_pipeline, None, _Row(0), 3)  # alone: no linger after it
        await batcher.submit(tiny_pipeline, None, _Row(1), 3)
        for _ in range(3):  # three clients in a closed loop
            await asyncio.gather(
                *(batcher.submit(tiny_pipeline, None, _Row(u), 3) for u in (0, 1, 2))
            )
        return loop.time() - t0

    elapsed = asyncio.run(run())
    assert elapsed < 10.0  # never waited for the 30 s timer
    assert sizes == [1, 1, 3, 3, 3]


def test_micro_batch_passes_errors_to_every_waiter(tiny_pipeline: Pipeline) -> None:
    async def run() -> list[object]:
        batcher = _MicroBatcher(asyncio.get_running_loop())
        futures = [batcher.submit(tiny_pipeline, "no-such-model", _Row(u), 3) for u in (0, 1)]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    results = asyncio.run(run())
    assert all(isinstance(r, ValueError) and "no-such-model" in str(r) for r in results)


# ---------------------------------------------------------------------------- cli
def test_serve_parser_and_bad_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="recsys")
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--artifact", str(tmp_path / "missing"), "--port", "0"])
    assert (args.host, args.port, args.workers, args.func) == ("127.0.0.1", 0, 1, cmd_serve)
    with pytest.raises(ArtifactError, match="does not exist"):
        cmd_serve(args)
    for bad in (["--port", "70000"], ["--workers", "0"], ["--port", "http"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--artifact", "x", *bad])
    assert main(["--artifact", str(tmp_path / "missing")]) == 1
    assert "recsys: error: artifact" in capsys.readouterr().err


def test_event_record_line_is_json(tmp_path: Path) -> None:
    line = EventRecord("u", 5, 10, 3.5, 1.25).to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "user_id": "u",
        "item_id": 5,
        "timestamp": 10,
        "rating": 3.5,
        "received": 1.25,
    }
