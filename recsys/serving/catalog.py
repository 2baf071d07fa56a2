"""Item metadata for the API: titles and genres by item index, and genre filters.

The feature store is the only source of item attributes; :func:`catalog_from_pipeline` is
the one adapter that reads them from a loaded :class:`recsys.pipeline.Pipeline`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from recsys.errors import FeatureSchemaError
from recsys.serving.errors import BadRequestError
from recsys.types import IdMap

__all__ = ["ItemCatalog", "catalog_from_pipeline"]

logger = logging.getLogger(__name__)


class ItemCatalog:
    """Titles and genres of every item of a vocabulary, row ``k`` = item index ``k``.

    Stability: internal

    Parameters
    ----------
    titles
        ``n_items`` titles (``None`` where unknown).
    genres
        ``n_items`` tuples of genre names.
    """

    def __init__(self, titles: Sequence[str | None], genres: Sequence[tuple[str, ...]]) -> None:
        if len(titles) != len(genres):
            raise ValueError(f"{len(titles)} titles but {len(genres)} genre lists")
        self.titles = list(titles)
        self.genres = list(genres)
        names = sorted({g for gs in self.genres for g in gs})
        self._genre_masks: dict[str, NDArray[np.bool_]] = {}
        for name in names:
            self._genre_masks[name] = np.fromiter(
                (name in gs for gs in self.genres), bool, count=len(self.genres)
            )
        self.has_titles = any(t is not None for t in self.titles)

    @classmethod
    def empty(cls, n_items: int) -> ItemCatalog:
        """A catalogue with no metadata."""
        return cls([None] * n_items, [()] * n_items)

    @classmethod
    def from_frame(cls, item_map: IdMap, items: pd.DataFrame | None) -> ItemCatalog:
        """Build from an items frame (``item_id``, optional ``title`` and ``genres``).

        ``genres`` may be ``|``-separated strings or lists of names. Rows of items outside
        ``item_map`` are ignored; items without a row get no metadata.
        """
        n = len(item_map)
        titles: list[str | None] = [None] * n
        genres: list[tuple[str, ...]] = [()] * n
        if items is None or "item_id" not in items or not len(items):
            return cls(titles, genres)
        idx = item_map.to_index(items["item_id"].to_numpy())
        title_col = items["title"].tolist() if "title" in items else [None] * len(items)
        genre_col = items["genres"].tolist() if "genres" in items else [None] * len(items)
        for k, title, genre in zip(idx.tolist(), title_col, genre_col, strict=True):
            if k < 0:
                continue
            titles[k] = title if isinstance(title, str) and title else None
            genres[k] = _genre_tuple(genre)
        return cls(titles, genres)

    @property
    def genre_names(self) -> list[str]:
        """Every genre name, sorted."""
        return list(self._genre_masks)

    def __len__(self) -> int:
        return len(self.titles)

    def blocked(
        self, genres: Sequence[str] | None, exclude_genres: Sequence[str] | None
    ) -> NDArray[np.bool_] | None:
        """Items a genre filter removes, ``(n_items,) bool``; ``None`` when nothing is removed.

        Raises
        ------
        BadRequestError
            For genre names the catalogue does not know (listing some that it does).
        """
        if not genres and not exclude_genres:
            return None
        unknown = [
            g for g in [*(genres or ()), *(exclude_genres or ())] if g not in self._genre_masks
        ]
        if unknown:
            known = self.genre_names
            hint = ", ".join(known[:20]) if known else "none: this artifact has no item genres"
            raise BadRequestError(f"unknown genre {unknown[0]!r} in filters; known genres: {hint}")
        blocked = np.zeros(len(self), bool)
        if genres:
            keep = np.zeros(len(self), bool)
            for g in genres:
                keep |= self._genre_masks[g]
            blocked |= ~keep
        for g in exclude_genres or ():
            blocked |= self._genre_masks[g]
        return blocked


def _genre_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(g.strip() for g in value.split("|") if g.strip())
    if isinstance(value, list | tuple | np.ndarray):
        return tuple(str(g) for g in value if isinstance(g, str) and g)
    return ()


def catalog_from_pipeline(pipeline: Any) -> ItemCatalog:
    """Titles and genres of ``pipeline.item_map`` items, read from its feature store.

    Genres come from the store's item attributes (``item_genre_matrix`` and the
    ``item_genres`` vocabulary); titles from ``FeatureStore.item_titles()`` where the store
    offers it. An artifact without a feature store, or without that metadata, gives an empty
    catalogue: recommendations still work, only titles and genre filters do not.
    """
    item_map: IdMap = pipeline.item_map
    n = len(item_map)
    store = getattr(pipeline, "features", None)
    if store is None:
        logger.info("artifact has no feature store; titles and genre filters unavailable")
        return ItemCatalog.empty(n)
    # the store's item indices are positions in its own map: align them to the pipeline's
    store_map: IdMap = store.item_map
    pos = np.arange(n) if store_map == item_map else store_map.to_index(item_map.ids)
    return ItemCatalog(_store_titles(store, pos), _store_genres(store, pos))


def _store_genres(store: Any, pos: NDArray[np.int64]) -> list[tuple[str, ...]]:
    try:
        matrix = sp.csr_matrix(store.item_genre_matrix())
    except FeatureSchemaError:  # built without a genres column
        return [()] * len(pos)
    names = list(store.vocabularies.get("item_genres", []))
    out: list[tuple[str, ...]] = []
    for p in pos.tolist():
        if p < 0 or p >= matrix.shape[0]:
            out.append(())
            continue
        cols = matrix.indices[matrix.indptr[p] : matrix.indptr[p + 1]]
        out.append(tuple(names[c] for c in sorted(cols.tolist()) if c < len(names)))
    return out


def _store_titles(store: Any, pos: NDArray[np.int64]) -> list[str | None]:
    titles_of = getattr(store, "item_titles", None)
    if not callable(titles_of):
        return [None] * len(pos)
    titles = list(titles_of())
    return [
        titles[p] if 0 <= p < len(titles) and isinstance(titles[p], str) and titles[p] else None
        for p in pos.tolist()
    ]
