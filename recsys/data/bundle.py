"""Build the compact MovieLens 100K copy shipped inside the package.

The source is MovieLens 100K in the RecBole "atomic file" layout: tab-separated files
whose header names each column with a ``:type`` suffix (``user_id:token``,
``rating:float``, ...):

* ``ml-100k.inter``: ``user_id``, ``item_id``, ``rating``, ``timestamp``;
* ``ml-100k.item``: ``item_id``, ``movie_title``, ``release_year``, ``class`` (genres as
  space-separated tokens);
* ``ml-100k.user``: ``user_id``, ``age``, ``gender``, ``occupation``, ``zip_code``;
* ``ml-100k.link``: ``item_id`` -> Freebase ``entity_id``;
* ``ml-100k.kg``: knowledge-graph triples ``head_id``, ``relation_id``, ``tail_id``.

:func:`build_bundled_ml100k` turns them into zstd parquet files in the contract form plus a
``LICENSE.txt`` with the GroupLens notice. It is run once by a maintainer::

    python -m recsys.data.bundle /path/to/ml-100k recsys/data/bundled/ml-100k
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.errors import DataError

__all__ = ["build_bundled_ml100k", "item_relations_from_kg", "read_atomic"]

TRANSFORMATION_NOTE = (
    "The files in this directory (interactions.parquet, items.parquet, users.parquet,\n"
    "item_relations.parquet) are transformations of MovieLens 100K: the RecBole atomic\n"
    "files (ml-100k.inter/.item/.user/.link/.kg) converted to parquet by\n"
    "recsys.data.bundle.build_bundled_ml100k (columns renamed, genres joined with '|',\n"
    "knowledge-graph triples joined to items). No interaction, item or user rows were\n"
    "added or removed.\n"
)


def read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file: tab-separated text, header ``name:type``, types stripped.

    Every column is read as text; callers convert.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a RecBole atomic file)")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    df.columns = [str(c).split(":", 1)[0] for c in df.columns]
    return df


def item_relations_from_kg(link: pd.DataFrame, kg: pd.DataFrame) -> pd.DataFrame:
    """Join knowledge-graph triples to items.

    For each item's entity ``e``: a triple ``(e, r, t)`` gives ``(item, r, t)`` and a
    triple ``(h, r, e)`` gives ``(item, r, h)``. Exact duplicate rows are removed; rows
    are sorted by item, relation, entity.

    Parameters
    ----------
    link
        ``item_id``, ``entity_id``.
    kg
        ``head_id``, ``relation_id``, ``tail_id``.

    Returns
    -------
    pandas.DataFrame
        ``item_id``, ``relation``, ``entity``.
    """
    ent = link[["item_id", "entity_id"]]
    as_head = kg.merge(ent, left_on="head_id", right_on="entity_id")
    as_tail = kg.merge(ent, left_on="tail_id", right_on="entity_id")
    rel = pd.concat(
        [
            pd.DataFrame(
                {
                    "item_id": as_head["item_id"],
                    "relation": as_head["relation_id"],
                    "entity": as_head["tail_id"],
                }
            ),
            pd.DataFrame(
                {
                    "item_id": as_tail["item_id"],
                    "relation": as_tail["relation_id"],
                    "entity": as_tail["head_id"],
                }
            ),
        ],
        ignore_index=True,
    )
    rel = rel.drop_duplicates().sort_values(["item_id", "relation", "entity"], kind="mergesort")
    return rel.reset_index(drop=True)


def _license_text(readme: Path) -> str:
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"^Source:.*?(?=\n\s*\n|\Z)", text, flags=re.S | re.M)
    if match is None:
        raise DataError(f"{readme}: no 'Source:' notice paragraph found")
    return (
        "MovieLens 100K - data notice (verbatim from the source README)\n\n"
        f"{match.group(0).strip()}\n\n{TRANSFORMATION_NOTE}"
    )


def _write(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, path, compression="zstd", compression_level=19)


def build_bundled_ml100k(src_dir: Path | str, out_dir: Path | str) -> dict[str, int]:
    """Convert the RecBole MovieLens 100K files in ``src_dir`` into ``out_dir``.

    Writes ``interactions.parquet`` (``user_id`` int64, ``item_id`` int64, ``rating``
    float32, ``timestamp`` int64, in source file order), ``items.parquet`` (``item_id``,
    ``title``, ``genres`` ``|``-separated, ``release_year``), ``users.parquet``
    (``user_id``, ``age``, ``gender``, ``occupation``, ``zip_code``),
    ``item_relations.parquet`` (``item_id``, ``relation``, ``entity``) and ``LICENSE.txt``
    (the GroupLens notice from ``src_dir/README.md`` verbatim, plus a note that these
    files are transformations).

    Returns
    -------
    dict
        Row count per written table.
    """
    src, out = Path(src_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    inter = read_atomic(src / "ml-100k.inter")
    interactions = pd.DataFrame(
        {
            "user_id": inter["user_id"].astype(np.int64),
            "item_id": inter["item_id"].astype(np.int64),
            "rating": inter["rating"].astype(np.float32),
            "timestamp": inter["timestamp"].astype(np.float64).astype(np.int64),
        }
    )

    it = read_atomic(src / "ml-100k.item")
    year = pd.to_numeric(it["release_year"], errors="coerce")
    items = pd.DataFrame(
        {
            "item_id": it["item_id"].astype(np.int64),
            "title": it["movie_title"].astype(str),
            "genres": it["class"].str.split().str.join("|").fillna("").astype(str),
            "release_year": year.astype("Int64"),
        }
    ).sort_values("item_id", kind="mergesort")

    us = read_atomic(src / "ml-100k.user")
    users = pd.DataFrame(
        {
            "user_id": us["user_id"].astype(np.int64),
            "age": us["age"].astype(np.int64),
            "gender": us["gender"].astype(str),
            "occupation": us["occupation"].astype(str),
            "zip_code": us["zip_code"].astype(str),
        }
    ).sort_values("user_id", kind="mergesort")

    link = read_atomic(src / "ml-100k.link")
    link = link.assign(item_id=link["item_id"].astype(np.int64))
    kg = read_atomic(src / "ml-100k.kg")
    relations = item_relations_from_kg(link, kg)
    relations["relation"] = relations["relation"].astype(str)
    relations["entity"] = relations["entity"].astype(str)

    tables = {
        "interactions": interactions,
        "items": items.reset_index(drop=True),
        "users": users.reset_index(drop=True),
        "item_relations": relations,
    }
    for name, frame in tables.items():
        _write(frame, out / f"{name}.parquet")
    (out / "LICENSE.txt").write_text(_license_text(src / "README.md"), encoding="utf-8")
    return {name: len(frame) for name, frame in tables.items()}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m recsys.data.bundle SRC_DIR OUT_DIR``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("src_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    args = ap.parse_args(argv)
    counts = build_bundled_ml100k(args.src_dir, args.out_dir)
    print(", ".join(f"{k}: {v:,} rows" for k, v in counts.items()))


if __name__ == "__main__":
    main()
