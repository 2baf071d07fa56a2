"""EASE: a closed-form linear item-item autoencoder.

Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019. With ``X`` the
binary ``(n_users, n_items)`` interaction matrix, the item-item weights are (paper eq. 8)::

    P = (X^T X + reg I)^-1
    B = I - P diag(1 / diag(P))        (so diag(B) = 0)

and a user's scores are ``x_u B``. The solve is dense in the number of items, which is why
the model refuses catalogues above ``max_items``.
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field
from threadpoolctl import threadpool_limits

from recsys.errors import DataError
from recsys.models.base import HistoryFoldIn, ModelConfig
from recsys.types import TrainingData

__all__ = ["EASE", "EASEConfig"]

logger = logging.getLogger(__name__)


_BLOCK = 1024  # rows per block of the Gram product and of the symmetrisation


def _regularised_inverse(user_items: sp.csr_matrix, reg: float) -> NDArray[np.float64]:
    """``(X^T X + reg I)^-1`` as a dense ``(n_items, n_items) float64`` array.

    Memory stays at one ``n_items^2`` float64 buffer: the Gram matrix is filled block by
    block from sparse products, then Cholesky-factorised and inverted in place by LAPACK.
    """
    x = sp.csr_matrix(user_items, dtype=np.float64)
    xt = sp.csr_matrix(x.T)
    n = x.shape[1]
    gram = np.empty((n, n), np.float64)
    for s in range(0, n, _BLOCK):
        gram[s : s + _BLOCK] = (xt[s : s + _BLOCK] @ x).toarray()
    gram[np.diag_indices(n)] += reg
    # The matrix is symmetric, so its transpose is the Fortran-ordered view LAPACK wants,
    # and overwrite_* then works on this very buffer instead of a copy.
    factor, info = scipy.linalg.lapack.dpotrf(gram.T, lower=False, overwrite_a=True)
    if info != 0:
        raise DataError(
            f"EASE: the regularised Gram matrix is not positive definite (LAPACK info "
            f"{info}); increase reg (now {reg})"
        )
    inverse, info = scipy.linalg.lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise DataError(f"EASE: inverting the Gram matrix failed (LAPACK info {info})")
    # dpotri fills the upper triangle only: mirror it, one block of rows at a time.
    for s in range(0, n, _BLOCK):
        e = min(s + _BLOCK, n)
        inverse[s:e, :s] = inverse[:s, s:e].T
        block = inverse[s:e, s:e]
        block[:] = np.triu(block) + np.triu(block, 1).T
    return np.asarray(inverse)


class EASEConfig(ModelConfig):
    """Hyperparameters of :class:`EASE`.

    ``reg`` = 250 was chosen by :func:`recsys.tuning.tune` on a validation split of the
    ML-100K training data (``benchmarks/topn_classical.py``).

    Attributes
    ----------
    reg
        L2 weight ``lambda`` added to the diagonal of the Gram matrix; must be positive so
        the system is invertible.
    max_items
        Largest item vocabulary accepted. Fitting holds about ``12 * n_items**2`` bytes
        (a float64 Gram matrix inverted in place plus the float32 weights): 30,000 items
        need about 10.8 GB.
    num_threads
        Threads of the BLAS/LAPACK solve; 0 leaves the library default.
    """

    reg: float = Field(default=250.0, gt=0.0)
    max_items: int = Field(default=30_000, ge=1)
    num_threads: int = Field(default=0, ge=0)


class EASE(HistoryFoldIn):
    """Embarrassingly Shallow Autoencoder (Steck 2019): scores ``x_u B`` with a dense ``B``.

    Learned state: ``weights_``, the dense ``(n_items, n_items) float32`` matrix ``B`` with
    a zero diagonal. Fold-in is direct (any history row times ``B``), so a training user's
    own history reproduces the fitted recommendations exactly.

    Stability: provisional

    Examples
    --------
    >>> from recsys.testing.datasets import block_dataset
    >>> model = EASE(reg=10.0).fit(block_dataset(), show_progress=False)
    >>> model.weights_.shape
    (24, 24)
    """

    name: ClassVar[str] = "ease"
    Config: ClassVar[type[ModelConfig]] = EASEConfig
    _state_fields: ClassVar[tuple[str, ...]] = ("weights_",)

    def _fit(self, data: TrainingData, *, show_progress: bool) -> None:
        cfg = self.config
        assert isinstance(cfg, EASEConfig)
        n_items = data.n_items
        if n_items > cfg.max_items:
            gib = 12 * n_items**2 / 2**30
            raise DataError(
                f"EASE: the catalogue has {n_items:,} items, above max_items={cfg.max_items:,}; "
                f"EASE inverts a dense {n_items:,} x {n_items:,} matrix (about {gib:.1f} GiB). "
                "Use the sparse 'itemknn' model for catalogues this large, or raise max_items "
                "if the machine has the memory"
            )
        start = time.perf_counter()
        with threadpool_limits(cfg.num_threads or None, "blas"):
            precision = _regularised_inverse(data.user_items, cfg.reg)
        # B = I - P diag(1/diag(P)): off the diagonal B_ij = -P_ij / P_jj, diagonal 0.
        precision /= -np.diag(precision)[None, :]
        precision[np.diag_indices(n_items)] = 0.0
        self.weights_: NDArray[np.float32] | None = np.ascontiguousarray(precision, np.float32)
        del precision
        logger.debug(
            "ease solve n_items=%d reg=%g elapsed=%.3fs",
            n_items,
            cfg.reg,
            time.perf_counter() - start,
        )

    def _score_history(self, histories: sp.csr_matrix) -> NDArray[np.float32]:
        assert self.weights_ is not None
        h = sp.csr_matrix(histories, dtype=np.float32, copy=True)
        h.data[:] = 1.0  # B was learned on binary rows
        return np.asarray(h @ self.weights_, np.float32)
