"""NIfTI reader (nibabel): 2D images and 3D volumes, spacing and affine carried along.

nibabel gives arrays in (x, y, z) voxel order; medsynth keeps images as (C, D, H, W) =
(channel, z, y, x), so the array is transposed here and back in the NIfTI writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.imaging.image import Image, narrowest_integer


def read_nifti(path: str | Path) -> Image:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise MedsynthError(f"{path}: not a readable NIfTI file ({e})") from e
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4 and data.shape[2] == 1 and data.shape[3] in (3, 4):
        # 2D RGB stored as (x, y, 1, c)
        arr = np.moveaxis(data[:, :, 0, :3], -1, 0).transpose(0, 2, 1)
        spacing = (zooms[1], zooms[0])
    elif data.ndim == 2 or (data.ndim == 3 and data.shape[2] == 1):
        arr = data.reshape(data.shape[0], data.shape[1]).T[None]
        spacing = (zooms[1], zooms[0])
    elif data.ndim == 3:
        arr = data.transpose(2, 1, 0)[None]
        spacing = (zooms[2], zooms[1], zooms[0])
    else:
        raise MedsynthError(f"{path}: unsupported NIfTI shape {data.shape}")
    arr = np.ascontiguousarray(narrowest_integer(arr))
    # NIfTI records no modality: OT (unknown) unless the user says (data import --modality).
    return Image(
        array=arr,
        modality="OT",
        spacing=spacing,
        affine=np.asarray(img.affine, dtype=np.float64),
        meta={"format": "nifti", "shape_xyz": tuple(int(s) for s in data.shape)},
    )
