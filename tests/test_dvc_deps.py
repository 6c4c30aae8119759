"""dvc.yaml declares what each stage really opens: every stage runs on a tiny demo while the
store layout records the paths it hands out, and each read must be a declared dep and each
write a declared out (else DVC would not re-run the stage when that input changes)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipelines.layout import Access, Layout

ROOT = Path(__file__).resolve().parents[1]


def _paths(entries: list) -> set[str]:
    out = set()
    for e in entries or []:
        out.add(e if isinstance(e, str) else next(iter(e)))
    return out


def undeclared(stage: dict, access: Access, layout: Layout) -> list[str]:
    """Store/model/report paths the stage opened that its dvc.yaml entry does not declare."""

    def rel(p: Path) -> str:
        for root, name in ((layout.store, "store"), (layout.models, "models"), (layout.reports, "reports")):
            try:
                return str(Path(name) / p.relative_to(root))
            except ValueError:
                continue
        raise AssertionError(f"{p} is outside the layout's roots")

    def covered(p: str, declared: set[str]) -> bool:
        return any(p == d or p.startswith(d.rstrip("/") + "/") for d in declared)

    deps = _paths(stage.get("deps"))
    outs = _paths(stage.get("outs")) | _paths(stage.get("metrics")) | _paths(stage.get("plots"))
    missing = []
    written = {rel(p) for p in access.write}
    for p in sorted(written):
        if not covered(p, outs):
            missing.append(f"writes {p} (not in outs)")
    for p in sorted({rel(p) for p in access.read} - written):
        if not covered(p, deps):
            missing.append(f"reads {p} (not in deps)")
    return missing


@pytest.fixture(scope="module")
def recorded(tiny_store, tmp_path_factory) -> tuple[dict[str, Access], Layout]:
    """Run every stage after graph on a copy of the tiny store, recording each one's paths."""
    import shutil

    from pipelines.stages import evaluate, export, extract, graph, ingest, report, train, validate
    from pipelines.stages import semantic_ids as semantic_ids_stage

    root, config, _ = tiny_store
    work = tmp_path_factory.mktemp("deps")
    shutil.copytree(root / "store", work / "store")
    shutil.copytree(root / "reports", work / "reports")
    layout = Layout(store=work / "store", models=work / "models", reports=work / "reports")
    runs = {
        "ingest": lambda: ingest.run(config, layout),
        "extract": lambda: extract.run(config, layout),
        "graph": lambda: graph.run(config, layout),
        # a codebook the tiny demo's 120 items can fill (the default 3 x 256 is sized for 2,000)
        "semantic_ids": lambda: semantic_ids_stage.run(
            config.updated({"semantic_ids": {"tables": {"text_rq": {"codebook_size": 16}}}}), layout
        ),
        "validate": lambda: validate.run(config, layout),
        "train": lambda: train.run(config, layout),
        "evaluate": lambda: evaluate.run(config, layout),
        "export": lambda: export.run(config, layout),
        "report": lambda: report.run(config, layout),
    }
    out = {}
    for name, fn in runs.items():
        with layout.recording() as acc:
            fn()
        out[name] = acc
    return out, layout


def test_every_stage_declares_what_it_opens(recorded) -> None:
    accesses, layout = recorded
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    problems = {name: undeclared(stages[name], acc, layout) for name, acc in accesses.items()}
    assert all(acc.read or acc.write for acc in accesses.values())
    assert not any(problems.values()), problems


def test_removing_a_declared_dep_is_caught(recorded) -> None:
    accesses, layout = recorded
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    export = copy.deepcopy(stages["export"])
    export["deps"].remove("store/features")
    assert any("store/features/" in p for p in undeclared(export, accesses["export"], layout))
    train = copy.deepcopy(stages["train"])
    train["outs"] = []
    assert any(p.startswith("writes models/") for p in undeclared(train, accesses["train"], layout))
