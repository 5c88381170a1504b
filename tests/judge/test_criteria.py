"""Criteria files: the shipped ones load, every malformed file gives one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.errors import MedsynthError
from medsynth.judging.criteria import (
    BUILTIN,
    MeasureRule,
    builtin_path,
    criteria_schema,
    load_criteria,
    parse_criteria,
    rule_verdict,
    weighted_score,
)

GOOD = """
name: t
version: 2
measurer: derm
classes:
  a:
    criteria:
      - {id: big, text: It is big., measure: {attribute: diameter_mm, min: 6}}
      - {id: dark, text: It is dark., weight: 2, measure: {attribute: colors, any_of: [black]}}
      - {id: looks, text: It looks right.}
  b:
    - {id: big, text: It is big.}
"""


def test_shipped_criteria_load_and_cover_the_demo_classes() -> None:
    from medsynth.data.demo import cxr, derm

    for name, mod in zip(BUILTIN, (derm, cxr), strict=True):
        crit = load_criteria(name)
        assert list(crit.classes) == list(mod.CLASSES)
        assert crit.measurer == name and crit.sha256 == __import__("hashlib").sha256(
            builtin_path(name).read_bytes()).hexdigest()
        assert crit.full_version.startswith(f"{name}-demo@1+")
        for cc in crit.classes.values():
            assert len(cc.criteria) >= 3 and all(c.text for c in cc.criteria)
            assert sum(c.measure is not None for c in cc.criteria) >= 2
    tpl = load_criteria(builtin_path("template"))
    assert tpl.measurer == "none" and "my_class_a" in tpl.classes


def test_parse_a_good_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    crit = load_criteria(p)
    assert crit.version == "2" and crit.classes["b"].ids == ["big"]
    a = crit.for_class("a")
    assert a.get("dark").weight == 2.0 and a.get("dark").measure.any_of == ("black",)
    assert a.get("looks").measure is None
    assert crit.all_ids() == ["big", "dark", "looks"]
    # any byte changes the version
    p.write_text(GOOD + "\n# edited\n")
    assert load_criteria(p).sha256 != crit.sha256


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("text: It looks right.", "text: ''"), "criterion 'looks': has no text"),
    (lambda s: s.replace("{id: looks, text: It looks right.}", "{id: looks}"), "has no text"),
    (lambda s: s.replace("id: dark", "id: big"), "duplicate criterion id 'big'"),
    (lambda s: s.replace("diameter_mm", "girth"), "has no attribute 'girth'"),
    (lambda s: s.replace("weight: 2", "weight: -1"), "weight must be a positive number"),
    (lambda s: s.replace("any_of: [black]", "min: 3"), "colors is a list"),
    (lambda s: s.replace("measurer: derm", "measurer: xray"), "measurer 'xray'"),
    (lambda s: s.replace("name: t", "nme: t"), "unknown key(s) ['nme']"),
    (lambda s: s.replace("  b:\n    - {id: big, text: It is big.}\n", "  b: []\n"),
     "class 'b': needs a non-empty list"),
    (lambda s: s + "  : [\n", "not valid YAML"),
    (lambda s: "- just a list\n", "expected a mapping"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path: Path, edit, message) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(edit(GOOD))
    with pytest.raises(MedsynthError) as e:
        load_criteria(p)
    first = str(e.value).splitlines()[0]
    assert first.startswith(str(p)) and message in first


def test_class_checks_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    crit = load_criteria(p)
    with pytest.raises(MedsynthError, match=r"c\.yaml: class\(es\) 'b' not in the model"):
        crit.check_classes(["a", "c"], "the model")
    with pytest.raises(MedsynthError, match=r"no criteria for class\(es\) 'c'"):
        crit.check_classes(["a", "b", "c"], "the set")
    crit.check_classes(["a", "b", "c"], "the model", require_all=False)
    with pytest.raises(MedsynthError, match="no criteria for class 'zzz'"):
        crit.for_class("zzz")
    with pytest.raises(MedsynthError, match="criteria file not found"):
        load_criteria(tmp_path / "nope.yaml")


def test_rules_and_scores() -> None:
    r = MeasureRule("diameter_mm", min=6.0)
    assert rule_verdict(r, 9.0) == ("met", 1.0)
    v, conf = rule_verdict(r, 5.9)
    assert v == "not_met" and 0.5 < conf < 0.6
    assert rule_verdict(r, None) == ("unsure", 0.0)
    assert rule_verdict(MeasureRule("ctr", min=0.08, max=0.4), 0.5)[0] == "not_met"
    assert rule_verdict(MeasureRule("border", values=("irregular",)), "regular")[0] == "not_met"
    assert rule_verdict(MeasureRule("asymmetry", max=0), 0)[0] == "met"
    assert rule_verdict(MeasureRule("colors", none_of=("black",)), ["light_brown"])[0] == "met"
    assert rule_verdict(MeasureRule("colors", any_of=("black",)), "dark_brown;black")[0] == "met"
    crit = parse_criteria(GOOD.encode(), "c.yaml")
    a = crit.for_class("a")
    assert weighted_score(a, {"big": "met", "dark": "met", "looks": "not_met"}, True) == 0.75
    assert weighted_score(a, {"big": "met", "dark": "unsure", "looks": "met"}, True) == 0.5
    assert weighted_score(a, {"big": "met", "dark": "met", "looks": "met"}, False) == 0.0
    # what the judge cannot check leaves the denominator
    assert weighted_score(a, {"big": "met", "dark": "not_met"}, True, ["big", "dark"]) == pytest.approx(1 / 3, abs=1e-6)


def test_schema_requires_every_id() -> None:
    from medsynth.mllm.validate import schema_problems

    crit = parse_criteria(GOOD.encode(), "c.yaml")
    schema = criteria_schema(crit.for_class("a"))
    good = {"image_valid": True, "criteria": {
        k: {"verdict": "met", "confidence": 1, "rationale": "x"} for k in ("big", "dark", "looks")}}
    assert schema_problems(schema, good) == []
    bad = {"image_valid": True, "criteria": {"big": good["criteria"]["big"]}}
    assert any("'dark' is a required property" in p for p in schema_problems(schema, bad))
    bad = {**good, "criteria": {**good["criteria"], "extra": good["criteria"]["big"]}}
    assert schema_problems(schema, bad)
    bad = {**good, "criteria": {**good["criteria"], "big": {"verdict": "yes", "confidence": 1,
                                                            "rationale": ""}}}
    assert schema_problems(schema, bad)
