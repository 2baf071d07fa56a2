"""The shared torch trainer: batching, early stopping, repeatability, checkpoint/resume,
callbacks, the safe tensor files and the layers the deep models share."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from recsys.errors import ArtifactError, ConfigError, DataError
from recsys.models._torch.checkpoint import load_tensors, save_tensors
from recsys.models._torch.layers import Dice, EmbeddingArch, PReLU
from recsys.models._torch.trainer import (
    CHECKPOINT_FILE,
    HISTORY_FILE,
    Trainer,
    TrainerSettings,
    epoch_seed,
    predict_proba,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Logistic(nn.Module):
    """``logit = w . x + b`` with an L2 penalty: the smallest module of the contract."""

    def __init__(self, dim: int, reg: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        self.drop = nn.Dropout(dropout)
        self.reg = reg

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.linear(self.drop(batch["x"])).squeeze(-1)
        return logits, self.reg * self.linear.weight.square().sum()


def make_rows(n: int, seed: int, dim: int = 5, noise: float = 0.5) -> dict[str, torch.Tensor]:
    """Rows of a logistic model with a known weight vector."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    w = torch.arange(1, dim + 1, dtype=torch.float32) / dim
    logits = x @ w + noise * torch.randn(n, generator=gen)
    return {"x": x, "label": (logits > 0).float()}


def settings(**kw: object) -> TrainerSettings:
    base: dict[str, object] = {
        "epochs": 4,
        "batch_size": 32,
        "learning_rate": 0.05,
        "device": "cpu",
        "seed": 3,
        "patience": None,
    }
    base.update(kw)
    return TrainerSettings(**base)  # type: ignore[arg-type]


def fresh(seed: int = 0, **kw: float) -> Logistic:
    torch.manual_seed(seed)
    return Logistic(5, **kw)


# ---------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"learning_rate": 0.0},
        {"patience": 0},
        {"metric": "accuracy"},
    ],
)
def test_settings_reject_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        settings(**bad)


def test_resume_needs_checkpoint_dir() -> None:
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        Trainer(settings(), resume=True)


def test_epoch_seed_is_a_pure_function() -> None:
    assert epoch_seed(1, 2) == epoch_seed(1, 2)
    assert len({epoch_seed(1, e) for e in range(50)}) == 50
    assert epoch_seed(1, 2) != epoch_seed(2, 2)
    assert 0 <= epoch_seed(-5, 10**9) < 2**63


# ---------------------------------------------------------------------- training
def test_learns_a_separable_problem_and_records_history() -> None:
    train, valid = make_rows(2000, 0), make_rows(500, 1)
    seen: list[tuple[int, dict[str, float]]] = []
    module = fresh()
    result = Trainer(
        settings(), show_progress=False, on_epoch=lambda e, m: seen.append((e, m))
    ).fit(module, train, valid)
    assert result.best_metric is not None and result.best_metric > 0.9
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert [m for _, m in seen] == result.history
    for entry in result.history:
        assert {"epoch", "loss", "val_auc", "val_logloss", "seconds", "train_seconds"} <= set(entry)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    probs = predict_proba(module, valid)
    assert probs.dtype == np.float32 and probs.shape == (500,)
    assert ((probs > 0) & (probs < 1)).all()


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    train = make_rows(600, 0)
    a, b, c = fresh(), fresh(), fresh()
    Trainer(settings(), show_progress=False).fit(a, train)
    Trainer(settings(), show_progress=False).fit(b, train)
    Trainer(settings(seed=4), show_progress=False).fit(c, train)
    torch.testing.assert_close(a.state_dict(), b.state_dict(), rtol=0, atol=0)
    assert not torch.equal(a.linear.weight, c.linear.weight)


def test_dropout_noise_is_seeded_and_leaves_global_rng_alone() -> None:
    train = make_rows(400, 0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = fresh(dropout=0.3), fresh(dropout=0.3)
    torch.manual_seed(123)
    Trainer(settings(), show_progress=False).fit(a, train)
    assert torch.equal(torch.rand(1), before), "training consumed the global RNG"
    Trainer(settings(), show_progress=False).fit(b, train)
    torch.testing.assert_close(a.state_dict(), b.state_dict(), rtol=0, atol=0)


def test_early_stopping_restores_the_best_epoch() -> None:
    # labels of validation are unrelated to x: the metric wanders, patience 1 stops it
    train = make_rows(800, 0)
    valid = make_rows(300, 1)
    valid["label"] = torch.from_numpy(np.random.default_rng(0).integers(0, 2, 300)).float()
    module = fresh()
    result = Trainer(settings(epochs=30, patience=1), show_progress=False).fit(module, train, valid)
    assert result.stopped_early and len(result.history) < 30
    best = max(h["val_auc"] for h in result.history)
    assert result.best_metric == pytest.approx(best)
    assert result.history[result.best_epoch - 1]["val_auc"] == pytest.approx(best)
    # the module holds the best epoch's weights: its validation AUC is the best one
    from recsys.eval import roc_auc

    assert roc_auc(valid["label"].numpy(), predict_proba(module, valid)) == pytest.approx(
        best, abs=1e-6
    )


def test_logloss_metric_prefers_lower_values() -> None:
    train, valid = make_rows(800, 0), make_rows(300, 1)
    result = Trainer(settings(epochs=6, metric="logloss"), show_progress=False).fit(
        fresh(), train, valid
    )
    assert result.best_metric == pytest.approx(min(h["val_logloss"] for h in result.history))


def test_gauc_needs_groups() -> None:
    train, valid = make_rows(200, 0), make_rows(100, 1)
    with pytest.raises(ConfigError, match="groups"):
        Trainer(settings(metric="gauc"), show_progress=False).fit(fresh(), train, valid)
    groups = np.arange(100) % 7
    result = Trainer(settings(metric="gauc", epochs=2), show_progress=False).fit(
        fresh(), train, valid, valid_groups=groups
    )
    assert "val_gauc" in result.history[0]


def test_per_epoch_training_rows() -> None:
    calls: list[int] = []

    def source(epoch: int) -> dict[str, torch.Tensor]:
        calls.append(epoch)
        return make_rows(200, epoch)

    Trainer(settings(epochs=3), show_progress=False).fit(fresh(), source)
    assert calls == [1, 2, 3]


@pytest.mark.parametrize(
    "rows, match",
    [
        ({"x": torch.zeros(10, 5)}, "label"),
        ({"x": torch.zeros(10, 5), "label": torch.zeros(9)}, "differ in rows"),
        ({"x": torch.zeros(0, 5), "label": torch.zeros(0)}, "no training rows"),
    ],
)
def test_bad_training_rows(rows: dict[str, torch.Tensor], match: str) -> None:
    with pytest.raises(DataError, match=match):
        Trainer(settings(), show_progress=False).fit(fresh(), rows)


def test_single_class_validation_is_refused() -> None:
    valid = make_rows(50, 1)
    valid["label"] = torch.ones(50)
    with pytest.raises(DataError, match="both classes"):
        Trainer(settings(), show_progress=False).fit(fresh(), make_rows(100, 0), valid)


def test_divergence_is_reported() -> None:
    class Broken(Logistic):
        def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            logits, penalty = super().forward(batch)
            return logits * float("nan"), penalty

    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="diverged"):
        Trainer(settings(epochs=1), show_progress=False).fit(Broken(5), make_rows(64, 0))


def test_frozen_parameters_stay_put() -> None:
    module = fresh()
    module.linear.bias.requires_grad_(False)
    bias = module.linear.bias.detach().clone()
    Trainer(settings(epochs=2), show_progress=False).fit(module, make_rows(300, 0))
    assert torch.equal(module.linear.bias, bias)
    module.linear.weight.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable"):
        Trainer(settings(epochs=1), show_progress=False).fit(module, make_rows(30, 0))


# ---------------------------------------------------------------------- checkpoints
class Crash(Exception):
    pass


def _without_times(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in history]


def _crash_after(epoch: int):  # type: ignore[no-untyped-def]
    def callback(e: int, metrics: dict[str, float]) -> None:
        if e == epoch:
            raise Crash

    return callback


def test_resume_after_a_crash_finishes_like_an_uninterrupted_run(tmp_path: Path) -> None:
    train, valid = make_rows(800, 0), make_rows(300, 1)
    s = settings(epochs=6, patience=3, learning_rate=0.02)
    whole = fresh()
    expected = Trainer(s, show_progress=False).fit(whole, train, valid)

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Crash):
        Trainer(s, show_progress=False, checkpoint_dir=ckpt, on_epoch=_crash_after(3)).fit(
            fresh(), train, valid
        )
    meta = load_tensors(ckpt / CHECKPOINT_FILE, what="test")[1]
    assert len(meta["history"]) == 3 and not meta["finished"]
    assert len(json.loads((ckpt / HISTORY_FILE).read_text())) == 3

    resumed = fresh(seed=99)  # other initial weights: everything must come from the file
    result = Trainer(s, show_progress=False, checkpoint_dir=ckpt, resume=True).fit(
        resumed, train, valid
    )
    assert result.resumed_from == 3
    assert _without_times(result.history) == _without_times(expected.history)
    torch.testing.assert_close(resumed.state_dict(), whole.state_dict(), rtol=0, atol=0)
    assert result.best_epoch == expected.best_epoch

    # resuming a finished run only restores its best weights
    again = fresh(seed=7)
    done = Trainer(s, show_progress=False, checkpoint_dir=ckpt, resume=True).fit(
        again, train, valid
    )
    assert len(done.history) == len(expected.history)
    torch.testing.assert_close(again.state_dict(), whole.state_dict(), rtol=0, atol=0)


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    result = Trainer(
        settings(epochs=2), show_progress=False, checkpoint_dir=tmp_path / "new", resume=True
    ).fit(fresh(), make_rows(100, 0))
    assert result.resumed_from == 0 and len(result.history) == 2
    assert (tmp_path / "new" / CHECKPOINT_FILE).is_file()


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path: Path) -> None:
    Trainer(settings(epochs=1), show_progress=False, checkpoint_dir=tmp_path).fit(
        fresh(), make_rows(100, 0)
    )
    with pytest.raises(ConfigError, match="other settings"):
        Trainer(
            settings(epochs=1, learning_rate=0.5),
            show_progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
        ).fit(fresh(), make_rows(100, 0))
    with pytest.raises(ConfigError, match="checkpoint of"):
        Trainer(
            settings(epochs=1),
            show_progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
            name="other",
        ).fit(fresh(), make_rows(100, 0))


def test_damaged_checkpoint_is_an_artifact_error(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ArtifactError):
        Trainer(settings(), show_progress=False, checkpoint_dir=tmp_path, resume=True).fit(
            fresh(), make_rows(100, 0)
        )


# ---------------------------------------------------------------------- tensor files
def test_tensor_files_round_trip_and_refuse_garbage(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    tensors = {"a": torch.arange(6).reshape(2, 3), "b": torch.ones(3)[1:]}  # a view
    save_tensors(path, tensors, {"k": [1, "x"]})
    back, meta = load_tensors(path, what="test")
    assert meta == {"k": [1, "x"]}
    assert torch.equal(back["a"], tensors["a"]) and torch.equal(back["b"], tensors["b"])
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ArtifactError, match="damaged"):
        load_tensors(path, what="test")
    with pytest.raises(ArtifactError, match="missing"):
        load_tensors(tmp_path / "nope.safetensors", what="test")


# ---------------------------------------------------------------------- layers
def test_dice_matches_its_definition() -> None:
    dice = Dice(4)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.0, 0.1, 0.5, 1.0]))
    x = torch.randn(64, 4)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + 1e-8))
    torch.testing.assert_close(dice(x), p * x + (1 - p) * dice.alpha * x)
    seq = torch.randn(8, 5, 4)  # (B, L, H) works on the last dim
    assert dice(seq).shape == seq.shape


def test_prelu_acts_on_the_last_dimension() -> None:
    act = PReLU(3, init=0.5)
    x = torch.tensor([[[-2.0, 1.0, -4.0]]])
    torch.testing.assert_close(act(x), torch.tensor([[[-1.0, 1.0, -2.0]]]))


def test_embedding_arch_pools_bags_and_keeps_padding_zero() -> None:
    users = torch.tensor([[1, 3], [2, 4], [0 + 1, 3]])  # (n_users + 1, Fu)
    items = torch.tensor([[5], [6], [5]])  # (n_items + 1, Fi)
    bags = torch.tensor([[[7, 8, 0]], [[9, 0, 0]], [[0, 0, 0]]])  # (n_items + 1, 1, 3)
    arch = EmbeddingArch(
        n_rows=10,
        embedding_dim=4,
        user_fields=users,
        item_fields=items,
        item_bags=bags,
        init_std=1.0,
        first_order=True,
    )
    w = arch.embedding.weight.detach()
    assert torch.equal(w[0], torch.zeros(5))
    fields, first, penalty = arch(torch.tensor([0, 1]), torch.tensor([0, 2]))
    assert fields.shape == (2, 4, 4) and first is not None and first.shape == (2,)
    torch.testing.assert_close(fields[0, 3], (w[7, :4] + w[8, :4]) / 2)  # mean of the bag
    torch.testing.assert_close(fields[1, 3], torch.zeros(4))  # empty bag
    torch.testing.assert_close(fields[1, 2], w[5, :4])
    assert float(penalty) == 0.0
    loss = fields.sum() + first.sum()
    loss.backward()
    assert arch.embedding.weight.grad is not None
    assert torch.equal(arch.embedding.weight.grad[0], torch.zeros(5))
    vectors, _ = arch.item_vectors(torch.tensor([[0, 1], [2, 2]]))
    assert vectors.shape == (2, 2, 2, 4)
    torch.testing.assert_close(vectors[0, 0], fields[0, 2:])
    arch.grow(13, 0.1, torch.Generator().manual_seed(0))
    assert arch.embedding.weight.shape == (13, 5)
    assert torch.equal(arch.embedding.weight[:10].detach(), w)


def _bag_arch() -> EmbeddingArch:
    torch.manual_seed(0)
    return EmbeddingArch(
        n_rows=12,
        embedding_dim=4,
        user_fields=torch.tensor([[1, 3], [2, 4], [1, 3]]),
        item_fields=torch.tensor([[5, 10], [6, 11], [5, 10], [0, 11]]),
        item_bags=torch.tensor([[[7, 8, 0]], [[9, 9, 8]], [[0, 0, 0]], [[7, 0, 0]]]),
        init_std=1.0,
        first_order=True,
    )


@pytest.mark.parametrize("first_order", [False, True])
def test_item_table_equals_the_bag_lookup_of_every_item(first_order: bool) -> None:
    """The sparse product of the whole item table (values and gradients) is the bag
    lookup of ``arange(n_items + 1)``; padding row 0 gets no gradient."""
    arch = _bag_arch()
    weight = arch.embedding.weight
    rows = torch.arange(4)
    expected, _ = arch.item_vectors(rows, first_order=first_order)
    got = arch.item_table(first_order=first_order)
    assert got.shape == expected.shape == (4, 3, 5 if first_order else 4)
    torch.testing.assert_close(got, expected)
    upstream = torch.randn(expected.shape)
    (grad_bag,) = torch.autograd.grad((expected * upstream).sum(), weight)
    (grad_table,) = torch.autograd.grad((got * upstream).sum(), weight)
    torch.testing.assert_close(grad_table, grad_bag)
    assert torch.equal(grad_table[0], torch.zeros(5))
    # a copy starts without the cached matrix; new tables or rows rebuild it
    copied = copy.deepcopy(arch)
    torch.testing.assert_close(copied.item_table(first_order=first_order), got.detach())
    arch.set_tables(arch.user_fields, arch.item_fields[[1, 0, 2, 3]], arch.item_bags[[1, 0, 2, 3]])
    swapped = arch.item_table(first_order=first_order)
    torch.testing.assert_close(swapped[[1, 0, 2, 3]], got)
    arch.grow(15, 0.1, torch.Generator().manual_seed(0))
    torch.testing.assert_close(arch.item_table(first_order=first_order), swapped)


def test_user_vectors_equal_the_bag_lookup() -> None:
    arch = _bag_arch()
    users = torch.tensor([2, 0, 1, 0])
    got, _ = arch.user_vectors(users, first_order=True)
    idx = arch.user_fields[users]
    expected = arch._lookup(idx, idx.shape[1], None)
    torch.testing.assert_close(got, expected)
    upstream = torch.randn(expected.shape)
    weight = arch.embedding.weight
    (grad_bag,) = torch.autograd.grad((expected * upstream).sum(), weight)
    (grad_gather,) = torch.autograd.grad((got * upstream).sum(), weight)
    torch.testing.assert_close(grad_gather, grad_bag)
