"""The benchmarks' interleaving helper: sides alternate, the ratio is a median with its spread."""

from __future__ import annotations

import pytest

from benchmarks.common import interleave


def test_sides_alternate_and_the_ratio_is_the_median_of_rounds() -> None:
    calls: list[str] = []
    a_values = iter([1.0, 3.0, 2.0, 10.0])

    def a() -> dict[str, float]:
        calls.append("a")
        return {"s": next(a_values)}

    def b() -> dict[str, float]:
        calls.append("b")
        return {"s": 2.0}

    out = interleave(a, b, key="s", rounds=4, names=("pipe", "raw"), log=None)
    assert calls == ["a", "b"] * 4
    r = out["ratio_pipe_over_raw"]
    assert r["per_round"] == [0.5, 1.5, 1.0, 5.0] and r["median"] == 1.25
    assert (r["min"], r["max"], r["spread"]) == (0.5, 5.0, 4.5)
    assert out["median"] == {"pipe": 2.5, "raw": 2.0} and len(out["runs"]["raw"]) == 4
    with pytest.raises(ValueError, match="rounds"):
        interleave(a, b, key="s", rounds=0)
