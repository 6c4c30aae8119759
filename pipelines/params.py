"""Loading ``params.yaml``: every knob of the pipeline lives there, grouped by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from features.errors import PlatformError

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(PlatformError, ValueError):
    """A parameter is missing or has a value the stage cannot use."""


def load_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found (run from the project root)")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return params


def section(params: dict[str, Any], dotted: str) -> Any:
    """``section(p, "train.freedom")`` with an error naming the missing key."""
    node: Any = params
    seen = []
    for key in dotted.split("."):
        seen.append(key)
        if not isinstance(node, dict) or key not in node:
            raise ParamsError(f"params.yaml: missing key '{'.'.join(seen)}'")
        node = node[key]
    return node
