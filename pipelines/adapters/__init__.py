"""Input adapters: one module per raw format, each ``read(data) -> RawData``.

``data`` is the active ``params.yaml`` ``data`` section (a copy of one profile):
``source`` picks the adapter, ``items`` / ``interactions`` / ``images`` are paths and
``options`` holds format knobs. Every adapter returns string-typed frames with the
same columns, so cleaning, filters, splits and ids are shared by all formats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from pipelines.adapters import amazon, generic, mmrec, recbole, split_json
from pipelines.adapters.common import options
from pipelines.sources import RawData, SourceError

ADAPTERS: dict[str, Callable[[dict[str, Any]], RawData]] = {
    "demo": generic.read,
    "generic": generic.read,
    "mmrec": mmrec.read,
    "recbole": recbole.read,
    "split_json": split_json.read,
    "amazon": amazon.read,
}


_DEFAULTS: dict[str, dict[str, Any]] = {
    "demo": generic.DEFAULTS,
    "generic": generic.DEFAULTS,
    "mmrec": mmrec.DEFAULTS,
    "recbole": recbole.DEFAULTS,
    "split_json": split_json.DEFAULTS,
    "amazon": amazon.DEFAULTS,
}


def adapter_defaults(source: str) -> dict[str, Any]:
    """The ``data.options`` an adapter takes, with their defaults (checked when params load)."""
    return _DEFAULTS.get(source, {})


def read_source(data: dict[str, Any]) -> RawData:
    """Read the dataset that ``data`` (one profile) describes with its adapter.

    ``data`` is checked against the typed ``data`` section (``pipelines.config.DataParams``)
    and completed with its defaults, so adapters read every key without a fallback.
    """
    from pipelines.config import DataParams

    raw = {"source": "generic", **data}
    source = raw["source"]
    if source not in ADAPTERS:
        raise SourceError(
            f"params.yaml data.source: unknown source {source!r}; expected one of {sorted(ADAPTERS)}"
        )
    options(raw, adapter_defaults(source))  # an unknown option names the source
    try:
        typed = DataParams.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SourceError(f"params.yaml data.{key}: {err['msg']}") from None
    return ADAPTERS[source](typed.model_dump())
