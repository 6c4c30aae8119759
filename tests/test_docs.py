"""The README and the guides stay true: length, links, and every block marked for testing.

Markers (an HTML comment on the line right before a fence):

- ``<!-- test: run -->`` before a ```bash block: run with bash in the document's temporary
  working folder (a copy of ``params.yaml`` plus the files the document writes); exit 0.
- ``<!-- test: file NAME [text-only] -->`` before a ```yaml block: written to NAME first,
  its ``data`` paths replaced by a tiny dataset in that adapter's format made here; the
  file is then loaded with ``pipelines.config.load_config`` (unknown keys fail) and the
  ingest stage runs on it. ``text-only``: it must list no feature that reads images.
- ``<!-- test: python -->`` before a ```python block: executed (a document's blocks share
  one namespace, its ``test_*`` functions are then called); registries are restored after.
- ``<!-- test: params -->`` before a ```yaml block: a params fragment, deep-merged over
  ``params.yaml`` and validated after the document's python blocks ran.

Every ``file`` YAML gets the same check as ``mmrec check-params`` in this process; only a
few commands are marked ``run`` and they run concurrently (each ``mmrec`` start that loads
params imports torch), so the module stays cheap.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))
TESTED_DOCS = [README, *GUIDES]
ALL_DOCS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(r"^<!--\s*test:\s*(?P<kind>run|file|python|params)\b(?P<args>[^>]*?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    kind: str | None  # the marker's kind, or None when the block is not marked
    args: tuple[str, ...]
    body: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group("lang"):
            i += 1
            continue
        start, lang = i, m.group("lang")
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        prev = lines[start - 1].strip() if start else ""
        mk = MARKER.match(prev)
        kind, args = (mk.group("kind"), tuple(mk.group("args").split())) if mk else (None, ())
        out.append(Block(doc, start + 1, lang, kind, args, "\n".join(lines[start + 1 : j]) + "\n"))
        i = j + 1
    return out


def marked(kind: str, docs: list[Path] = TESTED_DOCS) -> list[Block]:
    return [b for d in docs for b in blocks(d) if b.kind == kind]


# ---------------------------------------------------------------------------- tiny datasets

USERS, ITEMS = 4, 4


def _generic(data: dict[str, Any], folder: Path) -> dict[str, str]:
    opts = data.get("options") or {}
    icols, cols = opts.get("item_columns") or {}, opts.get("columns") or {}
    items = pl.DataFrame(
        {
            icols.get("item_id", "item_id"): [f"i{i}" for i in range(ITEMS)],
            icols.get("title", "title"): [f"Item {i}" for i in range(ITEMS)],
            icols.get("description", "description"): [f"A thing number {i}" for i in range(ITEMS)],
            icols.get("category", "category"): ["toys", "toys", "books", "books"],
        }
    )
    rows = [(f"u{u}", f"i{i}", 1_700_000_000 + 10 * u + i, 5) for u in range(USERS) for i in range(ITEMS)]
    inter = pl.DataFrame(
        rows,
        schema=[cols.get(c, c) for c in ("user_id", "item_id", "timestamp", "rating")],
        orient="row",
    )
    paths = {
        "items": folder / Path(data["items"]).name,
        "interactions": folder / Path(data["interactions"]).name,
    }
    for frame, key in ((items, "items"), (inter, "interactions")):
        p = paths[key]
        frame.write_parquet(p) if p.suffix == ".parquet" else frame.write_csv(
            p, separator="\t" if p.suffix == ".tsv" else ","
        )
    (folder / "images").mkdir(exist_ok=True)
    return {
        "items": str(paths["items"]),
        "interactions": str(paths["interactions"]),
        "images": str(folder / "images"),
    }


def _mmrec(data: dict[str, Any], folder: Path) -> dict[str, str]:
    name = (data.get("options") or {}).get("name") or "tiny"
    labels = ["0", "0", "1", "2"]  # per user: two train rows, one valid, one test
    lines = ["userID\titemID\trating\ttimestamp\tx_label"]
    lines += [f"{u}\t{i}\t5\t{1_700_000_000 + i}\t{labels[i]}" for u in range(USERS) for i in range(ITEMS)]
    inter = folder / f"{name}.inter"
    inter.write_text("\n".join(lines) + "\n")
    items = str(inter)  # the guides' MMRec example has no metadata: data.items is the .inter
    if not str(data.get("items", "")).endswith(".inter"):
        meta = folder / Path(data["items"]).name
        meta.write_text("item_id\ttitle\n" + "".join(f"{i}\tItem {i}\n" for i in range(ITEMS)))
        items = str(meta)
    return {"items": items, "interactions": str(folder), "images": str(folder)}


def _jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)


def _amazon(data: dict[str, Any], folder: Path) -> dict[str, str]:
    meta = folder / Path(data["items"]).name
    reviews = folder / Path(data["interactions"]).name
    _jsonl(
        meta,
        [
            {
                "asin": f"B{i}",
                "title": f"Item {i}",
                "description": f"Soft thing {i}",
                "categories": [["Baby", "Toys"]],
            }
            for i in range(ITEMS + 2)  # more metadata than reviewed items, as in the real files
        ],
    )
    _jsonl(
        reviews,
        [
            {"reviewerID": f"A{u}", "asin": f"B{i}", "overall": 5.0, "unixReviewTime": 1_400_000_000 + i}
            for u in range(USERS)
            for i in range(ITEMS)
        ],
    )
    (folder / "images").mkdir(exist_ok=True)
    return {"items": str(meta), "interactions": str(reviews), "images": str(folder / "images")}


FIXTURES = {"generic": _generic, "mmrec": _mmrec, "amazon": _amazon}


def tiny_dataset(data: dict[str, Any], folder: Path) -> dict[str, str]:
    source = data.get("source", "generic")
    assert source in FIXTURES, f"no tiny dataset for source {source!r}: add one to tests/test_docs.py"
    folder.mkdir(parents=True, exist_ok=True)
    return FIXTURES[source](data, folder)


# ------------------------------------------------------------------------- working folders


def workdir_for(base: Path, doc: Path) -> Path:
    """The document's folder: params.yaml and the YAML files it writes (data made tiny)."""
    wd = base / doc.stem
    wd.mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", wd / "params.yaml")
    for b in blocks(doc):
        if b.kind != "file":
            continue
        raw = yaml.safe_load(b.body)
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
            raw["data"].update(tiny_dataset(raw["data"], wd / f"data-{Path(b.args[0]).stem}"))
        (wd / b.args[0]).write_text(yaml.safe_dump(raw, sort_keys=False))
    return wd


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    base = tmp_path_factory.mktemp("docs")
    return {doc: workdir_for(base, doc) for doc in TESTED_DOCS}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", RAY_USAGE_STATS_ENABLED="0")
    return env


@pytest.fixture(scope="module")
def run_results(workdirs: dict[Path, Path]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every runnable bash block, run concurrently (each in its document's folder)."""
    todo = marked("run")

    def go(b: Block) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", b.body],
            cwd=workdirs[b.doc],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip((b.where for b in todo), pool.map(go, todo), strict=True))


# ------------------------------------------------------------------------------------ tests


def test_readme_is_a_product_page() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 300, f"README.md has {n} lines; move details to docs/"


def test_readme_architecture_lists_the_real_folders() -> None:
    """The picture names every package and sub-package that exists, and none that does not."""
    text = README.read_text(encoding="utf-8")
    picture = text.split("## Architecture", 1)[1].split("```", 2)[1]
    for pkg in ("pipelines", "features", "validation", "training", "evaluation"):
        assert f"{pkg}/" in picture, f"README architecture misses {pkg}/"
        for sub in sorted((ROOT / pkg).iterdir()):
            if (sub / "__init__.py").is_file():
                assert f"{sub.name}/" in picture, f"README architecture misses {pkg}/{sub.name}/"
    for folder in re.findall(r"\b(pipelines|features|validation|training|evaluation)/(\w+)/", picture):
        assert (ROOT / folder[0] / folder[1]).is_dir(), (
            f"README names {'/'.join(folder)}/, which does not exist"
        )


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = []
    for link in links:
        if re.match(r"^[a-z]+://|^mailto:|^#", link):
            continue
        target = (doc.parent / link.split("#", 1)[0]).resolve()
        if not target.exists():
            missing.append(link)
    assert not missing, f"{doc.relative_to(ROOT)}: broken relative links {missing}"


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_no_machine_specific_dataset_path(doc: Path) -> None:
    assert "../shared" not in doc.read_text(encoding="utf-8"), "say 'the dataset root' instead"


def test_guides_are_tested() -> None:
    """Each guide's YAML and code is marked, so none can rot unnoticed."""
    by_name = {d.stem: {b.kind for b in blocks(d)} for d in GUIDES}
    assert {"own-data", "add-model", "add-encoder", "cluster"} <= set(by_name)
    assert {"file", "run"} <= by_name["own-data"] and "file" in by_name["cluster"]
    assert {"python", "params"} <= by_name["add-model"] and "python" in by_name["add-encoder"]
    for d in TESTED_DOCS:
        for b in blocks(d):
            if b.lang == "yaml" and b.kind is None and d.stem != "add-encoder":
                pytest.fail(f"{b.where}: unmarked yaml block (mark it `file NAME` or `params`)")


@pytest.mark.parametrize("block", marked("run"), ids=lambda b: b.where)
def test_runnable_block_exits_zero(block: Block, run_results: dict[str, Any]) -> None:
    r = run_results[block.where]
    assert r.returncode == 0, (
        f"{block.where}: exit {r.returncode}\n{block.body}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    )


@pytest.mark.parametrize("block", marked("file"), ids=lambda b: b.where)
def test_guide_params_file_loads_and_ingests(block: Block, workdirs: dict[Path, Path]) -> None:
    from pipelines.config import load_config
    from pipelines.layout import Layout

    path = workdirs[block.doc] / block.args[0]
    config = load_config(path)  # unknown keys, types and ranges fail here
    if "text-only" in block.args:
        assert "image" not in config.extract.modalities(), (
            f"{block.where}: a dataset without images reads images"
        )
    if "data" in (yaml.safe_load(block.body) or {}):
        from pipelines.stages import ingest

        out = workdirs[block.doc] / f"out-{path.stem}"
        ingest.run(config, Layout(store=out / "store", models=out / "models", reports=out / "reports"))
        for table in ("items", "users", "interactions"):
            assert (out / "store" / table / "_manifest.json").is_file(), f"{block.where}: no {table} table"


@pytest.fixture()
def restored_registries():
    """Snippets register models and encoders; the registries are put back afterwards."""
    from features.encoders import base as enc_base
    from training.models import base as model_base

    saved = dict(model_base._REGISTRY), dict(enc_base._REGISTRY)
    yield
    model_base._REGISTRY.clear()
    model_base._REGISTRY.update(saved[0])
    enc_base._REGISTRY.clear()
    enc_base._REGISTRY.update(saved[1])


def _exec_snippets(doc: Path) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": f"docs_{doc.stem.replace('-', '_')}"}
    for b in blocks(doc):
        if b.kind == "python":
            exec(compile(b.body, b.where, "exec"), ns)  # noqa: S102 - the guide's own code
    for name, fn in list(ns.items()):
        if name.startswith("test_") and callable(fn):
            fn()
    return ns


def _tiny_train_data():
    from training.data import Interactions, TrainData

    rng = np.random.default_rng(0)
    pairs = np.array(sorted({(int(u), int(i)) for u, i in rng.integers(0, [20, 15], (150, 2))}))
    split = rng.random(len(pairs))

    def part(mask: np.ndarray) -> Interactions:
        return Interactions(users=pairs[mask, 0], items=pairs[mask, 1])

    data = TrainData(20, 15, part(split < 0.8), part((split >= 0.8) & (split < 0.9)), part(split >= 0.9))
    data.features = {
        "text_minilm": rng.normal(size=(15, 6)).astype(np.float32),
        "image_clip": rng.normal(size=(15, 4)).astype(np.float32),
    }
    return data


def test_add_model_guide_builds_trains_and_validates(restored_registries: None) -> None:
    import torch

    from pipelines.config import Config, deep_merge
    from training.loop import LocalContext, TrainConfig, train
    from training.models import build_model, model_names

    doc = ROOT / "docs" / "guides" / "add-model.md"
    before = set(model_names())
    _exec_snippets(doc)
    new = sorted(set(model_names()) - before)
    assert len(new) == 1, f"the guide should register one model, registered {new}"
    name = new[0]
    data = _tiny_train_data()
    model = build_model(name, data, {"embedding_dim": 8})
    users, items = model.embeddings()
    assert users.shape == (20, 8) and items.shape == (15, 8)
    assert model.score(torch.tensor([0, 1])).shape == (2, 15)
    ctx = LocalContext()
    train(TrainConfig(model=name, hparams={"embedding_dim": 8}, epochs=1, batch_size=32, seed=0), data, ctx)
    assert all(np.isfinite(r["loss"]) for r in ctx.reports)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for b in blocks(doc):
        if b.kind == "params":
            config = Config.from_dict(deep_merge(raw, yaml.safe_load(b.body)), b.where)
            assert name in config.train.models


def test_add_encoder_guide_builds_and_encodes(restored_registries: None) -> None:
    from features.encoders import build_encoder, registered

    doc = ROOT / "docs" / "guides" / "add-encoder.md"
    before = set(registered())
    _exec_snippets(doc)
    new = sorted(set(registered()) - before)
    assert len(new) == 1, f"the guide should register one encoder, registered {new}"
    enc = build_encoder({"encoder": new[0], "dim": 16})
    x = enc.encode(["soft blue blanket", "wooden toy train"])
    assert x.shape == (2, 16) and x.dtype == np.float32
    if enc.normalized:
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert enc.describe()["dim"] == 16 and enc.id != build_encoder({"encoder": new[0], "dim": 8}).id


# ---------------------------------------------------------- docs/reading-features.md

READING = ROOT / "docs" / "reading-features.md"
NOT_RUN_HEADING = "(not executed here)"  # an unmarked python block sits under such a heading


def _tiny_history_store(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """store/features/text_minilm published and committed three times (i1 changes, i2 goes)."""
    import datetime as dt

    import pyarrow as pa

    from features import history, schemas
    from features.store import embeddings_to_arrow, read_table, write_table

    gens = {
        "2026-12-01": {"i0": 0, "i1": 0, "i2": 0},
        "2026-12-02": {"i0": 0, "i1": 1, "i2": 0},
        "2026-12-03": {"i0": 0, "i1": 1},
    }
    latest, vectors = root / "store/features/text_minilm", {}
    for snap, items in gens.items():
        when = dt.datetime.fromisoformat(snap).replace(hour=2, tzinfo=dt.UTC)
        ids = sorted(items)
        vectors[snap] = {
            i: np.random.default_rng([int(i[1:]), items[i]]).normal(size=4).astype(np.float32) for i in ids
        }
        ts = pa.array([when] * len(ids), pa.timestamp("us", tz="UTC"))
        table = pa.table(
            {
                "item_idx": np.arange(len(ids), dtype=np.int64),
                "item_id": ids,
                "embedding": embeddings_to_arrow(np.stack([vectors[snap][i] for i in ids])),
                "content_hash": [f"{i}/{items[i]}" for i in ids],
                "event_timestamp": ts,
                "created": ts,
            }
        )
        write_table(latest, table, schemas.feature_schema(4), dim=4)
        hist = root / "store/history/features/text_minilm"
        history.commit(hist, read_table(latest), snapshot=snap, snapshot_time=when)
    return vectors


def test_reading_features_python_blocks_are_run_or_labelled() -> None:
    heading, by_line = "", {b.line: b for b in blocks(READING)}
    for line_no, line in enumerate(READING.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            heading = line
        b = by_line.get(line_no)
        if b is not None and b.lang == "python" and b.kind != "python":
            assert NOT_RUN_HEADING in heading, f"{b.where}: mark it <!-- test: python --> or say why not"
    assert len(marked("python", [READING])) >= 4


def test_reading_features_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's snippets, run from a folder holding a tiny store with a three-snapshot history."""
    vectors = _tiny_history_store(tmp_path)
    monkeypatch.chdir(tmp_path)
    ns = _exec_snippets(READING)
    latest = vectors["2026-12-03"]
    assert ns["matrix"].shape == (2, 4) and ns["matrix"].dtype == np.float32
    np.testing.assert_array_equal(ns["matrix"], ns["matrix_pd"])
    assert [r[0] for r in ns["rows"]] == ["i0", "i1"] and ns["table"].num_rows == 2
    first, noon, newest = ns["first"], ns["noon"], ns["newest"]
    assert first.column("item_id").to_pylist() == ["i0", "i1", "i2"]
    assert first.schema.field("embedding").type.list_size == 4
    np.testing.assert_array_equal(noon.column("embedding")[1].values.to_numpy(), vectors["2026-12-02"]["i1"])
    assert newest.column_names == ["item_id", "embedding"]
    assert "i2" not in newest.column("item_id").to_pylist()
    assert ns["arrow_v1"].num_rows == 3 and ns["polars_v1"].schema["embedding"] == pl.Array(pl.Float32, 4)
    assert ns["duck_v1"] == [("i0", 4), ("i1", 4), ("i2", 4)]
    got = ns["training"]["embedding"].tolist()
    np.testing.assert_array_equal(np.asarray(got[0], np.float32), vectors["2026-12-01"]["i1"])
    np.testing.assert_array_equal(np.asarray(got[1], np.float32), vectors["2026-12-02"]["i1"])
    np.testing.assert_array_equal(np.asarray(got[2], np.float32), vectors["2026-12-02"]["i2"])
    assert got[3] is None, "i2 was removed in the third snapshot"
    online = dict(zip(ns["online"]["item_id"], ns["online"]["embedding"], strict=True))
    np.testing.assert_array_equal(np.asarray(online["i1"], np.float32), latest["i1"])
    assert online["i2"] is None
