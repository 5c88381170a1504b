"""Pixel measurements of a T2-weighted prostate volume: the gland, and its most suspicious lesion.

Made for the demo phantom (``medsynth data demo prostate``) and its ground truth, no model:

1. **Orientation and intensity.** The volume is turned to RAS voxel order
   (:func:`medsynth.imaging.views.to_ras`), lightly smoothed, and divided by the coil's bias
   field (a cubic polynomial fitted to the log intensity of the fat), so fat is about 1.
2. **Gland.** The capsule is a thin dark line. A black top-hat (grey closing minus image)
   shows thin dark lines; the gland's surface is the chestnut-shaped surface (the phantom's
   shape family: broad base, narrower front, flat back) whose posterior, lateral, cranial and
   caudal parts lie on the most line response, fitted by Nelder-Mead from three starting sizes
   (the anterior cap is left out: the fibromuscular stroma there is dark, not a line).
3. **Lesion.** A lesion is unilateral: the image is mirrored about the gland's midline and
   compared with itself. Voxels inside the gland (or up to 3 mm outside: extraprostatic
   extension) that are clearly darker than their mirror make candidate blobs; a blob is a
   lesion when, in its zone's terms, it is dark: peripheral-zone context (mirror and
   surroundings bright) and at least 17 % darker than the mirror, or transition-zone context
   and darker than 84 % of the transition zone's median. The biggest such blob (by darkness
   times volume) is the lesion.
4. **Attributes.** Zone from that context; side from the blob's centroid against the fitted
   midline (RAS: x > midline is the patient's right); level from the centroid's height in the
   gland (thirds: apex, mid, base); diameter = largest Feret diameter of the blob at half its
   contrast; T2 hypointensity = 1 - blob median / reference; margin from the edge width and
   the blob's heterogeneity; extraprostatic extension when part of the blob lies beyond the
   fitted capsule.

Returns the ground-truth column names of the phantom's ``labels.csv``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from medsynth.pixel_attributes.common import mask_diameter

PROSTATE_COLUMNS = ("zone", "side", "level", "diameter_mm", "t2_hypointensity", "margin",
                    "extraprostatic_extension", "gland_volume_ml", "center_x_mm",
                    "center_y_mm", "center_z_mm")
TAPER = 0.15
"""Base-to-apex widening of the fitted gland surface (fixed: the fit is steadier)."""
SIZE_BOUNDS = ((14.0, 30.0), (9.0, 19.0), (11.0, 24.0))
"""Plausible half-axes (lateral, antero-posterior, cranio-caudal) of the gland in mm."""
STARTS = ((21.7, 14.0, 17.0), (19.0, 12.5, 15.0), (24.0, 15.5, 19.0))
"""Half-axes the gland fit starts from (mm)."""
MIN_LESION_MM3 = 30.0
"""Smallest blob taken for a lesion (a 4 mm sphere)."""
PZ_DROP = 0.2
"""A peripheral-zone blob is a lesion when its core is this much darker than its mirror."""
TZ_DROP = 0.16
"""A transition-zone blob is a lesion when its core is this much darker than the zone."""
EPE_SHARE = 0.08
"""Share of a lesion beyond the capsule that counts as extraprostatic extension."""
CANDIDATE_DROP = 0.08
"""A voxel this much darker than its mirror may belong to a lesion."""
TZ_SPLIT = 0.78
ZONE_SPLIT = 0.7
"""A blob whose mirror is brighter than this (fat ~ 1) lies in the peripheral zone."""
"""The shared dark core below this (fat ~ 1) is the transition zone."""
MARGIN_SHARPNESS = 0.3
"""Edges less sharp than this (1/mm: gradient over contrast) are ill-defined margins."""


@functools.lru_cache(maxsize=2)
def _directions(k: int = 400) -> np.ndarray:
    """Unit vectors spread over the sphere (Fibonacci), without the anterior cap."""
    i = np.arange(k) + 0.5
    phi = np.arccos(1 - 2 * i / k)
    th = np.pi * (1 + 5 ** 0.5) * i
    u = np.stack([np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)], 1)
    return u[u[:, 1] < 0.55]


def _surface(params: np.ndarray) -> np.ndarray:
    gx, gy, gz, ax, ay, az = params
    u = _directions()
    v, w = u[:, 1], u[:, 2]
    lat = ax * (1 + TAPER * w) * (1 - 0.18 * np.clip(v, 0, None))
    depth = np.where(v < 0, ay / 1.3, ay)
    return np.stack([gx + lat * u[:, 0], gy + depth * v, gz + az * w], 1)


def gland_distance(params: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) to the fitted gland surface (negative inside)."""
    gx, gy, gz, ax, ay, az = params
    w = np.clip((z - gz) / az, -1.5, 1.5)
    v = (y - gy) / ay
    lat = ax * (1 + TAPER * w) * (1 - 0.18 * np.clip(v, 0, None))
    depth = np.where(v < 0, ay / 1.3, ay)
    q = np.sqrt(((x - gx) / lat) ** 2 + ((y - gy) / depth) ** 2 + w ** 2)
    return (q - 1) * np.minimum(np.minimum(lat, depth), az)


def _bias(s: np.ndarray, degree: int = 3, rounds: int = 4) -> np.ndarray:
    """Smooth multiplicative bias field: a polynomial in (x, y, z) fitted to log intensity of
    the fat (the commonest bright tissue), refined a few times."""
    shape = s.shape
    grids = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    powers = [(i, j, k) for i in range(degree + 1) for j in range(degree + 1)
              for k in range(degree + 1) if i + j + k <= degree]
    rng = np.random.default_rng(0)
    pick = rng.choice(s.size, size=min(s.size, 20000), replace=False)
    basis = np.stack([(grids[0].ravel()[pick] ** i) * (grids[1].ravel()[pick] ** j)
                      * (grids[2].ravel()[pick] ** k) for i, j, k in powers], 1)
    logs = np.log(np.maximum(s.ravel()[pick], 1e-6))
    lo, hi = np.percentile(logs, [55, 92])
    fat = (logs > lo) & (logs < hi)
    coef = np.zeros(len(powers))
    for _ in range(rounds):
        coef, *_ = np.linalg.lstsq(basis[fat], logs[fat], rcond=None)
        resid = logs - basis @ coef
        fat = np.abs(resid) < 0.1  # fat: within 10 % of the fitted field
        if fat.sum() < len(powers) * 20:
            break
    field = np.zeros(shape, np.float32)
    for c, (i, j, k) in zip(coef, powers, strict=True):
        field += np.float32(c) * (grids[0] ** i) * (grids[1] ** j) * (grids[2] ** k)
    return np.exp(field)


class _Grid:
    """World coordinates of the RAS-ordered voxels and the map back to indices."""

    def __init__(self, shape: tuple[int, ...], affine: np.ndarray) -> None:
        self.shape = shape
        self.affine = affine  # ras voxel index -> world mm
        self.inv = np.linalg.inv(affine)
        self.vox = np.linalg.norm(affine[:3, :3], axis=0)
        i, j, k = (np.arange(n, dtype=np.float32) for n in shape)
        a = affine.astype(np.float32)
        # world = A @ (i, j, k): broadcast without materialising three full index grids
        self.x = a[0, 0] * i[:, None, None] + a[0, 1] * j[None, :, None] + a[0, 2] * k[None, None, :] + a[0, 3]
        self.y = a[1, 0] * i[:, None, None] + a[1, 1] * j[None, :, None] + a[1, 2] * k[None, None, :] + a[1, 3]
        self.z = a[2, 0] * i[:, None, None] + a[2, 1] * j[None, :, None] + a[2, 2] * k[None, None, :] + a[2, 3]

    def index(self, pts: np.ndarray) -> np.ndarray:
        """(n, 3) world mm -> (3, n) voxel indices."""
        return (self.inv[:3, :3] @ pts.T) + self.inv[:3, 3:4]


def _ras(array: np.ndarray, affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The first channel in RAS voxel order and the affine of that order."""
    import nibabel as nib

    from medsynth.imaging.views import to_ras

    a = np.asarray(affine, dtype=np.float64) if affine is not None else np.eye(4)
    ras, _ = to_ras(array, a)
    ornt = nib.orientations.io_orientation(a)
    shape_xyz = np.asarray(array).shape[-3:][::-1]
    new_affine = a @ nib.orientations.inv_ornt_aff(ornt, shape_xyz)
    return np.asarray(ras, dtype=np.float32), new_affine


def _fit_gland(t: np.ndarray, g: _Grid, centre: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi
    from scipy import optimize

    def cost(p: np.ndarray) -> float:
        penalty = 0.0
        for v, (lo, hi) in zip(p[3:], SIZE_BOUNDS, strict=True):
            penalty += max(0.0, lo - v) + max(0.0, v - hi)
        vals = ndi.map_coordinates(t, g.index(_surface(p)), order=1, mode="nearest")
        return -float(vals.mean()) + 0.05 * penalty

    best = None
    for size in STARTS:
        r = optimize.minimize(cost, np.array([*centre, *size]), method="Nelder-Mead",
                              options={"xatol": 0.1, "fatol": 1e-5, "maxfev": 900})
        if best is None or r.fun < best.fun:
            best = r
    assert best is not None
    return np.asarray(best.x, dtype=np.float64)


def _mirror(n: np.ndarray, g: _Grid, x0: float) -> np.ndarray:
    """``n`` mirrored about the sagittal plane x = x0 (world mm)."""
    from scipy import ndimage as ndi

    shape = n.shape
    pts = np.stack([np.broadcast_to(2 * x0 - g.x, shape), np.broadcast_to(g.y, shape),
                    np.broadcast_to(g.z, shape)], -1).reshape(-1, 3)
    return ndi.map_coordinates(n, g.index(pts), order=1, mode="nearest").reshape(shape)


def _midline(n: np.ndarray, g: _Grid, params: np.ndarray) -> float:
    """The gland's midline x (mm): the mirror plane that best matches the gland with itself,
    searched 3 mm either side of the fitted centre."""
    from scipy import ndimage as ndi

    box = gland_distance(params, g.x, g.y, g.z) < 4.0
    shape = n.shape
    xs, ys, zs = (np.broadcast_to(c, shape)[box] for c in (g.x, g.y, g.z))
    values = n[box]
    best, best_err = float(params[0]), np.inf
    for dx in np.arange(-3.0, 3.01, 0.25):
        x0 = float(params[0]) + dx
        pts = np.stack([2 * x0 - xs, ys, zs], 1)
        err = float(np.abs(ndi.map_coordinates(n, g.index(pts), order=1, mode="nearest")
                           - values).mean())
        if err < best_err:
            best, best_err = x0, err
    return best


@dataclasses.dataclass
class Candidate:
    """One dark, unilateral blob in or at the gland, described for the lesion decision."""

    peripheral: bool
    """Its mirror is bright (peripheral-zone context), else transition-zone context."""
    contrast: float
    """1 - its core's median / the reference (the mirror, or the transition zone's median)."""
    volume_mm3: float
    centre: tuple[float, float, float]
    """Contrast-weighted centroid, RAS mm."""
    diameter_mm: float
    """Largest Feret diameter of the blob at half its contrast."""
    edge: float
    """Share of its boundary band at intermediate intensity (wide, soft edges: high)."""
    hetero: float
    """Spread of its inner intensities relative to its contrast (lumpy: high)."""
    sharpness: float
    """Mean intensity gradient across its half-contrast boundary over its contrast (1/mm):
    about 1 / the edge's width."""
    outside: float
    """Share of it beyond the fitted capsule (by more than 1.5 mm)."""

    @property
    def score(self) -> float:
        return self.contrast * self.volume_mm3


def _candidates(n: np.ndarray, g: _Grid, params: np.ndarray, dg: np.ndarray) -> list[Candidate]:
    """Dark blobs of the gland that its mirror half does not have (module doc, step 3)."""
    from scipy import ndimage as ndi

    vox = g.vox
    gx = params[0]
    inside = dg < 0
    m = _mirror(n, g, gx)  # the image mirrored about the gland's midline
    sm = ndi.gaussian_filter(n, 0.8 / vox)
    ms = ndi.gaussian_filter(m, 0.8 / vox)
    # the mirror's darkest value within 1.5 mm across: a midline off by a voxel does not turn
    # an edge into a lesion
    mm = ndi.grey_erosion(ms, size=(max(1, 2 * int(round(1.5 / vox[0])) + 1), 1, 1))
    # The transition zone (with the stroma, urethra, central zone) is the dark core that both
    # halves share: dark on both sides of the midline. A unilateral lesion in the peripheral
    # zone is not in it: its mirror is bright. (Bright nodules leave holes: closed.)
    both = ndi.gaussian_filter(np.maximum(sm, ms), 1.5 / vox)
    tz = ndi.binary_closing(inside & (dg < -1.5) & (both < TZ_SPLIT), iterations=2) & inside
    tz_ok = tz & (sm > 0.3)
    tz_level = float(np.median(sm[tz_ok])) if tz_ok.any() else 0.56
    shape = n.shape
    xs = np.broadcast_to(g.x, shape)
    drop = 1 - sm / np.maximum(mm, 1e-6)
    grad = ndi.gaussian_gradient_magnitude(n, 0.6 / vox) / float(np.mean(vox))
    cand = (dg < 3.0) & (np.abs(xs - gx) > 1.5) & (drop > CANDIDATE_DROP) & (sm < 0.85)
    cand = ndi.binary_opening(cand, iterations=1)  # thin lines (capsule, vessels) are no lesions
    lab, k = ndi.label(cand)
    unit = float(np.prod(vox))
    out = []
    for label in range(1, k + 1):
        blob = lab == label
        if blob.sum() * unit < MIN_LESION_MM3 or np.median(dg[blob]) > 1.0:
            continue  # small, or outside the gland (vessels, fascia, muscle)
        core = blob & (drop >= max(CANDIDATE_DROP, float(np.percentile(drop[blob], 70))))
        med = float(np.median(sm[core]))
        peripheral = float(np.median(ms[core])) > ZONE_SPLIT
        ref = float(np.median(mm[core])) if peripheral else tz_level
        # the lesion at half its contrast, connected to the core
        half = (sm < (med + ref) / 2) & ndi.binary_dilation(blob, iterations=2) & (dg < 3.0)
        lab2, _ = ndi.label(half)
        keep = np.unique(lab2[core & half])
        keep = keep[keep > 0]
        lesion = np.isin(lab2, keep) if keep.size else core
        w = np.clip(ref - sm, 0, None) * lesion
        tot = float(w.sum()) or 1.0
        centre = tuple(float((np.broadcast_to(c, shape) * w).sum() / tot) for c in (g.x, g.y, g.z))
        inner = ndi.binary_erosion(lesion, iterations=1)
        hetero = float(np.std(n[inner]) / max(ref - med, 1e-3)) if inner.sum() > 4 else 0.5
        band = ndi.binary_dilation(lesion, iterations=2) & ~ndi.binary_erosion(lesion, iterations=2)
        mid = (sm > med + 0.25 * (ref - med)) & (sm < med + 0.75 * (ref - med)) & band
        boundary = lesion & ~ndi.binary_erosion(lesion)
        sharp = float(grad[boundary].mean()) / max(ref - med, 1e-3) if boundary.any() else 0.0
        out.append(Candidate(
            peripheral=peripheral, contrast=float(1 - med / ref),
            volume_mm3=float(lesion.sum()) * unit, centre=centre,  # type: ignore[arg-type]
            diameter_mm=mask_diameter(lesion, (g.x, g.y, g.z), float(np.mean(g.vox))),
            edge=float(mid.sum()) / max(float(band.sum()), 1.0),
            hetero=hetero, sharpness=sharp, outside=float((lesion & (dg > 1.5)).sum()) / max(float(lesion.sum()), 1.0)))
    return out


def _lesion_of(cands: list[Candidate], pz_drop: float = PZ_DROP, tz_drop: float = TZ_DROP
               ) -> Candidate | None:
    """The most suspicious candidate that is dark enough for its zone, or None."""
    ok = [c for c in cands if c.contrast > (pz_drop if c.peripheral else tz_drop)]
    return max(ok, key=lambda c: c.score) if ok else None


def _gland(array: np.ndarray, affine: np.ndarray | None,
           gland_centre: tuple[float, float, float]) -> tuple[np.ndarray, _Grid, np.ndarray, np.ndarray]:
    """Normalised RAS volume, its grid, the fitted gland parameters and the distance to it."""
    from scipy import ndimage as ndi

    ras, aff = _ras(array, affine)
    g = _Grid(ras.shape, aff)
    vox = g.vox
    s = ndi.gaussian_filter(ras, 0.6 / vox)
    n = s / _bias(s)
    line = ndi.gaussian_filter(ndi.grey_closing(n, size=(3, 3, 3)) - n, 0.7 / vox)
    params = _fit_gland(line, g, np.asarray(gland_centre, dtype=np.float64))
    params[0] = _midline(n, g, params)
    return n, g, params, gland_distance(params, g.x, g.y, g.z)


def measure_prostate(array: np.ndarray, affine: np.ndarray | None = None,
                     *, gland_centre: tuple[float, float, float] = (0.0, 2.5, -1.0)
                     ) -> dict[str, Any]:
    """Measure a (1, D, H, W) (or (D, H, W)) T2 volume with its RAS affine (module doc).

    ``gland_centre`` (RAS mm) is where the gland fit starts (the phantom's average).
    Returns the phantom's ground-truth columns (:data:`PROSTATE_COLUMNS`).
    """
    n, g, params, dg = _gland(array, affine, gland_centre)
    return describe_lesion(_lesion_of(_candidates(n, g, params, dg)), params,
                           float((dg < 0).sum() * np.prod(g.vox) / 1000.0))


def describe_lesion(c: Candidate | None, params: np.ndarray, gland_ml: float,
                    margin_sharpness: float = MARGIN_SHARPNESS) -> dict[str, Any]:
    """The ground-truth columns for a chosen candidate (or none) in a fitted gland."""
    gx, _gy, gz, _ax, _ay, az = params
    out: dict[str, Any] = {
        "zone": "none", "side": "none", "level": "none", "diameter_mm": 0.0,
        "t2_hypointensity": 0.0, "margin": "none", "extraprostatic_extension": "no",
        "gland_volume_ml": gland_ml,
        "center_x_mm": float("nan"), "center_y_mm": float("nan"), "center_z_mm": float("nan"),
    }
    if c is None:
        return out
    cx, cy, cz = c.centre
    third = (cz - gz) / az
    out.update({
        "zone": "peripheral" if c.peripheral else "transition",
        "side": "right" if cx > gx else "left",  # RAS: +x is the patient's right
        "level": "base" if third > 1 / 3 else "apex" if third < -1 / 3 else "mid",
        "diameter_mm": c.diameter_mm, "t2_hypointensity": float(np.clip(c.contrast, 0, 1)),
        "margin": "ill_defined" if c.sharpness < margin_sharpness else "circumscribed",
        "extraprostatic_extension": "yes" if c.outside >= EPE_SHARE else "no",
        "center_x_mm": cx, "center_y_mm": cy, "center_z_mm": cz,
    })
    return out
