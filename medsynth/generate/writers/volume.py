"""All files of one generated 3D volume: NIfTI (affine kept) and DICOM (series or enhanced).

The one entry point for the generate stage's 3D path::

    write_volume(pixels, {"nifti": out / "nifti/c/id.nii.gz", "dicom": out / "dicom/c/id"},
                 affine=A, run=dicom_run, cls=..., sample_id=..., index=..., description=...,
                 seed=..., rescale=..., dicom_layout="series")

``pixels`` is ``(C, D, H, W)`` (the model's output in its dtype); ``affine`` the RAS
voxel-to-world affine of the training data's orientation and spacing (from the model), or
None with ``spacing`` (D, H, W). :func:`relative_dicom_path` says where a sample's DICOM goes:
a folder of slices (``series``) or one ``.dcm`` file (``enhanced``); medsynth's reader reads
either back as the volume (:func:`medsynth.imaging.readers.read_image`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.generate.writers.dicom_volume import (
    DICOM_VOLUME_LAYOUTS,
    volume_affine,
    write_dicom_enhanced,
    write_dicom_series,
)
from medsynth.generate.writers.nifti import write_nifti
from medsynth.imaging.storage import Rescale


def relative_dicom_path(folder: str, sample_id: str, layout: str = "series") -> str:
    """Where one volume's DICOM goes, relative to the set: ``dicom/<folder>/<id>`` (a folder of
    slices) or ``dicom/<folder>/<id>.dcm`` (one enhanced multi-frame file)."""
    if layout not in DICOM_VOLUME_LAYOUTS:
        raise ValueError(f"DICOM volume layout must be one of {DICOM_VOLUME_LAYOUTS}")
    return f"dicom/{folder}/{sample_id}" + (".dcm" if layout == "enhanced" else "")


def write_volume(
    pixels: np.ndarray,
    paths: Mapping[str, str | Path],
    *,
    affine: np.ndarray | Sequence[Sequence[float]] | None = None,
    spacing: Sequence[float] | None = None,
    rescale: Rescale | None = None,
    dicom_layout: str = "series",
    run: Any = None,
    cls: str = "",
    sample_id: str = "",
    index: int = 0,
    description: str = "",
    seed: int | None = None,
) -> dict[str, list[Path]]:
    """Write one volume in every format of ``paths`` (``nifti``, ``dicom``); returns the files
    written per format.

    Args:
        pixels: (C, D, H, W) in the model's dtype (DICOM: one channel).
        paths: absolute target per format; for DICOM a folder (series) or a file (enhanced).
        affine: RAS voxel-to-world affine of the (D, H, W) grid; None: RAS axes at ``spacing``,
            centred on the origin.
        spacing: (D, H, W) voxel spacing in mm when there is no affine (1 mm when unknown).
        rescale: stored-value map of float32 volumes (DICOM).
        dicom_layout: ``series`` (one MR/CT Image Storage file per slice) or ``enhanced`` (one
            Legacy Converted Enhanced MR/CT multi-frame file).
        run: the run's :class:`~medsynth.generate.writers.dicom.DicomRunInfo` (DICOM).
        cls, sample_id, index, description, seed: the sample (DICOM attributes).
    """
    if pixels.ndim != 4:
        raise ValueError(f"a volume is (C, D, H, W), got {pixels.shape}")
    a = volume_affine(pixels.shape, spacing, affine)
    out: dict[str, list[Path]] = {}
    if "nifti" in paths:
        out["nifti"] = [write_nifti(pixels, paths["nifti"], affine=a,
                                    description=f"medsynth synthetic {cls}".strip())]
    if "dicom" in paths:
        kw = {"run": run, "cls": cls, "sample_id": sample_id, "index": index,
              "description": description, "seed": seed, "affine": a, "rescale": rescale}
        if dicom_layout == "series":
            out["dicom"] = write_dicom_series(pixels, paths["dicom"], **kw)
        elif dicom_layout == "enhanced":
            out["dicom"] = [write_dicom_enhanced(pixels, paths["dicom"], **kw)]
        else:
            raise ValueError(f"DICOM volume layout must be one of {DICOM_VOLUME_LAYOUTS}")
    return out
