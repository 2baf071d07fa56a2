"""The self-contained HTML evaluation report."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.errors import DataError
from recsys.eval.report import bar_chart, build_report, line_chart, write_report


def table() -> pd.DataFrame:
    rows = {}
    for name, base in (("hybrid", 0.25), ("blend", 0.22), ("itemknn", 0.18)):
        row = {}
        for k in (5, 10, 20):
            row[f"ndcg@{k}"] = base + 0.001 * k
            row[f"recall@{k}"] = base * k / 20
            row[f"precision@{k}"] = base / 2
            row[f"coverage@{k}"] = 0.1 + base
            row[f"avg_popularity@{k}"] = 300 * (1 - base)
        row["n_users"] = 943
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def test_report_is_self_contained_with_every_section(tmp_path: Path) -> None:
    history = [
        {"epoch": 1.0, "loss": 1.2, "val_rmse": 1.0},
        {"epoch": 2.0, "loss": 0.9, "val_rmse": 0.95},
    ]
    ranker = {
        "learner": "hgb",
        "holdout_ndcg@10": 0.26,
        "holdout_blend_ndcg@10": 0.21,
        "holdout_source:covisit_ndcg@10": 0.24,
        "n_training_rows": 1000,
    }
    path = write_report(
        tmp_path / "out" / "r.html",
        table(),
        info={"version": "v1 <test>"},
        histories={"svdpp": history},
        ranker=ranker,
    )
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    for needle in (
        "Accuracy at 10",
        "Recall@k",
        "Coverage and popularity bias",
        "Hybrid ranker",
        "Validation NDCG@10",
        "svdpp training",
        "v1 &lt;test&gt;",
    ):
        assert needle in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # no external asset
    assert "<script" not in text and "src=" not in text
    # every plot is well-formed SVG
    svgs = text.split("<svg")[1:]
    assert len(svgs) >= 5
    for chunk in svgs:
        ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")
    # the best row of the highlighted metric is bold
    assert '<tr class="best"><td>hybrid</td>' in text


def test_charts_handle_missing_values() -> None:
    svg = bar_chart(["a", "b"], {"x": [0.5, float("nan")]}, title="t")
    assert svg.count("<rect") >= 2 and "nan" not in svg.lower()
    assert line_chart({"s": [(1, float("nan"))]}, title="t", x_label="k") == ""
    curve = line_chart({"s": [(1, 0.1), (10, 0.3)]}, title="t", x_label="k", log_x=True)
    ET.fromstring(curve)


def test_bad_tables_are_refused() -> None:
    with pytest.raises(DataError, match="empty"):
        build_report(pd.DataFrame())
    with pytest.raises(DataError, match="no metric@k"):
        build_report(pd.DataFrame({"n_users": [1.0]}, index=["m"]))
    html = build_report(pd.DataFrame({"ndcg@10": [np.float64(0.2)]}, index=["m"]))
    assert "ndcg@10" in html
