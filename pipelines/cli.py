"""``mmrec``: the command line of every stage (what ``dvc.yaml`` calls).

Each command loads and checks ``params.yaml`` (a typo fails every stage, naming the key),
builds the store layout from ``--store``/``--models``/``--reports`` and calls its stage's
``run``. A user-fixable error ends with a one-line reason and exit code 1.
"""

from __future__ import annotations

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

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]
StoreOpt = Annotated[Path, typer.Option("--store", help="feature store root folder")]
ModelsOpt = Annotated[Path, typer.Option("--models", help="checkpoint folder")]
ReportsOpt = Annotated[Path, typer.Option("--reports", help="reports folder")]


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


def _stage(
    module: str,
    params: Path,
    store: Path = Path("store"),
    models: Path = Path("models"),
    reports: Path = Path("reports"),
    **options: Any,
) -> None:
    """Load the config, build the layout, run ``pipelines.stages.<module>.run``."""
    import importlib

    from pipelines.config import load_config
    from pipelines.layout import Layout
    from pipelines.lock import store_lock

    def go() -> Any:
        config = load_config(params)
        stage = importlib.import_module(f"pipelines.stages.{module.replace('-', '_')}")
        layout = Layout(store=store, models=models, reports=reports)
        with store_lock(store, command=f"mmrec {module}"), layout.recording() as acc:
            out = stage.run(config, layout, **options)
        _record_lineage(layout, module, acc)
        return out

    _run(go)


def _record_lineage(layout: Any, stage: str, acc: Any) -> None:
    """A stage run by ``dvc repro`` records what it wrote, as a snapshot run does."""
    from pipelines.runs import Lineage

    Lineage(layout.store, layout.runs_root).record(
        f"dvc-{os.getpid()}", stage.replace("-", "_"), acc.read, acc.write
    )


def _store_command(stage: str, doc: str) -> None:
    """A command that only needs the params and the three roots."""

    def command(
        params: ParamsOpt = Path("params.yaml"),
        store: StoreOpt = Path("store"),
        models: ModelsOpt = Path("models"),
        reports: ReportsOpt = Path("reports"),
    ) -> None:
        _stage(stage, params, store, models, reports)

    command.__doc__ = doc
    app.command(stage)(command)


for _name, _doc in (
    ("ingest", "Raw dataset (any adapter) -> items, users, interactions, negatives, rejects tables."),
    ("graph", "Item-item kNN graph per feature, built in chunks."),
    ("semantic-ids", "Item semantic IDs (RQ-KMeans / RQ-VAE codes + a collision suffix) per table."),
    ("evaluate", "Full-ranking test metrics of every trained model -> reports/metrics.json."),
    ("export", "User/item embeddings and top-K recommendations per model, for downstream teams."),
    ("report", "The HTML report: models x metrics, curves, dataset, features, validation."),
):
    _store_command(_name, _doc)


@app.command()
def demo(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/demo"),
) -> None:
    """Generate the built-in demo catalog (items, images, interactions) from params ``demo``."""
    from pipelines.config import load_config
    from pipelines.stages import demo as stage

    _run(lambda: stage.run(load_config(params), out))


@app.command()
def download(params: ParamsOpt = Path("params.yaml")) -> None:
    """Fetch the catalog's missing images into data.images (needs a network; ingest.download knobs)."""
    from pipelines.config import load_config
    from pipelines.stages import download as stage

    _run(lambda: stage.run(load_config(params)))


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
    _stage("extract", params, store, beam_args=beam_arg)


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    reports: ReportsOpt = Path("reports"),
    table: Annotated[
        list[str] | None,
        typer.Option(help="only these tables, e.g. --table items --table features/text_minilm"),
    ] = None,
) -> None:
    """Great Expectations gate over the store: exits 1 naming table and expectation on failure."""
    _stage("validate", params, store, reports=reports, tables=table)


@app.command("validate-drift")
def validate_drift(
    previous: Annotated[Path, typer.Option(help="previous snapshot of a feature table")],
    current: Annotated[Path, typer.Option(help="current snapshot of the same feature table")],
    params: ParamsOpt = Path("params.yaml"),
    feature: Annotated[str | None, typer.Option(help="feature name for per-feature thresholds")] = None,
    out: Annotated[Path | None, typer.Option(help="also write a report folder here")] = None,
) -> None:
    """Drift between two snapshots of a feature table: prints JSON, exits 1 past a fail level."""
    from pipelines.config import load_config
    from pipelines.stages import drift as stage

    _run(lambda: stage.run(load_config(params), previous, current, feature=feature, out=out))


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    store: StoreOpt = Path("store"),
    models: ModelsOpt = Path("models"),
    reports: ReportsOpt = Path("reports"),
    resume: Annotated[
        bool, typer.Option("--resume", help="continue each run from its latest checkpoint (train.ray.resume)")
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (overrides train.common.device)")] = None,
) -> None:
    """Train every model in ``train.models`` (Ray Train, N workers; RAY_ADDRESS for a cluster)."""
    from pipelines.config import load_config
    from pipelines.layout import Layout
    from pipelines.lock import store_lock
    from pipelines.stages import train as stage

    def go() -> Any:
        config = load_config(params)
        tp = config.train
        if resume:
            tp = tp.model_copy(update={"ray": tp.ray.model_copy(update={"resume": True})})
        if device:
            tp = tp.model_copy(update={"common": tp.common.model_copy(update={"device": device})})
        config = config.model_copy(update={"train": tp})
        layout = Layout(store=store, models=models, reports=reports)
        with store_lock(store, command="mmrec train"), layout.recording() as acc:
            out = stage.run(config, layout)
        _record_lineage(layout, "train", acc)
        return out

    _run(go)


@app.command()
def snapshot(
    params: ParamsOpt = Path("params.yaml"),
    snapshot: Annotated[
        str | None,
        typer.Option(
            "--snapshot", help="snapshot id, an ISO date first (default: snapshot.id, else today UTC)"
        ),
    ] = None,
    store: StoreOpt = Path("store"),
    models: ModelsOpt = Path("models"),
    reports: ReportsOpt = Path("reports"),
    dvc_file: Annotated[Path, typer.Option("--dvc-file", help="the pipeline whose stages run")] = Path(
        "dvc.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="run every stage, even unchanged ones")] = False,
) -> None:
    """One scheduled run: lock the store, run the changed stages, commit history, log the run."""
    from pipelines.lock import store_lock

    def go() -> Any:
        # The lock first, before the heavy imports: a second run is refused at once.
        with store_lock(store, command=f"mmrec snapshot --snapshot {snapshot or '(today)'}"):
            from pipelines.config import load_config
            from pipelines.layout import Layout
            from pipelines.snapshot import run_snapshot

            layout = Layout(store=store, models=models, reports=reports)
            return run_snapshot(load_config(params), layout, snapshot, dvc_file=dvc_file, force=force)

    _run(go)


@app.command("check-params")
def check_params(params: ParamsOpt = Path("params.yaml")) -> None:
    """Load and check params.yaml only (unknown keys, types, ranges)."""
    from pipelines.config import load_config

    _run(lambda: load_config(params) and typer.echo(f"{params}: ok"))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
