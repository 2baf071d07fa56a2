"""Bundled MovieLens 100K and the GroupLens loaders (tiny fixtures, never the network)."""

from __future__ import annotations

import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data import Dataset, available_datasets, fetch_grouplens, load_dataset
from recsys.data.bundle import build_bundled_ml100k, item_relations_from_kg
from recsys.data.datasets import BUNDLED_DIR
from recsys.errors import DataError

ML100K_SRC = Path("/work/shared/data/ml-100k")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# --------------------------------------------------------------------------- bundled
@pytest.mark.realdata
def test_bundled_ml100k_loads() -> None:
    assert "ml-100k" in available_datasets()
    ds = load_dataset("ml-100k")
    assert isinstance(ds, Dataset) and ds.name == "ml-100k"
    inter = ds.interactions
    assert len(inter) == 100_000
    assert inter["user_id"].nunique() == 943 and inter["item_id"].nunique() == 1682
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert inter.dtypes.to_dict() == {
        "user_id": np.int64,
        "item_id": np.int64,
        "rating": np.float32,
        "timestamp": np.int64,
    }
    # file order of ml-100k.inter is kept (the rating protocol depends on it)
    assert inter.iloc[0].tolist() == [196, 242, 3.0, 881250949]
    assert set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}

    assert ds.items is not None and len(ds.items) == 1682
    assert {"item_id", "title", "genres", "release_year"} <= set(ds.items.columns)
    toy = ds.items.set_index("item_id").loc[1]
    assert toy["title"] == "Toy Story" and toy["genres"] == "Animation|Children's|Comedy"
    assert ds.items["genres"].str.contains("|", regex=False).any()

    assert ds.users is not None and len(ds.users) == 943
    assert list(ds.users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert ds.users["zip_code"].map(type).eq(str).all()

    rel = ds.item_relations
    assert rel is not None and len(rel) > 0
    assert list(rel.columns) == ["item_id", "relation", "entity"]
    assert rel["item_id"].isin(ds.items["item_id"]).all()
    assert ds.license is not None and "GroupLens" in ds.license and "transformations" in ds.license


def test_load_dataset_unknown_name() -> None:
    with pytest.raises(DataError, match="fetch_grouplens"):
        load_dataset("ml-1m")
    with pytest.raises(DataError, match=r"available: .*ml-100k"):
        load_dataset("nope")


def test_bundled_files_are_small() -> None:
    root = BUNDLED_DIR / "ml-100k"
    total = sum(p.stat().st_size for p in root.iterdir())
    assert total < 3_000_000


def test_item_relations_from_kg_both_directions() -> None:
    link = pd.DataFrame({"item_id": [1, 2], "entity_id": ["m.a", "m.b"]})
    kg = pd.DataFrame(
        {
            "head_id": ["m.a", "m.x", "m.b", "m.z"],
            "relation_id": ["film.directed_by", "actor.film", "film.genre", "other"],
            "tail_id": ["m.d", "m.a", "m.g", "m.y"],
        }
    )
    rel = item_relations_from_kg(link, kg)
    assert sorted(map(tuple, rel.to_numpy().tolist())) == [
        (1, "actor.film", "m.x"),
        (1, "film.directed_by", "m.d"),
        (2, "film.genre", "m.g"),
    ]


@pytest.mark.realdata
@pytest.mark.skipif(not ML100K_SRC.is_dir(), reason="RecBole ml-100k source not available")
def test_build_bundled_ml100k_reproduces_package_files(tmp_path: Path) -> None:
    counts = build_bundled_ml100k(ML100K_SRC, tmp_path)
    assert counts["interactions"] == 100_000 and counts["items"] == 1682
    shipped = load_dataset("ml-100k")
    built = pd.read_parquet(tmp_path / "interactions.parquet")
    pd.testing.assert_frame_equal(built, shipped.interactions)
    assert (tmp_path / "LICENSE.txt").read_text() == shipped.license


# ------------------------------------------------------------------------- grouplens
def _zip(cache: Path, name: str, files: dict[str, str], encoding: str = "utf-8") -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for fname, text in files.items():
            zf.writestr(f"{name}/{fname}", text.encode(encoding))
    return path


def test_fetch_ml100k_format(tmp_path: Path) -> None:
    genres = "|".join(["0"] * 19)
    action_comedy = "|".join("1" if k in (1, 5) else "0" for k in range(19))
    _zip(
        tmp_path,
        "ml-100k",
        {
            "u.data": "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
            "u.item": f"242|Kolya (1996)|24-Jan-1997||http://x|{action_comedy}\n"
            f"302|L.A. Confidential (1997)|01-Jan-1997||http://y|{genres}\n",
            "u.user": "196|49|M|writer|55105\n186|39|F|executive|00000\n",
            "README": "terms",
        },
        encoding="latin-1",
    )
    ds = fetch_grouplens("ml-100k", cache_dir=tmp_path, download=False)
    assert ds.interactions.to_dict("list") == {
        "user_id": [196, 186],
        "item_id": [242, 302],
        "rating": [3.0, 3.0],
        "timestamp": [881250949, 891717742],
    }
    assert ds.interactions["rating"].dtype == np.float32
    assert ds.items is not None
    assert ds.items["title"].tolist() == ["Kolya", "L.A. Confidential"]
    assert ds.items["genres"].tolist() == ["Action|Comedy", ""]
    assert ds.items["release_year"].tolist() == [1996, 1997]
    assert ds.users is not None and ds.users["zip_code"].tolist() == ["55105", "00000"]
    assert ds.license is not None and "GroupLens" in ds.license
    # second call uses the extracted cache
    assert len(fetch_grouplens("ml-100k", cache_dir=tmp_path, download=False).interactions) == 2


def test_fetch_ml1m_format(tmp_path: Path) -> None:
    _zip(
        tmp_path,
        "ml-1m",
        {
            "ratings.dat": "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n",
            "movies.dat": "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
            "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n",
            "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
        },
        encoding="latin-1",
    )
    ds = fetch_grouplens("ml-1m", cache_dir=tmp_path, download=False)
    assert ds.interactions["user_id"].tolist() == [1, 1, 2]
    assert ds.interactions["timestamp"].tolist() == [978300760, 978302109, 978298413]
    assert ds.items is not None
    assert ds.items["genres"].tolist() == ["Drama", "Animation|Children's|Musical"]
    assert ds.items["title"].iloc[0] == "One Flew Over the Cuckoo's Nest"
    assert ds.users is not None and ds.users["age"].tolist() == [1, 56]


@pytest.mark.parametrize("name", ["ml-20m", "ml-25m"])
def test_fetch_csv_releases(tmp_path: Path, name: str) -> None:
    _zip(
        tmp_path,
        name,
        {
            "ratings.csv": "userId,movieId,rating,timestamp\n"
            "1,2,3.5,1112486027\n1,29,4.0,1112484676\n",
            "movies.csv": "movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n"
            '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",'
            "Adventure|Drama\n"
            "30,Unknown,(no genres listed)\n",
        },
    )
    ds = fetch_grouplens(name, cache_dir=tmp_path, download=False)  # type: ignore[arg-type]
    assert ds.interactions["rating"].tolist() == [3.5, 4.0]
    assert ds.interactions["item_id"].tolist() == [2, 29]
    assert ds.items is not None
    assert ds.items["title"].tolist()[:2] == [
        "Jumanji",
        "City of Lost Children, The (Cité des enfants perdus, La)",
    ]
    assert ds.items["genres"].tolist() == ["Adventure|Children|Fantasy", "Adventure|Drama", ""]
    assert ds.items["release_year"].iloc[0] == 1995
    assert ds.users is None


def test_fetch_offline_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        fetch_grouplens("ml-1m", cache_dir=tmp_path, download=False)
    msg = str(exc.value)
    assert "cannot download" in msg and str(tmp_path / "ml-1m.zip") in msg
    with pytest.raises(DataError, match=r"offline\? place the zip at"):
        fetch_grouplens("ml-1m", cache_dir=tmp_path, download=True)  # urlopen refuses
    assert not (tmp_path / "ml-1m.zip").exists()


def test_fetch_default_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=str(tmp_path / "cache" / "ml-25m.zip")):
        fetch_grouplens("ml-25m", download=False)


def test_fetch_rejects_non_zip_and_unknown(tmp_path: Path) -> None:
    (tmp_path / "ml-100k.zip").write_text("<html>not found</html>")
    with pytest.raises(DataError, match="not a zip"):
        fetch_grouplens("ml-100k", cache_dir=tmp_path, download=False)
    with pytest.raises(DataError, match="unknown GroupLens release"):
        fetch_grouplens("ml-5m", cache_dir=tmp_path)  # type: ignore[arg-type]


def test_fetch_wrong_layout_names_missing_file(tmp_path: Path) -> None:
    _zip(tmp_path, "ml-20m", {"other.csv": "a\n1\n"})
    with pytest.raises(DataError, match=r"expected ratings\.csv"):
        fetch_grouplens("ml-20m", cache_dir=tmp_path, download=False)
