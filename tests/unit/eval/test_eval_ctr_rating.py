"""CTR (AUC, GAUC, log loss) and rating (RMSE, MAE) metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from recsys.errors import ConfigError, DataError
from recsys.eval import ctr_metrics, gauc, log_loss, mae, rating_metrics, rmse, roc_auc


def test_auc_hand_computed_with_ties() -> None:
    # positives 0.9, 0.5; negatives 0.5, 0.1 -> pairs: (0.9>0.5) 1, (0.9>0.1) 1,
    # (0.5=0.5) 1/2, (0.5>0.1) 1 -> 3.5 / 4
    assert roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.875)
    assert roc_auc([0, 1], [0.3, 0.3]) == pytest.approx(0.5)
    assert roc_auc([True, False], [0.1, 0.9]) == 0.0


def test_gauc_hand_computed() -> None:
    y = [1, 0, 0, 1, 1, 0, 0, 1, 1]
    s = [0.9, 0.2, 0.95, 0.8, 0.3, 0.5, 0.1, 0.4, 0.6]
    g = ["u1", "u1", "u1", "u2", "u2", "u2", "u2", "u3", "u3"]
    # u1: pos 0.9 beats 0.2, loses to 0.95 -> 1/2 (3 rows)
    # u2: pos 0.8 beats 0.5, 0.1; pos 0.3 beats 0.1 -> 3/4 (4 rows)
    # u3: only positives -> left out
    assert gauc(y, s, g) == pytest.approx((3 * 0.5 + 4 * 0.75) / 7)
    m = ctr_metrics(y, s, groups=g)
    assert list(m) == ["auc", "gauc", "logloss"]
    assert m["gauc"] == pytest.approx(0.6428571428571429)
    assert "gauc" not in ctr_metrics(y, s)


def test_gauc_with_one_group_is_auc_and_ignores_group_order() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    assert gauc(y, s, np.zeros(200)) == pytest.approx(roc_auc(y, s))
    groups = rng.integers(0, 7, 200)
    perm = rng.permutation(200)
    assert gauc(y, s, groups) == pytest.approx(gauc(y[perm], s[perm], groups[perm]))


def test_gauc_without_mixed_groups_is_nan() -> None:
    assert math.isnan(gauc([1, 0], [0.2, 0.3], ["a", "b"]))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 300), n_groups=st.integers(1, 8))
def test_ctr_metrics_agree_with_sklearn(seed: int, n: int, n_groups: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    p = np.round(rng.random(n), 2)
    p[rng.random(n) < 0.05] = 0.0  # exercise the clipping
    groups = rng.integers(0, n_groups, n)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1]), rel=1e-9)
    weights, aucs = [], []
    for grp in np.unique(groups):
        mask = groups == grp
        if len(np.unique(y[mask])) == 2:
            weights.append(mask.sum())
            aucs.append(roc_auc_score(y[mask], p[mask]))
    got = gauc(y, p, groups)
    if weights:
        assert got == pytest.approx(np.average(aucs, weights=weights), abs=1e-12)
    else:
        assert math.isnan(got)


def test_log_loss_hand_computed() -> None:
    # -(log 0.8 + log(1 - 0.4)) / 2
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert math.isfinite(log_loss([1, 0], [0.0, 1.0]))


def test_ctr_errors() -> None:
    with pytest.raises(DataError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(DataError, match="0/1 labels"):
        roc_auc([1, 2], [0.2, 0.3])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        log_loss([1, 0], [1.2, 0.3])
    with pytest.raises(DataError, match="NaN"):
        ctr_metrics([1, 0], [np.nan, 0.3])
    with pytest.raises(DataError, match="y_true has 2 values, y_prob has 3"):
        log_loss([1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="groups has 1 values"):
        gauc([1, 0], [0.1, 0.2], ["a"])


def test_rating_metrics_hand_computed() -> None:
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    # 6 is clipped to 5: errors 0, 0, 2
    m = rating_metrics([1, 2, 3], [1, 2, 6], clip=(1, 5))
    assert m == pytest.approx({"rmse": math.sqrt(4 / 3), "mae": 2 / 3})
    # unclipped: errors 0, 0, 3; 0.2 clipped to 1 only when asked
    assert rating_metrics([1, 2, 3], [1, 2, 6]) == pytest.approx({"rmse": math.sqrt(3), "mae": 1})
    assert rmse([1.0], [0.2], clip=(1, 5)) == 0.0


def test_rating_errors() -> None:
    with pytest.raises(DataError, match="y_pred holds 1 NaN"):
        rating_metrics([1, 2], [1, np.nan])
    with pytest.raises(DataError, match="empty"):
        rating_metrics([], [])
    with pytest.raises(ConfigError, match="low <= high"):
        rating_metrics([1], [1], clip=(5, 1))
