"""NIfTI writer: a 2D image as a single-slice volume (3D volumes as they are), with its geometry.

The dtype is kept: int16 Hounsfield units stay int16, float32 stays float32 (scl_slope 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.imaging.save import save_nifti


def write_nifti(
    array: np.ndarray,
    path: str | Path,
    *,
    spacing: tuple[float, ...] | None = None,
    affine: np.ndarray | list[list[float]] | None = None,
    description: str = "",
) -> Path:
    """Write (C, H, W) or (C, D, H, W) as gzipped NIfTI-1, atomically.

    Args:
        array: channel-first pixels of any integer or float dtype (kept as is).
        path: the ``.nii.gz`` file to write.
        spacing: pixel/voxel spacing in mm in array axis order ((rows, cols) or
            (slices, rows, cols)); without an affine it goes on the diagonal. 1 mm when unknown.
        affine: 4x4 RAS voxel-to-world affine (NIfTI convention; it carries the spacing): the
            training data's orientation from the model, when known.
        description: short text for the header's ``descrip`` field (79 ASCII characters kept).
    """
    if array.ndim not in (3, 4):
        raise ValueError(f"NIfTI writer needs (C, H, W) or (C, D, H, W), got {array.shape}")
    a = np.asarray(affine, dtype=np.float64) if affine is not None else None
    return save_nifti(array, path, spacing=spacing, affine=a, description=description)
