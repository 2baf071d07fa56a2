"""The HTTP API over a tiny real artifact, through TestClient (lifespan included)."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recsys.features import FeatureStore
from recsys.pipeline import Pipeline
from recsys.serving.schemas import MAX_BATCH, MAX_K


def item_ids(body: dict[str, Any]) -> list[Any]:
    return [it["item_id"] for it in body["items"]]


# ---------------------------------------------------------------------------- contract
def test_recommend_known_user_contract(client: TestClient, tiny_pipeline: Pipeline) -> None:
    r = client.get("/recommend/u03", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"user_id", "items", "strategy", "model_version"}
    assert body["user_id"] == "u03"
    assert body["strategy"] == "personalized"
    assert body["model_version"] == tiny_pipeline.version
    assert [it["rank"] for it in body["items"]] == [1, 2, 3, 4, 5]
    expected = tiny_pipeline.recommend(["u03"], k=5)
    for it, sources in zip(body["items"], expected["sources"], strict=True):
        assert set(it) == {"item_id", "score", "rank", "sources"}
        assert it["sources"] == sources.split("|")  # the candidate sources of the hybrid
        assert isinstance(it["item_id"], str)
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # the same answer as the pipeline itself, and never a training item
    assert item_ids(body) == expected["item_id"].tolist()
    assert not set(item_ids(body)) & set(tiny_pipeline.history_of("u03").tolist())
    assert r.headers["x-request-id"]


def test_get_and_post_agree(client: TestClient) -> None:
    get = client.get("/recommend/u10?k=7").json()
    post = client.post("/recommend", json={"user_id": "u10", "k": 7}).json()
    assert get == post


def test_string_ids_are_kept_verbatim(client: TestClient, tiny_pipeline: Pipeline) -> None:
    body = client.get("/recommend/007?k=3").json()
    assert body["user_id"] == "007"
    assert body["strategy"] == "personalized"
    # "7" is another (unknown) user: ids are never reinterpreted as numbers
    assert client.get("/recommend/7?k=3").json()["strategy"] == "cold_start"
    # a JSON number means its string form in a string vocabulary
    assert client.post("/recommend", json={"user_id": 7, "k": 3}).json()["user_id"] == "7"


def test_unknown_user_gets_popularity(client: TestClient, tiny_pipeline: Pipeline) -> None:
    body = client.get("/recommend/nobody-here?k=4").json()
    assert body["strategy"] == "cold_start"
    assert {s for it in body["items"] for s in it["sources"]} == {"popular"}
    expected = tiny_pipeline.recommend(["nobody-here"], k=4)
    assert item_ids(body) == expected["item_id"].tolist()


def test_unknown_user_folds_in_recent_items(client: TestClient, tiny_pipeline: Pipeline) -> None:
    recent = ["i00", "i01", "i02"]
    body = client.post(
        "/recommend", json={"user_id": "brand-new", "k": 5, "recent_items": recent}
    ).json()
    assert body["strategy"] == "fold_in"  # a history: not cold (issue 15)
    assert not set(item_ids(body)) & set(recent)
    ids, _, sources = tiny_pipeline.recommend_for_history_lists([recent], 5)
    assert item_ids(body) == [x for x in ids[0].tolist() if x is not None]
    assert [it["sources"] for it in body["items"]] == [s.split("|") for s in sources[0]]
    assert body["items"][0]["sources"] != ["popular"]


def test_exclude_items_and_genre_filters(client: TestClient) -> None:
    full = item_ids(client.get("/recommend/u05?k=10").json())
    excluded = full[:2]
    body = client.post(
        "/recommend", json={"user_id": "u05", "k": 10, "exclude_items": excluded}
    ).json()
    assert not set(item_ids(body)) & set(excluded)
    assert len(body["items"]) == 10
    comedy = client.post(
        "/recommend",
        json={"user_id": "u05", "k": 5, "filters": {"genres": ["Comedy"]}, "details": True},
    ).json()
    assert comedy["items"] and all("Comedy" in it["genres"] for it in comedy["items"])
    no_drama = client.post(
        "/recommend",
        json={"user_id": "u05", "k": 8, "filters": {"exclude_genres": ["Drama"]}, "details": True},
    ).json()
    assert no_drama["items"] and all("Drama" not in it["genres"] for it in no_drama["items"])
    r = client.post("/recommend", json={"user_id": "u05", "filters": {"genres": ["Western"]}})
    assert r.status_code == 422
    assert "Western" in r.json()["detail"] and "Comedy" in r.json()["detail"]


def test_model_choice(client: TestClient, tiny_pipeline: Pipeline) -> None:
    body = client.post("/recommend", json={"user_id": "u01", "k": 3, "model": "popular"}).json()
    assert body["items"][0]["sources"] == ["popular"]
    r = client.post("/recommend", json={"user_id": "u01", "model": "nonexistent"})
    assert r.status_code == 422
    assert "nonexistent" in r.json()["detail"]


def test_batch_matches_single_requests(client: TestClient) -> None:
    reqs = [
        {"user_id": "u01", "k": 3},
        {"user_id": "stranger", "k": 2},
        {"user_id": "u02", "k": 4, "recent_items": ["i15"]},
        {"user_id": "u03", "k": 5, "model": "popular"},
    ]
    r = client.post("/recommend/batch", json={"requests": reqs})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == len(reqs)
    for req, res in zip(reqs, results, strict=True):
        assert res == client.post("/recommend", json=req).json()
    too_many = {"requests": [{"user_id": "u01"}] * (MAX_BATCH + 1)}
    assert client.post("/recommend/batch", json=too_many).status_code == 422
    assert client.post("/recommend/batch", json={"requests": []}).status_code == 422


def test_similar_items(client: TestClient, tiny_pipeline: Pipeline) -> None:
    body = client.get("/similar-items/i04?k=3&details=true").json()
    assert body["strategy"] == "similar"
    assert body["item_id"] == "i04"
    expected = tiny_pipeline.similar_items("i04", 3)
    assert item_ids(body) == expected["item_id"].tolist()
    assert all(it["genres"] for it in body["items"])
    unknown = client.get("/similar-items/no-such-item?k=3").json()
    assert unknown["strategy"] == "cold_start"
    assert len(unknown["items"]) == 3


def test_genres_and_users(client: TestClient, tiny_pipeline: Pipeline) -> None:
    assert client.get("/genres").json()["genres"] == [
        "Action",
        "Comedy",
        "Drama",
        "Horror",
        "Romance",
    ]
    users = client.get("/users?limit=5").json()
    assert users["total"] == len(tiny_pipeline.user_map)
    assert users["user_ids"] == tiny_pipeline.user_map.ids[:5].tolist()


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_plain_lists_are_cached_per_model(
    make_client: Callable[..., TestClient], admin_headers: dict[str, str]
) -> None:
    client = make_client(recommend_warm_users=0)
    first = client.get("/recommend/u12?k=4").json()
    assert client.get("/recommend/u12?k=4").json() == first
    assert client.post("/recommend/batch", json={"requests": [{"user_id": "u12", "k": 4}]}).json()[
        "results"
    ] == [first]
    assert metric(client, 'recsys_recommend_cache_total{result="hit"}') == 2
    assert metric(client, 'recsys_recommend_cache_total{result="miss"}') == 1
    assert metric(client, "recsys_model_calls_total") == 1
    # filtered lists are computed every time, never cached
    for _ in range(2):
        client.post("/recommend", json={"user_id": "u12", "filters": {"genres": ["Drama"]}})
    assert metric(client, "recsys_model_calls_total") == 3
    # a reload starts a new, empty cache
    client.post("/admin/reload", headers=admin_headers)
    assert client.get("/recommend/u12?k=4").json()["items"] == first["items"]
    assert metric(client, 'recsys_recommend_cache_total{result="miss"}') == 2
    # one list per user answers every shorter k
    shorter = client.get("/recommend/u12?k=2").json()
    assert shorter["items"] == first["items"][:2]
    assert metric(client, 'recsys_recommend_cache_total{result="hit"}') == 3
    # warmed at start-up: every known user's list is there before the first request
    warm = make_client(recommend_warm_k=10)
    assert warm.get("/recommend/u12?k=4").json()["items"] == first["items"]
    assert warm.get("/recommend/u03?k=10").status_code == 200
    assert metric(warm, "recsys_model_calls_total") == 0
    assert metric(warm, 'recsys_recommend_cache_total{result="hit"}') == 2
    assert warm.get("/recommend/u03?k=11").status_code == 200  # longer than warmed
    assert metric(warm, "recsys_model_calls_total") == 1
    uncached = make_client(recommend_cache_size=0)
    for _ in range(2):
        assert uncached.get("/recommend/u12?k=4").json() == first
    assert metric(uncached, "recsys_model_calls_total") == 2
    assert metric(uncached, 'recsys_recommend_cache_total{result="hit"}') == 0


@pytest.mark.skipif(
    not hasattr(FeatureStore, "item_titles"),
    reason="the FeatureStore keeps no item titles yet (FeatureStore.item_titles)",
)
def test_titles_come_from_the_feature_store(client: TestClient) -> None:
    body = client.get("/recommend/u04?k=3&details=true").json()
    for it in body["items"]:
        assert it["title"] == f"Item number {int(it['item_id'][1:])}"
    history = client.get("/users/u04/history").json()
    assert all(it["title"].startswith("Item number") for it in history["items"])


# ---------------------------------------------------------------------------- events
def test_event_changes_the_next_recommendation(client: TestClient) -> None:
    before = client.get("/recommend/u07?k=5").json()
    top = before["items"][0]["item_id"]
    r = client.post("/events", json={"user_id": "u07", "item_id": top, "rating": 4.5})
    assert r.status_code == 201
    assert r.json() == {
        "accepted": True,
        "user_id": "u07",
        "item_id": top,
        "known_user": True,
        "known_item": True,
        "n_user_events": 1,
    }
    after = client.get("/recommend/u07?k=5").json()
    assert top not in item_ids(after)
    assert after["strategy"] == "personalized"
    history = client.get("/users/u07/history").json()
    assert history["known"] is True
    assert history["items"][0]["item_id"] == top
    assert history["items"][0]["source"] == "event"
    assert {it["source"] for it in history["items"][1:]} == {"training"}


def test_events_reach_the_feature_store_online_view(client: TestClient) -> None:
    store = client.app.state.service.state.model.pipeline.features  # type: ignore[attr-defined]
    before = store.online_user_features(["u11"])
    client.post("/events", json={"user_id": "u11", "item_id": "i19", "timestamp": 1_800_000_000})
    after = store.online_user_features(["u11"])
    assert int(after["user_count"][0]) == int(before["user_count"][0]) + 1
    assert int(after["user_last_timestamp"][0]) == 1_800_000_000
    last = after["user_recent_items"][0][-1]
    assert store.item_map.ids[last] == "i19"
    # an unseen user joins the online view too
    client.post(
        "/events", json={"user_id": "walk-in", "item_id": "i01", "timestamp": 1_800_000_001}
    )
    assert int(store.online_user_features(["walk-in"])["user_count"][0]) == 1


def test_strategy_says_what_answered(client: TestClient) -> None:
    """personalized / fold_in / cold_start, by the history the request brings (issue 15)."""

    def strategy(body: dict[str, object]) -> object:
        return client.post("/recommend", json={"k": 3, **body}).json()["strategy"]

    assert strategy({"user_id": "u01"}) == "personalized"
    assert strategy({"user_id": "u01", "recent_items": ["i05"]}) == "personalized"
    assert strategy({"user_id": "nobody", "recent_items": ["i05"]}) == "fold_in"
    # only unknown items: nothing to fold in, the popularity list answers
    body = client.post(
        "/recommend", json={"user_id": "nobody", "k": 3, "recent_items": ["no-such-item"]}
    ).json()
    assert body["strategy"] == "cold_start"
    assert {s for it in body["items"] for s in it["sources"]} == {"popular"}
    assert strategy({"user_id": "nobody"}) == "cold_start"
    text = client.get("/metrics").text
    assert 'recsys_recommendations_total{strategy="fold_in"} 1' in text


def test_unknown_user_events_give_a_fold_in(client: TestClient, tiny_pipeline: Pipeline) -> None:
    for item in ("i03", "i04"):
        client.post("/events", json={"user_id": "fresh-user", "item_id": item})
    body = client.get("/recommend/fresh-user?k=5").json()
    assert body["strategy"] == "fold_in"  # events are a history: not cold (issue 15)
    ids, _, sources = tiny_pipeline.recommend_for_history_lists([["i03", "i04"]], 5)
    assert item_ids(body) == [x for x in ids[0].tolist() if x is not None]
    assert [it["sources"] for it in body["items"]] == [s.split("|") for s in sources[0]]
    assert body["items"][0]["sources"] != ["popular"]  # folded in, not the popularity list
    assert not {"i03", "i04"} & set(item_ids(body))


def test_events_are_durable_and_replayed(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    log = tmp_path / "replay.jsonl"
    first = make_client(events_log=log)
    top = first.get("/recommend/u09?k=1").json()["items"][0]["item_id"]
    assert first.post("/events", json={"user_id": "u09", "item_id": top}).status_code == 201
    # unknown items are accepted and logged (for retraining), flagged as unusable
    r = first.post("/events", json={"user_id": "u09", "item_id": "not-in-catalogue"})
    assert r.status_code == 201 and r.json()["known_item"] is False
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["user_id"], x["item_id"]) for x in lines] == [
        ("u09", top),
        ("u09", "not-in-catalogue"),
    ]
    second = make_client(events_log=log)  # a restart: a new process state from the log
    assert top not in item_ids(second.get("/recommend/u09?k=10").json())
    assert second.get("/users/u09/history").json()["items"][0]["source"] == "event"


def test_event_validation(client: TestClient) -> None:
    ok = client.post(
        "/events", json={"user_id": "u01", "item_id": "i02", "timestamp": "2024-05-01T10:00:00Z"}
    )
    assert ok.status_code == 201
    for bad in (
        {"user_id": "u01"},
        {"user_id": "u01", "item_id": "i02", "rating": "five"},
        {"user_id": "u01", "item_id": "i02", "timestamp": "yesterday"},
        {"user_id": "u01", "item_id": "i02", "timestamp": -5},
        {"user_id": True, "item_id": "i02"},
        {"user_id": "u01", "item_id": 1.5},
        {"user_id": "", "item_id": "i02"},
        {"user_id": "u01", "item_id": "i02", "extra": 1},
    ):
        r = client.post("/events", json=bad)
        assert r.status_code == 422, bad
        assert r.json()["detail"]


# ---------------------------------------------------------------------------- admin
def test_admin_auth(make_client: Callable[..., TestClient], admin_headers: dict[str, str]) -> None:
    client = make_client()
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 403
    assert (
        client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
    )
    key = admin_headers["X-API-Key"]
    ok = client.post("/admin/reload", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    disabled = make_client(admin_key=None)
    r = disabled.post("/admin/reload", headers=admin_headers)
    assert r.status_code == 403
    assert "RECSYS_ADMIN_KEY" in r.json()["detail"]


def test_reload_swaps_to_a_new_artifact(
    client: TestClient, other_artifact: Path, admin_headers: dict[str, str]
) -> None:
    old = client.get("/readyz").json()["model_version"]
    new_version = Pipeline.load(other_artifact).version
    assert new_version != old
    r = client.post("/admin/reload", headers=admin_headers, json={"artifact": str(other_artifact)})
    assert r.status_code == 200
    assert r.json()["model_version"] == new_version
    assert r.json()["previous_version"] == old
    assert client.get("/recommend/u01").json()["model_version"] == new_version
    assert client.get("/readyz").json()["model_version"] == new_version


def damage_checksum(path: Path) -> None:
    target = path / "models" / "itemknn" / "state.npz"
    target.write_bytes(target.read_bytes() + b"x")


def remove_file(path: Path) -> None:
    (path / "vocab" / "items.parquet").unlink()


def break_manifest(path: Path) -> None:
    (path / "manifest.json").write_text("{not json")


@pytest.mark.parametrize("damage", [damage_checksum, remove_file, break_manifest])
def test_damaged_artifact_is_refused_and_old_keeps_serving(
    client: TestClient,
    artifact_copy: Path,
    damage: Callable[[Path], None],
    admin_headers: dict[str, str],
) -> None:
    before = client.get("/recommend/u02?k=3").json()
    damage(artifact_copy)
    r = client.post("/admin/reload", headers=admin_headers, json={"artifact": str(artifact_copy)})
    assert r.status_code == 409
    assert "artifact" in r.json()["detail"]
    assert "Traceback" not in r.text
    assert client.get("/recommend/u02?k=3").json() == before
    assert client.get("/metrics").text.count('recsys_reloads_total{result="refused"} 1') == 1


def test_reload_of_missing_directory(
    client: TestClient, tmp_path: Path, admin_headers: dict[str, str]
) -> None:
    r = client.post(
        "/admin/reload", headers=admin_headers, json={"artifact": str(tmp_path / "nope")}
    )
    assert r.status_code == 409
    assert client.get("/readyz").status_code == 200


def test_server_refuses_to_start_on_a_damaged_artifact(
    make_client: Callable[..., TestClient], artifact_copy: Path
) -> None:
    damage_checksum(artifact_copy)
    with pytest.raises(OSError, match="checksum mismatch"):
        make_client(artifact=artifact_copy)


# ---------------------------------------------------------------------------- health, metrics, page
def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.get("/recommend/u01")
    client.get("/recommend/somebody-new")
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert (
        'recsys_requests_total{route="/recommend/{user_id:path}",method="GET",status="200"} 2'
        in text
    )
    assert (
        'recsys_request_duration_seconds_bucket{route="/recommend/{user_id:path}",le="+Inf"} 2'
        in text
    )
    assert 'recsys_recommendations_total{strategy="cold_start"} 1' in text
    assert "recsys_cold_start_ratio 0.5" in text
    # u01's list was warmed at start-up (a cache hit); the unknown user's is computed
    assert "recsys_model_calls_total 1" in text
    assert "recsys_model_call_lists_total 1" in text
    assert 'recsys_recommend_cache_total{result="hit"} 1' in text
    version = client.get("/readyz").json()["model_version"]
    assert f'recsys_model_info{{version="{version}"}} 1' in text


def test_page_and_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../settings.py").status_code == 404
    assert client.get("/static/nothing.js").status_code == 404
    assert "/recommend" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------------------- malformed input
JSON_TYPE = {"content-type": "application/json"}
MALFORMED: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/recommend", {"content": b"{not json", "headers": JSON_TYPE}),
    ("POST", "/recommend", {"content": b"", "headers": JSON_TYPE}),
    ("POST", "/recommend", {"content": b"\xff\xfe\x00", "headers": JSON_TYPE}),
    (
        "POST",
        "/recommend",
        {"content": b'{"user_id": "u01"}', "headers": {"content-type": "text/csv"}},
    ),
    ("POST", "/events", {"content": b'{"user_id": "u01", "item_id": ', "headers": JSON_TYPE}),
    ("POST", "/recommend", {"json": []}),
    ("POST", "/recommend", {"json": "user"}),
    ("POST", "/recommend", {"json": {}}),
    ("POST", "/recommend", {"json": {"user_id": None}}),
    ("POST", "/recommend", {"json": {"user_id": {"a": 1}}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "k": "ten"}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "k": 0}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "k": MAX_K + 1}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "k": 10**30}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "k": 2.5}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "recent_items": "i01"}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "recent_items": [None]}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "recent_items": ["i01"] * 501}}),
    ("POST", "/recommend", {"json": {"user_id": "x" * 257}}),
    ("POST", "/recommend", {"json": {"user_id": 2**64}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "filters": {"year": 1990}}}),
    ("POST", "/recommend", {"json": {"user_id": "u01", "filters": {"genres": "Comedy"}}}),
    ("POST", "/recommend/batch", {"json": {"requests": "all"}}),
    ("POST", "/recommend/batch", {"json": {"requests": [{"k": 1}]}}),
    ("GET", "/recommend/u01?k=0", {}),
    ("GET", "/recommend/u01?k=-3", {}),
    ("GET", "/recommend/u01?k=abc", {}),
    ("GET", f"/recommend/u01?k={MAX_K + 1}", {}),
    ("GET", "/recommend/u01?k=99999999999999999999999", {}),
    ("GET", "/recommend/" + "y" * 300, {}),
    ("GET", "/similar-items/i01?k=1000", {}),
    ("GET", "/users?limit=0", {}),
    ("GET", "/nope", {}),
    ("PUT", "/recommend", {"json": {"user_id": "u01"}}),
    ("DELETE", "/events", {}),
    ("POST", "/admin/reload", {"json": {"artifact": 5}, "headers": {"X-API-Key": "k"}}),
]


@pytest.mark.parametrize(("method", "url", "kwargs"), MALFORMED)
def test_malformed_requests_get_4xx(
    client: TestClient, method: str, url: str, kwargs: dict[str, Any]
) -> None:
    r = client.request(method, url, **kwargs)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert body["detail"]
    assert "Traceback" not in r.text and 'File "' not in r.text


WEIRD_IDS = [
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "%E2%9C%93%20caf%C3%A9",
    "a%22b%27c",
    "{user}",
    "%25s%25n",
    "%F0%9F%98%80",
    "%5C..%5Cwindows",
]


@pytest.mark.parametrize("raw", WEIRD_IDS)
def test_weird_ids_are_opaque_unknown_users(client: TestClient, raw: str) -> None:
    r = client.get(f"/recommend/{raw}?k=3")
    assert r.status_code == 200
    assert r.json()["strategy"] == "cold_start"
    assert r.json()["user_id"] == urllib.parse.unquote(raw)
    r = client.get(f"/similar-items/{raw}?k=3")
    assert r.status_code == 200
    assert r.json()["strategy"] == "cold_start"


def test_weird_ids_in_json_bodies(client: TestClient) -> None:
    for raw in ("../../etc/passwd\x00", "\r\nSet-Cookie: x=1", "%s%n{0}", "ü🙂"):
        r = client.post("/recommend", json={"user_id": raw, "k": 2, "recent_items": [raw]})
        assert r.status_code == 200
        assert r.json()["user_id"] == raw
        r = client.post("/events", json={"user_id": raw, "item_id": raw})
        assert r.status_code == 201


def test_line_breaks_in_path_ids_do_not_route(client: TestClient) -> None:
    # the path converter never matches CR/LF: a 404, never a header injection or a 5xx
    r = client.get("/recommend/%0d%0aSet-Cookie:%20x=1?k=3")
    assert r.status_code == 404
    assert "set-cookie" not in r.headers


def test_body_size_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=4096)
    big = {"user_id": "u01", "exclude_items": ["i" * 200] * 100}
    r = client.post("/recommend", json=big)
    assert r.status_code == 413
    assert "4096" in r.json()["detail"]

    def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/recommend/u01").status_code == 200


def test_request_id_is_echoed_when_safe(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"
    assert client.get("/nope").json()["request_id"]


def test_recommend_scores_are_finite(client: TestClient, tiny_pipeline: Pipeline) -> None:
    for user in tiny_pipeline.user_map.ids[:10].tolist():
        body = client.get(f"/recommend/{user}?k={MAX_K}").json()
        assert np.isfinite([it["score"] for it in body["items"]]).all()
        # a tiny catalogue: every unseen item, each once
        assert len(set(item_ids(body))) == len(body["items"])


def test_artifact_copy_is_independent(artifact_copy: Path, tiny_artifact: Path) -> None:
    # the damage tests rely on it: the session artifact is never touched
    assert artifact_copy != tiny_artifact
    assert shutil.disk_usage(artifact_copy).total > 0
