"""The offline default: attributes measured from the pixels, no model at all.

It fills the same schema and the same text template as the MLLM backends, and says what it is:
records carry backend ``attributes`` and model ``medsynth.measure/<version>``. Only the derm and
cxr templates have measurements behind them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medsynth import __version__
from medsynth.describe.prompts import Template
from medsynth.errors import MedsynthError

MEASURABLE = ("derm", "cxr")


def to_schema(family: str, m: dict[str, Any]) -> dict[str, Any]:
    """Turn a :mod:`medsynth.measure` result into template attributes (lists for multi values),
    keeping the extra measurements beside them."""
    if family == "derm":
        out = dict(m)
        out["colors"] = [c for c in str(m["colors"]).split(";") if c]
        out["structures"] = [s for s in str(m["structures"]).split(";") if s and s != "none"]
        return out
    out = dict(m)
    out["heart_size"] = "enlarged" if m["ctr"] > 0.5 else "normal"
    if m["ctr"] <= 0:  # no lungs found: nothing can be said about the heart
        out["ctr"], out["heart_size"] = "not_visible", "not_visible"
    return out


def measure_array(family: str, array: np.ndarray, mm_per_px: float) -> dict[str, Any]:
    """Measure one channel-first image with the family's measurement function."""
    from medsynth.measure import measure_cxr, measure_derm

    if family == "derm":
        if array.shape[0] != 3:
            raise MedsynthError(f"the derm measurements need RGB images, got {array.shape[0]} channel(s)")
        return measure_derm(array, mm_per_px)
    return measure_cxr(array)


def measure_file(args: tuple[str, str, float | None]) -> dict[str, Any]:
    """Worker entry point (process pool): read an image file and measure it."""
    from medsynth.data.readers import read_image

    family, path, mm_per_px = args
    img = read_image(path)
    if mm_per_px is None:
        mm_per_px = float(img.spacing[-1]) if img.spacing else 20.0 / img.array.shape[-1]
    return measure_array(family, img.array, mm_per_px)


class AttributesBackend:
    """Measuring backend: the record's attributes come from :mod:`medsynth.measure`."""

    name = "attributes"
    model = f"medsynth.measure/{__version__}"

    def __init__(self, template: Template, mm_per_px: float | None = None) -> None:
        family = template.name
        if family not in MEASURABLE:
            raise MedsynthError(
                f"the attributes backend measures {' and '.join(MEASURABLE)} images only, "
                f"not {template.name!r}",
                hint="use --backend openai or --backend transformers for this modality")
        self.family = family
        self.template = template
        self.mm_per_px = mm_per_px

    def job(self, path: str) -> tuple[str, str, float | None]:
        return (self.family, path, self.mm_per_px)

    def finish(self, measured: dict[str, Any], label: str | None) -> tuple[dict[str, Any], str, list[str]]:
        """Validate the measured attributes against the schema and fill the text template."""
        attrs = to_schema(self.family, measured)
        answer = {**attrs, self.template.schema.summary_field: "measured from the pixels"}
        valid, _, problems = self.template.schema.validate(answer)
        attrs.update(valid)
        return attrs, self.template.render_text(attrs), problems

    def close(self) -> None:
        pass
