"""Measurements of a CT volume (or slice) in Hounsfield units, for the ``ct`` describe template.

What a CT reader states first and the voxels show without a model:

* **Coverage.** Craniocaudal extent (slices x slice spacing along the superior axis of the RAS
  voxel order, :func:`medsynth.imaging.views.to_ras`) and the slice spacing; slices of a single
  value (the padding of ``data import --shape``) do not count; a single slice has no coverage
  (``not_visible``).
* **Composition.** The body outline is the largest connected region above -500 HU with its
  holes filled axial slice by axial slice (lungs and airways lie inside it). Inside it, the
  share of air (< -400 HU: aerated lung, airway, bowel gas), fat (-190 to -30), soft tissue
  (-30 to 100), dense tissue (100 to 300: enhanced vessels and organs, calcification) and bone
  (>= 300); metal (>= 2500) is counted separately.
* **Region.** Read from the composition, only where it is clear: chest when at least 15 % of
  the body is air; head when at least 8 % is bone around soft tissue (>= 30 %, the brain) with
  little fat (< 8 %) and air (< 5 %);
  abdomen/pelvis when there is fat (>= 8 %), little air (< 15 %) and mostly soft tissue;
  ``uncertain`` otherwise (a small crop, a limb, a scout).

Contrast enhancement cannot be told from HU alone (a dense vessel or a calcification look
alike at this level): the measurer answers ``uncertain`` and leaves it to a model backend.
Values are HU as the dataset stores CT (``data import`` applies the DICOM rescale).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CT_ATTRIBUTES = ("region", "coverage_mm", "slice_mm", "air_share", "fat_share", "bone_share",
                 "contrast")
"""The ``ct`` template's attributes; the other measurements go under ``measurements``."""
BANDS = {"air": (-np.inf, -400.0), "fat": (-190.0, -30.0), "soft_tissue": (-30.0, 100.0),
         "dense": (100.0, 300.0), "bone": (300.0, np.inf)}
"""HU bands of the composition (lower bound included)."""
BODY_HU = -500.0
"""Voxels above this are body (air outside and inside the body is below it)."""
METAL_HU = 2500.0


def _region(share: dict[str, float]) -> str:
    if share["air"] >= 0.15:
        return "chest"
    if (share["bone"] >= 0.08 and share["soft_tissue"] >= 0.3 and share["fat"] < 0.08
            and share["air"] < 0.05):
        return "head"
    if share["fat"] >= 0.08 and share["air"] < 0.15 and share["soft_tissue"] >= 0.4:
        return "abdomen_pelvis"
    return "uncertain"


def body_outline(ras: np.ndarray) -> np.ndarray:
    """Boolean (x, y, z) mask: the largest region above :data:`BODY_HU`, holes filled per axial
    slice (lungs, airways)."""
    from scipy import ndimage as ndi

    body = ras > BODY_HU
    lab, n = ndi.label(body)
    if n == 0:
        return body
    body = lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    return np.stack([ndi.binary_fill_holes(body[:, :, k]) for k in range(body.shape[2])], axis=2)


def measure_ct(array: np.ndarray, affine: np.ndarray | None = None,
               mm_per_px: float | None = None) -> dict[str, Any]:
    """Coverage, composition and region of a channel-first CT volume (C, D, H, W) with its RAS
    affine, or of a slice (C, H, W); HU values. Attributes of the template plus ``body_share``,
    the band shares, ``metal_share``, ``hu_p1``/``hu_p99`` inside the body and ``n_slices``."""
    from medsynth.imaging.views import to_ras

    a = np.asarray(array)
    if a.ndim == 3:  # one slice: axial, no coverage
        ras = a[0][:, :, None].astype(np.float32)
        zooms = (float(mm_per_px or 1.0),) * 2 + (float("nan"),)
    else:
        if affine is None:
            affine = np.diag([float(mm_per_px or 1.0)] * 3 + [1.0])
        r, zooms = to_ras(a, affine)
        ras = np.asarray(r, dtype=np.float32)
    # Slices of one value are the padding of `data import --shape` (border median): no content.
    flat = ras.reshape(-1, ras.shape[2])
    content = flat.max(0) > flat.min(0)
    if content.any() and not content.all():
        ras = ras[:, :, content]
    body = body_outline(ras)
    n_body = int(body.sum())
    n_slices = int(ras.shape[2])
    single = not np.isfinite(zooms[2])
    out: dict[str, Any] = {
        "coverage_mm": "not_visible" if single else round(n_slices * float(zooms[2]), 1),
        "slice_mm": "not_visible" if single else round(float(zooms[2]), 2),
        "contrast": "uncertain", "n_slices": n_slices, "body_share": n_body / ras.size}
    if n_body < max(8, 0.02 * ras.size):  # no body in the field of view
        out.update(region="not_visible", air_share="not_visible", fat_share="not_visible",
                   bone_share="not_visible")
        return out
    inner = ras[body]
    share = {k: float(((inner >= lo) & (inner < hi)).mean()) for k, (lo, hi) in BANDS.items()}
    out.update(region=_region(share), air_share=round(share["air"], 3),
               fat_share=round(share["fat"], 3), bone_share=round(share["bone"], 3),
               soft_tissue_share=round(share["soft_tissue"], 3),
               dense_share=round(share["dense"], 3),
               metal_share=round(float((inner >= METAL_HU).mean()), 4),
               hu_p1=float(np.percentile(inner, 1)), hu_p99=float(np.percentile(inner, 99)))
    return out
