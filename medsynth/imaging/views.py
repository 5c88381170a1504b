"""Orthogonal slices of a volume as a radiologist views them, whatever the file's orientation.

A volume is channel-first ``(C, D, H, W)`` (nibabel's voxel axes reversed: ``W`` is ``i``,
``D`` is ``k``) with a RAS voxel-to-world affine. :func:`to_ras` turns it to the closest
RAS-aligned voxel order (an oblique volume is turned to its nearest axes, not resampled);
:func:`orthogonal_slices` cuts the three planes through a point and lays each out in the
radiological display convention:

- axial: anterior at the top, the patient's right on the viewer's left;
- coronal: superior at the top, the patient's right on the viewer's left;
- sagittal: superior at the top, anterior on the viewer's left.

Pixels are stretched to their physical aspect. Shared by the demo contact sheets, the images
describe shows a model, and the evaluate report's grids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PLANES = ("axial", "coronal", "sagittal")


def _ornt(affine: np.ndarray | None) -> np.ndarray:
    import nibabel as nib

    if affine is None:
        return np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    return nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))


def to_ras(volume: np.ndarray, affine: np.ndarray | None = None
           ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The first channel of a (C, D, H, W) or (D, H, W) volume as an (x, y, z) array whose axes
    run left->Right, posterior->Anterior, inferior->Superior; and its voxel sizes (mm).

    Without an affine the array is taken as RAS already (1 mm voxels).
    """
    import nibabel as nib

    v = np.asarray(volume)
    if v.ndim == 4:
        v = v[0]
    if v.ndim != 3:
        raise ValueError(f"a volume is (C, D, H, W) or (D, H, W), got {volume.shape}")
    xyz = v.transpose(2, 1, 0)
    ornt = _ornt(affine)
    zooms = (np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
             if affine is not None else np.ones(3))
    ras = nib.orientations.apply_orientation(xyz, ornt)
    out_zooms = [1.0, 1.0, 1.0]
    for axis, (world, _flip) in enumerate(ornt):
        out_zooms[int(world)] = float(zooms[axis])
    return ras, (out_zooms[0], out_zooms[1], out_zooms[2])


def ras_index(point_mm: Sequence[float], shape_dhw: Sequence[int],
              affine: np.ndarray | None) -> tuple[int, int, int]:
    """Voxel index, in :func:`to_ras` order, of the voxel nearest a RAS point (mm)."""
    if affine is None:
        ijk = np.asarray(point_mm, dtype=np.float64)
    else:
        ijk = np.linalg.solve(np.asarray(affine, dtype=np.float64), [*point_mm, 1.0])[:3]
    shape_ijk = [int(shape_dhw[2]), int(shape_dhw[1]), int(shape_dhw[0])]
    ornt = _ornt(affine)
    out = [0, 0, 0]
    for axis, (world, flip) in enumerate(ornt):
        i = int(np.clip(np.rint(ijk[axis]), 0, shape_ijk[axis] - 1))
        out[int(world)] = i if flip > 0 else shape_ijk[axis] - 1 - i
    return out[0], out[1], out[2]


def _aspect(plane: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Stretch a display plane so that its pixels are square in millimetres."""
    if abs(row_mm - col_mm) < 1e-3 * max(row_mm, col_mm):
        return plane
    from PIL import Image as PILImage

    h, w = plane.shape
    unit = min(row_mm, col_mm)
    size = (max(1, round(w * col_mm / unit)), max(1, round(h * row_mm / unit)))
    im = PILImage.fromarray(plane.astype(np.float32), mode="F")
    return np.asarray(im.resize(size, PILImage.Resampling.BILINEAR))


def orthogonal_slices(volume: np.ndarray, affine: np.ndarray | None = None,
                      point_mm: Sequence[float] | None = None,
                      ) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal slices through ``point_mm`` (RAS; default: the centre), each
    a float (rows, cols) array in display orientation and physical aspect (module doc)."""
    ras, (zx, zy, zz) = to_ras(volume, affine)
    nx, ny, nz = ras.shape
    if point_mm is None:
        ix, iy, iz = nx // 2, ny // 2, nz // 2
    else:
        shape = np.asarray(volume).shape[-3:]
        ix, iy, iz = ras_index(point_mm, shape, affine)
    ax = ras[:, :, iz].T[::-1, ::-1]      # rows: anterior -> posterior; cols: right -> left
    co = ras[:, iy, :].T[::-1, ::-1]      # rows: superior -> inferior; cols: right -> left
    sa = ras[ix, :, :].T[::-1, ::-1]      # rows: superior -> inferior; cols: anterior -> posterior
    return {"axial": _aspect(np.ascontiguousarray(ax, dtype=np.float32), zy, zx),
            "coronal": _aspect(np.ascontiguousarray(co, dtype=np.float32), zz, zx),
            "sagittal": _aspect(np.ascontiguousarray(sa, dtype=np.float32), zz, zy)}


def to_uint8(values: np.ndarray, low: float | None = None, high: float | None = None,
           percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """8-bit display copy: ``low``..``high`` (default: the percentiles of ``values``) to 0..255."""
    v = np.asarray(values, dtype=np.float64)
    if low is None or high is None:
        lo, hi = np.percentile(v, percentiles)
        low = lo if low is None else low
        high = hi if high is None else high
    scale = max(float(high) - float(low), 1e-9)
    return (np.clip((v - float(low)) / scale, 0, 1) * 255 + 0.5).astype(np.uint8)


def orthogonal_strip(volume: np.ndarray, affine: np.ndarray | None = None,
                     point_mm: Sequence[float] | None = None, *, tile: int = 96,
                     gap: int = 2, percentiles: tuple[float, float] = (0.5, 99.5),
                     window: tuple[float, float] | None = None) -> np.ndarray:
    """(tile, 3 * tile + 2 * gap) uint8: axial | coronal | sagittal, each fitted into a square
    tile (aspect kept), windowed together: ``window`` (low, high), else the whole volume's
    percentiles."""
    from PIL import Image as PILImage

    v = np.asarray(volume, dtype=np.float32)
    lo, hi = window if window is not None else np.percentile(v, percentiles)
    planes = orthogonal_slices(v, affine, point_mm)
    tiles = []
    for name in PLANES:
        p = to_uint8(planes[name], lo, hi)
        h, w = p.shape
        s = tile / max(h, w)
        im = PILImage.fromarray(p).resize((max(1, round(w * s)), max(1, round(h * s))),
                                          PILImage.Resampling.BILINEAR)
        canvas = np.zeros((tile, tile), np.uint8)
        a = np.asarray(im)
        top, left = (tile - a.shape[0]) // 2, (tile - a.shape[1]) // 2
        canvas[top:top + a.shape[0], left:left + a.shape[1]] = a
        tiles.append(canvas)
    sep = np.full((tile, gap), 255, np.uint8)
    return np.concatenate([tiles[0], sep, tiles[1], sep, tiles[2]], axis=1)


def grid(rows: list[list[np.ndarray]], gap: int = 4, fill: int = 255) -> np.ndarray:
    """Tile equally tall uint8 (H, W) strips into one image: a row per list, ``gap`` apart."""
    lines = []
    width = max(sum(t.shape[1] for t in r) + gap * (len(r) - 1) for r in rows)
    for r in rows:
        parts = []
        for k, t in enumerate(r):
            if k:
                parts.append(np.full((t.shape[0], gap), fill, np.uint8))
            parts.append(t)
        line = np.concatenate(parts, axis=1)
        if line.shape[1] < width:
            line = np.pad(line, ((0, 0), (0, width - line.shape[1])), constant_values=fill)
        lines.append(line)
        lines.append(np.full((gap, width), fill, np.uint8))
    return np.concatenate(lines[:-1], axis=0)
