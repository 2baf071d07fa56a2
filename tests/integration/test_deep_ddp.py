"""Data-parallel training with ``torch.distributed``: ``torchrun --nproc_per_node 2`` on the
CPU (gloo backend) trains DeepFM and DIN to the same quality as one process.

Run as a script (``python test_deep_ddp.py --worker ...``, alone or under ``torchrun``)
this file is the training process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _worker(argv: list[str]) -> None:
    """Train one model on block data (DDP when launched by torchrun); rank 0 writes JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["deepfm", "din"], required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from recsys.eval import roc_auc
    from recsys.features import FeatureStore
    from recsys.models import get_model_class
    from recsys.testing import block_frame
    from recsys.types import TrainingData

    torch.set_num_threads(1)
    frame = block_frame(
        n_blocks=3, users_per_block=40, items_per_block=20, density=0.5, noise=0.6, seed=3
    )
    store = FeatureStore.build(frame, sequence_length=5, show_progress=False)
    data = TrainingData.from_frame(frame)
    order = np.random.default_rng(0).permutation(len(frame))
    train_rows = np.sort(order[: int(0.8 * len(order))])
    test_rows = np.sort(order[int(0.8 * len(order)) :])
    mask = np.zeros(len(frame), bool)
    mask[train_rows] = True
    params = {
        "embedding_dim": 8,
        "hidden_units": (32,),
        "epochs": 8,
        "batch_size": 64,
        "learning_rate": 0.01,
        "validation_fraction": 0.0,
        "device": "cpu",
        "seed": 2,
    }
    if args.model == "din":
        params.update(sequence_length=5, attention_units=(8,))
    model = get_model_class(args.model)(**params)
    model.fit(data.select(mask), features=store, rows=train_rows, show_progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        labels = (frame["rating"].to_numpy() >= 4).astype(np.float32)
        probs = model.score_rows(store, test_rows)
        args.out.write_text(
            json.dumps(
                {
                    "auc": roc_auc(labels[test_rows], probs),
                    "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                    "losses": [h["loss"] for h in model.history_],
                }
            )
        )


def _run(cmd: list[str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("torchrun")
    if found:
        return [found]
    return [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.parametrize("model", ["deepfm", "din"])
def test_two_processes_match_one(model: str, tmp_path: Path) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    single, ddp = tmp_path / "single.json", tmp_path / "ddp.json"
    _run([sys.executable, __file__, "--worker", "--model", model, "--out", str(single)], tmp_path)
    _run(
        [
            *_torchrun(),
            "--standalone",
            "--nproc_per_node",
            "2",
            __file__,
            "--worker",
            "--model",
            model,
            "--out",
            str(ddp),
        ],
        tmp_path,
    )
    one = json.loads(single.read_text())
    two = json.loads(ddp.read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert len(two["losses"]) == len(one["losses"])
    # each process takes half of every global batch: the same optimisation up to float
    # rounding (and Dice's per-process batch statistics in DIN)
    assert abs(two["auc"] - one["auc"]) < 0.02, (one["auc"], two["auc"])
    assert one["auc"] > 0.7


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2:])
