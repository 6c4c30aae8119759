"""Real-dataset profiles live with the benchmarks (``benchmarks/profiles.yaml``), not in the
product's params.yaml: each one is a valid ``data`` section that defines every path dvc.yaml
templates, and its ``ingest`` overrides deep-merge over the ingest section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.adapters import ADAPTERS
from pipelines.config import Config, ParamsError, deep_merge

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "benchmarks" / "profiles.yaml"


def _params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _profiles(datasets: Path) -> dict[str, dict[str, Any]]:
    """benchmarks/profiles.yaml with the ``${datasets}`` root replaced by ``datasets``."""
    text = PROFILES.read_text()
    assert "${datasets}" in text, "profiles.yaml should root its paths at ${datasets}"
    return yaml.safe_load(text.replace("${datasets}", str(datasets)))


def _config_with(data: dict[str, Any]) -> Config:
    raw = _params()
    raw["data"] = data
    return Config.from_dict(raw)


def test_params_yaml_has_no_profiles_and_no_shared_paths() -> None:
    text = (ROOT / "params.yaml").read_text()
    assert "profiles" not in _params()
    assert "../shared" not in text
    Config.from_dict(_params())  # and the product's own params are valid as they are


def test_every_profile_is_a_valid_data_section_defining_what_dvc_yaml_templates(tmp_path: Path) -> None:
    templated = set(re.findall(r"\$\{data\.(\w+)\}", (ROOT / "dvc.yaml").read_text()))
    assert templated >= {"items", "interactions", "images"}
    profiles = _profiles(tmp_path)
    assert profiles, "benchmarks/profiles.yaml has no profiles"
    for name, prof in profiles.items():
        assert prof["profile"] == name
        assert prof["source"] in ADAPTERS, name
        missing = [k for k in templated | {"items", "interactions", "images"} if not prof.get(k)]
        assert not missing, f"profile {name} lacks {missing}"
        for k in ("items", "interactions", "images"):
            assert str(prof[k]).startswith(str(tmp_path)), f"profile {name}: {k} not under ${{datasets}}"
        config = _config_with(prof)  # raises ParamsError on an unknown key or option
        assert config.data.source == prof["source"] and config.data.profile == name
        config.effective_ingest()  # its ingest overrides are valid ingest keys


def test_profile_ingest_overrides_deep_merge_over_the_ingest_section(tmp_path: Path) -> None:
    params = _params()
    config = _config_with(_profiles(tmp_path)["dbbook"])
    ing = config.effective_ingest()
    assert ing.negative_ratings == [0] and ing.split.method == "labels"
    # keys the override does not name keep the ingest section's values (deep, not shallow)
    assert ing.split.valid_ratio == params["ingest"]["split"]["valid_ratio"]
    assert ing.split.test_ratio == params["ingest"]["split"]["test_ratio"]
    assert ing.kcore.users == params["ingest"]["kcore"]["users"]
    assert ing.download.model_dump() == params["ingest"]["download"]
    assert ing.model_dump() == deep_merge(config.ingest.model_dump(), config.data.ingest)
    # the ingest section itself is untouched
    assert config.ingest.split.method == params["ingest"]["split"]["method"]
    assert config.ingest.negative_ratings == params["ingest"]["negative_ratings"]


def test_a_bad_profile_ingest_override_names_the_key(tmp_path: Path) -> None:
    prof = _profiles(tmp_path)["dbbook"]
    prof["ingest"] = {"split": {"metod": "labels"}}
    with pytest.raises(ParamsError, match=r"data.ingest.*split.metod.*did you mean 'method'"):
        _config_with(prof).effective_ingest()
