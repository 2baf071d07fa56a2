"""The batched recommend path: threaded blocks, range slices, row-chunked multi-level top-k.

Every fast path must give exactly the answer of the plain one (the serial loop, the
fancy-indexed seen matrix, the one-pass selection), ties and non-finite scores included.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data import generate_synthetic
from recsys.models import ALS, Popular
from recsys.models import base as model_base
from recsys.models.base import _mask_rows, _run_blocks, _topk_exact, topk
from recsys.types import TrainingData


@pytest.fixture(scope="module")
def data() -> TrainingData:
    ds = generate_synthetic(300, 700, 9000, seed=3, with_items=False, with_users=False)
    return TrainingData.from_frame(ds.interactions)


@pytest.fixture(scope="module")
def als(data: TrainingData) -> ALS:
    return ALS(embedding_dim=8, epochs=2, num_threads=1, seed=0).fit(data, show_progress=False)


def _assert_same(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]):
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


# ---------------------------------------------------------------------------- top-k kernel
def test_multi_level_row_chunked_topk_equals_the_one_pass_selection(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wide rows (groups of groups), odd widths (last-column groups), ties, NaN, +-inf."""
    for trial in range(60):
        n, n_items = int(rng.integers(1, 40)), int(rng.integers(520, 6000))
        kind = trial % 5
        if kind == 0:
            scores = rng.standard_normal((n, n_items)).astype(np.float32)
        elif kind == 1:  # heavy ties, -0.0 and +0.0 among them
            scores = rng.integers(-3, 4, (n, n_items)).astype(np.float32)
            scores[scores == 0] = -0.0
            scores[:, ::5] = 0.0
        elif kind == 2:  # seen items masked, some rows with few eligible items
            scores = rng.standard_normal((n, n_items)).astype(np.float32)
            scores[rng.random((n, n_items)) < rng.choice([0.5, 0.999])] = -np.inf
        elif kind == 3:  # non-finite scores, one NaN beside a tie of group maxima
            scores = rng.standard_normal((n, n_items)).astype(np.float32)
            scores[0, :3] = np.inf
            scores[-1, 11] = np.nan
            scores[-1, 12:20] = 9.0
        else:  # one dominant block of items: the top groups cluster
            scores = rng.standard_normal((n, n_items)).astype(np.float32)
            scores[:, 100:300] += 5.0
        rows_bytes = int(rng.choice([4 * n_items, 7 * 4 * n_items, 1 << 30]))
        monkeypatch.setattr(model_base, "_TOPK_ROWS_BYTES", rows_bytes)
        for k in (1, 2, max(1, n_items // 300), max(1, n_items // 40)):
            _assert_same(topk(scores, k), _topk_exact(scores, k))


def test_topk_of_a_non_contiguous_block_equals_its_copy(rng: np.random.Generator) -> None:
    scores = rng.standard_normal((1000, 9)).astype(np.float32).T  # (9, 1000), F-ordered
    _assert_same(topk(scores, 5), _topk_exact(np.ascontiguousarray(scores), 5))


def test_mask_rows_same_on_contiguous_and_strided_blocks(rng: np.random.Generator) -> None:
    seen = sp.random(30, 50, density=0.2, format="csr", random_state=0)
    a = rng.standard_normal((30, 50)).astype(np.float32)
    b = np.asfortranarray(a.copy())
    _mask_rows(a, seen)
    _mask_rows(b, seen)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.isneginf(a), seen.toarray() != 0)


# ---------------------------------------------------------------------------- recommend
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_threaded_blocks_equal_the_serial_loop(
    als: ALS, monkeypatch: pytest.MonkeyPatch, exclude_seen: bool
) -> None:
    rng = np.random.default_rng(0)
    users = np.concatenate([np.arange(als.n_users), [-1, als.n_users + 3]])
    users = np.concatenate([users, rng.permutation(users)])
    monkeypatch.setattr(model_base, "_BLOCK_BYTES", 17 * 4 * als.n_items)  # 17 users a block
    monkeypatch.setattr(model_base, "_RECOMMEND_THREADS", 1)
    serial = als.recommend(users, k=7, exclude_seen=exclude_seen)
    for threads in (2, 4):
        monkeypatch.setattr(model_base, "_RECOMMEND_THREADS", threads)
        _assert_same(als.recommend(users, k=7, exclude_seen=exclude_seen), serial)


def test_user_range_slice_equals_the_fancy_index(
    data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of consecutive users slice the seen matrix; any other order fancy-indexes it.

    Popularity scores do not depend on the block's rows, so only the masks can differ.
    """
    model = Popular().fit(data, show_progress=False)
    monkeypatch.setattr(model_base, "_BLOCK_BYTES", 25 * 4 * model.n_items)
    order = np.random.default_rng(1).permutation(model.n_users)
    in_range = model.recommend(np.arange(model.n_users), k=50)
    shuffled = model.recommend(order, k=50)
    _assert_same((in_range[0][order], in_range[1][order]), shuffled)
    one = model.recommend([4], k=50)  # a one-user block is a range too
    _assert_same(one, (in_range[0][[4]], in_range[1][[4]]))
    seen = set(data.user_items[4].indices.tolist())
    assert seen and not seen & set(one[0][0].tolist())


def test_blocks_started_from_a_pool_thread_run_in_place() -> None:
    """A recommend inside a block (a model scoring through another) must not deadlock."""
    inner: list[int] = []

    def outer(start: int) -> None:
        _run_blocks(inner.append, [10 * start + i for i in range(3)])

    _run_blocks(outer, [0, 1, 2, 3])
    assert sorted(inner) == sorted(10 * s + i for s in range(4) for i in range(3))


def test_a_failing_block_raises_in_the_caller() -> None:
    def boom(start: int) -> None:
        if start == 2:
            raise ValueError("block 2")

    with pytest.raises(ValueError, match="block 2"):
        _run_blocks(boom, range(5))


# ---------------------------------------------------------------------------- reused score blocks
class _FreshBlocks(ALS):
    """ALS scoring every block into a new array (the path before reused buffers)."""

    def _score_users_into(self, user_idx: np.ndarray, out: np.ndarray) -> np.ndarray:
        return self._score_users(user_idx)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_scoring_into_reused_blocks_equals_fresh_blocks(
    als: ALS, monkeypatch: pytest.MonkeyPatch, threads: int, exclude_seen: bool
) -> None:
    """Reused buffers (shrinking last blocks, unknown users mixed in, +-inf scores) give
    exactly the answer of fresh blocks."""
    fresh = _FreshBlocks(**als.config.model_dump())
    fresh.__dict__.update({k: v for k, v in als.__dict__.items() if k != "config"})
    fresh.user_factors_ = als.user_factors_.copy()
    fresh.user_factors_[6, 0] = np.inf
    model = ALS(**als.config.model_dump())
    model.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "config"})
    monkeypatch.setattr(model_base, "_BLOCK_BYTES", 23 * 4 * als.n_items)  # 23 users a block
    monkeypatch.setattr(model_base, "_RECOMMEND_THREADS", threads)
    rng = np.random.default_rng(2)
    users = np.concatenate([np.arange(als.n_users), [-1, als.n_users + 3]])
    for batch in (users, rng.permutation(users), users[:7], users[-30:]):
        _assert_same(
            model.recommend(batch, k=9, exclude_seen=exclude_seen),
            fresh.recommend(batch, k=9, exclude_seen=exclude_seen),
        )


def test_factor_scores_into_a_buffer_equal_the_fresh_product(als: ALS) -> None:
    users = np.arange(0, als.n_users, 3)
    out = np.full((len(users), als.n_items), 7.0, np.float32)
    got = als._score_users_into(users, out)
    assert got is out
    np.testing.assert_array_equal(got, als._score_users(users))


def test_block_buffers_are_per_thread_and_released_after_the_last_call() -> None:
    buffers = model_base._BlockBuffers()
    with buffers:
        with buffers.lease(3, 4) as a:
            a[:] = 1.0
            with buffers.lease(3, 4) as nested:  # a nested lease never aliases the outer
                assert not np.shares_memory(a, nested)
        with buffers.lease(2, 5) as b:  # the same thread reuses its buffer
            assert np.shares_memory(a, b) and b.shape == (2, 5) and b.flags.c_contiguous
        with buffers.lease(4, 4) as c:  # a larger block gets a larger buffer
            assert c.shape == (4, 4) and not np.shares_memory(a, c)
        kept = buffers._local
    assert buffers._local is not kept  # no call running: the buffers are dropped


def test_rows_of_nan_scores_get_padding() -> None:
    scores = np.array(
        [[np.nan] * 6, [0.5, np.nan, 0.7, np.nan, 0.1, np.nan], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]],
        np.float32,
    )
    items, vals = topk(scores, 4)
    assert items.tolist() == [[-1, -1, -1, -1], [2, 0, 4, -1], [5, 4, 3, 2]]
    assert np.isnan(vals[0]).all() and np.isnan(vals[1, 3])
    np.testing.assert_allclose(vals[1, :3], [0.7, 0.5, 0.1])
