"""docs/bad-inputs/README.md's summary table agrees with the per-area corpus tables.

Each area page lists the kinds of bad input its tests try, one table row per kind, with
the outcome. This test recounts them so the summary cannot drift from the pages: a row
whose outcome starts with ``rejected`` or a backticked ``<reason>:`` went to a rejects
table with that reason; ``error`` is a refusal naming the input before any work;
anything else was handled (embedded with a note, re-embedded, fetched after a redirect,
...). No page may record a crash.
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs"
AREAS = ("ingest", "images", "download", "cache", "params", "checkpoints")


def _rows(text: str) -> list[list[str]]:
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ")
    ]
    # Skip separator lines and the header row of every table on the page.
    return [r for r in rows if not set(r[0]) <= {"-", ":"} and r[0] not in ("kind", "what changed")]


def _outcome_class(outcome: str) -> str:
    if outcome.startswith("rejected") or re.match(r"`[\w-]+: ", outcome):
        return "rejected"
    if outcome.startswith("error"):
        return "error"
    return "handled"


def count(area: str) -> dict[str, int]:
    text = (DOCS / f"{area}.md").read_text()
    rows = _rows(text)
    header = next(line for line in text.splitlines() if line.startswith("| "))
    col = 2 if "input" in header.split("|")[2] or "where" in header.split("|")[2] else 1
    counts = {"tried": len(rows), "rejected": 0, "error": 0, "handled": 0}
    for r in rows:
        counts[_outcome_class(r[col])] += 1
    crashed = re.findall(r"crashed: (\d+)", text)
    counts["crashed"] = sum(map(int, crashed)) + sum(1 for r in rows if len(r) > 3 and r[3] not in ("0", ""))
    return counts


def test_every_area_page_has_a_corpus_and_no_crash() -> None:
    for area in AREAS:
        c = count(area)
        assert c["tried"] > 0, area
        assert c["crashed"] == 0, (area, c)


def test_summary_table_gives_the_counts_of_the_pages() -> None:
    summary = {r[0].strip("[]").split("]")[0]: r for r in _rows((DOCS / "README.md").read_text())}
    total = {"tried": 0, "rejected": 0, "error": 0, "handled": 0, "crashed": 0}
    for area in AREAS:
        c = count(area)
        row = summary[area]
        assert [int(x) for x in row[1:6]] == [c[k] for k in total], (area, row, c)
        for k in total:
            total[k] += c[k]
    assert [int(x.strip("*")) for x in summary["total"][1:6]] == list(total.values())
    assert total["tried"] >= 30 and total["crashed"] == 0


if __name__ == "__main__":  # prints the rows of the summary table
    for a in AREAS:
        print(a, count(a))
