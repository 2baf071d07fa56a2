"""The one training loop of every autograd torch model (DeepFM, DIN, ...).

What it does, so that no model writes its own loop:

* **device**: ``device="auto"`` trains on CUDA when present, with bf16 autocast there, and
  on the CPU otherwise. On the CPU a seed makes a run repeatable bit for bit.
* **batching** from tensors built once and kept on the device: an epoch is a seeded
  permutation of row indices and each step takes ``index_select`` of every input tensor.
  There is no per-row Python and no ``DataLoader`` (worker processes only add copies at
  these sizes).
* **early stopping** on a validation metric (AUC by default, or GAUC / log loss) with
  ``patience``; the best epoch's weights are restored at the end.
* **checkpoints** after every epoch (weights, optimizer state, best weights, history) in
  one atomically replaced safetensors file; ``resume=True`` continues a run killed at any
  point and finishes exactly as the uninterrupted run would on the CPU (the epoch's
  permutation and dropout noise are derived from ``(seed, epoch)``, not from a running
  generator).
* **progress** through ``tqdm`` (``show_progress``), an ``on_epoch(epoch, metrics)``
  callback and the per-epoch ``history`` (the training curves of the HTML report).
* **data parallel** training with ``torch.distributed`` when launched by ``torchrun``:
  every process takes its slice of each global batch and DDP averages the gradients, so
  ``N`` processes follow the single-process run up to float rounding (see
  :mod:`recsys.models._torch.distributed`).

The module contract: ``module(batch)`` takes a ``dict[str, Tensor]`` of row-aligned inputs
(the rows of one batch) and returns ``(logits, penalty)``: ``(B,)`` float logits of the
click probability and a 0-d regularisation term added to the mean binary cross-entropy.
The batch's ``"label"`` entry holds ``(B,) float32`` 0/1 labels and is not passed on.

SVD++ does not use this trainer: it applies Koren's closed-form SGD updates without
autograd (see :mod:`recsys.models.svdpp`), which this loop, built around an optimizer
and a loss, would only slow down.

Stability: internal
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from recsys.errors import ConfigError, DataError
from recsys.models._torch.checkpoint import load_tensors, save_tensors
from recsys.models._torch.device import resolve_device
from recsys.models._torch.distributed import DistributedContext, distributed_context

if TYPE_CHECKING:
    import torch

__all__ = [
    "Batch",
    "EpochCallback",
    "FitResult",
    "Trainer",
    "TrainerSettings",
    "epoch_seed",
    "predict_proba",
]

logger = logging.getLogger(__name__)

#: Row-aligned input tensors of a model, plus ``"label"`` for training and validation.
Batch = dict[str, "torch.Tensor"]
#: ``on_epoch(epoch, metrics)``, epoch counting from 1, metrics the ``history`` entry.
EpochCallback = Callable[[int, dict[str, float]], None]
#: Training rows: fixed tensors, or a function of the epoch (e.g. fresh negatives).
TrainSource = Batch | Callable[[int], Batch]

CHECKPOINT_FILE = "checkpoint.safetensors"
HISTORY_FILE = "history.json"
_CHECKPOINT_FORMAT = 1
_LABEL = "label"


@dataclass(frozen=True)
class TrainerSettings:
    """Hyperparameters of the training loop (a model copies them from its config).

    Attributes
    ----------
    epochs
        Upper bound on passes over the training rows.
    batch_size
        Rows per optimizer step, summed over processes when distributed (each of ``N``
        processes takes ``batch_size / N`` rows of every global batch).
    learning_rate, weight_decay
        Adam's step size and L2 weight decay.
    patience
        Stop after this many epochs without a better validation metric; ``None`` trains
        every epoch (the best epoch is still restored when there is validation data).
    metric
        Validation metric of early stopping: ``"auc"``, ``"gauc"`` (needs groups) or
        ``"logloss"`` (lower is better).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    seed
        Seeds the epoch permutations and dropout noise.
    eval_batch_size
        Rows per forward pass when predicting.
    mixed_precision
        bf16 autocast on CUDA (ignored on the CPU).
    """

    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int | None = 3
    metric: Literal["auc", "gauc", "logloss"] = "auc"
    device: str = "auto"
    seed: int = 42
    eval_batch_size: int = 4096
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(
                f"Trainer: epochs, batch_size and eval_batch_size must be >= 1, got "
                f"{self.epochs}, {self.batch_size}, {self.eval_batch_size}"
            )
        if not self.learning_rate > 0:
            raise ConfigError(f"Trainer: learning_rate must be > 0, got {self.learning_rate}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"Trainer: patience must be >= 1 or None, got {self.patience}")
        if self.metric not in ("auc", "gauc", "logloss"):
            raise ConfigError(
                f"Trainer: metric must be 'auc', 'gauc' or 'logloss', got {self.metric!r}"
            )


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did.

    Attributes
    ----------
    history
        One dict per epoch trained: ``epoch``, ``loss`` (training log loss), ``seconds``
        (the whole epoch), ``train_seconds`` and ``train_cpu_seconds`` (wall and process
        CPU time of the optimisation pass alone), ``learning_rate`` and, with validation,
        ``val_auc``, ``val_logloss`` and ``val_gauc`` (with groups).
    best_epoch
        The epoch whose weights the module holds (the last one without validation).
    best_metric
        Its validation metric (``None`` without validation).
    stopped_early
        Whether patience ran out before ``epochs``.
    resumed_from
        Epochs already done in the checkpoint this run resumed from (0 for a fresh run).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float | None = None
    stopped_early: bool = False
    resumed_from: int = 0


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded with ``seed``.

    Everything random in an epoch (row order, dropout, sampled negatives) is derived from
    it, so a resumed run redraws exactly what the interrupted one would have drawn.
    """
    state = np.random.SeedSequence([int(seed) % (2**63), int(epoch)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _rows(batch: Batch) -> int:
    sizes = {int(v.shape[0]) for v in batch.values()}
    if len(sizes) != 1:
        raise DataError(
            f"Trainer: input tensors differ in rows: "
            f"{ {k: int(v.shape[0]) for k, v in batch.items()} }"
        )
    return sizes.pop()


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 autocast on CUDA; a no-op context elsewhere (entering a disabled
    ``torch.autocast`` still costs Python work on every batch)."""
    import torch

    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def predict_proba(
    module: torch.nn.Module,
    inputs: Batch,
    *,
    batch_size: int = 4096,
    mixed_precision: bool = True,
) -> NDArray[np.float32]:
    """Click probabilities of every row of ``inputs``, in batches, in eval mode.

    Parameters
    ----------
    module
        A module following the contract of this module's docstring; it stays on its
        device and the inputs are moved there batch by batch.
    inputs
        Row-aligned tensors (a ``"label"`` entry is ignored).
    batch_size
        Rows per forward pass.
    mixed_precision
        bf16 autocast when the module is on CUDA.

    Returns
    -------
    (n,) float32
        ``sigmoid(logits)``.
    """
    import torch

    feats = {k: v for k, v in inputs.items() if k != _LABEL}
    if not feats:
        return np.empty(0, np.float32)
    n = _rows(feats)
    try:
        device = next(module.parameters()).device
    except StopIteration:  # pragma: no cover - every model has parameters
        device = torch.device("cpu")
    was_training = module.training
    module.eval()
    out = np.empty(n, np.float32)
    try:
        with torch.inference_mode(), _autocast(device, mixed_precision):
            for start in range(0, n, batch_size):
                part = {k: v[start : start + batch_size].to(device) for k, v in feats.items()}
                logits = module(part)[0]
                out[start : start + len(logits)] = (
                    torch.sigmoid(logits.float()).to("cpu").numpy().astype(np.float32)
                )
    finally:
        module.train(was_training)
    return out


def _metrics(
    labels: NDArray[np.float32], probs: NDArray[np.float32], groups: NDArray[Any] | None
) -> dict[str, float]:
    from recsys.eval import ctr_metrics

    clipped = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return {f"val_{k}": float(v) for k, v in ctr_metrics(labels, clipped, groups).items()}


class Trainer:
    """Trains a module on row-aligned tensors; see the module docstring for what it does.

    Stability: internal

    Parameters
    ----------
    settings
        The loop's hyperparameters.
    show_progress
        A ``tqdm`` bar over epochs (on rank 0 only).
    on_epoch
        ``on_epoch(epoch, metrics)`` after every epoch, on rank 0 only.
    checkpoint_dir
        Directory of ``checkpoint.safetensors`` and ``history.json``, rewritten after
        every epoch; ``None`` writes no checkpoint.
    resume
        Continue from the checkpoint in ``checkpoint_dir`` when there is one (a run that
        finished just restores its best weights).
    name
        The model's name, for messages.
    """

    def __init__(
        self,
        settings: TrainerSettings,
        *,
        show_progress: bool = True,
        on_epoch: EpochCallback | None = None,
        checkpoint_dir: Path | str | None = None,
        resume: bool = False,
        name: str = "model",
    ) -> None:
        if resume and checkpoint_dir is None:
            raise ConfigError(f"{name}: resume=True needs a checkpoint_dir")
        self.settings = settings
        self.show_progress = show_progress
        self.on_epoch = on_epoch
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.resume = resume
        self.name = name
        self.context = DistributedContext()

    # ------------------------------------------------------------------ public
    def fit(
        self,
        module: torch.nn.Module,
        train: TrainSource,
        valid: Batch | None = None,
        *,
        valid_groups: NDArray[Any] | None = None,
    ) -> FitResult:
        """Train ``module`` in place and leave the best epoch's weights in it.

        Parameters
        ----------
        module
            The model (moved to the training device, where it stays).
        train
            Training rows with ``"label"``, or ``train(epoch) -> rows`` for data redrawn
            every epoch (must be a pure function of ``epoch`` for resume to be exact).
        valid
            Validation rows with ``"label"`` (both classes), or ``None``.
        valid_groups
            ``(n_valid,)`` group ids (users) for ``val_gauc``.

        Returns
        -------
        FitResult

        Raises
        ------
        DataError
            Missing labels, ragged inputs, single-class validation labels.
        ConfigError
            Divergence (non-finite loss), a checkpoint of another run, a batch size that
            does not split over the processes.
        """
        import torch

        s = self.settings
        device = resolve_device(s.device)
        self.context = ctx = distributed_context(device)
        try:
            if ctx.enabled and device.type == "cuda":
                device = torch.device("cuda", ctx.local_rank)
                torch.cuda.set_device(device)
            if ctx.enabled and s.batch_size % ctx.world_size:
                raise ConfigError(
                    f"{self.name}: batch_size {s.batch_size} does not split over "
                    f"{ctx.world_size} processes; use a multiple of {ctx.world_size}"
                )
            return self._fit(module, train, valid, valid_groups, device)
        finally:
            ctx.close()

    # ------------------------------------------------------------------ internals
    def _check_valid(
        self, valid: Batch | None, groups: NDArray[Any] | None
    ) -> tuple[Batch | None, NDArray[np.float32] | None]:
        if valid is None:
            if self.settings.patience is not None:
                logger.debug("model=%s no validation data: early stopping is off", self.name)
            return None, None
        if _LABEL not in valid:
            raise DataError(f"{self.name}: validation rows have no 'label' tensor")
        n = _rows(valid)
        labels = valid[_LABEL].to("cpu").numpy().astype(np.float32)
        if n == 0 or labels.min() == labels.max():
            raise DataError(
                f"{self.name}: validation needs rows of both classes (got {n} rows, "
                f"{int(labels.sum())} positive); pass validation=None to train without it"
            )
        if groups is not None and len(groups) != n:
            raise DataError(f"{self.name}: {len(groups)} validation groups for {n} rows")
        if self.settings.metric == "gauc" and groups is None:
            raise ConfigError(f"{self.name}: metric='gauc' needs validation groups (users)")
        return valid, labels

    def _fingerprint(self, module: torch.nn.Module) -> dict[str, Any]:
        shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
        settings = {k: v for k, v in asdict(self.settings).items() if k != "device"}
        return {"shapes": shapes, "settings": settings}

    def _fit(
        self,
        module: torch.nn.Module,
        train: TrainSource,
        valid: Batch | None,
        valid_groups: NDArray[Any] | None,
        device: torch.device,
    ) -> FitResult:
        import torch

        s, ctx = self.settings, self.context
        valid, valid_labels = self._check_valid(valid, valid_groups)
        module.to(device)
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"{self.name}: no trainable parameters")
        optimizer = torch.optim.Adam(
            params, lr=s.learning_rate, weight_decay=s.weight_decay, fused=True
        )
        net: torch.nn.Module = module
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None
            )
        fixed = None if callable(train) else _to_device(self._checked_train(train), device)

        result = FitResult()
        best_state: dict[str, torch.Tensor] | None = None
        bad_epochs = 0
        start_epoch = 0
        fingerprint = self._fingerprint(module)
        if self.resume:
            restored = self._restore(module, optimizer, fingerprint)
            if restored is not None:
                result, best_state, bad_epochs, finished = restored
                start_epoch = result.resumed_from = len(result.history)
                if finished:
                    if best_state is not None:
                        module.load_state_dict(best_state)
                    logger.info("model=%s checkpoint already finished; restored", self.name)
                    return result

        higher = s.metric != "logloss"
        bar = tqdm(
            total=s.epochs,
            initial=start_epoch,
            desc=f"{self.name} epochs",
            unit="epoch",
            disable=not (self.show_progress and ctx.is_main),
            leave=False,
        )
        try:
            for epoch in range(start_epoch + 1, s.epochs + 1):
                t0 = time.perf_counter()
                rows = fixed if fixed is not None else self._epoch_rows(train, epoch, device)
                t_train, cpu_train = time.perf_counter(), time.process_time()
                loss = self._train_epoch(net, optimizer, rows, epoch, device)
                entry: dict[str, float] = {
                    "epoch": float(epoch),
                    "loss": loss,
                    "learning_rate": s.learning_rate,
                    "train_seconds": time.perf_counter() - t_train,
                    "train_cpu_seconds": time.process_time() - cpu_train,
                }
                if valid is not None and valid_labels is not None:
                    probs = predict_proba(
                        module,
                        valid,
                        batch_size=s.eval_batch_size,
                        mixed_precision=s.mixed_precision,
                    )
                    entry.update(_metrics(valid_labels, probs, valid_groups))
                entry["seconds"] = time.perf_counter() - t0
                result.history.append(entry)
                improved = True
                if valid is not None:
                    value = entry[f"val_{s.metric}"]
                    best = result.best_metric
                    improved = math.isfinite(value) and (
                        best is None or (value > best if higher else value < best)
                    )
                    if improved:
                        result.best_metric = value
                if improved:
                    result.best_epoch = epoch
                    bad_epochs = 0
                    if valid is not None:
                        best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    bad_epochs += 1
                done = epoch == s.epochs or (
                    valid is not None and s.patience is not None and bad_epochs >= s.patience
                )
                result.stopped_early = done and epoch < s.epochs
                self._log_epoch(entry, bar)
                if self.checkpoint_dir is not None:
                    self._save(module, optimizer, result, best_state, bad_epochs, done, fingerprint)
                if self.on_epoch is not None and ctx.is_main:
                    self.on_epoch(epoch, dict(entry))
                if done:
                    break
        finally:
            bar.close()
        if best_state is not None:
            module.load_state_dict(best_state)
        return result

    def _checked_train(self, rows: Batch) -> Batch:
        if _LABEL not in rows:
            raise DataError(f"{self.name}: training rows have no 'label' tensor")
        if _rows(rows) == 0:
            raise DataError(f"{self.name}: no training rows")
        return rows

    def _epoch_rows(self, train: TrainSource, epoch: int, device: torch.device) -> Batch:
        assert callable(train)
        return _to_device(self._checked_train(train(epoch)), device)

    def _train_epoch(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        rows: Batch,
        epoch: int,
        device: torch.device,
    ) -> float:
        import torch
        import torch.nn.functional as F

        s, ctx = self.settings, self.context
        n = _rows(rows)
        seed = epoch_seed(s.seed, epoch)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        perm = torch.randperm(n, generator=generator).to(device)
        labels = rows[_LABEL]
        feats = {k: v for k, v in rows.items() if k != _LABEL}
        world, rank = ctx.world_size, ctx.rank
        total = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        net.train()
        fork_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)  # dropout noise of this epoch, whatever came before
            for start in range(0, n, s.batch_size):
                stop = min(n, start + s.batch_size)
                if world > 1:  # this process's share of the global batch
                    part = (stop - start) // world
                    if part == 0:
                        break
                    start, stop = start + rank * part, start + (rank + 1) * part
                idx = perm[start:stop]
                batch = {k: v.index_select(0, idx) for k, v in feats.items()}
                target = labels.index_select(0, idx)
                with _autocast(device, s.mixed_precision):
                    logits, penalty = net(batch)
                bce = F.binary_cross_entropy_with_logits(logits.float(), target)
                optimizer.zero_grad(set_to_none=True)
                (bce + penalty.float()).backward()
                optimizer.step()
                total += bce.detach().to(torch.float64) * (stop - start)
                seen += stop - start
        loss = float(total) / max(seen, 1)
        if not math.isfinite(loss):
            raise ConfigError(
                f"{self.name}: training diverged in epoch {epoch} (loss {loss}); lower "
                "learning_rate"
            )
        return loss

    def _log_epoch(self, entry: dict[str, float], bar: Any) -> None:
        hidden = ("epoch", "learning_rate", "train_seconds", "train_cpu_seconds")
        shown = {k: round(v, 4) for k, v in entry.items() if k not in hidden}
        bar.set_postfix(shown, refresh=False)
        bar.update(1)
        if self.context.is_main:
            logger.info(
                "model=%s epoch=%d %s",
                self.name,
                int(entry["epoch"]),
                " ".join(f"{k}={v:.4f}" for k, v in shown.items()),
            )

    # ------------------------------------------------------------------ checkpoints
    def _save(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        result: FitResult,
        best_state: dict[str, torch.Tensor] | None,
        bad_epochs: int,
        finished: bool,
        fingerprint: dict[str, Any],
    ) -> None:
        ctx = self.context
        if ctx.is_main:
            assert self.checkpoint_dir is not None
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
            if best_state is not None:
                tensors.update({f"best.{k}": v for k, v in best_state.items()})
            opt = optimizer.state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for idx, state in opt["state"].items():
                for key, value in state.items():
                    if hasattr(value, "shape"):
                        tensors[f"optim.{idx}.{key}"] = value
                    else:
                        scalars.setdefault(str(idx), {})[key] = value
            meta = {
                "format": _CHECKPOINT_FORMAT,
                "model": self.name,
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best_metric": result.best_metric,
                "bad_epochs": bad_epochs,
                "stopped_early": result.stopped_early,
                "finished": finished,
                "param_groups": opt["param_groups"],
                "optim_scalars": scalars,
                "fingerprint": fingerprint,
            }
            save_tensors(self.checkpoint_dir / CHECKPOINT_FILE, tensors, meta)
            tmp = self.checkpoint_dir / f".{HISTORY_FILE}.tmp"
            tmp.write_text(json.dumps(result.history, indent=1) + "\n")
            os.replace(tmp, self.checkpoint_dir / HISTORY_FILE)
        ctx.barrier()

    def _restore(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        fingerprint: dict[str, Any],
    ) -> tuple[FitResult, dict[str, torch.Tensor] | None, int, bool] | None:
        assert self.checkpoint_dir is not None
        path = self.checkpoint_dir / CHECKPOINT_FILE
        if not path.is_file():
            logger.info("model=%s no checkpoint at %s; training from scratch", self.name, path)
            return None
        tensors, meta = load_tensors(path, what=f"{self.name} checkpoint")
        if meta.get("format") != _CHECKPOINT_FORMAT or meta.get("model") != self.name:
            raise ConfigError(
                f"{self.name}: {path} is a checkpoint of {meta.get('model')!r} (format "
                f"{meta.get('format')}); delete it or use another checkpoint_dir"
            )
        if meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            raise ConfigError(
                f"{self.name}: {path} was written by a run with other settings or parameter "
                "shapes; resume only with the same model, data and hyperparameters, or delete it"
            )
        device = next(module.parameters()).device
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        module.load_state_dict(model_state)
        best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")} or None
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for idx, values in meta.get("optim_scalars", {}).items():
            state.setdefault(int(idx), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        result = FitResult(
            history=[dict(h) for h in meta["history"]],
            best_epoch=int(meta["best_epoch"]),
            best_metric=meta["best_metric"],
            stopped_early=bool(meta["stopped_early"]),
        )
        logger.info("model=%s resumed from %s after epoch %d", self.name, path, len(result.history))
        return result, best, int(meta["bad_epochs"]), bool(meta["finished"])
