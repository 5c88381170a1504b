"""The offline default: a template's attributes measured from the pixels, no model at all.

:class:`TemplateMeasurer` is the measurer of the engine's offline backend
(:mod:`medsynth.mllm.measure`): it measures a request's image with :mod:`medsynth.pixel_attributes` and
answers in the template's schema, so the answer is validated like a model's. Records say what
made them: backend ``attributes``, model ``medsynth.measure/<version>``. The derm, cxr, prostate
and ct templates have measurements behind them (ct: :mod:`medsynth.describe.ct`).

No whole lesion in a derm image (skin only, or a lesion cut by the image edge): every lesion
attribute is ``not_visible`` (the template's text then says "No whole lesion found"), instead
of a 0 mm lesion.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from medsynth.describe.schema import MEASUREMENTS, UNSURE
from medsynth.errors import MedsynthError
from medsynth.mllm.request import Request

MEASURABLE = ("derm", "cxr", "prostate", "ct")
VOLUME_FAMILIES = ("prostate", "ct")
"""Families whose measurements read volumes (the others: 2D images only)."""
PROSTATE_ATTRIBUTES = ("zone", "side", "level", "diameter_mm", "t2_hypointensity", "margin",
                       "extraprostatic_extension")
"""Prostate template attributes; the other measurements go under ``measurements``."""
DERM_LESION_ATTRIBUTES = ("diameter_mm", "asymmetry", "border", "colors", "structures")
"""Derm template attributes that describe the lesion (``not_visible`` when there is none)."""
DERM_LESION_MEASUREMENTS = ("border_irregularity", "n_colors", "center_x", "center_y")
"""Extra derm measurements that only mean something for a whole lesion."""
DEFAULT_FOV_MM = 20.0
"""Field of view assumed when neither the dataset nor the image gives a pixel size."""


def to_schema(family: str, m: dict[str, Any]) -> dict[str, Any]:
    """A :mod:`medsynth.pixel_attributes` result as a template answer: the template's attributes (lists
    for multi values) and the other measurements under :data:`MEASUREMENTS`."""
    out = dict(m)
    if family == "ct":
        from medsynth.describe.ct import CT_ATTRIBUTES

        answer = {k: out.pop(k) for k in CT_ATTRIBUTES}
        answer[MEASUREMENTS] = out
        return answer
    if family == "prostate":
        for k, v in list(out.items()):
            if isinstance(v, float) and not np.isfinite(v):
                out[k] = None  # no lesion: no centre (JSON has no NaN)
        answer = {k: out.pop(k) for k in PROSTATE_ATTRIBUTES}
        answer[MEASUREMENTS] = out
        return answer
    if family == "derm":
        out["colors"] = [c for c in str(m["colors"]).split(";") if c]
        out["structures"] = [s for s in str(m["structures"]).split(";") if s and s != "none"]
        view = out.pop("lesion", "whole")
        if view != "whole":
            for k in DERM_LESION_ATTRIBUTES:
                out[k] = UNSURE[0]
            for k in DERM_LESION_MEASUREMENTS:
                out.pop(k, None)
            out["lesion"] = view
        schema_keys: tuple[str, ...] = DERM_LESION_ATTRIBUTES
    else:
        out["heart_size"] = "enlarged" if m["ctr"] > 0.5 else "normal"
        if m["ctr"] <= 0:  # no lungs found: nothing can be said about the heart
            out["ctr"], out["heart_size"] = UNSURE[0], UNSURE[0]
        schema_keys = ("side", "zone", "opacity_extent", "ctr", "heart_size")
    answer = {k: out.pop(k) for k in schema_keys if k in out}
    answer[MEASUREMENTS] = out
    return answer


def measure_array(family: str, array: np.ndarray, mm_per_px: float,
                  affine: np.ndarray | None = None) -> dict[str, Any]:
    """Measure one channel-first image (or volume, with its RAS affine) with the family's
    measurement function."""
    from medsynth.pixel_attributes import measure_cxr, measure_derm

    if family == "ct":
        from medsynth.describe.ct import measure_ct

        return measure_ct(array, affine, mm_per_px)
    if array.ndim == 4 and family not in VOLUME_FAMILIES:
        raise MedsynthError(f"the {family} measurements are made for 2D images, got a volume "
                            f"{array.shape[1:]}",
                            hint="pick the volume's own template (--modality ct or prostate), "
                                 "or import it with --slices")
    if family == "prostate":
        from medsynth.pixel_attributes.prostate import measure_prostate

        if array.ndim != 4:
            raise MedsynthError(f"the prostate measurements need a 3D volume, got {array.shape}")
        if affine is None:  # isotropic voxels of the known size, RAS
            affine = np.diag([mm_per_px, mm_per_px, mm_per_px, 1.0])
        return measure_prostate(array, affine)
    if family == "derm":
        if array.shape[0] != 3:
            raise MedsynthError(f"the derm measurements need RGB images, got {array.shape[0]} channel(s)")
        return measure_derm(array, mm_per_px, with_view=True)
    return measure_cxr(array)


@dataclasses.dataclass(frozen=True)
class TemplateMeasurer:
    """Answers a describe request from its image's pixels (picklable: runs in worker processes).

    The pixel size comes from ``request.context["mm_per_px"]``, else a 20 mm field of view.
    """

    family: str
    """``derm``, ``cxr``, ``prostate`` or ``ct``: which measurements (the template's family)."""

    def __post_init__(self) -> None:
        if self.family not in MEASURABLE:
            raise MedsynthError(
                f"the attributes backend measures {' and '.join(MEASURABLE)} images only, "
                f"not {self.family!r}",
                hint="use --backend openai or --backend transformers for this modality")

    def __call__(self, request: Request) -> dict[str, Any]:
        image = request.context.get("volume")
        if image is None:
            image = request.image
        if image is None:
            raise MedsynthError("the attributes backend needs an image in every request")
        mm = request.context.get("mm_per_px") or DEFAULT_FOV_MM / image.shape[-1]
        return to_schema(self.family, measure_array(self.family, image, float(mm),
                                                    request.context.get("affine")))
