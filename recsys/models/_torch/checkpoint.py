"""Safe tensor files: safetensors with a JSON header, written atomically.

Model weights, encoded feature tables and training checkpoints are all written here, so
every torch model stores tensors the same way: a ``.safetensors`` file whose metadata holds
one JSON document. Nothing is pickled and nothing is read with ``torch.load``; a file that
is damaged, truncated or not a safetensors file is refused with
:class:`~recsys.errors.ArtifactError`.

Writes go to a temporary file in the same directory followed by :func:`os.replace`, so a
process killed mid-write (``SIGKILL``) leaves the previous file intact rather than half a new
one: that is what makes resuming after a crash safe.

Stability: internal
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.errors import ArtifactError

if TYPE_CHECKING:
    import torch

__all__ = ["load_tensors", "save_tensors"]

_META_KEY = "recsys"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and the JSON-ready ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path
        Target file (conventionally ``*.safetensors``); its directory must exist.
    tensors
        Name -> tensor; tensors are copied to contiguous CPU memory first, so views and
        tensors that share storage (tied weights) are fine.
    meta
        Anything :func:`json.dumps` accepts; read back by :func:`load_tensors`.
    """
    from safetensors.torch import save_file

    path = Path(path)
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(plain, tmp, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
        with open(tmp, "rb+") as fh:  # the rename below must not expose unflushed data
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path, *, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`.

    Parameters
    ----------
    path
        The ``.safetensors`` file.
    what
        How to name the reader in error messages (e.g. ``"DeepFM"``).

    Returns
    -------
    tensors : dict[str, torch.Tensor]
        On the CPU.
    meta : dict
        The JSON metadata.

    Raises
    ------
    ArtifactError
        If the file is missing, truncated, not a safetensors file or lacks the metadata.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what}: {path} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        meta = json.loads(header[_META_KEY])
    except Exception as exc:  # safetensors raises its own error types (and OSError)
        raise ArtifactError(
            f"{what}: cannot read {path} ({type(exc).__name__}: {exc}); the file is damaged, "
            "truncated or not written by recsys"
        ) from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{what}: {path} has malformed metadata")
    return tensors, meta
