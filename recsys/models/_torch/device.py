"""Device resolution and seeded random generators for torch models.

Models keep ``device`` as a string in their frozen config (``"auto"``, ``"cpu"``,
``"cuda"`` or ``"cuda:N"``) and resolve it only when they fit, so a config written on a GPU
machine still loads on a CPU-only one. torch is imported on first use, not at import time:
importing the model registry (the CLI, the server) must not pay for torch when no torch
model trains.

Stability: internal
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from recsys.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICE_PATTERN", "resolve_device", "seeded_generator"]

#: Accepted ``device`` strings; use as ``Field(pattern=DEVICE_PATTERN)`` in a config.
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device a ``device`` option names.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        If the string is not one of the forms above, or names a CUDA device that this
        machine does not have.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if not isinstance(device, str) or re.fullmatch(DEVICE_PATTERN, device) is None:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} but CUDA is not available on this machine; "
            "use device='auto' or 'cpu'"
        )
    resolved = torch.device(device)
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise ConfigError(f"device={device!r} but this machine has {count} CUDA device(s)")
    return resolved


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with ``seed``.

    Models draw initial weights and shuffling orders from it on the CPU and move the
    results to their device, so a seed gives the same starting point and the same batch
    order on every device, and the global torch RNG is left untouched.

    Parameters
    ----------
    seed
        Any integer; negative values and values beyond 64 bits are folded into range.

    Returns
    -------
    torch.Generator
    """
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed) % (2**63))
