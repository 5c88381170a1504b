"""NIfTI writer: a 2D image as a single-slice volume (3D volumes as they are), with its spacing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.data.save import save_nifti


def write_nifti(
    array: np.ndarray,
    path: str | Path,
    *,
    spacing: tuple[float, ...] | None = None,
    description: str = "",
) -> Path:
    """Write (C, H, W) or (C, D, H, W) as gzipped NIfTI-1, atomically.

    Args:
        array: channel-first pixels of any integer or float dtype (kept as is).
        path: the ``.nii.gz`` file to write.
        spacing: pixel/voxel spacing in mm in array axis order ((rows, cols) or
            (slices, rows, cols)); the affine gets it on its diagonal. 1 mm when unknown.
        description: short text for the header's ``descrip`` field (79 ASCII characters kept).
    """
    if array.ndim not in (3, 4):
        raise ValueError(f"NIfTI writer needs (C, H, W) or (C, D, H, W), got {array.shape}")
    return save_nifti(array, path, spacing=spacing, description=description)
