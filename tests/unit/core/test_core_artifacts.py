"""Artifact manifest: checksums of every file, verification, atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recsys.artifacts import (
    MANIFEST,
    fingerprint_frame,
    read_manifest,
    verify_artifact,
    write_artifact,
)
from recsys.errors import ArtifactError


def _fill(tmp: Path) -> None:
    (tmp / "models" / "m").mkdir(parents=True)
    (tmp / "models" / "m" / "state.bin").write_bytes(b"\x00\x01weights")
    (tmp / "a.json").write_text('{"x": 1}')


def _write(target: Path) -> dict:
    return write_artifact(target, _fill, config={"k": 1}, data_fingerprint="abc")


def test_manifest_lists_every_file_with_sha256(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "art")
    assert set(manifest["files"]) == {"a.json", "models/m/state.bin"}
    assert len(manifest["files"]["a.json"]["sha256"]) == 64
    assert manifest["config"] == {"k": 1}
    assert manifest["data_fingerprint"] == "abc"
    on_disk = json.loads((tmp_path / "art" / MANIFEST).read_text())
    assert on_disk["files"] == manifest["files"]
    assert verify_artifact(tmp_path / "art")["created"] == manifest["created"]


def test_damaged_file_is_refused_naming_it(tmp_path: Path) -> None:
    _write(tmp_path / "art")
    (tmp_path / "art" / "models" / "m" / "state.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match=r"damaged.*models/m/state\.bin"):
        verify_artifact(tmp_path / "art")


def test_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    _write(tmp_path / "art")
    (tmp_path / "art" / "a.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing.*a\.json"):
        verify_artifact(tmp_path / "art")


def test_state_dir_is_not_checksummed(tmp_path: Path) -> None:
    _write(tmp_path / "art")
    (tmp_path / "art" / "state").mkdir()
    (tmp_path / "art" / "state" / "events.jsonl").write_text("{}\n")
    verify_artifact(tmp_path / "art")


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "empty" / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "empty" / MANIFEST).write_text('{"format_version": 99}')
    with pytest.raises(ArtifactError, match="format version 99"):
        read_manifest(tmp_path / "empty")


def test_rewrite_replaces_atomically_and_failed_fill_leaves_old(tmp_path: Path) -> None:
    target = tmp_path / "art"
    _write(target)
    first = read_manifest(target)

    def broken(tmp: Path) -> None:
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_artifact(target, broken, config={}, data_fingerprint="x")
    assert read_manifest(target) == first
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no staging leftovers
    write_artifact(
        target, lambda tmp: (tmp / "b.txt").write_text("b"), config={}, data_fingerprint="y"
    )
    assert set(verify_artifact(target)["files"]) == {"b.txt"}


def test_fingerprint_changes_with_data_and_order() -> None:
    df = pd.DataFrame({"user_id": ["a", "b"], "item_id": [1, 2], "rating": [4.0, 5.0]})
    fp = fingerprint_frame(df)
    assert fp == fingerprint_frame(df.copy())
    assert fp != fingerprint_frame(df.assign(rating=[4.0, 4.5]))
    assert fp != fingerprint_frame(df.iloc[::-1])


def test_rewrite_carries_runtime_state_over(tmp_path: Path) -> None:
    target = tmp_path / "art"
    _write(target)
    (target / "state").mkdir()
    (target / "state" / "events.jsonl").write_text('{"user_id": "u1"}\n')
    _write(target)
    assert (target / "state" / "events.jsonl").read_text() == '{"user_id": "u1"}\n'
