"""The one resume-identity check shared by the stages."""

from __future__ import annotations

import pytest

from medsynth.errors import MedsynthError
from medsynth.resume import changed_settings, require_same_settings


def test_changes_are_compared_in_json_form() -> None:
    old = {"lr": 2e-4, "levels": [32, 64], "seed": 0, "max_steps": 10}
    new = {"lr": 1e-2, "levels": (32, 64), "seed": 0, "max_steps": 20, "extra": None}
    assert changed_settings(old, new, ignore=("max_steps",)) == {"lr": (2e-4, 1e-2)}
    assert changed_settings(old, {**old, "levels": (32, 64)}) == {}
    assert changed_settings({"a": 1}, {"b": 1}) == {"a": (1, None), "b": (None, 1)}


def test_require_same_settings_names_every_change() -> None:
    require_same_settings({"n": 1, "batch": 2}, {"n": 1, "batch": 8}, where="x", ignore=["batch"])
    with pytest.raises(MedsynthError, match=r"run: n \(1 -> 2\), seed \(0 -> 1\)") as e:
        require_same_settings({"n": 1, "seed": 0}, {"n": 2, "seed": 1}, where="run", hint="h")
    assert e.value.hint == "h"
