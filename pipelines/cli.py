"""Command-line entry points of every pipeline stage (what ``dvc.yaml`` calls).

Each command reads ``params.yaml`` and the store, and exits non-zero with a one-line
reason (no bare stack trace) when a user-fixable error stops it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
log = logging.getLogger("mmrec")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]
StoreOpt = Annotated[Path, typer.Option("--store", help="feature store root folder")]


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in (
        "great_expectations",
        "ray",
        "apache_beam",
        "sentence_transformers",
        "urllib3",
        "httpx",
        "matplotlib",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(fn: Callable[[], Any]) -> Any:
    """Run a stage; user-fixable errors end with a clear message and exit code 1."""
    from features.errors import PlatformError

    _setup_logging()
    try:
        return fn()
    except (PlatformError, FileNotFoundError, ValueError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from None


def _params(path: Path) -> dict[str, Any]:
    from pipelines.params import load_params

    return load_params(path)


@app.command()
def demo(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/demo"),
) -> None:
    """Generate the built-in demo catalog (items, images, interactions) from params ``demo``."""
    from pipelines.demo_catalog import DemoSpec, generate_demo

    def go() -> None:
        p = _params(params)
        spec = DemoSpec(**{**p["demo"], "seed": int(p["demo"].get("seed", p.get("seed", 0)))})
        stats = generate_demo(out, spec)
        log.info("demo catalog: %s", {k: stats[k] for k in ("n_items", "n_users", "n_interactions")})

    _run(go)


@app.command()
def ingest(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    stats: Annotated[Path, typer.Option(help="split statistics JSON")] = Path("reports/ingest.json"),
    profile: Annotated[
        str | None, typer.Option(help="read params.yaml profiles.<name> instead of data (ad-hoc runs)")
    ] = None,
) -> None:
    """Raw dataset (any adapter) -> items, users, interactions, negatives, rejects tables."""
    from pipelines import ingest as stage

    _run(lambda: stage.run(stage.with_profile(_params(params), profile), store, stats))


@app.command()
def download(
    params: ParamsOpt = Path("params.yaml"),
    profile: Annotated[str | None, typer.Option(help="params.yaml profiles.<name> instead of data")] = None,
) -> None:
    """Fetch the catalog's missing images into data.images (needs a network; ingest.download knobs)."""
    from pipelines import ingest as stage
    from pipelines.download import fetch_missing_images

    def go() -> None:
        p = stage.with_profile(_params(params), profile)
        data, ing = stage.effective_params(p)
        fetch_missing_images(stage.read_source(data), data, ing.get("download") or {})

    _run(go)


@app.command()
def extract(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    beam_arg: Annotated[
        list[str] | None,
        typer.Option(help="extra Beam pipeline option, e.g. --beam-arg=--runner=FlinkRunner"),
    ] = None,
) -> None:
    """Embed item text and images with the Beam pipeline; one feature table per encoder."""
    from pipelines import extract as stage

    _run(lambda: stage.run(_params(params), store, beam_arg))


@app.command()
def graph(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    out: Annotated[Path, typer.Option(help="graph tables folder")] = Path("store/graphs/item_knn"),
) -> None:
    """Item-item kNN graph per feature, built in chunks."""
    from training import graph as stage

    _run(lambda: stage.run(_params(params), store, out))


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    graphs: Annotated[
        Path | None, typer.Option(help="graph tables folder (default STORE/graphs/item_knn)")
    ] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("reports/validation"),
    table: Annotated[
        list[str] | None,
        typer.Option(help="only these tables, e.g. --table items --table features/text_minilm"),
    ] = None,
) -> None:
    """Great Expectations gate over the store: exits 1 naming table and expectation on failure."""
    from validation import gate

    _run(lambda: gate.run(_params(params), store, out, graphs, table))


@app.command("validate-drift")
def validate_drift(
    previous: Annotated[Path, typer.Option(help="previous snapshot of a feature table")],
    current: Annotated[Path, typer.Option(help="current snapshot of the same feature table")],
    params: ParamsOpt = Path("params.yaml"),
    feature: Annotated[str | None, typer.Option(help="feature name for per-feature thresholds")] = None,
    out: Annotated[Path | None, typer.Option(help="also write a report folder here")] = None,
) -> None:
    """Drift between two snapshots of a feature table: prints JSON, exits 1 past a fail level."""
    from validation import drift_cli

    _run(lambda: drift_cli.run(_params(params), previous, current, feature=feature, out=out))


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    graphs: Annotated[Path, typer.Option()] = Path("store/graphs/item_knn"),
    models: Annotated[Path, typer.Option(help="checkpoint folder")] = Path("models"),
    curves: Annotated[Path, typer.Option(help="per-epoch curves")] = Path("reports/curves"),
    resume: Annotated[
        bool, typer.Option("--resume", help="continue each run from its latest checkpoint (train.ray.resume)")
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (overrides train.common.device)")] = None,
) -> None:
    """Train every model in ``train.models`` (Ray Train, N workers; RAY_ADDRESS for a cluster)."""
    from training import train_stage

    def go() -> None:
        p = _params(params)
        if resume:
            p["train"].setdefault("ray", {})["resume"] = True
        if device:
            p["train"].setdefault("common", {})["device"] = device
        summary = train_stage.run(p, store, graphs, models, curves)
        (models / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    _run(go)


@app.command()
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    graphs: Annotated[Path, typer.Option()] = Path("store/graphs/item_knn"),
    models: Annotated[Path, typer.Option()] = Path("models"),
    metrics: Annotated[Path, typer.Option()] = Path("reports/metrics.json"),
    per_user: Annotated[Path, typer.Option()] = Path("reports/per_user"),
    significance: Annotated[Path, typer.Option(help="paired tests between models")] = Path(
        "reports/significance.json"
    ),
) -> None:
    """Full-ranking test metrics of every trained model -> reports/metrics.json."""
    from training import evaluate_stage

    _run(lambda: evaluate_stage.run(_params(params), store, graphs, models, metrics, per_user, significance))


@app.command()
def export(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    graphs: Annotated[Path, typer.Option()] = Path("store/graphs/item_knn"),
    models: Annotated[Path, typer.Option()] = Path("models"),
    out: Annotated[Path, typer.Option(help="root of the exported tables")] = Path("store"),
) -> None:
    """User/item embeddings and top-K recommendations per model, for downstream teams."""
    from training import export_stage

    _run(lambda: export_stage.run(_params(params), store, graphs, models, out))


@app.command()
def report(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    out: Annotated[Path, typer.Option()] = Path("reports/report.html"),
) -> None:
    """The HTML report: models x metrics, curves, dataset, features, validation."""
    from training import report as stage

    _run(
        lambda: stage.run(
            _params(params),
            store,
            out,
            metrics_path=Path("reports/metrics.json"),
            validation_dir=Path("reports/validation"),
            curves_dir=Path("reports/curves"),
            ingest_stats=Path("reports/ingest.json"),
            train_summary=Path("models/train_summary.json"),
            significance_path=Path("reports/significance.json"),
        )
    )


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
