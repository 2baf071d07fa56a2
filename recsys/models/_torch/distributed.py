"""Multi-process data-parallel training (``torch.distributed``), launched with ``torchrun``.

``torchrun --nproc_per_node N script.py`` starts ``N`` copies of a script with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` in the environment. :func:`distributed_context` reads
them, joins the process group (``gloo`` on CPU, ``nccl`` on CUDA) when the trainer runs in
such a copy, and otherwise answers "one process": the same training code runs unchanged
with or without a launcher.

Stability: internal
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recsys.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DistributedContext", "distributed_context"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel job.

    Attributes
    ----------
    rank
        ``0..world_size-1``; rank 0 writes checkpoints and logs progress.
    world_size
        Number of processes; 1 without a launcher.
    local_rank
        Rank on this machine; picks the CUDA device.
    initialized_here
        Whether :func:`distributed_context` created the process group (and so the trainer
        destroys it when done).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        """Whether gradients are averaged across more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.enabled and self.initialized_here:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def distributed_context(device: torch.device) -> DistributedContext:
    """The data-parallel context of this process, joining the process group if needed.

    Parameters
    ----------
    device
        The training device: CUDA selects the ``nccl`` backend, CPU ``gloo``.

    Returns
    -------
    DistributedContext
        ``world_size == 1`` when ``WORLD_SIZE`` is unset or 1.

    Raises
    ------
    ConfigError
        If the launcher's environment is malformed or the backend is unavailable.
    """
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistributedContext()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "gloo" and not dist.is_gloo_available():
            raise ConfigError("distributed CPU training needs the gloo backend, not built here")
        dist.init_process_group(backend=backend)
        created = True
        logger.info("joined process group backend=%s rank=%d world=%d", backend, rank, world)
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        initialized_here=created,
    )
