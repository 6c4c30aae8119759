"""The suite of a semantic-ID table (``store/semantic_ids/<name>``).

Full IDs unique; ``levels`` codes per row, each in ``[0, codebook_size)``; the suffix
non-negative and the ``semantic_id`` string spelling codes + suffix; at every level at
least ``min_codebook_use`` x K distinct codes; and the collision rate before the suffix
(N - unique code tuples) / N at most ``max_collision_rate`` (as a share of unique tuples).
Levels and K come from the table's manifest; the figures are computed from the rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from features.store import read_manifest, read_table
from pipelines.config import SemanticIdThresholds
from training.semantic_ids import id_strings, level_metrics
from validation.suites import Suite, between, expect, has_rows, in_set, unique


def semantic_ids_frame(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The table as pandas with one ``code_<level>`` column per level, the tuple key and checks."""
    manifest = read_manifest(path)
    levels = int(manifest["levels"])
    t = read_table(path)
    codes = t.column("codes").to_pylist()
    df = pd.DataFrame(
        {
            "item_idx": t.column("item_idx").to_numpy(),
            "item_id": t.column("item_id").to_pylist(),
            "suffix": t.column("suffix").to_numpy(),
            "semantic_id": t.column("semantic_id").to_pylist(),
        }
    )
    df["n_codes"] = [len(c) for c in codes]
    for lv in range(levels):
        df[f"code_{lv}"] = pd.Series([c[lv] if len(c) > lv else None for c in codes], dtype="Int64")
    df["code_tuple"] = [",".join(map(str, c)) for c in codes]
    df["id_matches_codes"] = [
        s == id_strings(np.asarray([c]), np.asarray([x]))[0]
        for s, c, x in zip(df["semantic_id"], codes, df["suffix"], strict=True)
    ]
    return df, manifest


def semantic_ids_suite(path: Path, th: SemanticIdThresholds) -> Suite:
    """Suite of the semantic-ID table at ``path`` under the ``validate.semantic_ids`` thresholds."""
    df, manifest = semantic_ids_frame(path)
    levels, k = int(manifest["levels"]), int(manifest["codebook_size"])
    n = len(df)
    n_unique = int(df["code_tuple"].nunique())
    collision = round((n - n_unique) / n, 6) if n else 0.0
    min_used = math.ceil(th.min_codebook_use * k - 1e-9)
    full = [[int(v) for v in row] for row in df[[f"code_{lv}" for lv in range(levels)]].fillna(-1).to_numpy()]
    per_level = level_metrics(np.asarray(full, dtype=np.int64).clip(0, k - 1), k) if n else []
    exps = [
        has_rows(df),
        unique("semantic_id"),
        unique("item_idx"),
        unique("item_id"),
        in_set("codes_per_row_is_levels", "n_codes", [levels]),
        between("suffix_non_negative", "suffix", 0),
        in_set("semantic_id_spells_codes", "id_matches_codes", [True]),
    ]
    for lv in range(levels):
        exps.append(between(f"code_{lv}_in_range", f"code_{lv}", 0, k - 1))
        exps.append(
            expect(
                f"codebook_use_level_{lv}",
                gxe.ExpectColumnUniqueValueCountToBeBetween,
                column=f"code_{lv}",
                min_value=min_used,
                sample=[
                    f"level {lv}: {df[f'code_{lv}'].nunique()} of {k} codes used "
                    f"(min {th.min_codebook_use} = {min_used})"
                ],
            )
        )
    exps.append(
        expect(
            "collision_rate_before_suffix",
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween,
            column="code_tuple",
            min_value=round(1.0 - th.max_collision_rate, 9),
            sample=[
                f"collision rate {collision} > {th.max_collision_rate} "
                f"(largest group {int(df['code_tuple'].value_counts().max()) if n else 0})"
            ],
        )
    )
    notes = {
        "method": manifest.get("method"),
        "levels": levels,
        "codebook_size": k,
        "collision_rate_before_suffix": collision,
        "use": [m["use"] for m in per_level],
        "source": (manifest.get("source") or {}).get("table"),
    }
    return Suite(df, exps, ["item_id"], notes)
