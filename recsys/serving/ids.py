"""Opaque external ids in URLs and JSON, matched to an artifact's vocabulary type.

HTTP carries ids as strings (in paths) or as JSON strings/numbers (in bodies). The artifact's
vocabulary may hold ``int64`` ids (MovieLens: user ``196``) or strings (``"007"``). An
:class:`IdCodec` turns what a client sent into the vocabulary's form and back, by the one id
rule of every path (:func:`recsys.types.coerce_id`, the scalar form of
:meth:`recsys.types.IdMap.to_index`):

* integer vocabulary: a canonical decimal string such as ``"196"`` (or the JSON number
  ``196``) means the integer ``196``; anything else (``"007"``, ``"abc"``, ``"1e3"``,
  ``"../x"``) stays a string and is simply an unknown id. Responses carry these ids as JSON
  numbers.
* string vocabulary: every id is its string form, verbatim (``"007"`` stays ``"007"``, the JSON
  number ``7`` means ``"7"``). Responses carry strings.

Ids are never interpreted beyond that: no path, format or query meaning. The codec keeps a
dict of the vocabulary for one-id lookups on the request path; the rule itself lives in
:mod:`recsys.types`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recsys.types import IdKind, coerce_id, id_kind

__all__ = ["IdCodec", "JsonId"]

#: An id as it appears in JSON: a string or an integer.
JsonId = str | int


class IdCodec:
    """Map client ids to a vocabulary's id type and its contiguous indices.

    Stability: internal

    Parameters
    ----------
    ids
        The vocabulary's ids in index order (``IdMap.ids``), shape ``(n,)``.
    """

    def __init__(self, ids: NDArray[Any]) -> None:
        values: list[Any] = ids.tolist()  # numpy scalars -> Python int/str
        self.kind: IdKind = id_kind(ids)
        self.values: list[JsonId] = values
        self._index: dict[Hashable, int] = {v: i for i, v in enumerate(values)}

    def __len__(self) -> int:
        return len(self.values)

    def parse(self, raw: JsonId) -> JsonId:
        """The vocabulary form of a client id (:func:`recsys.types.coerce_id`)."""
        value: JsonId = coerce_id(raw, self.kind, self._index.__contains__)
        return value

    def index(self, value: JsonId) -> int:
        """Index of a parsed id; ``-1`` when it is not in the vocabulary."""
        return self._index.get(value, -1)

    def lookup(self, raw: JsonId) -> tuple[JsonId, int]:
        """``(parsed id, index or -1)`` of a client id."""
        value = self.parse(raw)
        return value, self.index(value)

    def fits(self, value: JsonId) -> bool:
        """Whether a parsed id has the vocabulary's type (so it could join the vocabulary)."""
        if self.kind == "int":
            return isinstance(value, int)
        if self.kind == "str":
            return isinstance(value, str)
        return True

    def array(self, values: Sequence[JsonId]) -> NDArray[Any]:
        """Parsed ids as an array of the vocabulary's dtype (``int64`` or ``object``)."""
        if self.kind == "int":
            return np.asarray(values, dtype=np.int64)
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out

    def indices(self, raws: Sequence[JsonId]) -> NDArray[np.int64]:
        """Indices of client ids, ``-1`` for unknown ones; shape ``(len(raws),)``."""
        get = self._index.get
        parse = self.parse
        return np.fromiter((get(parse(r), -1) for r in raws), np.int64, count=len(raws))
