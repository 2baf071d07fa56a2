"""Item documents for content models (Doc2Vec): one list of lowercase tokens per item.

Tokens, in this order:

* words of ``title`` (``\\w+`` runs, lowercased): ``"Toy Story (1995)"`` -> ``toy``,
  ``story``, ``1995``;
* one ``genre:<name>`` token per ``|``-separated genre, lowercased, inner spaces as ``_``:
  ``"Sci-Fi|Film Noir"`` -> ``genre:sci-fi``, ``genre:film_noir``;
* words of ``text``, as for the title;
* one ``<relation>:<entity>`` token per knowledge-graph triple of the item, lowercased,
  spaces as ``_``: ``film.film.actor:m.02vxxgs``, in the triples' input order.
"""

from __future__ import annotations

import logging
import re

import pandas as pd

from recsys.errors import DataError, format_examples
from recsys.types import IdMap

__all__ = ["build_item_documents", "tokenize"]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def tokenize(text: object) -> list[str]:
    """Lowercase ``\\w+`` word tokens of a string; ``[]`` for missing values.

    Examples
    --------
    >>> tokenize("Toy Story (1995)")
    ['toy', 'story', '1995']
    """
    if not isinstance(text, str):
        return []
    return _WORD.findall(text.lower())


def _label(value: str) -> str:
    return _SPACE.sub("_", value.strip().lower())


def _genre_tokens(value: object) -> list[str]:
    if not isinstance(value, str):
        return []
    return [f"genre:{_label(g)}" for g in value.split("|") if g.strip()]


def build_item_documents(
    item_map: IdMap, items: pd.DataFrame | None, item_relations: pd.DataFrame | None
) -> list[list[str]]:
    """Token lists of every item of ``item_map``, in index order.

    Parameters
    ----------
    item_map
        The item vocabulary; items without metadata get an empty list.
    items
        ``item_id`` and optionally ``title``, ``genres``, ``text``; or ``None``.
    item_relations
        ``item_id``, ``relation``, ``entity`` triples; or ``None``. Triples of items outside
        the vocabulary are ignored (logged at DEBUG).

    Returns
    -------
    list[list[str]]
        ``len(item_map)`` token lists.

    Raises
    ------
    DataError
        If a frame lacks a required column.
    """
    docs: list[list[str]] = [[] for _ in range(len(item_map))]
    if items is not None:
        if "item_id" not in items:
            raise DataError("items frame has no 'item_id' column; add it to build documents")
        idx = item_map.to_index(items["item_id"].to_numpy())
        empty = pd.Series([None] * len(items), index=items.index, dtype=object)
        titles = items["title"] if "title" in items else empty
        genres = items["genres"] if "genres" in items else empty
        texts = items["text"] if "text" in items else empty
        for k, title, genre, text in zip(idx.tolist(), titles, genres, texts, strict=True):
            if k >= 0:
                docs[k] = tokenize(title) + _genre_tokens(genre) + tokenize(text)
    if item_relations is not None and len(item_relations):
        missing = [c for c in ("item_id", "relation", "entity") if c not in item_relations]
        if missing:
            raise DataError(
                f"item_relations frame lacks columns {format_examples(missing)}; it needs "
                "item_id, relation, entity"
            )
        idx = item_map.to_index(item_relations["item_id"].to_numpy())
        known = (
            (idx >= 0)
            & item_relations["relation"].notna().to_numpy()
            & item_relations["entity"].notna().to_numpy()
        )
        if not known.all():
            logger.debug("ignored %d relations of unknown items or missing values", (~known).sum())
        rel = item_relations["relation"].astype(str).str.strip().str.lower()
        ent = item_relations["entity"].astype(str).str.strip().str.lower()
        tokens = (rel + ":" + ent).str.replace(r"\s+", "_", regex=True).to_numpy(dtype=object)
        for k, token in zip(idx[known].tolist(), tokens[known].tolist(), strict=True):
            docs[k].append(token)
    return docs
