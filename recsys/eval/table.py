"""Plain-text tables of evaluation results for the terminal."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import pandas as pd

from recsys.errors import ConfigError, DataError, format_examples

__all__ = ["format_table"]


def _cell(value: object, key: str, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        # Counts stored as floats (a DataFrame column with a missing cell) read as counts.
        if key.startswith("n_") and v.is_integer():
            return str(int(v))
        return f"{v:.{digits}f}"
    return str(value)


def format_table(
    results: Mapping[str, Mapping[str, float]] | pd.DataFrame,
    keys: Sequence[str] | None = None,
    *,
    digits: int = 4,
) -> str:
    """An aligned text table: one row per model, one column per metric.

    Stability: stable

    Parameters
    ----------
    results
        ``{model: {metric: value}}`` (e.g. several :func:`~recsys.eval.evaluate_model`
        results), or a DataFrame indexed by model (as from
        :func:`~recsys.eval.evaluate_models`).
    keys
        Metric columns, in order. Default: every key, in first-seen order.
    digits
        Decimals of real values; integers (counts) print without decimals and a
        missing value prints as ``-``.

    Returns
    -------
    str
        The table, lines joined by ``\\n`` (no trailing newline); names left-aligned,
        numbers right-aligned.

    Raises
    ------
    DataError
        If ``keys`` names a metric that no model has.

    Examples
    --------
    >>> print(format_table({"popular": {"ndcg@10": 0.11111, "n_users": 943}}))
    model    ndcg@10  n_users
    popular   0.1111      943
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
        raise ConfigError(f"digits must be a non-negative integer, got {digits!r}")
    if isinstance(results, pd.DataFrame):
        label = str(results.index.name or "model")
        rows: dict[str, dict[str, object]] = {
            str(name): {str(c): v for c, v in row.items() if not _missing(v)}
            for name, row in results.iterrows()
        }
    else:
        label = "model"
        rows = {str(name): dict(metrics) for name, metrics in results.items()}
    seen: dict[str, None] = {}
    for metrics in rows.values():
        for key in metrics:
            seen.setdefault(key, None)
    columns = list(seen) if keys is None else list(keys)
    unknown = [k for k in columns if k not in seen]
    if unknown:
        raise DataError(
            f"format_table: no result has metric(s) {format_examples(unknown)}; "
            f"available: {format_examples(list(seen), limit=20)}"
        )
    header = [label, *columns]
    body = [[name, *(_cell(m.get(k), k, digits) for k in columns)] for name, m in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return "\n".join(line(r) for r in [header, *body])


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
