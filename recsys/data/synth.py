"""Seeded synthetic recommender datasets, from a few rows up to MovieLens-20M scale.

:func:`generate_synthetic` draws a dataset with the shape of real feedback data:

* **item popularity** is Zipf-like: the item of popularity rank ``r`` is drawn with
  probability proportional to ``r ** -zipf_exponent`` (ranks are a seeded permutation of
  the items, so popularity is unrelated to the id);
* **user activity** (interactions per user) is lognormal with ``activity_sigma``, scaled
  so the total is exactly ``n_interactions`` and clipped to ``[min_per_user,
  max_per_user]``;
* **latent taste**: every item has a topic and every user a primary and a secondary
  topic. A share of each user's draws comes from their topics (``taste_strength``), the
  rest from global popularity, so collaborative models have something to learn; ratings
  (1-5, float32) rise with the user-item topic match, an item quality term and noise;
* **unique pairs**: each user's items are drawn without replacement (rounds of draws,
  de-duplicated, with a random trim of the surplus);
* **timestamps** increase within each user's activity window inside a three-year range;
  a ``new_item_frac`` share of the items is only interacted with in the last 10% of the
  range (cold items for temporal splits);
* **items** get a ``title``, ``genres`` (``|``-separated; the first genre is the item's
  topic) and ``text`` made of topic words, so content models can learn as well.

Rows come sorted by user, then timestamp, then item. Everything is vectorised numpy;
20,000,000 interactions take well under a minute and about 2-3 GB of memory.

:func:`write_dataset` writes a dataset in the file layout the readers accept.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from recsys.data.datasets import Dataset
from recsys.errors import ConfigError

__all__ = ["generate_synthetic", "write_dataset"]

logger = logging.getLogger(__name__)

T0 = 1_420_070_400  # 2015-01-01T00:00:00Z
SPAN = 3 * 365 * 86_400  # three years of seconds
NEW_ITEM_START = 0.9  # new items appear only after this fraction of the time range

GENRES = (
    "Action",
    "Comedy",
    "Drama",
    "Romance",
    "Thriller",
    "Sci-Fi",
    "Animation",
    "Documentary",
    "Horror",
    "Western",
    "Fantasy",
    "Mystery",
    "Crime",
    "Musical",
    "War",
    "Adventure",
)
_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "te",
    "zu",
    "no",
    "vi",
    "sha",
    "dor",
    "bel",
    "qui",
    "fen",
    "tra",
    "mon",
    "gal",
    "rek",
    "sio",
    "pum",
    "lix",
    "ond",
    "ver",
    "yas",
    "hul",
)
_WORDS_PER_TOPIC = 24
_COMMON_WORDS = 40


# ----------------------------------------------------------------------------- sampling
def _alias_table(p: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Walker/Vose alias table of a discrete distribution: O(1) vectorised draws."""
    n = len(p)
    scaled = p * (n / p.sum())
    prob = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return prob, alias  # leftovers keep prob 1 (rounding)


class _Sampler:
    """Draws items from global popularity or from popularity within one topic."""

    def __init__(self, pop: NDArray[np.float64], topic: NDArray[np.int64], n_topics: int) -> None:
        self.pop = pop / pop.sum()
        self.global_prob, self.global_alias = _alias_table(pop)
        self.n_items = len(pop)
        order = np.argsort(topic, kind="stable")  # items grouped by topic
        self.topic_items = order
        sizes = np.bincount(topic, minlength=n_topics)
        self.topic_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.topic_size = sizes.astype(np.int64)
        prob = np.empty(len(pop))
        alias = np.empty(len(pop), dtype=np.int64)
        for t in range(n_topics):
            lo, hi = self.topic_start[t], self.topic_start[t] + sizes[t]
            pr, al = _alias_table(pop[order[lo:hi]])
            prob[lo:hi] = pr
            alias[lo:hi] = al + lo
        self.topic_prob, self.topic_alias = prob, alias

    def draw_global(self, rng: np.random.Generator, n: int) -> NDArray[np.int64]:
        k = (rng.random(n) * self.n_items).astype(np.int64)
        np.minimum(k, self.n_items - 1, out=k)
        return np.where(rng.random(n) < self.global_prob[k], k, self.global_alias[k])

    def draw_topic(self, rng: np.random.Generator, topics: NDArray[np.int64]) -> NDArray[np.int64]:
        n = len(topics)
        size = self.topic_size[topics]
        k = (rng.random(n) * size).astype(np.int64)
        np.minimum(k, size - 1, out=k)
        k += self.topic_start[topics]
        slot = np.where(rng.random(n) < self.topic_prob[k], k, self.topic_alias[k])
        return self.topic_items[slot]


def _bits(n: int) -> int:
    return max(1, int(n - 1).bit_length())


def _mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 finaliser: a cheap, well-mixed 64-bit hash (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _activity(
    rng: np.random.Generator, n_users: int, total: int, sigma: float, lo: int, hi: int
) -> NDArray[np.int64]:
    """Per-user interaction counts: lognormal shape, clipped to [lo, hi], summing to total."""
    raw = rng.lognormal(0.0, sigma, size=n_users)
    a, b = 0.0, float(hi) / raw.min() + 1.0
    for _ in range(200):  # bisection on the scale: sum(clip(raw*s)) is monotone in s
        s = 0.5 * (a + b)
        if np.clip(raw * s, lo, hi).sum() < total:
            a = s
        else:
            b = s
    x = np.clip(raw * b, lo, hi)
    n = np.floor(x).astype(np.int64)
    frac = np.where(n < hi, x - n, -1.0)
    short = int(total - n.sum())
    if short > 0:  # largest remainders get the missing units
        n[np.argsort(-frac, kind="stable")[:short]] += 1
    diff = int(total - n.sum())
    while diff != 0:  # rounding leftovers (rare): nudge users that stay in bounds
        step = 1 if diff > 0 else -1
        ok = np.flatnonzero((n + step >= lo) & (n + step <= hi))
        n[rng.choice(ok, size=min(abs(diff), len(ok)), replace=False)] += step
        diff = int(total - n.sum())
    return n


def _select_pairs(
    rng: np.random.Generator,
    target: NDArray[np.int64],
    sampler: _Sampler,
    primary: NDArray[np.int64],
    secondary: NDArray[np.int64],
    taste_strength: float,
    seed: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Distinct (user, item) pairs with ``target[u]`` items for user ``u``.

    Rounds of with-replacement draws for the users still short. One sort of a packed
    key ``user | hash(user, item, round) | item`` both makes duplicates adjacent and puts
    each user's fresh items in a pseudo-random order, so keeping the first ``deficit``
    of them trims the surplus at random.
    """
    n_users, n_items = len(target), sampler.n_items
    bu, bi = _bits(n_users), _bits(n_items)
    br = 63 - bu - bi
    users_out: list[NDArray[np.int64]] = []
    items_out: list[NDArray[np.int64]] = []
    have = np.zeros(n_users, dtype=np.int64)
    accept = np.full(n_users, 0.85)  # running estimate of fresh-item yield per draw
    for rnd in range(1, 40):
        deficit = target - have
        short = np.flatnonzero(deficit > 0)
        if len(short) == 0:
            break
        if rnd > 12:  # stragglers (users wanting most of the catalogue): exact fill
            _fill_exact(rng, short, deficit, sampler, users_out, items_out, have)
            continue
        factor = np.clip(1.1 / accept[short], 1.1, 50.0)
        n_draw = np.ceil(deficit[short] * factor).astype(np.int64) + 2
        u = np.repeat(short, n_draw)
        n = len(u)
        which = rng.random(n)
        from_primary = which < taste_strength * 0.7
        from_secondary = (which >= taste_strength * 0.7) & (which < taste_strength)
        items = sampler.draw_global(rng, n)
        idx = np.flatnonzero(from_primary)
        items[idx] = sampler.draw_topic(rng, primary[u[idx]])
        idx = np.flatnonzero(from_secondary)
        items[idx] = sampler.draw_topic(rng, secondary[u[idx]])
        del which, from_primary, from_secondary, idx
        if users_out:  # drop items the user already has
            is_short = np.zeros(n_users, dtype=bool)
            is_short[short] = True
            known = []
            for uu, ii in zip(users_out, items_out, strict=True):
                m = is_short[uu]
                known.append(uu[m] * n_items + ii[m])
            known_keys = np.sort(np.concatenate(known))
            pair = u * n_items + items
            if len(known_keys):
                pos = np.searchsorted(known_keys, pair)
                np.minimum(pos, len(known_keys) - 1, out=pos)
                fresh = known_keys[pos] != pair
                u, items = u[fresh], items[fresh]
            del pair
        h = _mix64(
            (u.astype(np.uint64) << np.uint64(32))
            ^ items.astype(np.uint64)
            ^ np.uint64((seed * 1_000_003 + rnd) & 0xFFFFFFFF) << np.uint64(20)
        )
        if br >= 8:
            key = (u << (br + bi)) | (h >> np.uint64(64 - br)).astype(np.int64) << bi | items
            key.sort()
            keep = np.ones(len(key), dtype=bool)
            keep[1:] = key[1:] != key[:-1]
            key = key[keep]
            u = key >> (br + bi)
            items = key & ((1 << bi) - 1)
            del key
        else:  # ids too wide to pack into one int64: slower lexsort
            order = np.lexsort((items, h, u))
            u, items = u[order], items[order]
            keep = np.ones(len(u), dtype=bool)
            keep[1:] = (u[1:] != u[:-1]) | (items[1:] != items[:-1])
            u, items = u[keep], items[keep]
        got = np.bincount(u, minlength=n_users)
        start = np.concatenate([[0], np.cumsum(got)[:-1]])
        pos = np.arange(len(u)) - start[u]
        keep = pos < deficit[u]
        u, items = u[keep], items[keep]
        accept[short] = np.clip(got[short] / n_draw, 0.02, 1.0)
        have += np.bincount(u, minlength=n_users)
        users_out.append(u)
        items_out.append(items)
        logger.debug(
            "synthetic round %d: %d pairs, %d users short",
            rnd,
            have.sum(),
            int((have < target).sum()),
        )
    return np.concatenate(users_out), np.concatenate(items_out)


def _fill_exact(
    rng: np.random.Generator,
    short: NDArray[np.int64],
    deficit: NDArray[np.int64],
    sampler: _Sampler,
    users_out: list[NDArray[np.int64]],
    items_out: list[NDArray[np.int64]],
    have: NDArray[np.int64],
) -> None:
    """Fill the few remaining users one by one, without replacement over unseen items."""
    n_items = sampler.n_items
    allu = np.concatenate(users_out) if users_out else np.empty(0, np.int64)
    alli = np.concatenate(items_out) if items_out else np.empty(0, np.int64)
    is_short = np.zeros(len(have), dtype=bool)
    is_short[short] = True
    keep = is_short[allu]
    allu, alli = allu[keep], alli[keep]
    new_u, new_i = [], []
    for user in short:
        seen = np.zeros(n_items, dtype=bool)
        seen[alli[allu == user]] = True
        cand = np.flatnonzero(~seen)
        w = sampler.pop[cand] + 1e-12
        pick = rng.choice(cand, size=int(deficit[user]), replace=False, p=w / w.sum())
        new_u.append(np.full(len(pick), user, dtype=np.int64))
        new_i.append(pick.astype(np.int64))
        have[user] += len(pick)
    users_out.append(np.concatenate(new_u))
    items_out.append(np.concatenate(new_i))


# ------------------------------------------------------------------------------- text
def _make_words(rng: np.random.Generator, n: int) -> list[str]:
    words: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        k = int(rng.integers(2, 4))
        w = "".join(_SYLLABLES[j] for j in rng.integers(0, len(_SYLLABLES), k))
        if w not in words:
            words.add(w)
            out.append(w)
    return out


def _items_frame(
    rng: np.random.Generator,
    item_ids: Any,
    topic: NDArray[np.int64],
    n_topics: int,
    release_year: NDArray[np.int64],
) -> pd.DataFrame:
    n_items = len(topic)
    vocab = np.array(_make_words(rng, n_topics * _WORDS_PER_TOPIC + _COMMON_WORDS), dtype=object)
    topic_vocab = vocab[: n_topics * _WORDS_PER_TOPIC].reshape(n_topics, _WORDS_PER_TOPIC)
    common = vocab[n_topics * _WORDS_PER_TOPIC :]
    n_words = 8
    own = topic_vocab[topic[:, None], rng.integers(0, _WORDS_PER_TOPIC, (n_items, n_words))]
    other = common[rng.integers(0, len(common), (n_items, n_words))]
    words = np.where(rng.random((n_items, n_words)) < 0.7, own, other)
    text = [" ".join(row) for row in words.tolist()]
    title_words = topic_vocab[topic[:, None], rng.integers(0, _WORDS_PER_TOPIC, (n_items, 2))]
    titles = [
        f"{a.capitalize()} {b.capitalize()} {k}"
        for k, (a, b) in enumerate(title_words.tolist(), start=1)
    ]
    genre_names = np.array([GENRES[t % len(GENRES)] for t in range(len(GENRES))], dtype=object)
    first = genre_names[topic % len(GENRES)]
    second_t = rng.integers(0, len(GENRES), n_items)
    second = genre_names[second_t]
    add_second = (rng.random(n_items) < 0.35) & (second != first)
    genres = np.where(add_second, first + "|" + second, first)
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "title": titles,
            "genres": genres.astype(str),
            "text": text,
            "release_year": release_year.astype(np.int64),
        }
    )


def _format_ids(prefix: str, n: int) -> NDArray[Any]:
    width = max(3, len(str(n)))
    return np.array([f"{prefix}{k:0{width}d}" for k in range(1, n + 1)], dtype=object)


# ----------------------------------------------------------------------------- public
def generate_synthetic(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 20_000,
    *,
    seed: int = 0,
    zipf_exponent: float = 1.0,
    activity_sigma: float = 1.0,
    string_ids: bool = False,
    iso_timestamps: bool = False,
    with_items: bool = True,
    with_users: bool = True,
    new_item_frac: float = 0.0,
    n_topics: int = 8,
    taste_strength: float = 0.6,
    min_per_user: int | None = None,
    max_per_user: int | None = None,
) -> Dataset:
    """Draw a seeded synthetic dataset with Zipf popularity and lognormal user activity.

    Stability: stable

    Parameters
    ----------
    n_users, n_items, n_interactions
        Sizes. Every user gets at least ``min_per_user`` interactions; items may end up
        with none (the catalogue in ``items`` still lists them). MovieLens-20M scale
        (138_000, 27_000, 20_000_000) runs in well under a minute.
    seed
        Same seed and arguments give identical frames.
    zipf_exponent
        Item popularity ``~ rank ** -zipf_exponent`` (0 = uniform).
    activity_sigma
        Sigma of the lognormal user activity (0 = everyone equally active).
    string_ids
        Ids as zero-padded strings (``"u000123"``, ``"i00042"``) instead of ints 1..n.
    iso_timestamps
        ``timestamp`` as ISO-8601 strings (``"2016-03-01T12:00:00Z"``) instead of int64
        Unix seconds, to mimic a differently shaped raw file (the readers normalise it).
    with_items, with_users
        Also build the ``items`` frame (``item_id``, ``title``, ``genres``, ``text``,
        ``release_year``) and the ``users`` frame (``user_id``, ``age``, ``region``).
    new_item_frac
        Share of items (chosen at random) whose interactions all fall in the last 10% of
        the time range, for cold-item tests.
    n_topics
        Number of latent topics (clipped to ``n_items``).
    taste_strength
        Share of each user's draws that come from the user's two topics (0 = pure
        popularity, 1 = topics only).
    min_per_user, max_per_user
        Bounds on interactions per user; default ``min(20, N / (4 n_users))`` (at least
        1) and ``n_items // 2`` (raised when needed to reach ``n_interactions``).

    Returns
    -------
    Dataset
        ``name="synthetic"``; interactions sorted by user, timestamp, item with columns
        ``user_id``, ``item_id``, ``rating`` (float32, 1-5), ``timestamp``.

    Raises
    ------
    ConfigError
        Impossible sizes (e.g. more interactions than ``n_users * n_items``).
    """
    _check_sizes(n_users, n_items, n_interactions, new_item_frac, taste_strength)
    lo = (
        min_per_user
        if min_per_user is not None
        else max(1, min(20, n_interactions // (4 * n_users)))
    )
    hi = max_per_user if max_per_user is not None else max(n_items // 2, 1)
    hi = min(max(hi, math.ceil(n_interactions / n_users)), n_items)
    if lo > hi or lo * n_users > n_interactions or hi * n_users < n_interactions:
        raise ConfigError(
            f"generate_synthetic: cannot give {n_users} users between {lo} and {hi} "
            f"interactions each for a total of {n_interactions}; adjust min_per_user/"
            "max_per_user or the sizes"
        )
    rng = np.random.default_rng(seed)
    n_topics = max(1, min(n_topics, n_items))

    # ---- latent structure
    ranks = np.empty(n_items, dtype=np.int64)
    ranks[rng.permutation(n_items)] = np.arange(1, n_items + 1)
    pop = ranks.astype(np.float64) ** (-zipf_exponent)
    topic = np.empty(n_items, dtype=np.int64)
    topic[rng.permutation(n_items)] = np.arange(n_items) % n_topics
    quality = rng.normal(0.0, 0.45, n_items) + 0.15 * (np.log(pop) - np.log(pop).mean()) / max(
        np.log(pop).std(), 1e-9
    )
    primary = rng.integers(0, n_topics, n_users)
    secondary = (primary + rng.integers(1, max(n_topics, 2), n_users)) % n_topics
    user_bias = rng.normal(0.0, 0.35, n_users)
    target = _activity(rng, n_users, n_interactions, activity_sigma, lo, hi)

    # ---- which items
    sampler = _Sampler(pop, topic, n_topics)
    u, i = _select_pairs(rng, target, sampler, primary, secondary, taste_strength, seed)

    # ---- when: each user is active in a window; new items only late in the range
    n_new = round(new_item_frac * n_items)
    is_new = np.zeros(n_items, dtype=bool)
    if n_new:
        is_new[rng.choice(n_items, n_new, replace=False)] = True
    length = SPAN * rng.uniform(0.05, 1.0, n_users)
    start = rng.uniform(0.0, 1.0, n_users) * (SPAN - length)
    t = start[u] + rng.random(len(u)) * length[u]
    late = is_new[i]
    if late.any():
        cut = NEW_ITEM_START * SPAN
        t[late] = cut + rng.random(int(late.sum())) * (SPAN - cut - 1)
    ts = t.astype(np.int64)  # seconds since T0, < SPAN
    del t

    # ---- order rows by (user, time, item)
    bu, bt, bi = _bits(n_users), _bits(SPAN), _bits(n_items)
    if bu + bt + bi <= 63:
        key = (u << (bt + bi)) | (ts << bi) | i
        key.sort()
        u = key >> (bt + bi)
        ts = (key >> bi) & ((1 << bt) - 1)
        i = key & ((1 << bi) - 1)
        del key
    else:
        order = np.lexsort((i, ts, u))
        u, ts, i = u[order], ts[order], i[order]

    # ---- ratings: topic match + item quality + user bias + noise, rounded to 1..5
    match = np.where(topic[i] == primary[u], 1.0, np.where(topic[i] == secondary[u], 0.5, -0.4))
    r = 2.95 + 0.9 * match + quality[i] + user_bias[u] + rng.normal(0.0, 0.6, len(u))
    rating = np.clip(np.rint(r), 1, 5).astype(np.float32)
    del r, match

    # ---- frames
    if string_ids:
        user_names, item_names = _format_ids("u", n_users), _format_ids("i", n_items)
        user_col: Any = user_names[u]
        item_col: Any = item_names[i]
        user_ids: Any = user_names
        item_ids: Any = item_names
    else:
        user_col, item_col = u + 1, i + 1
        user_ids = np.arange(1, n_users + 1, dtype=np.int64)
        item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    ts_abs = ts + T0
    ts_col: Any = (
        np.datetime_as_string(ts_abs.astype("datetime64[s]"), unit="s", timezone="UTC")
        if iso_timestamps
        else ts_abs
    )
    interactions = pd.DataFrame(
        {"user_id": user_col, "item_id": item_col, "rating": rating, "timestamp": ts_col}
    )
    if string_ids:
        interactions["user_id"] = interactions["user_id"].astype(str)
        interactions["item_id"] = interactions["item_id"].astype(str)
    if iso_timestamps:
        interactions["timestamp"] = interactions["timestamp"].astype(str)

    items = None
    if with_items:
        year = 1950 + (rng.beta(4.0, 1.5, n_items) * 70).astype(np.int64)
        items = _items_frame(rng, item_ids, topic, n_topics, year)
        if string_ids:
            items["item_id"] = items["item_id"].astype(str)
    users = None
    if with_users:
        age = np.clip(rng.normal(30 + 2.5 * primary, 9.0), 16, 80).astype(np.int64)
        regions = np.array(["north", "south", "east", "west"], dtype=object)
        users = pd.DataFrame(
            {"user_id": user_ids, "age": age, "region": regions[rng.integers(0, 4, n_users)]}
        )
        users["region"] = users["region"].astype(str)
        if string_ids:
            users["user_id"] = users["user_id"].astype(str)
    logger.info(
        "synthetic dataset: %d users, %d items, %d interactions (seed %d)",
        n_users,
        n_items,
        len(interactions),
        seed,
    )
    return Dataset(
        name="synthetic",
        interactions=interactions,
        items=items,
        users=users,
        license="Synthetic data generated by recsys; no restrictions.",
    )


def _check_sizes(
    n_users: int, n_items: int, n_interactions: int, new_item_frac: float, taste: float
) -> None:
    if min(n_users, n_items, n_interactions) < 1:
        raise ConfigError(
            f"generate_synthetic: n_users, n_items and n_interactions must be >= 1 "
            f"(got {n_users}, {n_items}, {n_interactions})"
        )
    if n_interactions > n_users * n_items:
        raise ConfigError(
            f"generate_synthetic: {n_interactions} distinct (user, item) pairs do not fit "
            f"in {n_users} users x {n_items} items"
        )
    if not 0.0 <= new_item_frac < 1.0:
        raise ConfigError(
            f"generate_synthetic: new_item_frac must be in [0, 1), got {new_item_frac}"
        )
    if not 0.0 <= taste <= 1.0:
        raise ConfigError(f"generate_synthetic: taste_strength must be in [0, 1], got {taste}")


def write_dataset(
    dataset: Dataset, out_dir: Path | str, fmt: Literal["parquet", "csv"] = "parquet"
) -> dict[str, Path]:
    """Write a dataset's frames in the contract file layout.

    Stability: stable

    Writes ``interactions.<ext>`` and, when present, ``items.<ext>``, ``users.<ext>`` and
    ``item_relations.<ext>`` (plus ``LICENSE.txt`` when the dataset has a licence) into
    ``out_dir``; :func:`recsys.data.read_interactions` and friends read them back with the
    same ids.

    Parameters
    ----------
    dataset
        What to write.
    out_dir
        Target directory (created).
    fmt
        ``"parquet"`` (zstd) or ``"csv"``.

    Returns
    -------
    dict
        Frame name -> written path.
    """
    from recsys.data.readers import write_frame

    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"write_dataset: fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in ("interactions", "items", "users", "item_relations"):
        frame = getattr(dataset, name)
        if frame is None:
            continue
        path = out / f"{name}.{fmt}"
        write_frame(frame, path)
        written[name] = path
    if dataset.license:
        (out / "LICENSE.txt").write_text(dataset.license.rstrip("\n") + "\n", encoding="utf-8")
    return written
