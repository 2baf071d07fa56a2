"""Fine-tuning: warm-start the deep CTR models (DeepFM, DIN) on new interactions.

A full retrain re-reads the whole log for every epoch; fine-tuning starts from the fitted
weights and trains a few epochs on the newest interactions only, at a lower learning rate,
so a model follows recent behaviour at a fraction of the cost (``benchmarks/ctr_deep.py``
measures both on a time split). New user and item ids get fresh embedding rows; existing
rows are kept. ``mode="full"`` trains every parameter, ``mode="top"`` freezes the
embeddings and trains the layers above them only.

* :func:`finetune` works on a model (or a saved model directory);
* ``recsys finetune --artifact DIR --interactions F --out DIR2`` fine-tunes the
  ``deepfm`` / ``din`` components of a pipeline artifact and writes a new artifact
  (:func:`add_finetune_parser`, :func:`cmd_finetune`).

Stability: provisional
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from recsys.errors import ArtifactError, ConfigError, DataError, format_examples
from recsys.models._torch.ctr_model import CTRRecommender
from recsys.models._torch.trainer import EpochCallback
from recsys.types import IdMap, id_kind

if TYPE_CHECKING:
    from recsys.features import FeatureStore

__all__ = [
    "add_finetune_parser",
    "cmd_finetune",
    "finetune",
    "load_ctr_model",
    "vocabulary_ids",
]

logger = logging.getLogger(__name__)


def load_ctr_model(path: Path | str) -> CTRRecommender:
    """Load a saved DeepFM or DIN model directory, whichever it holds.

    Raises
    ------
    ArtifactError
        If the directory does not hold a deep CTR model.
    """
    from recsys.models import get_model_class

    path = Path(path)
    try:
        name = json.loads((path / "config.json").read_text()).get("model")
    except (OSError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"finetune: cannot read {path / 'config.json'}: {exc}") from exc
    try:
        cls = get_model_class(str(name))
    except ConfigError as exc:
        raise ArtifactError(f"finetune: {path} holds model {name!r}: {exc}") from exc
    if not issubclass(cls, CTRRecommender):
        raise ArtifactError(
            f"finetune: {path} holds {name!r}; only the deep CTR models (deepfm, din) fine-tune"
        )
    return cls.load(path)


def finetune(
    model_dir_or_model: CTRRecommender | Path | str,
    new_interactions: pd.DataFrame,
    *,
    mode: Literal["full", "top"] = "full",
    learning_rate_scale: float = 0.1,
    epochs: int = 2,
    features: FeatureStore | None = None,
    rows: ArrayLike | None = None,
    out: Path | str | None = None,
    show_progress: bool = True,
    on_epoch: EpochCallback | None = None,
) -> CTRRecommender:
    """Warm-start a fitted DeepFM or DIN on new interactions.

    Parameters
    ----------
    model_dir_or_model
        A fitted model (changed in place) or a directory written by its ``save``.
    new_interactions
        ``user_id``, ``item_id`` and, as at training, ``rating`` and ``timestamp``; they
        should follow the training interactions in time.
    mode
        ``"full"``: train every parameter; ``"top"``: freeze the embedding table (and
        first-order weights) and train the layers above it.
    learning_rate_scale
        The fine-tuning learning rate is the model's ``learning_rate`` times this.
    epochs
        Passes over the new interactions (no early stopping).
    features
        A feature store whose log holds the new interactions (at ``rows``, default the
        last ``len(new_interactions)`` rows), to read their point-in-time features from.
        Without it they are composed from the model's serving snapshot plus the new
        interactions themselves, which is exact when the new events come after the
        snapshot.
    rows
        Store rows of ``new_interactions`` (with ``features``).
    out
        Save the fine-tuned model there.
    show_progress
        A progress bar over epochs.
    on_epoch
        ``on_epoch(epoch, metrics)`` after every epoch.

    Returns
    -------
    CTRRecommender
        The fine-tuned model; its ``history_`` gains entries with ``finetune == 1``.

    Raises
    ------
    ArtifactError
        If a directory does not hold a deep CTR model.
    ConfigError
        Bad ``mode``, ``learning_rate_scale`` or ``epochs``.
    DataError, FeatureSchemaError
        Malformed interactions; a store that differs from the fitted one.

    Examples
    --------
    >>> from recsys.models import DeepFM
    >>> from recsys.testing import block_dataset, block_frame
    >>> model = DeepFM(labels="implicit", epochs=1, device="cpu")
    >>> model = model.fit(block_dataset(), show_progress=False)
    >>> new = block_frame(seed=5).tail(20).assign(timestamp=lambda f: f.timestamp + 10**6)
    >>> finetune(model, new, epochs=1, show_progress=False) is model
    True
    """
    model = (
        model_dir_or_model
        if isinstance(model_dir_or_model, CTRRecommender)
        else load_ctr_model(model_dir_or_model)
    )
    model.finetune(
        new_interactions,
        features=features,
        rows=rows,
        mode=mode,
        learning_rate_scale=learning_rate_scale,
        epochs=epochs,
        show_progress=show_progress,
        on_epoch=on_epoch,
    )
    if out is not None:
        model.save(Path(out))
    return model


# ---------------------------------------------------------------------------- CLI
def add_finetune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``recsys finetune`` to the CLI's subparsers; returns the new parser."""
    p = subparsers.add_parser(
        "finetune",
        help="warm-start the deepfm/din components of an artifact on new interactions",
        description=cmd_finetune.__doc__,
    )
    p.add_argument("--artifact", type=Path, required=True, help="the pipeline artifact")
    p.add_argument(
        "--interactions", type=Path, required=True, help="new interactions (CSV or parquet)"
    )
    p.add_argument("--out", type=Path, required=True, help="directory of the new artifact")
    p.add_argument(
        "--models",
        default=None,
        help="components to fine-tune (default: every deepfm/din component)",
    )
    p.add_argument(
        "--mode",
        choices=["full", "top"],
        default="full",
        help="train everything, or freeze the embeddings (default: full)",
    )
    p.add_argument("--epochs", type=int, default=2, help="passes over the new data (2)")
    p.add_argument(
        "--learning-rate-scale",
        type=float,
        default=0.1,
        help="fine-tuning learning rate / training learning rate (0.1)",
    )
    p.add_argument(
        "--on-bad-rows",
        choices=["fail", "drop"],
        default="fail",
        help="bad rows fail with a report (default) or are dropped with a count",
    )
    p.set_defaults(func=cmd_finetune)
    return p


def vocabulary_ids(
    frame: pd.DataFrame, user_map: IdMap, item_map: IdMap, *, source: str = "<frame>"
) -> pd.DataFrame:
    """New interactions with their ids in the artifact's form, by the one id rule.

    ``"196"`` read from a CSV becomes ``196`` for an integer vocabulary (and ``7`` becomes
    ``"7"`` for a string one), so new rows reach the same users and items as the training
    data did (:meth:`recsys.types.IdMap.to_index`), and new ids join the vocabulary with
    its type.

    Parameters
    ----------
    frame
        Validated interactions (``user_id``, ``item_id``, ...).
    user_map, item_map
        The artifact's vocabularies.
    source
        The file, for messages.

    Returns
    -------
    pandas.DataFrame
        A copy of ``frame`` with converted id columns.

    Raises
    ------
    DataError
        Ids that cannot take the vocabulary's type (``"newcomer"`` for an integer
        vocabulary), naming the file, the field, the first rows and a few ids.
    """
    out = frame.copy()
    for column, vocab in (("user_id", user_map), ("item_id", item_map)):
        coerced = vocab.coerce(out[column].to_numpy())
        if vocab.kind != "mixed" and len(coerced) and id_kind(coerced) != vocab.kind:
            want = int if vocab.kind == "int" else str
            bad = np.flatnonzero([not isinstance(v, want) for v in coerced.tolist()])
            raise DataError(
                f"{source}: {len(bad)} rows, field {column!r}: ids that cannot join the "
                f"artifact's vocabulary of {vocab.kind} ids, rows "
                f"{format_examples((bad + 1).tolist())}, e.g. "
                f"{format_examples(pd.unique(pd.Series(coerced[bad]))[:5].tolist())}; use "
                f"{'integer' if vocab.kind == 'int' else 'string'} ids for this artifact"
            )
        out[column] = coerced
    return out


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune the deepfm/din components of an artifact on new interactions and write a
    new artifact; the other components are kept as they are."""
    from recsys.data import read_interactions
    from recsys.pipeline import Pipeline

    t0 = time.perf_counter()
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    pipe = Pipeline.load(args.artifact)
    new = read_interactions(args.interactions, on_bad_rows=args.on_bad_rows)
    new = vocabulary_ids(new, pipe.user_map, pipe.item_map, source=str(args.interactions))
    deep = [n for n in pipe.components if isinstance(pipe.models.get(n), CTRRecommender)]
    names = [x.strip() for x in args.models.split(",") if x.strip()] if args.models else deep
    if not names:
        raise ConfigError(
            f"artifact {args.artifact} has no deepfm or din component to fine-tune "
            f"(components: {', '.join(pipe.components)})"
        )
    unknown = [n for n in names if n not in deep]
    if unknown:
        raise ConfigError(
            f"--models {','.join(unknown)}: not deepfm/din components of {args.artifact} "
            f"(deep components: {', '.join(deep) or 'none'})"
        )
    quiet = bool(getattr(args, "quiet", False))
    for name in names:
        model = pipe.models[name]
        assert isinstance(model, CTRRecommender)
        finetune(
            model,
            new,
            mode=args.mode,
            learning_rate_scale=args.learning_rate_scale,
            epochs=args.epochs,
            show_progress=not quiet,
        )
    user_map = pipe.user_map.extend(np.asarray(new["user_id"].to_numpy()))
    item_map = pipe.item_map.extend(np.asarray(new["item_id"].to_numpy()))
    if pipe.features is not None:
        pipe.features.append(new)
        for name in names:  # the snapshot of the artifact's own (now appended) store
            model = pipe.models[name]
            assert isinstance(model, CTRRecommender)
            model.refresh_features(pipe.features)
    manifest = dict(pipe.manifest)
    metrics = dict(manifest.get("metrics", {}))
    metrics["finetune"] = {
        "components": names,
        "rows": len(new),
        "mode": args.mode,
        "epochs": args.epochs,
        "learning_rate_scale": args.learning_rate_scale,
        "seconds": time.perf_counter() - t0,
    }
    manifest["metrics"] = metrics
    out = Pipeline(
        pipe.config,
        user_map,
        item_map,
        pipe.models,
        components=pipe.components,
        features=pipe.features,
        manifest=manifest,
    )
    out.save(args.out)
    logger.info(
        "fine-tuned components=%s rows=%d in %.1fs -> %s",
        ",".join(names),
        len(new),
        time.perf_counter() - t0,
        args.out,
    )
    return 0
