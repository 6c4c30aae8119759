"""Typed params: every stage refuses a misspelt or unknown key before any work, naming the
dotted key with a did-you-mean; wrong types and out-of-range values name key and value."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import Config, ParamsError, load_config

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGES = [
    "demo",
    "ingest",
    "extract",
    "semantic-ids",
    "graph",
    "validate",
    "train",
    "evaluate",
    "export",
    "report",
    "download",
]


def _error(mutate) -> str:
    raw = copy.deepcopy(RAW)
    mutate(raw)
    with pytest.raises(ParamsError) as e:
        Config.from_dict(raw)
    return str(e.value)


def test_params_yaml_loads_and_matches_the_defaults_where_it_is_silent() -> None:
    c = load_config(ROOT / "params.yaml")
    assert c.train.common.epochs == RAW["train"]["common"]["epochs"]
    assert c.train.section("freedom")["dropout"] == RAW["train"]["freedom"]["dropout"]
    assert set(c.feature_names()) == set(RAW["extract"]["features"])
    assert c.validate_params.for_feature("image_clip").max_mean_pair_cosine == 0.97
    assert c.validate_params.for_feature("text_minilm").max_mean_pair_cosine == 0.9


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda r: r["train"]["common"].update(epoch=5),
            "train.common.epoch: unknown key; did you mean 'epochs'?",
        ),
        (lambda r: r.update(trian={}), "trian: unknown section; did you mean 'train'?"),
        (
            lambda r: r["train"]["freedom"].update(dropuot=0.1),
            "train.freedom.dropuot: unknown hyper-parameter",
        ),
        (lambda r: r["train"].update(freedon={}), "train.freedon: unknown key"),
        (lambda r: r["train"].update(models=["bpr", "freedm"]), "did you mean 'freedom'?"),
        (
            lambda r: r["extract"]["features"]["text_minilm"].update(normalise=True),
            "did you mean 'normalize'?",
        ),
        (
            lambda r: r["data"]["options"].update(sepp=","),
            "data.options.sepp: unknown option of source 'generic'",
        ),
        (
            lambda r: r["validate"]["feature_overrides"]["image_clip"].update(max_mean_pair_cosin=1),
            "validate.feature_overrides.image_clip.max_mean_pair_cosin: unknown key",
        ),
        (lambda r: r["validate"]["drift"]["norm_shift"].update(fial=0.1), "did you mean 'fail'?"),
    ],
)
def test_unknown_keys_name_the_dotted_key_and_suggest(mutate, expected) -> None:
    assert expected in _error(mutate)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: r["train"]["common"].update(epochs="many"), "train.common.epochs"),
        (
            lambda r: r["extract"].update(max_image_bytes=0),
            "extract.max_image_bytes: Input should be greater than 0",
        ),
        (lambda r: r["evaluate"].update(ks=[10, -1]), "evaluate.ks.1"),
        (lambda r: r["ingest"]["split"].update(method="rnadom"), "ingest.split.method"),
        (lambda r: r["train"]["freedom"].update(dropout="high"), "train.freedom.dropout: expected float"),
        (lambda r: r["train"]["common"].update(valid_metric="recal@20"), "train.common.valid_metric"),
        (lambda r: r["validate"].update(min_text_share=1.5), "validate.min_text_share"),
        (lambda r: r["extract"].update(min_batch_size=128), "min_batch_size 128 > max_batch_size 64"),
    ],
)
def test_wrong_types_and_ranges_name_key_and_value(mutate, expected) -> None:
    assert expected in _error(mutate)


def test_grid_axes_check_every_value() -> None:
    assert "train.freedom.reg_weight: expected float" in _error(
        lambda r: r["train"]["freedom"].update(reg_weight=[0.0, "x"])
    )
    ok = copy.deepcopy(RAW)
    ok["train"]["freedom"]["reg_weight"] = [0.0, 1e-4]
    assert Config.from_dict(ok).train.section("freedom")["reg_weight"] == [0.0, 1e-4]


@pytest.mark.parametrize("bad", ["train.common.epoch", "unknown_section"])
def test_every_stage_exits_1_before_any_work(tmp_path: Path, bad: str) -> None:
    raw = copy.deepcopy(RAW)
    if bad == "train.common.epoch":
        raw["train"]["common"]["epoch"] = 5
        want = "train.common.epoch: unknown key; did you mean 'epochs'?"
    else:
        raw["trainn"] = {}
        want = "trainn: unknown section; did you mean 'train'?"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    store = tmp_path / "store"
    for stage in STAGES:
        res = CliRunner().invoke(
            app,
            [stage, "--params", str(params)]
            + (["--store", str(store)] if stage not in ("demo", "download") else []),
        )
        assert res.exit_code == 1, (stage, res.output)
        assert want in res.output, (stage, res.output)
    assert not store.exists()  # nothing ran


def test_params_reference_doc_is_generated_from_the_models() -> None:
    from pipelines.config import params_reference

    doc = params_reference()
    assert (ROOT / "docs/params.md").read_text() == doc, (
        "regenerate: python -m pipelines.config > docs/params.md"
    )
    for key in ("train.common.epochs", "extract.max_image_bytes", "validate.drift.norm_shift.fail"):
        assert f"`{key}`" in doc
