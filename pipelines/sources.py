"""Low-level readers shared by every adapter: delimited text, JSON lines, Parquet.

Every column is read as text so that bad values are caught row by row by the
cleaning step (and land in the rejects table) instead of failing the whole read.
Each frame keeps ``_source`` (file) and ``_row`` (line number, or row number for
Parquet) for rejects, and every reader reports ``input_rows``: the records it read
(header excluded, blank lines included), counted before any filtering, so ingest can
check that each one ends up accepted, an explicit negative or a reject with a reason.
Structural problems a user must fix (empty file, missing or
misnamed column, a header in the wrong delimiter) raise ``SourceError`` naming the
file, line and column; a malformed data line becomes a reject with its reason.
"""

from __future__ import annotations

import ast
import csv
import difflib
import gzip
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from features.errors import PlatformError

ITEM_COLUMNS = ("item_id", "title", "description", "category", "image_path")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating")
REQUIRED_ITEM_COLUMNS = ("item_id",)
REQUIRED_INTERACTION_COLUMNS = ("user_id", "item_id")
REJECT_SCHEMA = {
    "source": pl.String,
    "row": pl.Int64,
    "key": pl.String,
    "reason": pl.String,
    "record": pl.String,
}
BLANK_LINE = "blank line (no record)"
_DELIMITERS = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'"}


class SourceError(PlatformError, ValueError):
    """The raw input cannot be read as the declared format."""


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


@dataclass(frozen=True)
class RawData:
    """What an adapter hands to ingest: string-typed items and interactions.

    ``items`` has ``ITEM_COLUMNS`` (+ optional ``image_url``);
    ``interactions`` has ``INTERACTION_COLUMNS`` (+ ``label`` when the data carries
    its own train/valid/test split). ``*_rejects`` are lines the reader could not
    parse. ``*_input_rows`` is, per input file, how many records its reader read
    before any filtering (``derived from <file>`` for a catalog built from the
    interactions); ingest checks ``sum(input rows) == frame rows + read rejects`` and
    then that every input row is accepted, an explicit negative or rejected.
    """

    items: pl.DataFrame
    interactions: pl.DataFrame
    image_root: Path
    inputs: tuple[Path, ...] = ()
    item_rejects: pl.DataFrame = field(default_factory=empty_rejects)
    interaction_rejects: pl.DataFrame = field(default_factory=empty_rejects)
    facts: dict[str, Any] = field(default_factory=dict)  # format facts for the manifest
    item_input_rows: dict[str, int] | None = None  # file -> records read (None: not reported)
    interaction_input_rows: dict[str, int] | None = None


@dataclass(frozen=True)
class Table:
    """A read file: string columns + ``_source``/``_row``, the lines it rejected, and
    ``input_rows``: every record read after the header (= frame rows + rejects)."""

    frame: pl.DataFrame
    rejects: pl.DataFrame
    header: tuple[str, ...]
    input_rows: int

    def counts(self, path: Path) -> dict[str, int]:
        """``{file: input_rows}`` for ``RawData.*_input_rows``."""
        return {str(path): self.input_rows}


def derived_rows(items: pl.DataFrame, sources: Sequence[Path]) -> dict[str, int]:
    """Input rows of a catalog derived from the interaction file(s): one per distinct id."""
    return {"derived from " + ", ".join(str(p) for p in sources): items.height}


def input_rows(*parts: dict[str, int]) -> dict[str, int]:
    """Per-file input row counts of several reads, summed per file."""
    out: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return out


def _frame(
    path: Path, columns: Sequence[str], rows: list[list[str | None]], lines: list[int]
) -> pl.DataFrame:
    data: dict[str, Any] = {
        c: pl.Series(c, [r[i] for r in rows], dtype=pl.String) for i, c in enumerate(columns)
    }
    data["_row"] = pl.Series("_row", lines, dtype=pl.Int64)
    data["_source"] = pl.Series("_source", [str(path)] * len(rows), dtype=pl.String)
    return pl.DataFrame(data)


def reject_frame(path: Path, lines: list[int], reasons: list[str], records: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source": [str(path)] * len(lines),
            "row": lines,
            "key": [None] * len(lines),
            "reason": reasons,
            "record": records,
        },
        schema=REJECT_SCHEMA,
    )


def _read_text(path: Path) -> str:
    """File text (UTF-8, BOM dropped); undecodable bytes survive as surrogates so the
    line that holds them can be rejected instead of failing the whole file."""
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    if path.is_dir():
        raise SourceError(f"{path}: is a folder; expected a file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise SourceError(f"{path}: cannot decompress gzip: {e}") from e
    if not raw.strip():
        raise SourceError(f"{path}: empty file; expected a header line and data rows")
    return raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def _bad_utf8_column(fields: Iterable[str]) -> int | None:
    col = 1
    for f in fields:
        for ch in f:
            if 0xDC80 <= ord(ch) <= 0xDCFF:
                return col
            col += 1
        col += 1
    return None


def _other_delimiter(text: str, sep: str) -> str | None:
    for d in _DELIMITERS:
        if d != sep and d in text:
            return d
    return None


def check_header(path: Path, header: Sequence[str], sep: str) -> None:
    """Duplicate, blank, or wrong-delimiter header -> error naming line 1 and the column."""
    if len(header) == 1 and (other := _other_delimiter(header[0], sep)):
        raise SourceError(
            f"{path}: line 1: header {header[0]!r} is one column; expected fields separated by "
            f"{_DELIMITERS.get(sep, repr(sep))}, found {_DELIMITERS[other]} (mixed delimiters?)"
        )
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if not name.strip():
            raise SourceError(f"{path}: line 1, column {i}: blank column name in the header")
        if name in seen:
            raise SourceError(
                f"{path}: line 1, column {i}: duplicate column name {name!r} (also column {seen[name]})"
            )
        seen[name] = i


def read_delimited(
    path: Path,
    *,
    sep: str = ",",
    header: bool = True,
    names: Sequence[str] | None = None,
    quoting: bool = True,
) -> Table:
    """Delimited text -> all-string frame; lines with the wrong number of fields or
    undecodable bytes become rejects (with a hint when another delimiter shows up)."""
    text = _read_text(path)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=sep,
        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
        strict=False,
    )
    rows: list[list[str | None]] = []
    lines: list[int] = []
    bad_lines: list[int] = []
    bad_reasons: list[str] = []
    bad_records: list[str] = []
    columns: list[str] | None = list(names) if names is not None else None
    start = 1
    read = 0
    try:
        for fields in reader:
            line = start
            start = reader.line_num + 1
            blank = not fields or all(not f.strip() for f in fields)
            if columns is None:
                if not blank:  # blank lines before the header are not records
                    columns = [f.strip() for f in fields]
                    check_header(path, columns, sep)
                continue
            read += 1
            if blank:
                bad_lines.append(line)
                bad_reasons.append(BLANK_LINE)
                bad_records.append(json.dumps(sep.join(fields)))
                continue
            if (col := _bad_utf8_column(fields)) is not None:
                bad_lines.append(line)
                bad_reasons.append(f"not valid UTF-8 (column {col})")
                bad_records.append(json.dumps(sep.join(fields).encode("utf-8", "replace").decode()))
                continue
            if len(fields) != len(columns):
                joined = sep.join(fields)
                hint = ""
                if len(fields) < len(columns) and (other := _other_delimiter(joined, sep)):
                    hint = f"; the line contains {_DELIMITERS[other]} (mixed delimiters?)"
                bad_lines.append(line)
                bad_reasons.append(
                    f"malformed line: {len(fields)} field(s), expected {len(columns)} "
                    f"separated by {_DELIMITERS.get(sep, repr(sep))}{hint}"
                )
                bad_records.append(json.dumps(joined))
                continue
            rows.append(fields)
            lines.append(line)
    except csv.Error as e:
        raise SourceError(f"{path}: line {reader.line_num}: cannot parse: {e}") from e
    if columns is None:
        raise SourceError(f"{path}: no header line; expected one naming the columns")
    return Table(
        frame=_frame(path, columns, rows, lines),
        rejects=reject_frame(path, bad_lines, bad_reasons, bad_records),
        header=tuple(columns),
        input_rows=read,
    )


def read_jsonl(
    path: Path,
    convert: Callable[[dict[str, Any]], dict[str, str | None]],
    columns: Sequence[str],
    *,
    loose: bool = False,
) -> Table:
    """JSON lines -> all-string frame through ``convert`` (record -> flat strings).

    ``loose`` also accepts Python-literal lines (single quotes), which is how the 2014
    Amazon metadata files are written. A line that parses to no object, a blank line
    and a record ``convert`` cannot flatten are rejects.
    """
    text = _read_text(path)
    rows: list[list[str | None]] = []
    lines: list[int] = []
    bad_lines: list[int] = []
    bad_reasons: list[str] = []
    bad_records: list[str] = []
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()  # the newline that ends the last line starts no record
    for n, line in enumerate(physical, start=1):
        line = line.removesuffix("\r")
        rec: Any = None
        reason = None
        if not line.strip():
            reason = BLANK_LINE
        elif (col := _bad_utf8_column([line])) is not None:
            reason = f"not valid UTF-8 (column {col})"
        else:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                if loose:
                    try:
                        rec = ast.literal_eval(line)
                    except (ValueError, SyntaxError, MemoryError, RecursionError):
                        reason = f"malformed JSON line: {e.msg} at column {e.colno}"
                else:
                    reason = f"malformed JSON line: {e.msg} at column {e.colno}"
            if reason is None and not isinstance(rec, dict):
                reason = f"malformed JSON line: expected an object, found {type(rec).__name__}"
        flat: dict[str, str | None] = {}
        if reason is None:
            try:
                flat = convert(rec)
            except (TypeError, ValueError, AttributeError, KeyError) as e:
                reason = f"record has unexpected field types: {type(e).__name__}: {str(e)[:200]}"
        if reason is not None:
            bad_lines.append(n)
            bad_reasons.append(reason)
            bad_records.append(json.dumps(line.encode("utf-8", "replace").decode()[:2000]))
            continue
        rows.append([flat.get(c) for c in columns])
        lines.append(n)
    return Table(
        frame=_frame(path, columns, rows, lines),
        rejects=reject_frame(path, bad_lines, bad_reasons, bad_records),
        header=tuple(columns),
        input_rows=len(physical),
    )


def read_parquet(path: Path) -> Table:
    """Parquet -> all-string frame; ``_row`` is the 0-based row number."""
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    try:
        df = pl.from_arrow(pq.read_table(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear message
        raise SourceError(f"{path}: cannot read as Parquet: {e}") from e
    if not isinstance(df, pl.DataFrame):
        raise SourceError(f"{path}: cannot read as a Parquet table (got {type(df).__name__})")
    df = df.with_columns(pl.all().cast(pl.String))
    df = df.with_row_index("_row").with_columns(
        pl.col("_row").cast(pl.Int64), pl.lit(str(path)).alias("_source")
    )
    return Table(
        frame=df,
        rejects=empty_rejects(),
        header=tuple(c for c in df.columns if not c.startswith("_")),
        input_rows=df.height,
    )


def read_tabular(path: Path, *, sep: str | None = None) -> Table:
    """CSV/TSV/Parquet by extension (``sep`` overrides the delimiter of text files)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path)
    if suffix in (".csv", ".tsv", ".txt", ".inter", ".item", ".user"):
        return read_delimited(path, sep=sep or ("," if suffix == ".csv" else "\t"))
    raise SourceError(f"{path}: unsupported extension {suffix!r}; expected .csv, .tsv or .parquet")


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def require_columns(header: Sequence[str], required: Sequence[str], path: Path) -> None:
    """Missing column -> error naming the file, the header line and a likely misnaming."""
    found = [c for c in header if not c.startswith("_")]
    for col in required:
        if col in found:
            continue
        near = [c for c in found if _squash(c) == _squash(col)] or difflib.get_close_matches(col, found, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise SourceError(f"{path}: line 1: missing column {col!r}; found {found}{hint}")


def require_rows(table: Table, path: Path) -> None:
    """A header-only file (blank lines aside) cannot be ingested."""
    records = table.rejects.filter(pl.col("reason") != BLANK_LINE).height
    if table.frame.height == 0 and records == 0:
        raise SourceError(f"{path}: header only, no data rows (columns {list(table.header)})")


def with_columns(df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Add the absent ``columns`` as null strings."""
    return df.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in columns if c not in df.columns)
