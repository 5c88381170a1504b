"""Templates, the answer schema and its validation, JSON extraction, the text filler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.describe.prompts import BUILTIN, load_template, template_for_modality
from medsynth.describe.schema import extract_json, label_parroted
from medsynth.errors import MedsynthError


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_templates_load_and_prompt(name: str) -> None:
    t = load_template(name)
    assert t.full_version == f"{name}@{t.version}+{t.digest[:8]}" and len(t.digest) == 64
    conv = t.conversation(np.zeros((1, 8, 8), np.uint16), "some_label", fov_mm=20)
    assert "Step 1" in conv.user and "not_visible" in conv.user and "uncertain" in conv.user
    assert '"some_label"' in conv.user and "{schema}" not in conv.user
    for a in t.schema.attributes:
        assert f'"{a.name}"' in conv.user
    # The sentence can be filled from any valid answer, unsure values included.
    attrs = {a.name: ("uncertain" if i % 2 else (a.values[0] if a.kind == "enum" else
                      [a.values[0]] if a.kind == "multi" else a.min or 0.0))
             for i, a in enumerate(t.schema.attributes)}
    text = t.render_text(attrs)
    assert text and "{" not in text and "None" not in text


def test_validation_rules() -> None:
    schema = load_template("derm").schema
    ok = {"diameter_mm": "6.5", "asymmetry": "1", "border": "Irregular",
          "colors": ["blue grey", "light-brown", "blue_grey"], "structures": "none",
          "summary": "An oval brown lesion with a grey zone."}
    attrs, summary, problems = schema.validate(ok, "nevus")
    assert problems == []
    assert attrs == {"diameter_mm": 6.5, "asymmetry": 1, "border": "irregular",
                     "colors": ["light_brown", "blue_grey"], "structures": []}
    unsure = {**ok, "diameter_mm": "not visible", "colors": ["uncertain"]}
    attrs, _, problems = schema.validate(unsure, "nevus")
    assert problems == [] and attrs["diameter_mm"] == "not_visible" and attrs["colors"] == "uncertain"
    bad = {**ok, "diameter_mm": 400, "border": "wavy", "colors": ["green"]}
    bad.pop("asymmetry")
    _, _, problems = schema.validate(bad, "nevus")
    assert len(problems) == 4
    assert any("outside [0, 60]" in p for p in problems) and any("'asymmetry' is missing" in p for p in problems)
    _, _, problems = schema.validate({**ok, "summary": "Classic seborrheic keratosis."},
                                     "seborrheic_keratosis")
    assert problems and "repeats the class label" in problems[0]


def test_extract_json_variants() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Thinking {not json} ... final:\n```json\n{"a": {"b": 2}}\n```') == {"a": {"b": 2}}
    assert extract_json('Step 1 {"x": 1} then the answer {"a": 3}') == {"a": 3}
    assert extract_json("no braces at all") is None
    assert extract_json("[1, 2]") is None
    assert label_parroted("Looks like a Seborrheic Keratosis.", "seborrheic_keratosis")
    assert not label_parroted("A brown lesion.", "nevus")


def test_user_template_file(tmp_path: Path) -> None:
    good = tmp_path / "t.yaml"
    good.write_text(
        "name: custom\nversion: '2'\nsystem: be careful\nsteps: ['Step 1, look.']\n"
        "attributes:\n  shape: {kind: enum, values: [round, oval]}\n"
        "answer: 'JSON: {schema}'\ntext: {template: 'A {shape} thing.'}\n")
    t = load_template(good)
    assert t.full_version.startswith("custom@2+")
    assert t.render_text({"shape": "oval"}) == "A oval thing."
    good.write_text(good.read_text().replace("be careful", "be very careful"))
    assert load_template(good).full_version != t.full_version  # any edit shows in the version
    for text, msg in [("name: x\n", "missing keys"), ("[1, 2]", "YAML mapping"),
                      ("name: x\nversion: 1\nsystem: s\nsteps: [a]\nanswer: no placeholder\n"
                       "attributes: {a: {kind: enum, values: [b]}}\n", "{schema}"),
                      ("name: x\nversion: 1\nsystem: s\nsteps: [a]\nanswer: '{schema}'\n"
                       "attributes: {a: {kind: colour}}\n", "kind must be one of")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(MedsynthError, match="bad.yaml|kind must") as e:
            load_template(bad)
        assert msg in str(e.value)
    with pytest.raises(MedsynthError, match="no such template"):
        load_template(tmp_path / "missing.yaml")


def test_modality_auto() -> None:
    assert template_for_modality("auto", "XC") == "derm"
    assert template_for_modality("auto", "DX") == "cxr"
    assert template_for_modality("mri", "XC") == "mri"
    with pytest.raises(MedsynthError, match="--modality"):
        template_for_modality("auto", "OT")


def test_display_copy_for_models() -> None:
    """Only the copy a model sees is windowed to 8 bits; grayscale and RGB both become RGB PNGs."""
    import base64
    import io

    from PIL import Image

    from medsynth.mllm.request import data_url, display_uint8

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(1, 64, 64) * 16).astype(np.uint16)
    d = display_uint8(ramp)
    assert d.dtype == np.uint8 and d.shape == (64, 64) and d.min() == 0 and d.max() == 255
    assert np.all(np.diff(d.ravel().astype(int)) >= 0)  # monotone: the window keeps the order
    vol = np.zeros((1, 5, 16, 16), np.float32)
    vol[0, 2] = 1.0
    assert display_uint8(vol).max() == 255  # the middle slice of a volume
    url = data_url(np.zeros((3, 8, 8), np.uint8))
    im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert im.mode == "RGB" and im.size == (8, 8)
