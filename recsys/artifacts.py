"""Artifact directory layout, manifest and checksums.

An artifact is one directory that the batch job, the online API and offline evaluation all
load::

    manifest.json        format version, created, config, data fingerprint, files + sha256, metrics
    vocab/               user and item id maps (parquet)
    features/            the feature store (parquet + its own manifest)
    models/<name>/       one directory per component (config.json + state.npz)

Loading verifies every checksum first; a damaged artifact is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import ArtifactError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "check_format_version",
    "fingerprint_frame",
    "read_component_meta",
    "read_manifest",
    "sha256_file",
    "verify_artifact",
    "write_artifact",
    "write_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: Subdirectories that hold mutable runtime state and are not covered by checksums.
UNCHECKED_DIRS = ("state",)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint_frame(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A sha256 fingerprint of a frame's values (order-sensitive), for data lineage.

    Parameters
    ----------
    df
        The frame, e.g. the training interactions.
    columns
        Columns to include; default: those of the interaction contract present in ``df``.
    """
    cols = columns or [c for c in ("user_id", "item_id", "rating", "timestamp") if c in df.columns]
    h = hashlib.sha256()
    h.update(json.dumps([len(df), cols]).encode())
    for c in cols:
        hashed = pd.util.hash_pandas_object(df[c], index=False).to_numpy(np.uint64)
        h.update(hashed.tobytes())
    return h.hexdigest()


def _listed_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.as_posix() != MANIFEST and rel.parts[0] not in UNCHECKED_DIRS:
            out.append(rel)
    return out


def write_manifest(
    root: Path,
    *,
    config: dict[str, Any],
    data_fingerprint: str,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hash every file under ``root`` and write ``manifest.json``; returns the manifest."""
    from recsys import __version__

    root = Path(root)
    files = {
        rel.as_posix(): {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
        for rel in _listed_files(root)
    }
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "recsys_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "data_fingerprint": data_fingerprint,
        "metrics": metrics or {},
        **(extra or {}),
        "files": files,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    """Read ``manifest.json`` of an artifact without verifying files."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise ArtifactError(f"artifact {root} does not exist or is not a directory")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"artifact {root} has no {MANIFEST}; is it an artifact directory?"
        ) from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"artifact {root}: {MANIFEST} is not valid JSON ({exc})") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {root}: format version {manifest.get('format_version')!r}, "
            f"this recsys reads {FORMAT_VERSION}"
        )
    return manifest


def check_format_version(
    meta: dict[str, Any], version: int, owner: str, path: Path, hint: str = ""
) -> None:
    """Refuse a part of an artifact written in another format version.

    Raises
    ------
    ArtifactError
        ``"<owner>: <path> has format <found>, this version reads <version><hint>"``.
    """
    found = meta.get("format_version")
    if found != version:
        raise ArtifactError(
            f"{owner}: {path} has format {found!r}, this version reads {version}{hint}"
        )


def read_component_meta(path: Path, name: str, owner: str, version: int) -> dict[str, Any]:
    """Read the JSON metadata file ``name`` of an artifact part in ``path`` and check its
    format version (:func:`check_format_version`).

    Raises
    ------
    ArtifactError
        An unreadable or invalid file (``"<owner>: cannot read <file>: ..."``), or another
        format version.
    """
    file = Path(path) / name
    try:
        meta: dict[str, Any] = json.loads(file.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
        raise ArtifactError(f"{owner}: cannot read {file}: {exc}") from exc
    check_format_version(meta, version, owner, Path(path))
    return meta


def verify_artifact(root: Path) -> dict[str, Any]:
    """Check every file listed in the manifest exists with its sha256; return the manifest.

    Raises
    ------
    ArtifactError
        Naming the first missing or damaged files (at most 5) and how many in all.
    """
    root = Path(root)
    manifest = read_manifest(root)
    missing, damaged = [], []
    for rel, meta in manifest.get("files", {}).items():
        p = root / rel
        if not p.is_file():
            missing.append(rel)
        elif sha256_file(p) != meta["sha256"]:
            damaged.append(rel)
    if missing or damaged:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:5])})")
        if damaged:
            parts.append(f"{len(damaged)} damaged, checksum mismatch ({', '.join(damaged[:5])})")
        raise ArtifactError(f"artifact {root} refused: " + "; ".join(parts))
    return manifest


@contextmanager
def _staging_dir(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_artifact(
    target: Path,
    fill: Callable[[Path], None],
    *,
    config: dict[str, Any],
    data_fingerprint: str,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write an artifact atomically: ``fill(tmpdir)`` writes the files, then the manifest is
    written and the directory renamed into place. An existing ``target`` is replaced, but its
    ``state/`` directory (the serving events log) is carried over.
    """
    target = Path(target)
    with _staging_dir(target) as tmp:
        fill(tmp)
        manifest = write_manifest(
            tmp, config=config, data_fingerprint=data_fingerprint, metrics=metrics, extra=extra
        )
        if target.exists():
            for name in UNCHECKED_DIRS:  # runtime state (e.g. the events log) outlives a retrain
                if (target / name).is_dir() and not (tmp / name).exists():
                    shutil.copytree(target / name, tmp / name)
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    logger.info("wrote artifact path=%s files=%d", target, len(manifest["files"]))
    return manifest
