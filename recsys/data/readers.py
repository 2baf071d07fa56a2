"""Readers, validation and writers for the interaction, item and user files.

The file contract (ARCHITECTURE.md, "Data contract"):

* **Interactions** (CSV/TSV or parquet): ``user_id``, ``item_id``, optional ``rating``
  (float) and optional ``timestamp`` (Unix seconds or ISO-8601); other columns are kept.
* **Items**: ``item_id`` (unique) plus optional ``title``, ``genres`` (``|``-separated),
  ``text`` and any other columns as features.
* **Users**: ``user_id`` (unique) plus feature columns.

Ids are opaque and kept verbatim. In CSV every column is read as text; an id column whose
values are all canonical integers (``^(0|-?[1-9][0-9]*)$``: no leading zeros, fitting
int64) becomes ``int64``, any other keeps its strings (``"007"`` stays ``"007"``, ``196``
stays ``196``). Other text columns become numbers only when every value is a canonical
number, so zip codes like ``"01234"`` keep their leading zero. Parquet keeps its native
types (integers are widened to ``int64``).

Bad rows - missing ids, unparseable ratings or timestamps, ratings outside
``rating_scale``, duplicates, malformed CSV lines - are collected in a
:class:`ValidationReport` with their counts and row numbers (1-based data rows, header
excluded). By default the reader raises :class:`~recsys.errors.DataError` with that
report; ``on_bad_rows="drop"`` drops them, logs a warning with the counts and returns the
report from the ``*_with_report`` functions. Nothing is dropped silently. A missing
required column or an empty file is always an error.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from recsys.data._keys import duplicated, sortable_codes
from recsys.errors import DataError, format_examples

__all__ = [
    "BadRowPolicy",
    "Problem",
    "ValidationReport",
    "parse_timestamps",
    "read_interactions",
    "read_interactions_with_report",
    "read_item_relations",
    "read_items",
    "read_items_with_report",
    "read_pairs",
    "read_recommendations",
    "read_table",
    "read_users",
    "read_users_with_report",
    "validate_interactions",
    "validate_items",
    "validate_users",
    "write_frame",
]

logger = logging.getLogger(__name__)

BadRowPolicy = Literal["fail", "drop"]

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": None}
PARQUET_SUFFIXES = {".parquet", ".pq"}
COMPRESSION_SUFFIXES = {".gz", ".bz2", ".zip", ".xz", ".zst"}

_BOM = "\ufeff"  # UTF-8 byte-order mark, as decoded

# Text that means "no value" in a CSV cell. Anything else is kept verbatim.
NA_STRINGS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]

_CANONICAL_INT = r"(0|-?[1-9][0-9]*)"
_LEADING_ZERO = re.compile(r"^-?0[0-9]")
_DECIMAL = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
_INT64_MAX_DIGITS = 18  # any canonical integer with <= 18 digits fits int64
_SHOW_ROWS = 5  # row numbers shown per problem in messages
_KEEP_ROWS = 20  # row numbers kept per problem in the report

# Common spellings of the contract columns, for "did you mean" hints.
_ALIASES = {
    "user_id": ("user", "userid", "user id", "uid", "users", "customer_id", "visitorid"),
    "item_id": ("item", "itemid", "movieid", "movie_id", "iid", "product_id", "items", "sku"),
    "rating": ("ratings", "score", "stars", "value"),
    "timestamp": ("ts", "time", "datetime", "date", "unix_time", "event_time"),
}

KIND_TEXT = {
    "missing_column": "missing required column",
    "empty_file": "no data rows",
    "malformed_row": "wrong number of fields",
    "missing_id": "missing id",
    "bad_rating": "unparseable rating",
    "bad_timestamp": "unparseable timestamp",
    "rating_out_of_scale": "rating outside the rating scale",
    "duplicate": "duplicate interaction",
    "duplicate_id": "duplicate id",
    "bad_rank": "unparseable rank",
}


# ------------------------------------------------------------------------------ report
@dataclass
class Problem:
    """One kind of problem in one column.

    Attributes
    ----------
    kind
        ``missing_column``, ``empty_file``, ``malformed_row``, ``missing_id``,
        ``bad_rating``, ``bad_timestamp``, ``rating_out_of_scale``, ``duplicate``
        (same user, item and timestamp) or ``duplicate_id`` (items/users files).
    column
        The field concerned (``"user_id,item_id,timestamp"`` for duplicates), or ``None``.
    count
        Number of rows affected (for duplicates: the repeats, the first one is kept).
    rows
        The first few affected row numbers: 1-based data rows, header excluded.
    examples
        A few offending values, when meaningful.
    detail
        Extra explanation (expected values, the columns found, ...).
    """

    kind: str
    column: str | None
    count: int
    rows: list[int] = field(default_factory=list)
    examples: list[Any] = field(default_factory=list)
    detail: str = ""

    @property
    def fatal(self) -> bool:
        """Problems no row dropping can fix (missing column, empty file)."""
        return self.kind in ("missing_column", "empty_file")

    def describe(self) -> str:
        """One line: kind, field, count, rows, examples."""
        what = KIND_TEXT.get(self.kind, self.kind)
        col = f" in field {self.column!r}" if self.column else ""
        text = f"{self.kind}: {self.count} row{'s' if self.count != 1 else ''}{col} ({what})"
        if self.rows:
            label = "row" if len(self.rows) == 1 else "rows"
            text += f", {label} {format_examples(self.rows[:_SHOW_ROWS], _SHOW_ROWS)}"
            if self.count > _SHOW_ROWS:
                text += f" (and {self.count - _SHOW_ROWS} more)"
        if self.examples:
            text += f"; values: {format_examples(self.examples, 3)}"
        if self.detail:
            text += f"; {self.detail}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "kind": self.kind,
            "column": self.column,
            "count": int(self.count),
            "rows": [int(r) for r in self.rows],
            "examples": [_jsonable(v) for v in self.examples],
            "detail": self.detail,
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


@dataclass
class ValidationReport:
    """What validation found in one file or frame.

    Stability: stable

    ``str(report)`` / :meth:`summary` is the message :class:`DataError` carries: a first
    line naming the file, the first bad row and its field, then one line per problem.
    Row numbers are 1-based data rows with the header excluded.

    Attributes
    ----------
    source
        File path or ``"<frame>"``.
    kind
        ``"interactions"``, ``"items"`` or ``"users"``.
    n_rows
        Data rows read.
    problems
        One :class:`Problem` per (kind, column).
    n_dropped
        Rows dropped (``on_bad_rows="drop"``); 0 otherwise.
    columns
        Columns found in the input.
    n_bad_rows
        Distinct rows with at least one problem (a row can have several).
    """

    source: str
    kind: str = "interactions"
    n_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    n_dropped: int = 0
    columns: list[str] = field(default_factory=list)
    n_bad_rows: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def fatal(self) -> bool:
        """True when a problem cannot be fixed by dropping rows."""
        return any(p.fatal for p in self.problems)

    def counts(self) -> dict[str, int]:
        """Problem kind -> rows affected (summed over columns)."""
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + p.count
        return out

    def headline(self) -> str:
        """The one-line first sentence: file, first bad row and its field."""
        if not self.problems:
            return f"{self.source}: {self.n_rows} rows, no problems found."
        first = self.problems[0]
        if first.kind == "missing_column":
            return (
                f"{self.source}: missing required column {first.column!r} "
                f"(columns found: {', '.join(map(repr, self.columns)) or 'none'})."
            )
        if first.kind == "empty_file":
            return f"{self.source}: the {self.kind} file is empty (no data rows)."
        rows = [p.rows[0] for p in self.problems if p.rows]
        first_row = min(rows) if rows else None
        at = next((p for p in self.problems if p.rows and p.rows[0] == first_row), first)
        total = self.n_bad_rows or sum(p.count for p in self.problems)
        where = f"row {first_row}" if first_row else "rows"
        if at.column:
            where += f", field {at.column!r}"
        what = KIND_TEXT.get(at.kind, at.kind)
        if at.examples and at.kind not in ("missing_id",):
            what += f" {format_examples(at.examples[:1])}"
        return (
            f"{self.source}: {total} bad row{'s' if total != 1 else ''} in the {self.kind} "
            f"data; first at {where}: {what}."
        )

    def summary(self) -> str:
        """Multi-line message: headline, then each problem with counts and rows."""
        lines = [self.headline()]
        if self.problems:
            lines.append(
                f"Problems in {self.source} ({self.n_rows} data rows; row numbers are 1-based "
                "data rows, header excluded):"
            )
            lines.extend(f"  - {p.describe()}" for p in self.problems)
            if self.n_dropped:
                lines.append(f"Dropped {self.n_dropped} rows (on_bad_rows='drop').")
            elif not self.fatal:
                lines.append(
                    "Fix these rows, or pass on_bad_rows='drop' to drop them (the count is "
                    "reported)."
                )
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the CLI and job logs)."""
        return {
            "source": self.source,
            "kind": self.kind,
            "n_rows": int(self.n_rows),
            "n_dropped": int(self.n_dropped),
            "n_bad_rows": int(self.n_bad_rows),
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
        }

    def raise_if_fatal(self) -> None:
        """Raise :class:`DataError` for a missing column or an empty input."""
        if self.fatal:
            raise DataError(self.summary())


# ------------------------------------------------------------------------- file input
def _suffixes(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None), lower case."""
    sfx = [s.lower() for s in path.suffixes]
    comp = sfx[-1] if sfx and sfx[-1] in COMPRESSION_SUFFIXES else None
    base = sfx[-2] if comp and len(sfx) >= 2 else (sfx[-1] if sfx and not comp else "")
    return base, comp


def _file_format(path: Path) -> str:
    base, comp = _suffixes(path)
    if base in PARQUET_SUFFIXES and comp is None:
        return "parquet"
    if base in CSV_SUFFIXES:
        return "csv"
    raise DataError(
        f"{path}: unsupported file type {''.join(path.suffixes) or '(no extension)'}; "
        "expected .csv, .tsv or .txt (optionally .gz) or .parquet/.pq"
    )


def _csv_separator(path: Path) -> str:
    base, _ = _suffixes(path)
    sep = CSV_SUFFIXES.get(base)
    if sep is not None:
        return sep
    import gzip

    opener: Any = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
        head = fh.readline()
    return "\t" if "\t" in head else ","


def read_table(path: Path | str) -> tuple[pd.DataFrame, list[int], NDArray[np.int64], str]:
    """Read a CSV or parquet file without interpreting any column.

    CSV columns come back as text (pandas ``str``, missing cells as NA: empty, ``NA``,
    ``null``, ...; leading spaces after a delimiter are skipped); a UTF-8 byte-order mark
    is not part of the first column's name. Parquet keeps its types; a directory named
    ``*.parquet`` is read as a parquet dataset (its part files, in name order, as
    ``recsys recommend --out recs.parquet`` writes them). CSV is parsed by pyarrow
    (multi-threaded); files it rejects (lines with the wrong number of fields, invalid
    UTF-8, ...) are re-read by pandas, which reports the malformed lines.

    Returns
    -------
    frame, malformed, row_numbers, source
        ``malformed`` are the data-row numbers of CSV lines with the wrong number of
        fields (skipped); ``row_numbers`` the data-row number of each returned row.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise DataError(f"{source}: file not found")
    if path.is_dir() and _suffixes(path)[0] not in PARQUET_SUFFIXES:
        raise DataError(f"{source}: is a directory, expected a CSV or parquet file")
    fmt = _file_format(path)
    if fmt == "parquet":  # a file, or a dataset directory of parts (`recsys recommend`)
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{source}: cannot read parquet file: {exc}") from exc
        df = table.to_pandas()
        return df, [], np.arange(1, len(df) + 1), source
    if path.stat().st_size == 0:
        return pd.DataFrame(), [], np.zeros(0, np.int64), source
    sep = _csv_separator(path)
    fast = _read_csv_arrow(path, sep)
    if fast is not None:
        return fast, [], np.arange(1, len(fast) + 1), source
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(
                path,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                na_values=NA_STRINGS,
                skipinitialspace=True,
                on_bad_lines="warn",
                encoding="utf-8-sig",
                encoding_errors="replace",
            )
        except pd.errors.EmptyDataError:
            return pd.DataFrame(), [], np.zeros(0, np.int64), source
        except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
            raise DataError(f"{source}: cannot parse as {sep!r}-separated text: {exc}") from exc
    malformed: list[int] = []
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning):
            # physical line L (header is line 1) -> data row L - 1
            malformed.extend(int(m) - 1 for m in re.findall(r"line (\d+)", str(w.message)))
        else:  # pragma: no cover - pass through unrelated warnings
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    df.columns = [str(c).lstrip(_BOM).strip() for c in df.columns]
    malformed = sorted(set(malformed))
    rows = np.arange(1, len(df) + len(malformed) + 1)
    if malformed:
        rows = rows[~np.isin(rows, np.asarray(malformed, dtype=np.int64))]
    return df, malformed, rows, source


def _csv_header(path: Path, sep: str) -> list[str] | None:
    """Column names from the first line, or None when the file cannot be sniffed."""
    import bz2
    import gzip
    import lzma

    openers: dict[str | None, Any] = {
        None: open,
        ".gz": gzip.open,
        ".bz2": bz2.open,
        ".xz": lzma.open,
    }
    opener = openers.get(_suffixes(path)[1])
    if opener is None:
        return None
    try:
        # utf-8-sig: a byte-order mark (as spreadsheet programs write it) is not part of the
        # first column's name; pyarrow skips it too, so the names agree (issue 14)
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    return next(csv.reader([first], delimiter=sep), None)


def _read_csv_arrow(path: Path, sep: str) -> pd.DataFrame | None:
    """Fast path: pyarrow's CSV reader, every column as text; None when it cannot."""
    header = _csv_header(path, sep)
    if not header:
        return None
    names = [h.strip() for h in header]
    if len(set(names)) != len(names) or any(not n for n in names):
        return None  # duplicate/blank column names: let pandas name them
    try:
        table = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(delimiter=sep),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                null_values=NA_STRINGS,
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, OSError, ValueError):
        return None
    if [c.lstrip(_BOM) for c in table.column_names] != header:
        return None  # not the columns the header promised: let pandas read it
    columns = {}
    for i, name in enumerate(names):
        col = pc.utf8_ltrim(table.column(i), characters=" ")
        # cells that were only spaces are empty now: empty means missing
        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
        columns[name] = col
    return pa.table(columns).to_pandas()


# ----------------------------------------------------------------------- column logic
def _fast_cast(s: pd.Series, typ: pa.DataType) -> NDArray[np.float64] | None:
    """Cast a text column with pyarrow (fast); None if any value does not parse.

    Nulls become NaN. Callers fall back to the slow per-value path on None, which also
    finds the offending rows.
    """
    if not _is_text(s):
        return None
    try:
        if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
            arr = pa.array(s.array)
        else:
            arr = pa.array(s.to_numpy(), type=pa.string(), from_pandas=True)
        out = pc.cast(arr, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
        return None
    return np.asarray(out.to_numpy(zero_copy_only=False), dtype=np.float64)


def _to_float(s: pd.Series) -> pd.Series:
    """Numbers as float64; NaN where missing or unparseable."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype(np.float64)
    fast = _fast_cast(s, pa.float64())
    if fast is not None:
        return pd.Series(fast, index=s.index)
    return pd.to_numeric(s, errors="coerce").astype(np.float64)


def _canonical_ints(s: pd.Series) -> pd.Series | None:
    """``s`` (text, no NA) as int64 when every value is a canonical integer, else None."""
    if len(s) == 0:
        return None
    text = s.astype(str)
    if not bool(text.str.fullmatch(_CANONICAL_INT).all()):
        return None
    long = text.str.len() > _INT64_MAX_DIGITS
    if bool(long.any()):
        big = [int(v) for v in text[long]]
        if any(v > np.iinfo(np.int64).max or v < np.iinfo(np.int64).min for v in big):
            return None
    try:
        values = pc.cast(pa.array(text.array), pa.int64()).to_numpy(zero_copy_only=False)
        return pd.Series(np.asarray(values, dtype=np.int64), index=s.index)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, OverflowError, TypeError):
        out = np.array([int(v) for v in text], dtype=np.int64)
        return pd.Series(out, index=s.index)


def _is_text(s: pd.Series) -> bool:
    return bool(pd.api.types.is_string_dtype(s.dtype) or pd.api.types.is_object_dtype(s.dtype))


def _normalise_ids(s: pd.Series, *, from_text: bool) -> pd.Series:
    """Id column without NAs -> int64 or str, values kept as given.

    Text from CSV becomes int64 when all values are canonical integers. Native integer
    columns widen to int64; integral floats (ints that went through NaN) become int64;
    strings stay strings; mixed Python objects become their ``str``.
    """
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(s.dtype.categories.dtype)
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return s.astype(str)
    if pd.api.types.is_integer_dtype(dtype):
        return s.astype(np.int64)
    if pd.api.types.is_float_dtype(dtype):
        vals = s.to_numpy(dtype=np.float64)
        if (
            np.all(np.isfinite(vals))
            and np.all(vals == np.round(vals))
            and (len(vals) == 0 or np.abs(vals).max() < 2**53)
        ):
            return pd.Series(vals.astype(np.int64), index=s.index)
        return s.astype(str)
    if from_text:
        ints = _canonical_ints(s)
        return ints if ints is not None else s.astype(str)
    if pd.api.types.is_object_dtype(dtype):
        kinds = set(map(type, s))
        if kinds and all(
            issubclass(k, (int, np.integer)) and not issubclass(k, bool) for k in kinds
        ):
            try:
                return s.astype(np.int64)
            except (OverflowError, ValueError, TypeError):
                pass
        if not all(issubclass(k, str) for k in kinds):
            logger.warning("id column %r holds mixed types; converting to strings", s.name)
        return s.map(str).astype(str)
    return s.astype(str)


def _ids_with_gaps(
    norm: pd.Series, ok: NDArray[np.bool_] | pd.Series, index: pd.Index
) -> pd.Series:
    """Normalised ids of the ``ok`` rows placed on ``index``, missing (nullable) on the
    others; ``norm`` itself when every row is ok."""
    if bool(np.all(ok)):
        return norm
    merged = pd.Series(None, index=index, dtype="Int64" if norm.dtype == np.int64 else norm.dtype)
    merged[ok] = norm
    return merged


def _infer_text_column(s: pd.Series) -> pd.Series:
    """A CSV text column -> int64 / float64 when every value is a canonical number."""
    nonnull = s.dropna()
    if len(nonnull) == 0:
        return s
    text = nonnull.astype(str)
    if bool(text.str.match(_LEADING_ZERO).any()):
        return s  # "01234": an identifier-like code, keep the text
    if s.notna().all():
        ints = _canonical_ints(s)
        if ints is not None:
            return ints
    if bool(text.str.fullmatch(_DECIMAL).all()):
        return pd.to_numeric(s, errors="coerce").astype(np.float64)
    return s


def parse_timestamps(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse Unix seconds (int/float/numeric text) or ISO-8601 text to int64 seconds.

    ISO values without a timezone are taken as UTC; fractional seconds are floored.

    Returns
    -------
    seconds, bad
        ``seconds`` is a float64 series (NaN where unparseable; callers cast to int64
        after dropping bad rows); ``bad`` is a boolean mask of unparseable values
        (including missing ones).
    """
    s = values
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        dt = s if getattr(s.dt, "tz", None) is not None else s.dt.tz_localize("UTC")
        secs = _datetime_seconds(dt)
        return secs, secs.isna()
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        num = s.astype(np.float64)
        bad = ~np.isfinite(num.to_numpy())
        return num.where(~bad), pd.Series(bad, index=s.index)
    for typ in (pa.int64(), pa.float64()):  # fast paths: all numeric text
        fast = _fast_cast(s, typ)
        if fast is not None:
            bad = ~np.isfinite(fast)
            return pd.Series(np.where(bad, np.nan, fast), index=s.index), pd.Series(
                bad, index=s.index
            )
    text = s.astype(str).str.strip()
    num = pd.to_numeric(text, errors="coerce").astype(np.float64)
    need = num.isna() & s.notna()
    if bool(need.any()):
        dt = pd.to_datetime(text[need], format="ISO8601", utc=True, errors="coerce")
        num.loc[need] = _datetime_seconds(dt)
    arr = num.to_numpy()
    bad = ~np.isfinite(arr)
    return num.where(~bad), pd.Series(bad, index=s.index)


def _datetime_seconds(dt: pd.Series) -> pd.Series:
    """tz-aware datetimes -> float seconds since the epoch (floored), NaN for NaT."""
    epoch = pd.Timestamp(0, tz="UTC")
    delta = dt - epoch
    secs = delta // pd.Timedelta(seconds=1)
    return secs.astype("float64")


# -------------------------------------------------------------------------- validation
class _Collector:
    """Accumulates problems and the row mask of bad rows."""

    def __init__(self, rows: np.ndarray, report: ValidationReport) -> None:
        self.rows = rows
        self.report = report
        self.bad = np.zeros(len(rows), dtype=bool)

    def add(
        self,
        kind: str,
        column: str | None,
        mask: np.ndarray,
        values: pd.Series | None = None,
        detail: str = "",
    ) -> None:
        mask = np.asarray(mask, dtype=bool)
        count = int(mask.sum())
        if count == 0:
            return
        pos = np.flatnonzero(mask)
        examples: list[Any] = []
        if values is not None:
            ex = values.iloc[pos[:3]].tolist()
            examples = ["<missing>" if _isna(v) else v for v in ex]
        self.report.problems.append(
            Problem(kind, column, count, self.rows[pos[:_KEEP_ROWS]].tolist(), examples, detail)
        )
        self.bad |= mask


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _missing_id_mask(s: pd.Series) -> np.ndarray:
    mask = s.isna().to_numpy()
    if _is_text(s):
        blank = s.astype(str).str.strip().eq("").fillna(False).to_numpy(dtype=bool)
        mask = mask | blank
    return mask


def _check_columns(df: pd.DataFrame, required: Sequence[str], report: ValidationReport) -> None:
    for col in required:
        if col not in df.columns:
            lower = {str(c).lower().strip(): str(c) for c in df.columns}
            hint = next((lower[a] for a in (col, *_ALIASES.get(col, ())) if a in lower), None)
            detail = f"columns found: {', '.join(map(repr, df.columns)) or 'none'}"
            if hint is not None:
                detail += f"; rename {hint!r} to {col!r}"
            report.problems.append(Problem("missing_column", col, 0, detail=detail))
    if not report.problems and len(df) == 0:
        report.problems.append(Problem("empty_file", None, 0, detail="no data rows"))


def _finish(
    df: pd.DataFrame,
    col: _Collector,
    report: ValidationReport,
    on_bad_rows: BadRowPolicy,
) -> pd.DataFrame:
    malformed = sum(p.count for p in report.problems if p.kind == "malformed_row")
    report.n_bad_rows = int(col.bad.sum()) + malformed
    if report.problems:
        if on_bad_rows == "fail":
            raise DataError(report.summary())
        report.n_dropped = report.n_bad_rows
        logger.warning(
            "%s: dropped %d of %d %s rows (%s)",
            report.source,
            report.n_dropped,
            report.n_rows,
            report.kind,
            ", ".join(f"{k}: {v}" for k, v in report.counts().items()),
        )
        df = df.loc[~col.bad]
    return df.reset_index(drop=True)


def _check_policy(on_bad_rows: str) -> None:
    if on_bad_rows not in ("fail", "drop"):
        raise DataError(f"on_bad_rows must be 'fail' or 'drop', got {on_bad_rows!r}")


def validate_interactions(
    df: pd.DataFrame,
    source: str = "<frame>",
    *,
    on_bad_rows: BadRowPolicy = "fail",
    rating_scale: tuple[float, float] | None = None,
    row_numbers: Sequence[int] | NDArray[np.int64] | None = None,
    malformed_rows: Sequence[int] = (),
    from_text: bool = False,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check and normalise an interactions frame to the contract form.

    Stability: stable

    The readers call this after reading a file, so files and in-memory frames are held
    to the same rules.

    Parameters
    ----------
    df
        Columns ``user_id``, ``item_id``, optional ``rating``, ``timestamp``, extras.
    source
        Name used in messages (file path or ``"<frame>"``).
    on_bad_rows
        ``"fail"`` (default): raise :class:`DataError` listing every problem.
        ``"drop"``: drop the bad rows, log a warning with the counts.
    rating_scale
        ``(low, high)``: ratings outside it are bad rows (``rating_out_of_scale``).
    row_numbers
        Data-row number of each row for messages; default ``1..len(df)``.
    malformed_rows
        Data rows the CSV parser already skipped (reported as ``malformed_row``).
    from_text
        Columns are CSV text: apply the canonical-integer rule to ids and infer extras.

    Returns
    -------
    frame, report
        ``user_id``, ``item_id``, then ``rating`` (float32) and ``timestamp`` (int64 Unix
        seconds) when present, then the extra columns; a fresh ``RangeIndex``.

    Raises
    ------
    DataError
        Missing ``user_id``/``item_id`` column or no rows (always); any bad row when
        ``on_bad_rows="fail"``.
    """
    _check_policy(on_bad_rows)
    report = ValidationReport(
        source=source,
        kind="interactions",
        n_rows=len(df) + len(malformed_rows),
        columns=[str(c) for c in df.columns],
    )
    _check_columns(df, ("user_id", "item_id"), report)
    report.raise_if_fatal()
    rows = np.asarray(row_numbers if row_numbers is not None else np.arange(1, len(df) + 1))
    df = df.reset_index(drop=True)
    col = _Collector(rows, report)
    if malformed_rows:
        report.problems.append(
            Problem(
                "malformed_row",
                None,
                len(malformed_rows),
                list(malformed_rows[:_KEEP_ROWS]),
                detail="line skipped by the CSV parser",
            )
        )
    report.n_rows = len(df) + len(malformed_rows)

    for name in ("user_id", "item_id"):
        col.add("missing_id", name, _missing_id_mask(df[name]), df[name])
    rating = None
    if "rating" in df.columns:
        raw = df["rating"]
        rating = _to_float(raw)
        bad = ~np.isfinite(rating.to_numpy())
        col.add("bad_rating", "rating", bad, raw, "expected a number")
        if rating_scale is not None:
            lo, hi = rating_scale
            r = rating.to_numpy()
            outside = np.isfinite(r) & ((r < lo) | (r > hi))
            col.add("rating_out_of_scale", "rating", outside, raw, f"scale is [{lo}, {hi}]")
    ts = None
    if "timestamp" in df.columns:
        ts, bad_ts = parse_timestamps(df["timestamp"])
        col.add(
            "bad_timestamp",
            "timestamp",
            bad_ts.to_numpy(),
            df["timestamp"],
            "expected Unix seconds or ISO-8601 (e.g. 2021-03-04T05:06:07Z)",
        )

    # normalise ids on the rows with an id (ids of bad rows stay whatever they were)
    ok_ids = ~(_missing_id_mask(df["user_id"]) | _missing_id_mask(df["item_id"]))
    out = pd.DataFrame(index=df.index)
    all_ok = bool(ok_ids.all())
    for name in ("user_id", "item_id"):
        values = df[name]
        norm = _normalise_ids(values if all_ok else values[ok_ids], from_text=from_text)
        if all_ok:
            out[name] = norm
        else:
            merged = pd.Series(
                pd.NA if norm.dtype == np.int64 else None,
                index=df.index,
                dtype="Int64" if norm.dtype == np.int64 else norm.dtype,
            )
            merged[ok_ids] = norm
            out[name] = merged
    if rating is not None:
        out["rating"] = rating
    if ts is not None:
        _warn_if_milliseconds(ts, source)
        out["timestamp"] = ts

    # duplicates among otherwise good rows: same user, item (and timestamp)
    key_cols = ["user_id", "item_id"] + (["timestamp"] if ts is not None else [])
    good = ~col.bad
    if bool(good.any()):
        dup_in_good = _duplicated(out.loc[good, key_cols])
        dup = np.zeros(len(df), dtype=bool)
        dup[np.flatnonzero(good)[dup_in_good]] = True
        col.add(
            "duplicate",
            ",".join(key_cols),
            dup,
            None,
            "same " + ", ".join(key_cols) + " as an earlier row (the first is kept)",
        )

    extras = [c for c in df.columns if c not in ("user_id", "item_id", "rating", "timestamp")]
    for c in extras:
        out[c] = _infer_text_column(df[c]) if from_text else df[c]
    out = _finish(out, col, report, on_bad_rows)
    for name in ("user_id", "item_id"):
        if out[name].dtype == "Int64":
            out[name] = out[name].astype(np.int64)
    if "rating" in out:
        out["rating"] = out["rating"].astype(np.float32)
    if "timestamp" in out:
        out["timestamp"] = np.floor(out["timestamp"].to_numpy()).astype(np.int64)
    return out, report


def _duplicated(frame: pd.DataFrame) -> np.ndarray:
    """Rows equal (on all columns) to an earlier row; float columns compare floored."""
    cols = []
    for c in frame.columns:
        v = frame[c]
        if pd.api.types.is_float_dtype(v.dtype):
            v = pd.Series(np.floor(v.to_numpy()).astype(np.int64))
        cols.append(sortable_codes(v))
    return duplicated(cols)


def _warn_if_milliseconds(ts: pd.Series, source: str) -> None:
    arr = ts.to_numpy(dtype=np.float64)
    sample = arr[:: max(1, len(arr) // 100_000)]
    sample = sample[np.isfinite(sample)]
    if len(sample) and float(np.median(sample)) > 1e11:
        logger.warning(
            "%s: timestamps look like milliseconds (median %.0f); the contract expects Unix "
            "seconds - divide by 1000",
            source,
            float(np.median(sample)),
        )


def _validate_entities(
    df: pd.DataFrame,
    id_col: str,
    kind: str,
    source: str,
    on_bad_rows: BadRowPolicy,
    row_numbers: Sequence[int] | NDArray[np.int64] | None,
    malformed_rows: Sequence[int],
    from_text: bool,
) -> tuple[pd.DataFrame, ValidationReport]:
    _check_policy(on_bad_rows)
    report = ValidationReport(
        source=source,
        kind=kind,
        n_rows=len(df) + len(malformed_rows),
        columns=[str(c) for c in df.columns],
    )
    _check_columns(df, (id_col,), report)
    report.raise_if_fatal()
    rows = np.asarray(row_numbers if row_numbers is not None else np.arange(1, len(df) + 1))
    df = df.reset_index(drop=True)
    col = _Collector(rows, report)
    if malformed_rows:
        report.problems.append(
            Problem(
                "malformed_row",
                None,
                len(malformed_rows),
                list(malformed_rows[:_KEEP_ROWS]),
                detail="line skipped by the CSV parser",
            )
        )
    missing = _missing_id_mask(df[id_col])
    col.add("missing_id", id_col, missing, df[id_col])
    ok = ~missing
    out = pd.DataFrame(index=df.index)
    norm = _normalise_ids(df.loc[ok, id_col], from_text=from_text)
    out[id_col] = _ids_with_gaps(norm, ok, df.index)
    dup = np.zeros(len(df), dtype=bool)
    dup[np.flatnonzero(ok)[norm.duplicated().to_numpy()]] = True
    col.add("duplicate_id", id_col, dup, df[id_col], "ids must be unique (the first is kept)")
    for c in df.columns:
        if c == id_col:
            continue
        if from_text and c not in ("title", "genres", "text"):
            out[c] = _infer_text_column(df[c])
        else:
            out[c] = df[c]
    if "genres" in out.columns:
        out["genres"] = out["genres"].fillna("").astype(str)
    out = _finish(out, col, report, on_bad_rows)
    if out[id_col].dtype == "Int64":
        out[id_col] = out[id_col].astype(np.int64)
    return out, report


def validate_items(
    df: pd.DataFrame,
    source: str = "<frame>",
    *,
    on_bad_rows: BadRowPolicy = "fail",
    row_numbers: Sequence[int] | NDArray[np.int64] | None = None,
    malformed_rows: Sequence[int] = (),
    from_text: bool = False,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check an items frame: ``item_id`` present, non-missing and unique; extras kept.

    ``genres`` stays the ``|``-separated string (missing -> ``""``). Parameters and
    return value as :func:`validate_interactions`.
    """
    return _validate_entities(
        df, "item_id", "items", source, on_bad_rows, row_numbers, malformed_rows, from_text
    )


def validate_users(
    df: pd.DataFrame,
    source: str = "<frame>",
    *,
    on_bad_rows: BadRowPolicy = "fail",
    row_numbers: Sequence[int] | NDArray[np.int64] | None = None,
    malformed_rows: Sequence[int] = (),
    from_text: bool = False,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check a users frame: ``user_id`` present, non-missing and unique; extras kept.

    Parameters and return value as :func:`validate_interactions`.
    """
    return _validate_entities(
        df, "user_id", "users", source, on_bad_rows, row_numbers, malformed_rows, from_text
    )


# ---------------------------------------------------------------------------- readers
def read_interactions_with_report(
    path: Path | str,
    *,
    on_bad_rows: BadRowPolicy = "fail",
    rating_scale: tuple[float, float] | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """:func:`read_interactions` that also returns the :class:`ValidationReport`.

    Stability: stable
    """
    _check_policy(on_bad_rows)
    df, malformed, rows, source = read_table(path)
    if df.shape[1] == 0 and not malformed:
        raise DataError(f"{source}: the interactions file is empty (no header, no data rows)")
    return validate_interactions(
        df,
        source,
        on_bad_rows=on_bad_rows,
        rating_scale=rating_scale,
        row_numbers=rows,
        malformed_rows=malformed,
        from_text=_file_format(Path(path)) == "csv",
    )


def read_interactions(
    path: Path | str,
    *,
    on_bad_rows: BadRowPolicy = "fail",
    rating_scale: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Read an interactions file (CSV/TSV/.gz or parquet) into the contract form.

    Stability: stable

    Parameters
    ----------
    path
        ``.csv`` (comma), ``.tsv`` (tab), ``.txt`` (tab if the header has one, else
        comma), optionally gzip-compressed (``.csv.gz``); or ``.parquet``/``.pq``.
    on_bad_rows
        ``"fail"`` (default) raises :class:`DataError` naming the file, rows and fields of
        every problem; ``"drop"`` drops the bad rows and logs how many (use
        :func:`read_interactions_with_report` to get the report).
    rating_scale
        Optional ``(low, high)``; ratings outside are bad rows.

    Returns
    -------
    pandas.DataFrame
        ``user_id``, ``item_id`` (int64 or str, values as in the file), ``rating``
        (float32) and ``timestamp`` (int64 Unix seconds) when present, then any extra
        columns; rows in file order.

    Raises
    ------
    DataError
        Missing file, unsupported extension, missing ``user_id``/``item_id`` column
        (naming the columns found), empty file, or bad rows with ``on_bad_rows="fail"``.

    Examples
    --------
    >>> df = read_interactions("ratings.csv")  # doctest: +SKIP
    >>> df, rep = read_interactions_with_report("r.csv", on_bad_rows="drop")  # doctest: +SKIP
    """
    return read_interactions_with_report(path, on_bad_rows=on_bad_rows, rating_scale=rating_scale)[
        0
    ]


def _read_entities_with_report(
    path: Path | str, kind: str, on_bad_rows: BadRowPolicy
) -> tuple[pd.DataFrame, ValidationReport]:
    _check_policy(on_bad_rows)
    df, malformed, rows, source = read_table(path)
    if df.shape[1] == 0 and not malformed:
        raise DataError(f"{source}: the {kind} file is empty (no header, no data rows)")
    validate = validate_items if kind == "items" else validate_users
    return validate(
        df,
        source,
        on_bad_rows=on_bad_rows,
        row_numbers=rows,
        malformed_rows=malformed,
        from_text=_file_format(Path(path)) == "csv",
    )


def read_items_with_report(
    path: Path | str, *, on_bad_rows: BadRowPolicy = "fail"
) -> tuple[pd.DataFrame, ValidationReport]:
    """:func:`read_items` that also returns the :class:`ValidationReport`."""
    return _read_entities_with_report(path, "items", on_bad_rows)


def read_items(path: Path | str, *, on_bad_rows: BadRowPolicy = "fail") -> pd.DataFrame:
    """Read an items file: ``item_id`` (required, unique) plus feature columns.

    Stability: stable

    ``title``, ``genres`` (``|``-separated string, missing -> ``""``) and ``text`` stay
    text; other CSV columns become numbers only when every value is a canonical number.
    Ids follow the rules of :func:`read_interactions`. Missing or duplicated ids are bad
    rows (``on_bad_rows`` as in :func:`read_interactions`).
    """
    return read_items_with_report(path, on_bad_rows=on_bad_rows)[0]


def read_users_with_report(
    path: Path | str, *, on_bad_rows: BadRowPolicy = "fail"
) -> tuple[pd.DataFrame, ValidationReport]:
    """:func:`read_users` that also returns the :class:`ValidationReport`."""
    return _read_entities_with_report(path, "users", on_bad_rows)


def read_users(path: Path | str, *, on_bad_rows: BadRowPolicy = "fail") -> pd.DataFrame:
    """Read a users file: ``user_id`` (required, unique) plus feature columns.

    Stability: stable

    Same rules as :func:`read_items`.
    """
    return read_users_with_report(path, on_bad_rows=on_bad_rows)[0]


def _read_keyed(
    path: Path | str,
    kind: str,
    id_columns: Sequence[str],
    required: Sequence[str],
    text_columns: Sequence[str],
    on_bad_rows: BadRowPolicy,
) -> tuple[pd.DataFrame, ValidationReport, _Collector]:
    """Read a file whose rows are keyed by id columns (pairs, recommendations, relations).

    Id columns follow the rules of :func:`read_interactions` (missing ids are bad rows,
    CSV text becomes int64 only when every id is a canonical integer); ``text_columns``
    stay text; other CSV columns become numbers when every value is a canonical number.
    Returns the frame before :func:`_finish`, so callers can add checks of their own.
    """
    _check_policy(on_bad_rows)
    df, malformed, rows, source = read_table(path)
    if df.shape[1] == 0 and not malformed:
        raise DataError(f"{source}: the {kind} file is empty (no header, no data rows)")
    from_text = _file_format(Path(path)) == "csv"
    report = ValidationReport(
        source=source,
        kind=kind,
        n_rows=len(df) + len(malformed),
        columns=[str(c) for c in df.columns],
    )
    _check_columns(df, required, report)
    report.raise_if_fatal()
    df = df.reset_index(drop=True)
    col = _Collector(np.asarray(rows), report)
    if malformed:
        report.problems.append(
            Problem(
                "malformed_row",
                None,
                len(malformed),
                list(malformed[:_KEEP_ROWS]),
                detail="line skipped by the CSV parser",
            )
        )
    missing = np.zeros(len(df), dtype=bool)
    for name in id_columns:
        mask = _missing_id_mask(df[name])
        col.add("missing_id", name, mask, df[name])
        missing |= mask
    out = pd.DataFrame(index=df.index)
    ok = ~missing
    for name in df.columns:
        values = df[name]
        if name in id_columns:
            out[name] = _ids_with_gaps(
                _normalise_ids(values[ok], from_text=from_text), ok, df.index
            )
        elif from_text and name not in text_columns:
            out[name] = _infer_text_column(values)
        else:
            out[name] = values
    return out, report, col


def _finish_keyed(
    out: pd.DataFrame,
    report: ValidationReport,
    col: _Collector,
    id_columns: Sequence[str],
    on_bad_rows: BadRowPolicy,
) -> pd.DataFrame:
    out = _finish(out, col, report, on_bad_rows)
    for name in id_columns:
        if out[name].dtype == "Int64":
            out[name] = out[name].astype(np.int64)
    return out


def read_pairs(path: Path | str, *, on_bad_rows: BadRowPolicy = "fail") -> pd.DataFrame:
    """Read a user-item pairs file (``recsys score --pairs``): ``user_id``, ``item_id``.

    Stability: stable

    Parameters
    ----------
    path
        CSV/TSV (optionally compressed, optionally with a UTF-8 byte-order mark) or parquet.
    on_bad_rows
        Rows with a missing id fail with a report naming the file, rows and field
        (default), or are dropped with a count (``"drop"``).

    Returns
    -------
    pandas.DataFrame
        ``user_id``, ``item_id`` (ids as :func:`read_interactions` reads them) and any
        other columns; rows in file order, repeated pairs kept.

    Raises
    ------
    DataError
        Missing file or column, an empty file, or missing ids with ``on_bad_rows="fail"``.
    """
    ids = ("user_id", "item_id")
    out, report, col = _read_keyed(path, "pairs", ids, ids, (), on_bad_rows)
    return _finish_keyed(out, report, col, ids, on_bad_rows)


def read_recommendations(path: Path | str, *, on_bad_rows: BadRowPolicy = "fail") -> pd.DataFrame:
    """Read a recommendations file (``recsys evaluate --recs``).

    Stability: stable

    Parameters
    ----------
    path
        CSV/TSV (optionally compressed, optionally with a UTF-8 byte-order mark) or parquet
        with ``user_id``, ``item_id``, ``rank`` and optionally ``score`` and ``sources``,
        as ``recsys recommend --out`` writes it.
    on_bad_rows
        As for :func:`read_pairs`; a missing or non-numeric ``rank`` is a bad row too.

    Returns
    -------
    pandas.DataFrame
        Ids as :func:`read_interactions` reads them (``"007"`` stays ``"007"``), ``rank``
        as int64 (float64 if a rank is fractional), ``sources`` as text.

    Raises
    ------
    DataError
        Missing file or column, an empty file, or bad rows with ``on_bad_rows="fail"``.
    """
    ids = ("user_id", "item_id")
    out, report, col = _read_keyed(
        path, "recommendations", ids, (*ids, "rank"), ("sources",), on_bad_rows
    )
    raw = out["rank"]
    rank = _to_float(raw)
    col.add("bad_rank", "rank", ~np.isfinite(rank.to_numpy()), raw, "expected a number")
    out["rank"] = rank
    out = _finish_keyed(out, report, col, ids, on_bad_rows)
    values = out["rank"].to_numpy(np.float64)
    if np.all(values == np.round(values)) and (len(values) == 0 or np.abs(values).max() < 2**53):
        out["rank"] = values.astype(np.int64)
    return out


def read_item_relations(path: Path | str, *, on_bad_rows: BadRowPolicy = "fail") -> pd.DataFrame:
    """Read item knowledge-graph triples: ``item_id``, ``relation``, ``entity``.

    Stability: stable

    ``relation`` and ``entity`` stay text; ``item_id`` follows :func:`read_items`. Rows
    with a missing ``item_id`` are bad rows (``on_bad_rows`` as in :func:`read_pairs`).

    Raises
    ------
    DataError
        Missing file or column, an empty file, or bad rows with ``on_bad_rows="fail"``.
    """
    ids = ("item_id",)
    out, report, col = _read_keyed(
        path,
        "item relations",
        ids,
        ("item_id", "relation", "entity"),
        ("relation", "entity"),
        on_bad_rows,
    )
    return _finish_keyed(out, report, col, ids, on_bad_rows)


# ---------------------------------------------------------------------------- writers
def write_frame(df: pd.DataFrame, path: Path | str) -> Path:
    """Write a frame as parquet (zstd) or CSV/TSV by the file extension.

    Stability: stable

    Id values are written verbatim: parquet keeps the column types; CSV writes the text
    (``"007"`` stays ``007``, read back as the string ``"007"``). A string id column
    whose every value looks like a canonical integer reads back from CSV as int64 - use
    parquet to keep such ids as strings.

    Returns
    -------
    Path
        The written path (parent directories are created).
    """
    path = Path(path)
    fmt = _file_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        table = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table, path, compression="zstd")
    else:
        _write_csv(df, path)
    return path


_ARROW_COMPRESSION = {None: None, ".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """CSV/TSV via pyarrow (fast); pandas for what pyarrow cannot take (mixed objects)."""
    sep = _csv_separator_for_write(path)
    comp = _suffixes(path)[1]
    table = None
    if comp in _ARROW_COMPRESSION:
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            table = None
    if table is None:
        df.to_csv(path, sep=sep, index=False)
        return
    options = pa_csv.WriteOptions(delimiter=sep, quoting_style="needed")
    codec = _ARROW_COMPRESSION[comp]
    if codec is None:
        pa_csv.write_csv(table, str(path), options)
    else:
        with pa.CompressedOutputStream(str(path), codec) as out:
            pa_csv.write_csv(table, out, options)


def _csv_separator_for_write(path: Path) -> str:
    base, _ = _suffixes(path)
    return "\t" if base in (".tsv", ".txt") else ","
