"""Quiet by default (#14): recsys's own lines, not gensim's INFO records or implicit's bars.

``recsys train`` of a gensim-trained (Doc2Vec) and an implicit-trained (BPR) component, in
a subprocess as a user runs it: at default verbosity stderr holds recsys's INFO lines and
no third-party INFO record or implicit progress bar; ``-v`` brings both back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from recsys.testing import block_frame
from recsys.testing.cli import run_cli

pytestmark = pytest.mark.integration

# implicit's BPR bar carries its training metrics as a postfix: "train_auc=..., skipped=..."
IMPLICIT_BAR = "train_auc="
GENSIM_INFO = re.compile(r" INFO gensim[.\w]*: ")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("logging")
    log = block_frame(seed=0)
    log.to_csv(root / "interactions.csv", index=False)
    items = sorted(log["item_id"].unique())
    words = ["red", "green", "blue"]
    titles = [f"{words[n % 3]} thing {words[(n // 3) % 3]} item{n}" for n in range(len(items))]
    pd.DataFrame({"item_id": items, "title": titles}).to_csv(root / "items.csv", index=False)
    return root / "interactions.csv", root / "items.csv"


def train(inputs: tuple[Path, Path], out: Path, *flags: str) -> str:
    interactions, items = inputs
    proc = run_cli(
        *flags,
        "train",
        "--interactions",
        interactions,
        "--items",
        items,
        "--models",
        "bpr,doc2vec",
        "--out",
        out,
        quiet=False,
    )
    return proc.stderr


def test_default_verbosity_shows_recsys_lines_only(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    stderr = train(inputs, tmp_path / "artifact")
    assert " INFO recsys.cli: trained components=bpr,doc2vec" in stderr
    assert " INFO recsys." in stderr
    assert not GENSIM_INFO.search(stderr), stderr
    assert IMPLICIT_BAR not in stderr, stderr
    infos = {m.group(1) for m in re.finditer(r" (?:INFO|DEBUG) ([\w.]+): ", stderr)}
    assert all(name.startswith("recsys") for name in infos), infos


def test_verbose_shows_third_party_logs_and_bars(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    stderr = train(inputs, tmp_path / "artifact", "-v")
    assert GENSIM_INFO.search(stderr), stderr[-2000:]
    assert IMPLICIT_BAR in stderr, stderr[-2000:]
