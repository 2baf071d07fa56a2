"""Datasets: the :class:`Dataset` bundle, the bundled MovieLens 100K, and GroupLens loaders.

* :func:`load_dataset` loads a dataset shipped inside the package (``"ml-100k"``) with no
  network access; :func:`available_datasets` lists the names.
* :func:`fetch_grouplens` downloads (once, into a cache directory) and parses the public
  GroupLens MovieLens releases ``ml-100k``, ``ml-1m``, ``ml-20m`` and ``ml-25m``.

Every frame is in the contract form of :mod:`recsys.data.readers`: interactions have
``user_id``, ``item_id``, ``rating`` (float32) and ``timestamp`` (int64 Unix seconds);
items have ``item_id``, ``title`` and ``genres`` (``|``-separated) plus extra columns.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from recsys.errors import DataError

__all__ = [
    "GROUPLENS_RELEASES",
    "Dataset",
    "available_datasets",
    "default_cache_dir",
    "fetch_grouplens",
    "load_dataset",
]

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"

GroupLensName = Literal["ml-100k", "ml-1m", "ml-20m", "ml-25m"]
GROUPLENS_RELEASES: tuple[str, ...] = get_args(GroupLensName)

GROUPLENS_LICENSE = (
    "MovieLens data (GroupLens Research, University of Minnesota; F. M. Harper and "
    'J. A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015). '
    "Redistribution of the data and its transformations only under the same terms: no "
    "endorsement implied, acknowledge the source in publications, no commercial use "
    "without permission. See the README inside the release zip for the full terms."
)


@dataclass
class Dataset:
    """A named bundle of interaction, item, user and item-relation frames.

    Stability: stable

    Attributes
    ----------
    name
        Short name, e.g. ``"ml-100k"`` or ``"synthetic"``.
    interactions
        ``user_id``, ``item_id`` and optionally ``rating`` (float32) and ``timestamp``
        (int64 Unix seconds; ISO-8601 strings for :func:`generate_synthetic` with
        ``iso_timestamps=True``, which mimics a raw file and is normalised by the readers).
    items
        ``item_id`` plus ``title``, ``genres`` (``|``-separated), ``text`` and other
        feature columns, or ``None``.
    users
        ``user_id`` plus feature columns, or ``None``.
    item_relations
        Knowledge-graph triples joined to items: ``item_id``, ``relation``, ``entity``;
        or ``None``.
    license
        The data licence / notice to honour when redistributing, or ``None``.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    item_relations: pd.DataFrame | None = None
    license: str | None = None

    @property
    def n_interactions(self) -> int:
        """Number of interaction rows."""
        return len(self.interactions)

    @property
    def n_users(self) -> int:
        """Number of distinct users in the interactions."""
        return int(self.interactions["user_id"].nunique())

    @property
    def n_items(self) -> int:
        """Number of distinct items in the interactions."""
        return int(self.interactions["item_id"].nunique())

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"interactions={len(self.interactions):,}"]
        for field_name in ("items", "users", "item_relations"):
            frame = getattr(self, field_name)
            if frame is not None:
                parts.append(f"{field_name}={len(frame):,}")
        return f"Dataset({', '.join(parts)})"


# ----------------------------------------------------------------------------- bundled
def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (datasets bundled in the package), sorted."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(
        p.name
        for p in BUNDLED_DIR.iterdir()
        if p.is_dir() and (p / "interactions.parquet").is_file()
    )


def load_dataset(name: str = "ml-100k") -> Dataset:
    """Load a dataset bundled inside the package; never touches the network.

    Stability: stable

    Parameters
    ----------
    name
        One of :func:`available_datasets` (``"ml-100k"``: MovieLens 100K, 100,000 ratings
        by 943 users on 1,682 movies, with items, users and knowledge-graph relations).

    Returns
    -------
    Dataset
        Frames in the contract form; ``license`` carries the data notice.

    Raises
    ------
    DataError
        Unknown name, or the package files are missing.
    """
    names = available_datasets()
    if name not in names:
        hint = ""
        if name in GROUPLENS_RELEASES:
            hint = f"; use recsys.data.fetch_grouplens({name!r}) to download it"
        raise DataError(
            f"unknown bundled dataset {name!r}; available: {', '.join(names) or '(none)'}{hint}"
        )
    root = BUNDLED_DIR / name

    def _read(fname: str) -> pd.DataFrame | None:
        path = root / fname
        return pd.read_parquet(path) if path.is_file() else None

    interactions = _read("interactions.parquet")
    assert interactions is not None  # available_datasets checked it
    for col, dtype in (("rating", np.float32), ("timestamp", np.int64)):
        if col in interactions:
            interactions[col] = interactions[col].astype(dtype)
    lic_path = root / "LICENSE.txt"
    return Dataset(
        name=name,
        interactions=interactions,
        items=_read("items.parquet"),
        users=_read("users.parquet"),
        item_relations=_read("item_relations.parquet"),
        license=lic_path.read_text(encoding="utf-8") if lic_path.is_file() else None,
    )


# --------------------------------------------------------------------------- grouplens
def default_cache_dir() -> Path:
    """``$RECSYS_CACHE`` if set, else ``~/.cache/recsys``."""
    env = os.environ.get("RECSYS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recsys"


def fetch_grouplens(
    name: GroupLensName,
    cache_dir: Path | str | None = None,
    download: bool = True,
    *,
    timeout: float = 60.0,
) -> Dataset:
    """Download (once) and parse a public GroupLens MovieLens release.

    Stability: stable

    The official zip ``https://files.grouplens.org/datasets/movielens/<name>.zip`` is
    stored as ``<cache_dir>/<name>.zip``, checked to be a zip, extracted next to it and
    parsed. A zip already in the cache is used as is, so placing it there by hand works
    offline.

    Parameters
    ----------
    name
        ``"ml-100k"`` (``u.data``, ``u.item``, ``u.user``), ``"ml-1m"`` (``::``-separated
        ``ratings.dat``, ``movies.dat``, ``users.dat``), ``"ml-20m"`` or ``"ml-25m"``
        (``ratings.csv``, ``movies.csv``).
    cache_dir
        Where zips and extracted files live; default :func:`default_cache_dir`.
    download
        If false, never touch the network: use the cache or fail.
    timeout
        Socket timeout of the download, seconds.

    Raises
    ------
    DataError
        Unknown name; nothing cached and ``download`` is false or the download failed
        (the message says where to place the zip); a damaged zip or unexpected layout.
    """
    if name not in GROUPLENS_RELEASES:
        raise DataError(
            f"unknown GroupLens release {name!r}; expected one of {', '.join(GROUPLENS_RELEASES)}"
        )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = _ensure_extracted(name, cache, download=download, timeout=timeout)
    parser = {
        "ml-100k": _parse_ml100k,
        "ml-1m": _parse_ml1m,
        "ml-20m": _parse_ml_csv,
        "ml-25m": _parse_ml_csv,
    }[name]
    interactions, items, users = parser(root)
    lic = GROUPLENS_LICENSE
    readme = next(
        (p for p in (root / "README", root / "README.txt", root / "README.html") if p.is_file()),
        None,
    )
    if readme is not None:
        lic += f"\nFull terms: {readme}"
    logger.info("loaded %s: %d interactions from %s", name, len(interactions), root)
    return Dataset(name=name, interactions=interactions, items=items, users=users, license=lic)


def _ensure_extracted(name: str, cache: Path, *, download: bool, timeout: float) -> Path:
    """Directory holding the extracted release; downloads/extracts as needed."""
    zip_path = cache / f"{name}.zip"
    extract_root = cache / name
    marker = extract_root / ".extracted"
    if marker.is_file():
        return _release_dir(extract_root, name)
    if not zip_path.is_file():
        url = f"{GROUPLENS_URL}{name}.zip"
        if not download:
            raise DataError(
                f"{name} is not in the cache {cache} and download=False: cannot download "
                f"{url}; place the zip at {zip_path} (or pass download=True)"
            )
        _download(url, zip_path, timeout=timeout)
    if not zipfile.is_zipfile(zip_path):
        raise DataError(
            f"{zip_path} is not a zip file (damaged or partial download?); delete it and "
            f"retry, or place the official {name}.zip there"
        )
    tmp = cache / f".{name}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.namelist():
                target = (tmp / member).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise DataError(f"{zip_path}: unsafe path {member!r} in the zip")
            zf.extractall(tmp)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{zip_path} is not a valid zip file: {exc}; delete it and retry") from exc
    shutil.rmtree(extract_root, ignore_errors=True)
    tmp.rename(extract_root)
    marker.touch()
    return _release_dir(extract_root, name)


def _release_dir(extract_root: Path, name: str) -> Path:
    """The folder inside the extraction that holds the data files (zips nest one level)."""
    nested = extract_root / name
    return nested if nested.is_dir() else extract_root


def _download(url: str, dest: Path, *, timeout: float) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    logger.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as fh:
            shutil.copyfileobj(resp, fh, length=1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {url} ({exc}); offline? place the zip at {dest} and retry"
        ) from exc
    part.replace(dest)


def _need(root: Path, fname: str) -> Path:
    path = root / fname
    if not path.is_file():
        found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise DataError(
            f"expected {fname} in {root}; found: {', '.join(found) or '(nothing)'} "
            "- is this the right release zip?"
        )
    return path


def _ids(series: pd.Series) -> pd.Series:
    return series.astype(np.int64)


def _interactions_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": _ids(df["user_id"]),
            "item_id": _ids(df["item_id"]),
            "rating": df["rating"].astype(np.float32),
            "timestamp": df["timestamp"].astype(np.int64),
        }
    )


_YEAR_RE = re.compile(r"\s*\((\d{4})\)\s*$")


def _split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``"Toy Story (1995)"`` -> (``"Toy Story"``, 1995); year is nullable Int64."""
    titles = titles.astype(str).str.strip()
    year = titles.str.extract(_YEAR_RE, expand=False)
    clean = titles.str.replace(_YEAR_RE, "", regex=True)
    return clean, pd.to_numeric(year, errors="coerce").astype("Int64")


ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


def _parse_ml100k(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    ratings = pd.read_csv(
        _need(root, "u.data"),
        sep="\t",
        header=None,
        names=["user_id", "item_id", "rating", "timestamp"],
    )
    item_cols = [
        "item_id",
        "title",
        "release_date",
        "video_release_date",
        "imdb_url",
        *ML100K_GENRES,
    ]
    raw_items = pd.read_csv(
        _need(root, "u.item"),
        sep="|",
        header=None,
        names=item_cols,
        encoding="latin-1",
        dtype={"title": str, "release_date": str, "video_release_date": str, "imdb_url": str},
    )
    flags = raw_items[list(ML100K_GENRES)].fillna(0).astype(bool).to_numpy()
    genres = ["|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) for row in flags]
    title, year = _split_title_year(raw_items["title"].fillna(""))
    items = pd.DataFrame(
        {
            "item_id": _ids(raw_items["item_id"]),
            "title": title,
            "genres": genres,
            "release_year": year,
            "release_date": raw_items["release_date"],
            "imdb_url": raw_items["imdb_url"],
        }
    )
    users: pd.DataFrame | None = None
    if (root / "u.user").is_file():
        raw_users = pd.read_csv(
            root / "u.user",
            sep="|",
            header=None,
            names=["user_id", "age", "gender", "occupation", "zip_code"],
            dtype={"gender": str, "occupation": str, "zip_code": str},
        )
        users = raw_users.assign(user_id=_ids(raw_users["user_id"]))
    return _interactions_frame(ratings), items, users


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """Read a ``::``-separated ml-1m file (latin-1) as text columns."""
    lines = path.read_text(encoding="latin-1").splitlines()
    rows = [line.split("::") for line in lines if line.strip()]
    bad = [i + 1 for i, r in enumerate(rows) if len(r) != len(names)]
    if bad:
        raise DataError(
            f"{path}: rows {bad[:5]} do not have {len(names)} '::'-separated fields "
            f"({', '.join(names)})"
        )
    return pd.DataFrame(rows, columns=names)


def _parse_ml1m(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    ratings_path = _need(root, "ratings.dat")
    # "::" separated: split on ":" and keep every other field (fast C parser)
    ratings = pd.read_csv(
        ratings_path,
        sep=":",
        header=None,
        usecols=[0, 2, 4, 6],
        names=["user_id", "_a", "item_id", "_b", "rating", "_c", "timestamp"],
    )
    movies = _read_dat(_need(root, "movies.dat"), ["item_id", "title", "genres"])
    title, year = _split_title_year(movies["title"])
    items = pd.DataFrame(
        {
            "item_id": _ids(movies["item_id"]),
            "title": title,
            "genres": movies["genres"].astype(str),
            "release_year": year,
        }
    )
    users: pd.DataFrame | None = None
    if (root / "users.dat").is_file():
        u = _read_dat(root / "users.dat", ["user_id", "gender", "age", "occupation", "zip_code"])
        users = pd.DataFrame(
            {
                "user_id": _ids(u["user_id"]),
                "gender": u["gender"].astype(str),
                "age": u["age"].astype(np.int64),
                "occupation": u["occupation"].astype(np.int64),
                "zip_code": u["zip_code"].astype(str),
            }
        )
    return _interactions_frame(ratings), items, users


def _parse_ml_csv(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, None]:
    ratings = pd.read_csv(
        _need(root, "ratings.csv"),
        engine="pyarrow",
        dtype={
            "userId": np.int64,
            "movieId": np.int64,
            "rating": np.float64,
            "timestamp": np.int64,
        },
    )
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    movies = pd.read_csv(_need(root, "movies.csv"), dtype={"title": str, "genres": str})
    title, year = _split_title_year(movies["title"])
    genres = movies["genres"].fillna("").replace("(no genres listed)", "")
    items = pd.DataFrame(
        {
            "item_id": _ids(movies["movieId"]),
            "title": title,
            "genres": genres.astype(str),
            "release_year": year,
        }
    )
    return _interactions_frame(ratings), items, None
