"""Crash safety of the shared trainer: a DeepFM training process killed with SIGKILL in the
middle of a run resumes from its last checkpoint and finishes with the same final quality
as an uninterrupted run (bit-identical on the CPU).

Run as a script (``python test_deep_resume.py --worker ...``) this file is the training
process the test starts, kills and restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6


def _worker(argv: list[str]) -> None:
    """Train DeepFM on block data with checkpoints; write test AUC and history as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from recsys.eval import roc_auc
    from recsys.features import FeatureStore
    from recsys.models import DeepFM
    from recsys.testing import block_frame
    from recsys.types import TrainingData

    torch.set_num_threads(1)
    frame = block_frame(
        n_blocks=3, users_per_block=30, items_per_block=20, density=0.5, noise=0.6, seed=7
    )
    store = FeatureStore.build(frame, show_progress=False)
    data = TrainingData.from_frame(frame)
    order = np.random.default_rng(0).permutation(len(frame))
    train_rows = np.sort(order[: int(0.8 * len(order))])
    test_rows = np.sort(order[int(0.8 * len(order)) :])
    mask = np.zeros(len(frame), bool)
    mask[train_rows] = True

    def slow_down(epoch: int, metrics: dict[str, float]) -> None:
        time.sleep(args.sleep)  # leaves the test time to kill us between checkpoints

    model = DeepFM(
        embedding_dim=8,
        hidden_units=(32,),
        epochs=EPOCHS,
        batch_size=32,
        learning_rate=0.01,
        validation_fraction=0.0,
        device="cpu",
        seed=1,
    )
    model.fit(
        data.select(mask),
        features=store,
        rows=train_rows,
        checkpoint_dir=args.checkpoint,
        resume=args.resume,
        on_epoch=slow_down,
        show_progress=False,
    )
    labels = (frame["rating"].to_numpy() >= 4).astype(np.float32)
    probs = model.score_rows(store, test_rows)
    result = {
        "auc": roc_auc(labels[test_rows], probs),
        "scores": probs.astype(float).tolist(),
        "losses": [h["loss"] for h in model.history_],
    }
    args.out.write_text(json.dumps(result))


def _run(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kw,
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def test_sigkill_then_resume_finishes_like_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = _run(["--out", str(tmp_path / "whole.json")])
    ckpt = tmp_path / "ckpt"
    victim = _run(["--checkpoint", str(ckpt), "--sleep", "2", "--out", str(tmp_path / "x.json")])
    history = ckpt / "history.json"
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and victim.poll() is None:
        if history.exists():
            try:
                done = len(json.loads(history.read_text()))
            except ValueError:  # replaced while we read it
                done = 0
            if done >= 2:
                break
        time.sleep(0.2)
    assert victim.poll() is None, "the training process ended before it could be killed"
    assert 2 <= done < EPOCHS
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "x.json").exists()

    resumed = _run(["--checkpoint", str(ckpt), "--resume", "--out", str(tmp_path / "r.json")])
    _finish(resumed)
    _finish(whole)
    a = json.loads((tmp_path / "whole.json").read_text())
    b = json.loads((tmp_path / "r.json").read_text())
    assert len(b["losses"]) == EPOCHS
    assert b["losses"] == a["losses"]
    assert b["scores"] == a["scores"]
    assert b["auc"] == a["auc"] and a["auc"] > 0.75


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2:])
