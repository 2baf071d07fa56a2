"""The engine's configuration: one TOML file, every key with a default, unknown keys an error.

Example::

    [pipeline]
    retrievers = ["itemknn", "ease", "als", "popular"]   # candidate sources
    candidates = 200                                     # candidates per user after merging
    rankers = ["svdpp"]                                  # components that only score
    hybrid = true                                        # learned ranker over all of them

    [retrieval]
    index = "auto"          # FAISS: exact up to flat_max_items, then IVF (or "hnsw")
    recent_items = 10       # the user's last items seed the neighbour sources
    quotas = { covisit = 150 }

    [ranker]
    learner = "hgb"         # gradient-boosted trees; "logistic"; "blend" (rank fusion)
    validation_frac = 0.2   # per user, the last 20% of training is the ranker's labels

    [models.itemknn]
    n_neighbors = 50

    [training]
    device = "auto"
    seed = 42
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recsys.errors import ConfigError

__all__ = [
    "DataConfig",
    "PipelineConfig",
    "RankerConfig",
    "RecsysConfig",
    "RetrievalConfig",
    "TrainingConfig",
    "load_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PipelineConfig(_Strict):
    """Which components the pipeline trains and how it combines them.

    ``retrievers`` are trained in order and are the candidate sources of the retrieval
    stage; ``rankers`` are trained too but only score candidates (their scores are
    features of the hybrid ranker). ``popular`` is always trained: it answers unknown
    users. With ``hybrid`` the pipeline's default answer is the hybrid (retrieval of
    ``candidates`` items per user from every source, then the learned ranker); without
    it, the first retriever answers.

    The default is the full hybrid over the classical components and Doc2Vec; ``svdpp``
    scores (its predicted rating is a ranker feature). Left out with a warning when the
    data cannot train them (``svdpp`` without ratings, ``doc2vec`` without item documents)
    or when their training fails; the manifest's ``skipped_components`` says why. A
    component named with ``--models`` is never left out: its failure is the command's.
    """

    retrievers: list[str] = Field(
        default_factory=lambda: ["itemknn", "ease", "als", "userknn", "bpr", "doc2vec", "popular"]
    )
    candidates: int = Field(default=200, ge=1)
    rankers: list[str] = Field(default_factory=lambda: ["svdpp"])
    hybrid: bool = True

    @field_validator("retrievers")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("retrievers must name at least one model")
        return v

    @field_validator("retrievers", "rankers")
    @classmethod
    def _not_hybrid(cls, v: list[str]) -> list[str]:
        if "hybrid" in v:
            raise ValueError(
                "'hybrid' is not a component to list; set hybrid = true to train the "
                "hybrid ranker over the listed components"
            )
        return v


_DEFAULT_QUOTAS = {"doc2vec": 30}


class RetrievalConfig(_Strict):
    """The retrieval stage: FAISS indexes and the candidate sources.

    Sources follow from ``[pipeline] retrievers``: an embedding model (``bpr``, ``als``,
    ``svdpp``) is searched through a FAISS index over its item vectors with the user's
    vector (or fold-in vector) as the query; ``popular`` proposes the most popular
    unseen items; any other component proposes its own top list. On top of those, the
    components named in ``recent`` (item-neighbour models such as ``itemknn``, ``ease``)
    propose the neighbours of the user's ``recent_items`` last items (source
    ``<name>@recent``), the components in ``content`` (``doc2vec``) the nearest items of
    those recent items in their vector space, and ``covisitation`` adds a sequential
    co-visitation source (``covisit``: items that other users took shortly after the
    user's recent items).

    Attributes
    ----------
    index
        FAISS index type: ``"auto"`` (exact ``flat`` search up to ``flat_max_items``
        items, ``ivf`` above), ``"flat"``, ``"ivf"`` or ``"hnsw"``.
    flat_max_items
        Largest catalogue that ``"auto"`` searches exactly.
    nlist
        IVF cells; 0 gives ``4 * sqrt(n_items)``.
    nprobe
        IVF cells visited per query.
    hnsw_m, ef_construction, ef_search
        HNSW graph degree and beam widths (``ef_search`` per graph).
    hnsw_norm_ranges
        HNSW builds one graph per range of item norms (equal item counts) and merges
        their results by inner product; 1 is a single graph.
    recent_items
        How many of the user's most recent items seed the ``@recent``, ``covisit`` and
        content sources.

    ``recent_items`` (10 over 20), ``covisitation_window`` (20 over 10 and 40) and
    ``[pipeline] candidates`` (200 over 300) were chosen on the hybrid ranker's held-out
    validation users inside the MovieLens 100K training split (``holdout_ndcg@10`` of
    ``manifest.json``), never on the test split.
    recent_decay
        Weight ``recent_decay ** age`` of a recent item (age 0 = the latest) in the
        ``covisit`` and content queries.
    recent, content
        Components with a neighbours-of-recent-items source, and content components
        (item vectors) with a content source; names not configured are ignored.
    covisitation, covisitation_window, covisitation_neighbors
        The co-visitation source; the window in positions of a user's time-ordered
        history, and the neighbours kept per item.
    quotas
        Source name -> the most candidates it may propose (default ``candidates`` each;
        ``doc2vec`` 30: content neighbours rarely win on behaviour data, but they are the
        only source of items nobody has interacted with yet). Quotas of sources the
        configuration does not have are ignored; a name that can be no source is an error.
        The merged list interleaves the sources by rank, removes duplicates and seen
        items and keeps ``candidates`` items; every candidate keeps the sources that
        proposed it.
    """

    index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    flat_max_items: int = Field(default=100_000, ge=1)
    nlist: int = Field(default=0, ge=0)
    nprobe: int = Field(default=64, ge=1)
    hnsw_m: int = Field(default=32, ge=4)
    ef_construction: int = Field(default=128, ge=8)
    ef_search: int = Field(default=256, ge=8)
    hnsw_norm_ranges: int = Field(default=8, ge=1)
    recent_items: int = Field(default=10, ge=1)
    recent_decay: float = Field(default=0.9, gt=0.0, le=1.0)
    recent: list[str] = Field(default_factory=lambda: ["itemknn", "ease"])
    content: list[str] = Field(default_factory=lambda: ["doc2vec"])
    covisitation: bool = True
    covisitation_window: int = Field(default=20, ge=1)
    covisitation_neighbors: int = Field(default=200, ge=1)
    quotas: dict[str, int] = Field(default_factory=lambda: dict(_DEFAULT_QUOTAS))

    @field_validator("quotas")
    @classmethod
    def _positive_quotas(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: q for k, q in v.items() if q < 1}
        if bad:
            raise ValueError(f"quotas must be >= 1, got {bad}")
        return {**_DEFAULT_QUOTAS, **v}  # given quotas add to (or override) the defaults


class RankerConfig(_Strict):
    """The hybrid ranker and how it is trained.

    Training scheme (no leakage): per user, the last ``validation_frac`` of the training
    interactions (by time) become the ranker's labels; every component is fitted on the
    earlier part, retrieval runs on it, and the candidates it produces are the training
    rows (positives: candidates in the user's label slice; negatives: the others). The
    components are then refitted on all training data for serving, and the ranker reads
    the same features from them.

    Attributes
    ----------
    learner
        ``"hgb"`` (scikit-learn histogram gradient-boosted trees, binary log loss),
        ``"logistic"`` (logistic regression on standardised features) or ``"blend"``
        (no learning: the reciprocal-rank blend, also the baseline the others must beat).
    validation_frac
        Share of each user's training interactions (the latest) used as labels.
    holdout_frac
        Share of the labelled users kept out of the ranker's training to measure it
        against the blend (``manifest.json`` metrics).
    max_train_users
        Labelled users sampled for the ranker's training set (bounds its size: about
        ``max_train_users * candidates * n_features * 4`` bytes of features).
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization
        Gradient-boosting parameters (``max_iter`` is an upper bound: early stopping on
        a validation share of the rows).
    blend_k
        The constant of the reciprocal-rank blend ``sum_s 1 / (blend_k + rank_s)``.
    fold_in_depth
        For fold-in queries, how many of a component's top items get its score as a
        feature (the others are missing values).
    """

    learner: Literal["hgb", "logistic", "blend"] = "hgb"
    validation_frac: float = Field(default=0.2, gt=0.0, lt=1.0)
    holdout_frac: float = Field(default=0.2, ge=0.0, lt=1.0)
    max_train_users: int = Field(default=5_000, ge=1)
    max_iter: int = Field(default=300, ge=1)
    learning_rate: float = Field(default=0.05, gt=0.0)
    max_leaf_nodes: int = Field(default=31, ge=2)
    min_samples_leaf: int = Field(default=100, ge=1)
    l2_regularization: float = Field(default=1.0, ge=0.0)
    blend_k: float = Field(default=60.0, gt=0.0)
    fold_in_depth: int = Field(default=2000, ge=1)


class TrainingConfig(_Strict):
    """Settings shared by every model's training."""

    device: str = "auto"
    seed: int = 42
    show_progress: bool = True


class DataConfig(_Strict):
    """How input data is read and featurised."""

    on_bad_rows: Literal["fail", "drop"] = "fail"
    sequence_length: int = Field(default=20, ge=1)


class RecsysConfig(_Strict):
    """The whole configuration file.

    Stability: provisional
    """

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    data: DataConfig = Field(default_factory=DataConfig)

    def components(self) -> list[str]:
        """Every model the pipeline trains, in order, without duplicates.

        Retrievers, then rankers, then ``popular`` (always trained: the cold-start answer).
        """
        names = [n for n in (*self.pipeline.retrievers, *self.pipeline.rankers) if n != "popular"]
        return [*dict.fromkeys(names), "popular"]

    def model_params(self, name: str) -> dict[str, Any]:
        """Hyperparameters for model ``name``: its ``[models.<name>]`` table plus the seed."""
        params = dict(self.models.get(name, {}))
        params.setdefault("seed", self.training.seed)
        return params

    def validate_models(self) -> None:
        """Check every named component exists and its parameters are valid.

        Raises
        ------
        ConfigError
            Naming the unknown component or the invalid parameter.
        """
        from recsys.models import get_model_class

        for name in {*self.components(), *self.models}:
            cls = get_model_class(name)
            params = self.model_params(name)
            if "device" in cls.Config.model_fields:
                params.setdefault("device", self.training.device)
            try:
                cls.Config(**params)
            except ValidationError as exc:
                raise ConfigError(f"[models.{name}]: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" + (f" (got {err['input']!r})" if "input" in err else "")


def load_config(path: Path | None = None, **overrides: Any) -> RecsysConfig:
    """Read and validate a TOML config; ``None`` gives the built-in defaults.

    Raises
    ------
    ConfigError
        For unreadable TOML, unknown keys, invalid values or unknown model names; the
        message names the file and the key.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for key, value in overrides.items():
        raw.setdefault(key, {}).update(value)
    try:
        config = RecsysConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(f"config {path or '<defaults>'}: {_first_error(exc)}") from exc
    try:
        config.validate_models()
    except ConfigError as exc:
        raise ConfigError(f"config {path or '<defaults>'}: {exc}") from exc
    return config
