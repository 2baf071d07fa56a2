"""``recsys finetune``'s edge (issue 14): new interactions reach the artifact's users and items
by the one id rule, and ids that cannot join its vocabulary are refused by file and field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.errors import DataError
from recsys.finetune import vocabulary_ids
from recsys.types import IdMap


def test_decimal_strings_join_an_integer_vocabulary_as_integers() -> None:
    new = pd.DataFrame({"user_id": ["196", "500"], "item_id": ["50", "51"], "rating": [4.0, 3.0]})
    out = vocabulary_ids(new, IdMap([186, 196]), IdMap([50]), source="new.csv")
    assert out["user_id"].dtype == np.int64 and out["user_id"].tolist() == [196, 500]
    assert out["item_id"].tolist() == [50, 51]
    assert out["rating"].tolist() == [4.0, 3.0]
    assert new["user_id"].tolist() == ["196", "500"], "the input frame is left alone"
    assert IdMap([186, 196]).extend(out["user_id"].to_numpy()).ids.tolist() == [186, 196, 500]


def test_integers_join_a_string_vocabulary_as_their_decimal_strings() -> None:
    new = pd.DataFrame({"user_id": [7, 8], "item_id": ["007", "x"]})
    out = vocabulary_ids(new, IdMap(["7", "a"]), IdMap(["007"]))
    assert out["user_id"].tolist() == ["7", "8"]
    assert out["item_id"].tolist() == ["007", "x"]


def test_ids_that_cannot_join_are_refused_naming_file_field_and_ids() -> None:
    new = pd.DataFrame({"user_id": ["196", "newcomer", "007"], "item_id": [50, 50, 50]})
    with pytest.raises(
        DataError, match=r"new\.csv: 2 rows, field 'user_id'.*rows 2, 3.*'newcomer'"
    ):
        vocabulary_ids(new, IdMap([196]), IdMap([50]), source="new.csv")
