"""Tiny synthetic datasets with a known answer, for unit tests of any recommender.

The block dataset splits users and items into ``n_blocks`` groups: users of block ``b``
interact (mostly, or only) with items of block ``b``. A model that learns anything from
co-occurrence recommends a user's unseen items of their own block first, so the expected
answer is known without running a reference implementation.

Ids are zero-padded strings (``"u07"``, ``"i013"``) so they exercise the verbatim-id path
and sort in index order: user ``"u07"`` has ``user_idx`` 7 in the :class:`TrainingData`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from recsys.errors import ConfigError, DataError
from recsys.types import TrainingData

__all__ = ["block_dataset", "block_frame", "block_labels"]

_BASE_TIMESTAMP = 1_600_000_000  # 2020-09-13, an arbitrary fixed origin for Unix seconds


def _ids(prefix: str, n: int, min_width: int) -> list[str]:
    width = max(min_width, len(str(n - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _check_params(
    n_blocks: int, users_per_block: int, items_per_block: int, density: float, noise: float
) -> None:
    if n_blocks < 1 or users_per_block < 1 or items_per_block < 2:
        raise ConfigError(
            "block dataset: need n_blocks >= 1, users_per_block >= 1 and items_per_block >= 2, "
            f"got {n_blocks}, {users_per_block}, {items_per_block}"
        )
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"block dataset: density must be in (0, 1], got {density}")
    if not 0.0 <= noise < 1.0:
        raise ConfigError(f"block dataset: noise must be in [0, 1), got {noise}")
    if noise > 0.0 and n_blocks < 2:
        raise ConfigError(
            "block dataset: noise > 0 needs n_blocks >= 2 (other blocks to draw from)"
        )


def block_frame(
    n_blocks: int = 3,
    users_per_block: int = 10,
    items_per_block: int = 8,
    *,
    density: float = 0.5,
    noise: float = 0.0,
    seed: int = 0,
    with_ratings: bool = True,
    with_timestamps: bool = True,
) -> pd.DataFrame:
    """Interactions of the block dataset as a frame in the interactions file contract.

    User ``u`` belongs to block ``u // users_per_block`` and item ``i`` to block
    ``i // items_per_block``. Each user interacts with ``max(1, round(density *
    items_per_block))`` distinct items of their own block, chosen at random; items of a
    block that no user picked are then given to a random user of that block, so every
    item has at least one interaction. With ``noise > 0`` each user also gets
    ``round(noise * n_own)`` items drawn from other blocks.

    Parameters
    ----------
    n_blocks, users_per_block, items_per_block
        Shape of the data: ``n_blocks * users_per_block`` users and
        ``n_blocks * items_per_block`` items.
    density
        Fraction of their own block's items each user interacts with, in ``(0, 1]``.
    noise
        Out-of-block interactions per user, as a fraction of their in-block ones, in
        ``[0, 1)``. The default 0 keeps users strictly inside their block.
    seed
        Seed of the generator; the same arguments always give the same frame.
    with_ratings
        Add a ``rating`` column (float): 4 or 5 inside the block, 1 or 2 outside it.
    with_timestamps
        Add a ``timestamp`` column of distinct ``int64`` Unix seconds.

    Returns
    -------
    pandas.DataFrame
        Columns ``user_id``, ``item_id`` (strings such as ``"u07"``, ``"i013"``), then
        ``rating`` and ``timestamp`` when requested. Rows are in timestamp order (user
        order without timestamps); no (user, item) pair repeats.

    Raises
    ------
    ConfigError
        If a size is too small or ``density``/``noise`` is out of range.

    Examples
    --------
    >>> df = block_frame(n_blocks=2, users_per_block=3, items_per_block=4)
    >>> sorted(df.columns)
    ['item_id', 'rating', 'timestamp', 'user_id']
    >>> df["user_id"].nunique(), df["item_id"].nunique()
    (6, 8)
    """
    _check_params(n_blocks, users_per_block, items_per_block, density, noise)
    rng = np.random.default_rng(seed)
    n_users = n_blocks * users_per_block
    n_items = n_blocks * items_per_block
    n_own = max(1, round(density * items_per_block))
    n_noise = round(noise * n_own)

    own: list[list[int]] = []
    for u in range(n_users):
        block = u // users_per_block
        picked = rng.choice(items_per_block, size=n_own, replace=False) + block * items_per_block
        own.append(sorted(int(i) for i in picked))
    for block in range(n_blocks):
        covered = {
            i for u in range(block * users_per_block, (block + 1) * users_per_block) for i in own[u]
        }
        for item in range(block * items_per_block, (block + 1) * items_per_block):
            if item not in covered:
                own[block * users_per_block + int(rng.integers(users_per_block))].append(item)

    users: list[int] = []
    items: list[int] = []
    inside: list[bool] = []
    for u in range(n_users):
        block = u // users_per_block
        others = np.setdiff1d(
            np.arange(n_items), np.arange(block * items_per_block, (block + 1) * items_per_block)
        )
        extra = rng.choice(others, size=n_noise, replace=False).tolist() if n_noise else []
        for item in sorted(own[u]):
            users.append(u)
            items.append(item)
            inside.append(True)
        for item in sorted(extra):
            users.append(u)
            items.append(int(item))
            inside.append(False)

    user_ids = np.asarray(_ids("u", n_users, 2), dtype=object)
    item_ids = np.asarray(_ids("i", n_items, 3), dtype=object)
    frame = pd.DataFrame(
        {"user_id": user_ids[np.asarray(users)], "item_id": item_ids[np.asarray(items)]}
    )
    in_block = np.asarray(inside)
    if with_ratings:
        high = rng.integers(4, 6, size=len(frame))
        low = rng.integers(1, 3, size=len(frame))
        frame["rating"] = np.where(in_block, high, low).astype(np.float64)
    if with_timestamps:
        frame["timestamp"] = _BASE_TIMESTAMP + 60 * rng.permutation(len(frame)).astype(np.int64)
        frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    return frame


def block_dataset(
    n_blocks: int = 3,
    users_per_block: int = 10,
    items_per_block: int = 8,
    *,
    density: float = 0.5,
    noise: float = 0.0,
    seed: int = 0,
    with_ratings: bool = True,
    with_timestamps: bool = True,
) -> TrainingData:
    """The block dataset as :class:`TrainingData`, with block labels in its side frames.

    Parameters are those of :func:`block_frame`. The default (3 blocks of 10 users and 8
    items, 4 items per user) has 30 users, 24 items and about 120 interactions.

    Returns
    -------
    TrainingData
        Built with :meth:`TrainingData.from_frame`. ``users`` holds ``user_id`` and
        ``block``; ``items`` holds ``item_id``, ``block``, ``title`` and ``genres``
        (``"block0"`` ...), so content-based models have text that separates blocks.
        Read the labels by index with :func:`block_labels`.

    Raises
    ------
    ConfigError
        As :func:`block_frame`.

    Examples
    --------
    >>> data = block_dataset()
    >>> data.n_users, data.n_items
    (30, 24)
    >>> data.user_map.ids[7]
    'u07'
    """
    frame = block_frame(
        n_blocks,
        users_per_block,
        items_per_block,
        density=density,
        noise=noise,
        seed=seed,
        with_ratings=with_ratings,
        with_timestamps=with_timestamps,
    )
    n_users = n_blocks * users_per_block
    n_items = n_blocks * items_per_block
    user_block = np.arange(n_users, dtype=np.int64) // users_per_block
    item_block = np.arange(n_items, dtype=np.int64) // items_per_block
    users = pd.DataFrame({"user_id": _ids("u", n_users, 2), "block": user_block})
    items = pd.DataFrame(
        {
            "item_id": _ids("i", n_items, 3),
            "block": item_block,
            "title": [f"item {i} of block {b}" for i, b in enumerate(item_block)],
            "genres": [f"block{b}" for b in item_block],
        }
    )
    return TrainingData.from_frame(frame, items=items, users=users)


def block_labels(data: TrainingData) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Block of every user and item of a block dataset, by internal index.

    Parameters
    ----------
    data
        A :class:`TrainingData` whose ``users`` and ``items`` frames carry a ``block``
        column for every id of the vocabularies (as :func:`block_dataset` builds them).

    Returns
    -------
    user_block : (n_users,) int64
    item_block : (n_items,) int64

    Raises
    ------
    DataError
        If the side frames or their ``block`` column are missing, or do not cover every
        user and item of the vocabularies.
    """
    out: list[NDArray[np.int64]] = []
    for kind, frame, id_map in (
        ("user", data.users, data.user_map),
        ("item", data.items, data.item_map),
    ):
        id_col = f"{kind}_id"
        if frame is None or "block" not in frame or id_col not in frame:
            raise DataError(
                f"block_labels: the {kind}s frame with {id_col} and block columns is missing; "
                "build the data with recsys.testing.block_dataset"
            )
        labels = np.full(len(id_map), -1, np.int64)
        idx = id_map.to_index(frame[id_col].to_numpy())
        known = idx >= 0
        labels[idx[known]] = frame["block"].to_numpy(np.int64)[known]
        if (labels < 0).any():
            raise DataError(f"block_labels: {int((labels < 0).sum())} {kind}s have no block label")
        out.append(labels)
    return out[0], out[1]
