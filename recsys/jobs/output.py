"""On-disk layout of a batch recommendation output: parts, job file, manifest, resume.

Two layouts, chosen by the extension of ``--out``:

``recs.parquet`` (or ``.pq``) — a parquet *dataset directory*::

    recs.parquet/
        _job.json              the job's parameters, written first (resume checks them)
        part-00000.parquet     users 0 .. chunk_size-1, in user order
        part-00001.parquet     ...
        _manifest.json         written last: users, rows, parameters, parts + sha256

  ``pandas.read_parquet("recs.parquet")``, ``pyarrow.parquet.read_table``, Dask, Spark
  and DuckDB read the directory directly: names starting with ``_`` or ``.`` are skipped
  by their dataset readers, and parts are read in name order, which is user order.

``recs.csv`` (or ``.tsv``) — a *single file* (a CSV reader cannot read a directory).
  Parts are written to ``recs.csv.parts/`` as above; when all are done they are
  concatenated under one header into ``recs.csv`` (temporary name, then an atomic
  rename), the manifest is written next to it as ``recs.csv.manifest.json``, and the
  parts directory is removed.

Every part is written to a temporary name starting with ``.`` and renamed into place
only once complete, so a part that exists under its final name is whole; the manifest
is written the same way, last. A job killed at any point therefore leaves complete parts
and at most some temporary files, and rerunning it with ``resume=True`` computes only
the missing parts, which are byte-identical to those of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.errors import ConfigError, DataError

__all__ = [
    "JOB_FILE",
    "MANIFEST_FILE",
    "OUTPUT_FORMAT",
    "OutputLayout",
    "PartResult",
    "write_part",
]

logger = logging.getLogger(__name__)

JOB_FILE = "_job.json"
MANIFEST_FILE = "_manifest.json"
#: Value of the ``format`` key of job files and manifests.
OUTPUT_FORMAT = "recsys-batch-recommendations"
FORMAT_VERSION = 1

_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SEPARATORS = {".csv": ",", ".tsv": "\t"}
_TMP_MARK = ".tmp-"


@dataclass(frozen=True)
class PartResult:
    """What one written part holds; the manifest lists one per part.

    Attributes
    ----------
    index
        Part number; part ``i`` holds users ``i * chunk_size`` up to the next part's first.
    name
        File name inside the parts directory, e.g. ``"part-00003.parquet"``.
    users, rows
        Users in the part and recommendation rows written for them.
    unknown_users
        Users of the part that are not in the artifact (they get the popularity list).
    sha256, bytes
        Checksum and size of the part file.
    worker
        Who computed the part: ``host:pid`` locally, the worker address and
        ``host:pid`` on Dask (``""`` when a resumed job found the part on disk).
    artifact_loads
        How many times that process had loaded the artifact when it wrote the part.
    """

    index: int
    name: str
    users: int
    rows: int
    unknown_users: int
    sha256: str
    bytes: int
    worker: str = ""
    artifact_loads: int = 0


def _fsync_dir(path: Path) -> None:
    """Persist a rename in ``path`` (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes | memoryview | pa.Buffer) -> None:
    """Write ``data`` to ``path`` through a temporary ``.``-name and an atomic rename."""
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_bytes(path, text.encode())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# Parquet part encoding, per column: the codec only where it pays. Scores (distinct
# floats) and item dictionary indices (bit-packed, near random) barely compress, so they
# are stored uncompressed; the sorted user ids, the ranks and the sources are long runs
# that zstd level 1 shrinks to almost nothing at little cost. Dictionary encoding goes
# to the item ids (few distinct per part), the sources (given as an Arrow dictionary
# array, whose indices the writer takes as they are) and string user ids; integer user
# ids, in runs of ``k``, are cheaper plain. Statistics are skipped for the sources only.
_PLAIN_TYPES = (pa.int64(), pa.int32(), pa.float32(), pa.float64(), pa.string())
_UNCOMPRESSED = ("item_id", "score")


def _parquet_options(table: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
    """The table to write and ``pq.write_table`` options for a part (see above).

    A dictionary-typed column is written as its dictionary and indices; the Arrow schema
    is then left out of the file (it would make readers return the dictionary type), so
    every column reads back with its plain type. Where some column's type would not
    survive that (not one of ``_PLAIN_TYPES``), dictionaries are decoded first and the
    schema is kept.
    """
    schema = table.schema
    store_schema = False
    if any(pa.types.is_dictionary(f.type) for f in schema):
        plain = [f.type.value_type if pa.types.is_dictionary(f.type) else f.type for f in schema]
        if not all(t in _PLAIN_TYPES for t in plain):
            table = table.cast(
                pa.schema([f.with_type(t) for f, t in zip(schema, plain, strict=True)])
            )
            store_schema = True
    else:
        store_schema = True
    names = table.column_names
    dictionary = [
        c
        for c in names
        if c in ("item_id", "sources")
        or (c == "user_id" and not pa.types.is_integer(table.schema.field(c).type))
    ]
    compression = {c: "none" if c in _UNCOMPRESSED else "zstd" for c in names}
    options: dict[str, Any] = {
        "compression": compression,
        "compression_level": {c: 1 for c, codec in compression.items() if codec == "zstd"},
        "use_dictionary": dictionary,
        "write_statistics": [c for c in names if c != "sources"],
        "store_schema": store_schema,
    }
    return table, options


def _encode(table: pa.Table, fmt: Literal["parquet", "csv"], sep: str) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        table, options = _parquet_options(table)
        pq.write_table(table, sink, **options)
    else:
        if any(pa.types.is_dictionary(f.type) for f in table.schema):
            table = table.cast(
                pa.schema(
                    [
                        f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                        for f in table.schema
                    ]
                )
            )
        options = pacsv.WriteOptions(include_header=False, delimiter=sep)
        pacsv.write_csv(table, sink, write_options=options)
    return sink.getvalue()


def write_part(
    table: pa.Table,
    path: Path,
    *,
    index: int,
    users: int,
    unknown_users: int,
    worker: str = "",
    artifact_loads: int = 0,
) -> PartResult:
    """Encode ``table`` by the extension of ``path`` and write it atomically.

    The bytes are encoded in memory, hashed, written to a temporary ``.``-name, synced
    and renamed to ``path``, so ``path`` exists only once it is complete. CSV parts have
    no header (the single output file gets one header when the parts are joined).

    Returns
    -------
    PartResult
        Row count, sha256 and size of the written file.
    """
    fmt: Literal["parquet", "csv"] = "parquet" if path.suffix == ".parquet" else "csv"
    buf = _encode(table, fmt, _CSV_SEPARATORS.get(path.suffix, ","))
    digest = hashlib.sha256(memoryview(buf)).hexdigest()
    atomic_write_bytes(path, buf)
    return PartResult(
        index=index,
        name=path.name,
        users=users,
        rows=table.num_rows,
        unknown_users=unknown_users,
        sha256=digest,
        bytes=buf.size,
        worker=worker,
        artifact_loads=artifact_loads,
    )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class OutputLayout:
    """Where the parts, the job file and the manifest of one output live.

    Build with :meth:`for_path`. Stability: provisional

    Attributes
    ----------
    out
        The ``--out`` path (absolute): the dataset directory for parquet, the final file
        for CSV.
    fmt
        ``"parquet"`` or ``"csv"``.
    sep
        CSV field separator (``","`` or tab).
    """

    out: Path
    fmt: Literal["parquet", "csv"]
    sep: str = ","

    @classmethod
    def for_path(cls, out: Path | str) -> OutputLayout:
        """The layout for an output path, chosen by its extension.

        Raises
        ------
        ConfigError
            If the extension is not ``.parquet``, ``.pq``, ``.csv`` or ``.tsv``.
        """
        path = Path(out).expanduser().absolute()
        suffix = path.suffix.lower()
        if suffix in _PARQUET_SUFFIXES:
            return cls(path, "parquet")
        if suffix in _CSV_SEPARATORS:
            return cls(path, "csv", _CSV_SEPARATORS[suffix])
        raise ConfigError(
            f"--out {out}: unsupported extension {path.suffix or '(none)'}; expected "
            ".parquet or .pq (a parquet dataset directory) or .csv or .tsv (one file)"
        )

    # ------------------------------------------------------------------ paths
    @property
    def parts_dir(self) -> Path:
        """Directory holding the part files (the output itself for parquet)."""
        return self.out if self.fmt == "parquet" else self.out.with_name(self.out.name + ".parts")

    @property
    def job_path(self) -> Path:
        """The job file, written when the job starts."""
        return self.parts_dir / JOB_FILE

    @property
    def manifest_path(self) -> Path:
        """The manifest, written when the job completes."""
        if self.fmt == "parquet":
            return self.out / MANIFEST_FILE
        return self.out.with_name(self.out.name + ".manifest.json")

    @property
    def part_suffix(self) -> str:
        """Extension of the part files; it picks the part's separator (:func:`write_part`),
        so a ``.tsv`` output's rows are tab-separated like its header (issue 14)."""
        if self.fmt == "parquet":
            return ".parquet"
        return ".tsv" if self.sep == "\t" else ".csv"

    def part_name(self, index: int, n_parts: int) -> str:
        """File name of part ``index``; zero-padded so name order is part order."""
        width = max(5, len(str(max(n_parts - 1, 0))))
        return f"part-{index:0{width}d}{self.part_suffix}"

    def part_path(self, index: int, n_parts: int) -> Path:
        """Full path of part ``index``."""
        return self.parts_dir / self.part_name(index, n_parts)

    # ------------------------------------------------------------------ state
    def completed_manifest(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The manifest of a finished output of the same job, or ``None``.

        A manifest counts only if it is ours, its parameters equal ``params`` and its
        parts (for CSV, the final file) are present, parts with their recorded sizes.
        """
        manifest = _read_json(self.manifest_path)
        if manifest is None or manifest.get("format") != OUTPUT_FORMAT:
            return None
        if manifest.get("params") != params:
            return None
        if self.fmt == "parquet":
            for part in manifest.get("parts", []):
                path = self.parts_dir / str(part.get("name"))
                if not path.is_file() or path.stat().st_size != part.get("bytes"):
                    return None
        elif not self.out.is_file():
            return None
        return manifest

    def _is_ours(self, directory: Path) -> bool:
        for marker in (JOB_FILE, MANIFEST_FILE):
            info = _read_json(directory / marker)
            if info is not None and info.get("format") == OUTPUT_FORMAT:
                return True
        return False

    def _check_replaceable(self) -> None:
        d = self.parts_dir
        if d.exists() and not d.is_dir():
            if self.fmt == "parquet":
                return  # a plain file (e.g. an older single-file output) is replaced
            raise DataError(f"{d} exists and is not a directory; remove it or pick another --out")
        if d.is_dir() and any(d.iterdir()) and not self._is_ours(d):
            raise DataError(
                f"{d} exists and is not a recsys batch output (no {JOB_FILE}); "
                "remove it or pick another --out"
            )
        if self.fmt == "csv" and self.out.is_dir():
            raise DataError(f"{self.out} is a directory; a CSV output is one file")

    def prepare(self, params: dict[str, Any], *, resume: bool) -> dict[int, PartResult]:
        """Make the output ready to receive parts; returns the parts already done.

        Without ``resume`` any previous output of a recsys batch job at this path is
        removed and the job starts from scratch. With ``resume`` the job file must hold
        the same parameters; the parts found complete are returned (with their row
        counts and checksums) and left untouched, and stray temporary files of a killed
        run are removed.

        Raises
        ------
        ConfigError
            ``resume`` with a job file whose parameters differ (the message lists them).
        DataError
            The path holds something that is not a recsys batch output.
        """
        self._check_replaceable()
        d = self.parts_dir
        if resume and d.is_dir():
            job = _read_json(self.job_path)
            if job is not None and job.get("format") == OUTPUT_FORMAT:
                old = job.get("params", {})
                if old != params:
                    diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
                    shown = ", ".join(f"{k}: {old.get(k)!r} -> {params.get(k)!r}" for k in diff)
                    raise ConfigError(
                        f"cannot resume {self.out}: the job parameters differ ({shown}); "
                        "rerun without --resume to start over"
                    )
                self._remove_temporaries()
                return self._scan_parts(int(params["n_parts"]))
            logger.info("resume: no job file in %s, starting from scratch", d)
        self._clear()
        d.mkdir(parents=True, exist_ok=True)
        _write_json(
            self.job_path,
            {
                "format": OUTPUT_FORMAT,
                "format_version": FORMAT_VERSION,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "params": params,
            },
        )
        return {}

    def _clear(self) -> None:
        d = self.parts_dir
        if d.is_dir():
            shutil.rmtree(d)
        elif d.exists():
            d.unlink()
        if self.manifest_path.is_file():
            self.manifest_path.unlink()

    def _remove_temporaries(self) -> None:
        for p in self.parts_dir.iterdir():
            if p.name.startswith(".") and _TMP_MARK in p.name:
                p.unlink(missing_ok=True)
        for p in self.out.parent.glob(f".{self.out.name}{_TMP_MARK}*"):
            p.unlink(missing_ok=True)

    def _scan_parts(self, n_parts: int) -> dict[int, PartResult]:
        done: dict[int, PartResult] = {}
        for index in range(n_parts):
            path = self.part_path(index, n_parts)
            if not path.is_file():
                continue
            try:
                rows = self._count_rows(path)
            except (OSError, pa.ArrowInvalid) as exc:  # damaged behind the job's back
                logger.warning("resume: part %s is unreadable (%s); recomputing it", path, exc)
                path.unlink()
                continue
            done[index] = PartResult(
                index=index,
                name=path.name,
                users=-1,  # filled in by the job, which knows the chunking
                rows=rows,
                unknown_users=-1,
                sha256=_sha256_file(path),
                bytes=path.stat().st_size,
            )
        return done

    def _count_rows(self, path: Path) -> int:
        if self.fmt == "parquet":
            return int(pq.ParquetFile(path).metadata.num_rows)
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))

    # ------------------------------------------------------------------ completion
    def finalize(
        self, manifest: dict[str, Any], parts: list[PartResult], schema: pa.Schema
    ) -> dict[str, Any]:
        """Write the manifest (and, for CSV, join the parts into the final file).

        Parameters
        ----------
        manifest
            Everything but the part list; ``format`` and ``parts`` are added here.
        parts
            Every part, in order.
        schema
            Schema of the parts (gives the CSV header).

        Returns
        -------
        dict
            The manifest as written.
        """
        manifest = {
            "format": OUTPUT_FORMAT,
            "format_version": FORMAT_VERSION,
            **manifest,
            "parts": [asdict(p) for p in parts],
        }
        if self.fmt == "csv":
            manifest["file"] = self._join_csv(parts, schema)
        _write_json(self.manifest_path, manifest)
        _fsync_dir(self.manifest_path.parent)
        if self.fmt == "csv":
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        return manifest

    def _join_csv(self, parts: list[PartResult], schema: pa.Schema) -> dict[str, Any]:
        tmp = self.out.with_name(f".{self.out.name}{_TMP_MARK}{uuid.uuid4().hex}")
        h = hashlib.sha256()
        sink = pa.BufferOutputStream()
        options = pacsv.WriteOptions(include_header=True, delimiter=self.sep)
        pacsv.write_csv(schema.empty_table(), sink, write_options=options)
        size = 0
        try:
            with open(tmp, "wb") as dst:
                head = sink.getvalue().to_pybytes()
                dst.write(head)
                h.update(head)
                size += len(head)
                for part in parts:
                    with open(self.parts_dir / part.name, "rb") as src:
                        while block := src.read(1 << 20):
                            dst.write(block)
                            h.update(block)
                            size += len(block)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return {"name": self.out.name, "sha256": h.hexdigest(), "bytes": size}
