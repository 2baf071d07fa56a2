"""The engine's configuration: one TOML file, every key with a default, unknown keys an error.

Example::

    [pipeline]
    retrievers = ["itemknn", "popular"]
    candidates = 200

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

__all__ = ["DataConfig", "PipelineConfig", "RecsysConfig", "TrainingConfig", "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PipelineConfig(_Strict):
    """Which components the pipeline trains and how it combines them.

    ``retrievers`` are trained in order; the first one is the pipeline's primary source
    for known users, and ``popular`` (always trained) answers unknown users.
    """

    retrievers: list[str] = Field(default_factory=lambda: ["itemknn", "popular"])
    candidates: int = Field(default=200, ge=1)
    rankers: list[str] = Field(default_factory=list)
    hybrid: bool = False

    @field_validator("retrievers")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("retrievers must name at least one model")
        return v


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
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    data: DataConfig = Field(default_factory=DataConfig)

    def components(self) -> list[str]:
        """Every model the pipeline trains, in order, without duplicates."""
        names = [*self.pipeline.retrievers, *self.pipeline.rankers]
        if "popular" not in names:
            names.append("popular")  # the cold-start answer is always available
        return list(dict.fromkeys(names))

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
