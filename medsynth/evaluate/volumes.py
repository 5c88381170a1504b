"""Evaluate for volumes: 3D inputs for the same benchmark, 2.5D features, 2.5D FID, 3D privacy.

The evaluation stays one pipeline (``run.py``); for a 3D real dataset this module supplies

- **loading**: each volume turned to RAS voxel order (exact axis flips/permutations from its
  affine, so real and synthetic volumes line up whatever their files' orientation), windowed
  with *one* intensity window for every set (the 0.5-99.5 percentiles of the real training
  volumes: a synthetic set that is too bright or too dark stays so) and resized to ``size``^3
  (area averaging down, trilinear up): :class:`~medsynth.evaluate.inputs.ImageSet` with
  ``x`` of shape (N, C, S, S, S). The downstream classifier is then a 3D MONAI network
  (:func:`medsynth.evaluate.classifier.build_classifier`), trained and tested as in 2D;
- **2.5D features**: axial, coronal and sagittal slices (three per plane, at 40, 50 and 60 %
  of the volume) through the 2D extractor (EfficientNet-Lite0), averaged per volume and plane;
  the three planes' features side by side describe a volume for precision/recall, class
  fidelity and nearest-neighbour privacy (the 2D code, unchanged);
- **2.5D FID**: the Frechet distance per plane and their mean, against the real test volumes,
  beside the real-vs-real reference (real training volumes, as many as the synthetic set has,
  against the same test volumes): values comparable within this report only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.evaluate.inputs import ImageSet

PLANES = ("axial", "coronal", "sagittal")
"""Slice planes of a RAS-ordered (C, z, y, x) volume: along z, along y, along x."""
SLICE_AT = (0.4, 0.5, 0.6)
"""Where the 2.5D slices are taken along each axis (share of the axis)."""
WINDOW_PERCENTILES = (0.5, 99.5)
CONCAT_FID = "FID (3 planes concat.)"
"""For volumes, the fidelity table's FID is over the three planes' features side by side: not
the 2.5D FID (mean of the per-plane FIDs) the docs quote, so it carries this label."""


def ras_array(array: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    """(C, D, H, W) in the closest RAS voxel order (k: inferior->superior, j: posterior->
    anterior, i: left->right), by axis flips and permutations only."""
    if affine is None:
        return array
    from medsynth.imaging.resample import reorient_ras

    return reorient_ras(array, np.asarray(affine, dtype=np.float64))[0]


def intensity_window(arrays: Sequence[np.ndarray],
                     percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> tuple[float, float]:
    """One window for every set: percentiles of (a sample of) the real training voxels."""
    rng = np.random.default_rng(0)
    sample = [rng.choice(a.reshape(-1), size=min(a.size, 20000), replace=False).astype(np.float64)
              for a in arrays]
    if not sample:
        raise MedsynthError("no real training volumes to set the intensity window from")
    lo, hi = np.percentile(np.concatenate(sample), percentiles)
    return float(lo), float(hi) if hi > lo else float(lo + 1.0)


def stack_volumes(arrays: Sequence[np.ndarray], size: int, window: tuple[float, float]) -> Any:
    """Volumes (C, D, H, W) -> float tensor (N, C, size, size, size) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    lo, hi = window
    out = []
    for a in arrays:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
        t = ((t - lo) / (hi - lo)).clamp_(0, 1)
        if tuple(t.shape[-3:]) != (size,) * 3:
            down = all(s >= size for s in t.shape[-3:])
            t = F.interpolate(t, size=(size,) * 3, mode="area" if down else "trilinear",
                              **({} if down else {"align_corners": False}))
        out.append(t.clamp_(0, 1))
    if not out:
        return torch.zeros(0, 1, size, size, size)
    return torch.cat(out)


def _image_set(name: str, arrays: list[np.ndarray], labels: list[str], ids: list[str],
               size: int, classes: list[str], window: tuple[float, float]) -> ImageSet:
    import torch

    for a in arrays:
        if a.ndim != 4:
            raise MedsynthError(f"{name}: a 3D evaluation needs volumes, got shape {a.shape}")
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in labels], dtype=torch.long)
    return ImageSet(name, stack_volumes(arrays, size, window), y, [str(i) for i in ids])


def real_arrays(real: Any, split: str, classes: list[str]) -> tuple[list[np.ndarray], Any]:
    """RAS-ordered arrays of one real split and its rows."""
    from medsynth.ui import track

    rows = real.split(split)
    rows = rows[rows["class"].isin(classes)]
    arrays = []
    for _, row in track(list(rows.iterrows()), f"loading real {split}"):
        img = real.load(row)
        arrays.append(ras_array(img.array, img.affine))
    return arrays, rows


def load_real_volumes(real: Any, split: str, size: int, classes: list[str],
                      window: tuple[float, float]) -> ImageSet:
    arrays, rows = real_arrays(real, split, classes)
    return _image_set(f"real-{split}", arrays, rows["class"].tolist(), rows["image_id"].tolist(),
                      size, classes, window)


def load_synthetic_volumes(synth: Any, size: int, classes: list[str],
                           window: tuple[float, float], max_per_class: int | None = None
                           ) -> ImageSet:
    """The volumes of a synthetic set (NIfTI or DICOM, through medsynth's reader)."""
    from medsynth.evaluate.inputs import synthetic_arrays

    table, arrays = synthetic_arrays(synth, max_per_class,
                                     lambda img: ras_array(img.array, img.affine), folders=True)
    return _image_set(synth.name, arrays, table["class"].tolist(),
                      table["sample_id"].astype(str).tolist(), size, classes, window)


def plane_slices(x: Any, plane: str, at: Sequence[float] = SLICE_AT) -> Any:
    """(N, C, S, S, S) -> (N * len(at), C, S, S) slices of one plane, volume-major."""
    import torch

    axis = {"axial": 2, "coronal": 3, "sagittal": 4}[plane]
    n = x.shape[axis]
    idx = [min(n - 1, max(0, int(round(f * (n - 1))))) for f in at]
    parts = [x.select(axis, i) for i in idx]  # each (N, C, S, S)
    return torch.stack(parts, dim=1).reshape(-1, *parts[0].shape[1:])


class PlaneFeatures:
    """2.5D features: a 2D extractor on axial, coronal and sagittal slices, averaged per volume
    and plane."""

    def __init__(self, extractor: Any) -> None:
        self.fx = extractor
        self.name = f"2.5D {extractor.name} ({', '.join(PLANES)}; slices at "
        self.name += ", ".join(f"{int(100 * f)}%" for f in SLICE_AT) + ")"
        self.dim = extractor.dim

    def planes(self, x: Any) -> dict[str, Any]:
        """Plane name -> (N, dim) features."""
        out = {}
        for plane in PLANES:
            f = self.fx(plane_slices(x, plane))
            out[plane] = f.reshape(x.shape[0], len(SLICE_AT), -1).mean(1)
        return out

    @staticmethod
    def combined(planes: dict[str, Any]) -> Any:
        """The three planes' features side by side: (N, 3 * dim)."""
        import torch

        return torch.cat([planes[p] for p in PLANES], dim=1)


def fid_25d(f_test: dict[str, Any], f_train: dict[str, Any], train_y: Any,
            f_synth: dict[str, dict[str, Any]], synth_y: dict[str, Any]) -> dict[str, Any]:
    """2.5D FID per plane and mean, per synthetic set, with the real-vs-real reference.

    The reference draws as many real training volumes per class as the largest synthetic set
    has (FID depends on the sample size), seeded, and compares them with the same test set.
    """
    from medsynth.evaluate.fidelity import fid

    rng = np.random.default_rng(0)
    y = train_y.numpy()
    keep: list[int] = []
    for c in sorted(set(y.tolist())):
        idx = np.nonzero(y == c)[0]
        n_syn = max((int((sy == c).sum()) for sy in synth_y.values()), default=0) or len(idx)
        keep += rng.permutation(idx)[:min(len(idx), n_syn)].tolist()
    keep_t = np.asarray(sorted(keep), dtype=np.int64)

    def row(fa: dict[str, Any], fb: dict[str, Any]) -> dict[str, Any]:
        per = {p: fid(fa[p], fb[p]) for p in PLANES}
        vals = [v for v in per.values() if v is not None]
        return {**per, "mean": float(np.mean(vals)) if vals else None,
                "n_real": int(len(fa[PLANES[0]])), "n_fake": int(len(fb[PLANES[0]]))}

    reference = row(f_test, {p: f_train[p][keep_t] for p in PLANES})
    return {"method": "Frechet distance of 2.5D features per plane (axial, coronal, sagittal) "
                      "against the real test volumes; mean of the three",
            "reference": reference,
            "sets": {name: row(f_test, f) for name, f in f_synth.items()}}
