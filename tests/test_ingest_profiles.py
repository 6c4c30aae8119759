"""Named data profiles: one switch (`dvc exp run -S 'data=${profiles.<name>}'`) moves the
whole pipeline, and every profile defines the paths dvc.yaml declares as deps."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.adapters import ADAPTERS
from pipelines.tables import effective_params, with_profile

ROOT = Path(__file__).resolve().parents[1]


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_every_profile_defines_what_dvc_yaml_templates() -> None:
    templated = set(re.findall(r"\$\{data\.(\w+)\}", (ROOT / "dvc.yaml").read_text()))
    assert templated >= {"items", "interactions", "images"}
    params = _params()
    assert params["profiles"], "params.yaml has no profiles"
    for name, prof in params["profiles"].items():
        assert prof["profile"] == name
        assert prof["source"] in ADAPTERS, name
        missing = [k for k in templated if not prof.get(k)]
        assert not missing, f"profile {name} lacks {missing}"
    assert params["data"] == params["profiles"][params["data"]["profile"]]


def test_dvc_set_param_switch_copies_a_profile_into_data(tmp_path: Path) -> None:
    from dvc.utils.hydra import apply_overrides

    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    apply_overrides(p, ["data=${profiles.ml100k}"])  # what `dvc exp run -S` does
    params = yaml.safe_load(p.read_text())
    assert params["data"] == params["profiles"]["ml100k"]
    assert params["ingest"] == _params()["ingest"]  # nothing else moves


def test_profile_ingest_overrides_merge_over_the_ingest_section() -> None:
    params = with_profile(_params(), "dbbook")
    data, ing = effective_params(params)
    assert "ingest" not in data
    assert ing["negative_ratings"] == [0] and ing["split"]["method"] == "labels"
    assert ing["split"]["valid_ratio"] == _params()["ingest"]["split"]["valid_ratio"]
    with pytest.raises(ValueError, match="no profile 'nope'"):
        with_profile(_params(), "nope")
