"""Within-source dedupe: newest dateLastModified wins, ties do not depend on page order."""

from __future__ import annotations

import itertools

import pandas as pd
from merge_helpers import staging, ts

from gradesync.entities import RESULTS
from gradesync.merge import dedupe_within_source


def test_newest_version_of_a_record_wins_and_duplicates_are_counted() -> None:
    df = staging(
        RESULTS,
        [
            {"sourced_id": "r1", "date_last_modified": ts("2026-09-01"), "score": 1.0},
            {"sourced_id": "r1", "date_last_modified": ts("2026-09-03"), "score": 3.0},
            {"sourced_id": "r2", "score": 9.0},
            {"sourced_id": "r1", "date_last_modified": ts("2026-09-02"), "score": 2.0},
        ],
    )
    out, removed = dedupe_within_source(df)
    assert removed == 2
    assert dict(zip(out["sourced_id"], out["score"], strict=True)) == {"r1": 3.0, "r2": 9.0}
    assert list(out.index) == [1, 2]  # survivors keep their index and input order


def test_tie_on_date_last_modified_keeps_the_same_record_in_every_page_order() -> None:
    rows = [
        {"sourced_id": "r1", "score": 1.0, "comment": "first"},
        {"sourced_id": "r1", "score": 2.0, "comment": "second"},
        {"sourced_id": "r1", "score": 3.0},
    ]
    survivors = set()
    for perm in itertools.permutations(rows):
        out, removed = dedupe_within_source(staging(RESULTS, list(perm)))
        assert removed == 2
        survivors.add(out["score"].iloc[0])
    assert len(survivors) == 1


def test_no_duplicates_returns_the_input_untouched() -> None:
    df = staging(RESULTS, [{"sourced_id": "r1"}, {"sourced_id": "r2"}])
    out, removed = dedupe_within_source(df)
    assert removed == 0
    assert out is df


def test_rows_without_sourced_id_are_kept_for_the_reject_path() -> None:
    df = pd.DataFrame(
        {
            "sourced_id": ["r1", None, None, "r1"],
            "date_last_modified": [
                "2026-09-01T00:00:00Z",
                "2026-09-01T00:00:00Z",
                "2026-09-02T00:00:00Z",
                "2026-09-05T00:00:00Z",
            ],
        }
    )
    out, removed = dedupe_within_source(df)
    assert removed == 1
    assert out["sourced_id"].isna().sum() == 2
    assert out.loc[out["sourced_id"] == "r1", "date_last_modified"].tolist() == ["2026-09-05T00:00:00Z"]


def test_a_missing_date_last_modified_loses_to_any_dated_copy() -> None:
    df = pd.DataFrame(
        {
            "sourced_id": ["r1", "r1"],
            "date_last_modified": [None, "2020-01-01T00:00:00Z"],
            "v": [1, 2],
        }
    )
    out, removed = dedupe_within_source(df)
    assert removed == 1
    assert out["v"].tolist() == [2]


def test_empty_frame() -> None:
    df = staging(RESULTS, [])
    out, removed = dedupe_within_source(df)
    assert removed == 0 and len(out) == 0
