"""T2-weighted prostate MRI-like PHANTOM volumes (3D, 16-bit) with ground-truth lesions.

Each volume covers a fixed 64 mm cube (1 mm isotropic voxels at the default 64^3) around the
prostate, in RAS+ orientation (array axes (z, y, x) = (inferior->superior, posterior->anterior,
left->right); the NIfTI affine says so). Made in two steps, like the 2D phantoms:

1. :func:`sample_attributes` draws the patient (gland size and shape, transition-zone
   enlargement with BPH nodules, central zone, rectum contents, pelvic floor, coil bias,
   noise) and the finding of the class (zone, side, level, diameter, T2 hypointensity, margin,
   extraprostatic extension);
2. :func:`render_attributes` paints the anatomy as soft-edged layers (T2 signal in arbitrary
   units: fat and peripheral zone bright, transition zone intermediate and nodular, anterior
   fibromuscular stroma, capsule, muscle and sphincters dark, urine brightest), places the
   lesion inside its zone at its side and level, then applies a smooth coil bias field, the
   scanner's blur and Rician noise, and stores unsigned 16-bit values.

Classes (PI-RADS v2.1-like, by lesion presence, size, T2 hypointensity and margin):

- ``no_lesion``: no focal lesion (PI-RADS 1; 2 with a thin band-like peripheral-zone
  hypointensity, a benign mimic that also appears in the other classes);
- ``pirads_3``: a small (5-15 mm), mildly to moderately hypointense, mostly ill-defined lesion;
- ``pirads_4_5``: a larger (7-28 mm), moderately to markedly hypointense, mostly
  circumscribed lesion; PI-RADS 5 when >= 15 mm or with extraprostatic extension.

The volumes are phantoms, not patient data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medsynth.data.demo.common import image_rng, smoothstep
from medsynth.pixel_attributes.common import mask_diameter
from medsynth.vocabulary import PROSTATE_LEVELS

CLASSES = ("no_lesion", "pirads_3", "pirads_4_5")
MODALITY = "MR"
CHANNELS = 1
DTYPE = "uint16"
SPATIAL_DIMS = 3
FOV_MM = 64.0
"""Field of view (mm) on every axis at every size: mm per voxel = 64 / size."""
MAX_SIZE = 192
"""Largest volume side (memory: a few dozen float32 volumes of size^3 are alive at once)."""
PARALLEL_MIN = 12
"""Volumes from which writing uses worker processes by default (each costs ~0.1-0.3 s)."""

# T2 signal of each tissue (arbitrary units; fat ~ 0.85), following the usual T2 FSE look: fat,
# peripheral zone and fluids bright, transition zone intermediate, stroma and muscle dark.
T2 = {
    "fat": 0.85, "pz": 0.80, "tz": 0.48, "cz": 0.40, "afms": 0.22, "capsule": 0.42,
    "urethra": 0.55, "periurethral": 0.30, "muscle": 0.25, "rectal_wall": 0.24,
    "mucosa": 0.45, "gas": 0.03, "gel": 0.90, "urine": 1.15, "bladder_wall": 0.26,
    "sv_fluid": 1.0, "sv_wall": 0.35, "marrow": 0.55, "cortex": 0.06, "disc": 0.25, "nvb": 0.15,
}
RECTUM = ("collapsed", "gas", "gel")


def affine(size: int) -> np.ndarray:
    """RAS+ voxel-to-world affine of a ``size``^3 volume: isotropic, centred on the origin."""
    s = FOV_MM / size
    a = np.diag([s, s, s, 1.0])
    a[:3, 3] = -(size - 1) / 2 * s
    return a


def _coords(size: int) -> np.ndarray:
    """World coordinate (mm) of the voxel centres along any axis."""
    s = FOV_MM / size
    return ((np.arange(size) - (size - 1) / 2) * s).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _basis(n: int, cells: int) -> np.ndarray:
    x = (np.arange(n) + 0.5) / n * cells + 0.5
    nodes = np.arange(cells + 2)
    w = np.exp(-0.5 * ((x[:, None] - nodes[None, :]) / 0.7) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise3(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """A smooth random (n, n, n) field, zero mean and unit std, ``cells`` blobs across.

    A coarse Gaussian grid interpolated separably (three small products; einsum, not BLAS:
    threaded BLAS stalls on a busy machine for these tiny products).
    """
    g = rng.standard_normal((cells + 2,) * 3).astype(np.float32)
    b = _basis(n, cells)
    f = np.einsum("ai,ijk->ajk", b, g, optimize=False)
    f = np.einsum("bj,ajk->abk", b, f, optimize=False)
    f = np.einsum("ck,abk->abc", b, f, optimize=False)
    return (f - f.mean()) / (f.std() + 1e-9)


def inside(d: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``d < 0`` (a signed distance in mm), ramping over ``width`` mm."""
    t = np.clip(d * np.float32(-1.0 / width) + np.float32(0.5), 0, 1)
    return t * t * (3 - 2 * t)


def ellipsoid_distance(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float],
                       axes: Sequence[float], rot: np.ndarray | None = None,
                       warp: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid: (r - 1) / |grad r| (exact on the axes).

    ``rot`` (3x3, columns = the ellipsoid's axes in world coordinates) orients it; ``warp`` is
    added to the normalised radius (a lumpy outline).
    """
    p = [x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])]
    if rot is not None:
        r32 = rot.astype(np.float32)
        p = [p[0] * r32[0, k] + p[1] * r32[1, k] + p[2] * r32[2, k] for k in range(3)]
    q = [pk * np.float32(1 / ak) for pk, ak in zip(p, axes, strict=True)]
    r = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]) + np.float32(1e-6)
    g = [qk * np.float32(1 / ak) for qk, ak in zip(q, axes, strict=True)]
    grad = np.sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]) / r + np.float32(1e-6)
    if warp is not None:
        r = r + warp
    return (r - 1) / grad


def _rotation_to(first: np.ndarray) -> np.ndarray:
    """A rotation whose first column is the unit vector ``first`` (z kept as close as can be)."""
    a = first / np.linalg.norm(first)
    up = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    b = np.cross(up, a)
    b /= np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)], 1)


class _Scene:
    """The volume being painted: voxel-centre coordinates, the image, box-limited painting."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.n = size
        self.vox = FOV_MM / size
        self.edge = max(self.vox, 0.6)  # soft edges: about one voxel (anti-aliasing)
        self.c = _coords(size)
        self.z = self.c[:, None, None]
        self.y = self.c[None, :, None]
        self.x = self.c[None, None, :]
        self.rng = rng
        # Shared texture fields, sliced wherever a tissue needs one.
        self.tex = {k: smooth_noise3(rng, size, k) for k in (3, 7, 12)}
        self.img = np.empty((size,) * 3, np.float32)

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Array slices (z, y, x) of the world box ``lo``..``hi`` (x, y, z mm); None if outside."""
        out = []
        for axis in (2, 1, 0):
            i0 = int(np.searchsorted(self.c, lo[axis]))
            i1 = int(np.searchsorted(self.c, hi[axis], side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return out[0], out[1], out[2]

    def grid(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable world coordinates of a box."""
        return self.x[:, :, sl[2]], self.y[:, sl[1], :], self.z[sl[0], :, :]

    def full(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.x, self.y, self.z

    def paint(self, mask: np.ndarray, value: float | np.ndarray,
              sl: tuple[slice, slice, slice] | None = None) -> None:
        """Alpha-composite ``value`` over the image where ``mask`` (0..1), in place."""
        target = self.img if sl is None else self.img[sl]
        target += mask * (value - target)

    def ellipsoid(self, centre: Sequence[float], axes: Sequence[float],
                  rot: np.ndarray | None = None, margin: float = 3.0
                  ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """(box, signed distance in the box) of an ellipsoid; None when it misses the volume."""
        r = max(axes) + margin
        sl = self.box([c - r for c in centre], [c + r for c in centre])
        if sl is None:
            return None
        x, y, z = self.grid(sl)
        return sl, ellipsoid_distance(x, y, z, centre, axes, rot)


# ---------------------------------------------------------------------------------------------
# sampling


def sample_attributes(cls: str, rng: np.random.Generator) -> dict[str, Any]:
    """Draw the patient and the finding of one volume of class ``cls``.

    Where the lesion sits is drawn here as wishes (zone, side, level); the renderer places it
    in the gland it draws and records where it ended up.
    """
    a: dict[str, Any] = {
        # gland: centre (RAS mm) and half-axes (lateral, antero-posterior, cranio-caudal)
        "gc": (rng.normal(0, 1.0), rng.uniform(1.0, 4.0), rng.uniform(-3.0, 1.0)),
        "ga": (rng.uniform(19.0, 24.5), rng.uniform(12.5, 15.5), rng.uniform(15.0, 19.0)),
        "taper": rng.uniform(0.08, 0.22),  # wider at the base than at the apex
        "tz_frac": float(np.clip(rng.beta(3, 2.5) * 0.5 + 0.4, 0.45, 0.86)),  # BPH
        "n_nodules": int(rng.integers(0, 7)),
        "cz": bool(rng.random() < 0.8),
        "rect_ax": (rng.uniform(13.0, 18.0), rng.uniform(7.0, 10.0)),
        "rect_gap": rng.uniform(0.8, 2.5),
        "rect_lumen": str(rng.choice(RECTUM, p=[0.35, 0.35, 0.30])),
        "bladder_r": rng.uniform(20.0, 32.0),
        "obturator_x": rng.uniform(26.5, 31.5),
        "symphysis_gap": rng.uniform(9.0, 15.0),
        "band": bool(rng.random() < 0.15),  # benign band-like PZ hypointensity (PI-RADS 2)
        "bias": rng.uniform(0.06, 0.2),
        "coil": rng.uniform(0.0, 0.25),
        "noise": rng.uniform(0.015, 0.04),
        "blur": rng.uniform(0.35, 0.6),
        "gain": rng.uniform(700.0, 1000.0),
    }
    a["lesion"] = None
    if cls != "no_lesion":
        grade3 = cls == "pirads_3"
        zone = "peripheral" if rng.random() < 0.7 else "transition"
        if grade3:
            d = float(np.clip(rng.normal(9.0, 2.4), 5.0, 15.0))
            h = rng.uniform(0.2, 0.4) if zone == "peripheral" else rng.uniform(0.18, 0.35)
            margin = "ill_defined" if rng.random() < 0.85 else "circumscribed"
            epe = False
        else:
            d = float(np.clip(rng.normal(15.0, 4.5), 7.0, 28.0))
            h = rng.uniform(0.4, 0.62) if zone == "peripheral" else rng.uniform(0.34, 0.55)
            margin = "circumscribed" if rng.random() < 0.85 else "ill_defined"
            epe = bool(zone == "peripheral" and rng.random() < (0.35 if d >= 15 else 0.1))
        a["lesion"] = {
            "zone": zone, "side": "right" if rng.random() < 0.5 else "left",
            "level": str(rng.choice(PROSTATE_LEVELS, p=[0.25, 0.45, 0.30])),
            "diameter": d, "h": float(h), "margin": margin, "epe": epe,
            "shape": (rng.uniform(0.55, 0.85), rng.uniform(0.6, 0.9)),
        }
    return a


# ---------------------------------------------------------------------------------------------
# rendering


def _gland_distance(sc: _Scene, a: dict[str, Any]) -> np.ndarray:
    """Signed distance (mm) to the capsule: a chestnut (flat back, narrower front, broad base)."""
    x, y, z = sc.full()
    (gx, gy, gz), (ax, ay, az) = a["gc"], a["ga"]
    w = np.clip((z - gz) / az, -1.5, 1.5)
    v = (y - gy) / ay
    lat = ax * (1 + a["taper"] * w) * (1 - 0.18 * np.clip(v, 0, None))  # narrower in front
    depth = np.where(v < 0, ay / 1.3, ay).astype(np.float32)  # a flat back facing the rectum
    q = np.sqrt(((x - gx) / lat) ** 2 + ((y - gy) / depth) ** 2 + w ** 2) + 1e-6
    scale = np.minimum(np.minimum(lat, depth), az)
    return ((q + 0.03 * sc.tex[3] + 0.01 * sc.tex[12] - 1) * scale).astype(np.float32)


def _pelvis(sc: _Scene, a: dict[str, Any], y_post: float) -> None:
    """Side walls (obturator internus, bone), pelvic floor (levator ani) and the pubic bones."""
    x, y, z = sc.full()
    (gx, gy, gz), (ax, ay, az) = a["gc"], a["ga"]
    e = sc.edge
    d_obt = a["obturator_x"] + 0.004 * (y - gy) ** 2 - np.abs(x - gx)
    sc.paint(inside(d_obt, e), T2["muscle"] + 0.05)
    sc.paint(inside(d_obt + 6.0, e), T2["cortex"])
    sc.paint(inside(d_obt + 7.5, e), T2["marrow"] * (1 + 0.1 * sc.tex[12]))
    # levator ani: a thin band each side of the gland and the rectum, running back and out;
    # below the apex the puborectal sling wraps behind the anorectum
    rx, (rax, ray) = a["rect_x"], a["rect_ax"]
    ry = y_post - a["rect_gap"] - 0.75 * ray
    lift = np.clip(z - (gz - az), 0, None)
    off = max(ax, rax) + 3.0 + 0.4 * lift + 0.25 * np.clip(gy - y, 0, None)
    side = inside(np.abs(np.abs(x - gx) - off) - 1.2, e) * inside(y - (gy + 0.3 * ay), 4.0)
    low = gz - az - 4.0
    q = np.sqrt(((x - rx) / (rax + 4.0)) ** 2 + ((y - ry) / (ray + 4.0)) ** 2)
    sling = inside(np.abs(q - 1) * (ray + 4.0) - 1.2, e) * inside(z - low, 4.0) \
        * inside(y - ry, 4.0)
    band = np.maximum(side * inside(z - (gz + 0.3 * az), 5.0), sling)
    sc.paint(band, T2["muscle"] * (1 + 0.1 * sc.tex[12]))
    # pubic bones: mostly out of the field; their back surface is a hint at the front edge
    centre = (gx, gy + ay + a["symphysis_gap"] + 10.0, gz - 0.3 * az)
    got = sc.ellipsoid(centre, (34.0, 10.0, 20.0))
    if got is not None:
        sl, d = got
        xs = sc.grid(sl)[0]
        sc.paint(inside(d, e), T2["cortex"], sl)
        sc.paint(inside(d + 1.4, e), T2["marrow"] * (1 + 0.1 * sc.tex[12][sl]), sl)
        sc.paint(inside(d + 0.5, e) * inside(np.abs(xs - gx) - 1.3, e), T2["disc"], sl)


def _rectum(sc: _Scene, a: dict[str, Any], y_post: float) -> None:
    """Rectum (anal canal below the apex): dark muscular wall, mucosa, and its contents."""
    x, y, z = sc.full()
    gz, az = a["gc"][2], a["ga"][2]
    e = sc.edge
    rx, (rax, ray) = a["rect_x"], a["rect_ax"]
    t = smoothstep(gz - az - 12, gz - az + 3, z).astype(np.float32)  # 0 anal canal, 1 rectum
    rad_x = 7.0 + (rax - 7.0) * t
    rad_y = 6.0 + (ray - 6.0) * t
    ry = y_post - a["rect_gap"] - 0.75 * ray - 0.06 * np.clip(z - gz, 0, None)  # curving back
    # flattened in front, where the gland presses on it; lumpy (folds, contents)
    ry_eff = np.where(y > ry, rad_y * 0.75, rad_y)
    rq = np.sqrt(((x - rx) / rad_x) ** 2 + ((y - ry) / ry_eff) ** 2) + 1e-6
    rd = (rq + 0.06 * sc.tex[7] - 1) * np.minimum(rad_x, ry_eff)
    sc.paint(inside(rd, e), T2["rectal_wall"] * (1 + 0.06 * sc.tex[12]))
    sc.paint(inside(rd + 2.6, e), T2["mucosa"] * (1 + 0.12 * sc.tex[12]))
    kind = a["rect_lumen"]
    if kind == "collapsed":  # a slit of mucus between folded mucosa
        slit = np.sqrt(((x - rx) / (0.7 * rad_x)) ** 2 + ((y - ry) / 1.4) ** 2) - 1
        sc.paint(inside(slit * 1.4, e) * t, 0.6 * (1 + 0.15 * sc.tex[7]))
    else:
        lumen = inside(rd + 3.8, e) * t
        sc.paint(lumen, T2["gas"] if kind == "gas" else T2["gel"] * (1 + 0.04 * sc.tex[7]))


def _bladder_and_vesicles(sc: _Scene, a: dict[str, Any], y_post: float) -> np.ndarray:
    """The bladder base (urine above the gland) and the seminal vesicles behind it; returns the
    bladder's soft mask (nothing else is drawn inside it)."""
    (gx, gy, gz), (_, ay, az) = a["gc"], a["ga"]
    rng, e = sc.rng, sc.edge
    br = a["bladder_r"]
    x, y, z = sc.full()
    bd = ellipsoid_distance(x, y, z, (gx, gy + 0.25 * ay, gz + az + 0.75 * br), (br * 1.25, br, br))
    sc.paint(inside(bd, e), T2["bladder_wall"])
    sc.paint(inside(bd + 2.5, e), T2["urine"])
    for s in (-1, 1):
        for k in range(9):
            f = k / 8
            c = (gx + s * (4 + 20 * f + rng.normal(0, 0.8)),
                 y_post + 3.0 - 2.0 * f + rng.normal(0, 1.0),
                 gz + 0.7 * az + 2 + 9 * f + rng.normal(0, 1.0))
            axes = (rng.uniform(3.0, 4.5), rng.uniform(2.2, 3.2), rng.uniform(2.5, 3.5))
            got = sc.ellipsoid(c, axes, margin=2.0)
            if got is None:
                continue
            sl, d = got
            sc.paint(inside(d, e), T2["sv_wall"], sl)
            sc.paint(inside(d + 0.9, e), T2["sv_fluid"], sl)
    return inside(bd, e)


def render_attributes(cls: str, a: dict[str, Any], rng: np.random.Generator,
                      size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw the volume of ``a``; returns (1, size, size, size) uint16 and the label row."""
    sc = _Scene(size, rng)
    x, y, z = sc.full()
    e, n = sc.edge, sc.n
    (gx, gy, gz), (ax, ay, az) = a["gc"], a["ga"]
    a = {**a, "rect_x": gx + rng.normal(0, 1.5)}
    y_post = gy - ay / 1.3  # the gland's posterior surface at the midline
    sc.img[:] = T2["fat"] * (1 + 0.05 * sc.tex[7] + 0.02 * sc.tex[12])
    for _ in range(6):  # thin fibrous septa and small vessels through the fat
        normal = rng.standard_normal(3)
        normal /= np.linalg.norm(normal)
        offset = rng.uniform(-25, 25)
        d = np.abs(x * normal[0] + y * normal[1] + z * normal[2] - offset + 2.0 * sc.tex[3])
        sc.paint(inside(d - rng.uniform(0.3, 0.6), e) * rng.uniform(0.15, 0.35), 0.45)
    _pelvis(sc, a, y_post)
    _rectum(sc, a, y_post)
    bladder = _bladder_and_vesicles(sc, a, y_post)

    # --- the gland ------------------------------------------------------------------------------
    dg = _gland_distance(sc, a)
    w = (z - gz) / az
    sect = np.sqrt(np.clip(1 - w ** 2, 0, 1))  # the cross-section's scale at this level
    for s in (-1, 1):  # neurovascular bundles: flow voids at 5 and 7 o'clock by the capsule
        for _ in range(3):
            ox, oy = rng.normal(0, 1.0), rng.normal(0, 1.0)
            tube = np.sqrt((x - (gx + s * (0.62 * ax * sect + 2.5 + ox))) ** 2
                           + (y - (y_post + 0.28 * ay * (1 - sect) + 1.5 + oy)) ** 2)
            sc.paint(inside(tube - rng.uniform(0.7, 1.2), e) * inside(np.abs(w) - 1.05, 3.0)
                     * (1 - bladder), T2["nvb"])
    sc.paint(inside(dg - 0.5, e), T2["capsule"])
    gland = inside(dg, e)
    sc.paint(gland, T2["pz"] * (1 + 0.035 * sc.tex[12]))
    # transition zone: two lobes beside the urethra, anterior and cranial, nodular (BPH)
    tzf = a["tz_frac"]
    tz_c = (gx, gy + 0.18 * ay, gz + 0.2 * az)
    tz_ax = (0.55 * tzf * ax, 0.82 * tzf * ay, 0.8 * tzf * az)
    dtz = np.minimum(
        ellipsoid_distance(x, y, z, (tz_c[0] - 0.35 * tz_ax[0], *tz_c[1:]), tz_ax),
        ellipsoid_distance(x, y, z, (tz_c[0] + 0.35 * tz_ax[0], *tz_c[1:]), tz_ax))
    dtz = np.maximum(dtz, dg + 2.0)
    tz = inside(dtz, e)
    sc.paint(tz, T2["tz"] * (1 + 0.08 * sc.tex[7] + 0.05 * sc.tex[12]))
    for _ in range(a["n_nodules"]):
        c = (tz_c[0] + rng.uniform(-0.8, 0.8) * 1.2 * tz_ax[0],
             tz_c[1] + rng.uniform(-0.5, 0.5) * tz_ax[1],
             tz_c[2] + rng.uniform(-0.5, 0.5) * tz_ax[2])
        r = rng.uniform(2.5, 5.5) * (0.6 + tzf)
        got = sc.ellipsoid(c, (r, r * rng.uniform(0.8, 1.1), r))
        if got is None:
            continue
        sl, d = got
        d = np.maximum(d, dtz[sl] + 0.5)
        sc.paint(inside(d, e) * 0.7, 0.34, sl)  # the nodule's thin pseudocapsule
        sc.paint(inside(d + 0.6, e), T2["tz"] * rng.uniform(0.95, 1.5), sl)
    v = (y - gy) / ay
    if a["cz"]:  # central zone: a symmetric low-signal cone at the posterior base
        rc = 0.35 * ax * np.clip((w - 0.25) / 0.75, 0, 1)
        dcz = np.maximum(np.sqrt((x - gx) ** 2 + ((y - (gy - 0.2 * ay)) * 1.6) ** 2) - rc,
                         dg + 1.5)
        sc.paint(inside(dcz, 2.0) * (1 - tz), T2["cz"])
    # anterior fibromuscular stroma in front of the transition zone
    lat = np.maximum(ax * (1 + a["taper"] * w), 1.0)
    afms = inside((0.58 + 0.45 * ((x - gx) / lat) ** 2 - v) * ay, 1.5) * gland
    sc.paint(afms, T2["afms"])
    # urethra: from the bladder neck (base) to the apex, bending forward; lumen in a dark ring
    uy = gy + ay * (0.12 - 0.12 * np.clip(w, -1.3, 1.0))
    ur = np.sqrt((x - gx) ** 2 + (y - uy) ** 2)
    below = inside(w + 0.9, 0.3)  # the membranous urethra under the apex: a thicker sphincter
    where = np.maximum(gland, below)
    sc.paint(inside(ur - (2.6 + 2.0 * below), e) * where, T2["periurethral"])
    sc.paint(inside(ur - 1.0, e) * where, T2["urethra"])
    pz = gland * (1 - inside(dtz - 0.5, e)) * (1 - afms)
    if a["band"]:  # a benign band-like peripheral-zone hypointensity (any class)
        ang = rng.uniform(-0.9, 0.9) + (math.pi / 2 if rng.random() < 0.5 else -math.pi / 2)
        direction = np.array([math.cos(ang + math.pi), math.sin(ang + math.pi), 0.0])
        bc = (gx + 0.7 * ax * direction[0], gy + 0.55 * ay * direction[1],
              gz + rng.uniform(-0.4, 0.3) * az)
        got = sc.ellipsoid(bc, (rng.uniform(5, 8), 1.1, rng.uniform(4, 7)),
                           _rotation_to(direction))
        if got is not None:
            sl, d = got
            sc.paint(inside(d, 1.0) * pz[sl], T2["pz"] * rng.uniform(0.68, 0.78), sl)

    # --- the lesion ------------------------------------------------------------------------------
    row: dict[str, Any] = {"pirads": 2 if a["band"] else 1, "zone": "none",
                           "side": "none", "level": "none", "diameter_mm": 0.0,
                           "t2_hypointensity": 0.0, "margin": "none",
                           "extraprostatic_extension": "no", "lesion_volume_ml": 0.0,
                           "center_x_mm": float("nan"), "center_y_mm": float("nan"),
                           "center_z_mm": float("nan")}
    if a["lesion"] is not None:
        row.update(_lesion(sc, a["lesion"], a, dg, dtz, tz, pz))
        big = row["diameter_mm"] >= 15 or row["extraprostatic_extension"] == "yes"
        row["pirads"] = 3 if cls == "pirads_3" else 5 if big else 4

    # --- coil bias, blur, Rician noise, 16 bits --------------------------------------------------
    row["gland_volume_ml"] = float((dg < 0).sum()) * sc.vox ** 3 / 1000
    bias = a["bias"] * smooth_noise3(rng, n, 2) - a["coil"] * (y - y_post) / 40.0
    sig = sc.img * np.exp(bias)
    sig = ndi.gaussian_filter(sig, a["blur"] / sc.vox)  # the scanner's point spread (voxels)
    sigma = np.float32(a["noise"] * T2["fat"])
    re = sig + sigma * rng.standard_normal(sig.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(sig.shape, dtype=np.float32)
    mag = np.sqrt(re * re + im * im) * np.float32(a["gain"])
    array = np.clip(np.rint(mag), 0, 65535).astype(np.uint16)[None]
    row["report"] = report_text(row, a, rng)
    return array, row


def _lesion(sc: _Scene, les: dict[str, Any], a: dict[str, Any], dg: np.ndarray, dtz: np.ndarray,
            tz: np.ndarray, pz: np.ndarray) -> dict[str, Any]:
    """Place and paint the lesion of ``les``; returns its ground-truth columns."""
    x, y, z = sc.full()
    rng, e, vox = sc.rng, sc.edge, sc.vox
    (gx, gy, gz), (ax, ay, az) = a["gc"], a["ga"]
    r1 = les["diameter"] / 2
    radial_f, cc_f = les["shape"]
    zone = les["zone"]
    # Candidate centres: in the zone, on the side, at the level, deep enough to stay mostly
    # inside the gland (or reaching the capsule for extraprostatic extension).
    zmask = (pz > 0.5) if zone == "peripheral" else (tz > 0.5)
    if les["epe"]:
        depth_ok = (dg < -0.3 * r1 * radial_f) & (dg > -r1 * radial_f)
    elif zone == "peripheral":
        depth_ok = dg < -min(0.7 * r1 * radial_f + 0.5, 4.0)
    else:
        depth_ok = dtz < -min(0.6 * r1 * radial_f, 3.0)
    side_ok = (x - gx > 4.0) if les["side"] == "right" else (x - gx < -4.0)
    third = (z - gz) / az
    levels = {"base": third > 1 / 3, "mid": np.abs(third) <= 1 / 3, "apex": third < -1 / 3}
    cand = zmask & depth_ok & side_ok & levels[les["level"]]
    for relaxed in (zmask & depth_ok & side_ok, zmask & side_ok, zmask):
        if cand.sum() >= 3:
            break
        cand = relaxed
    idx = np.flatnonzero(cand)
    kz, jy, ix = np.unravel_index(int(idx[rng.integers(len(idx))]), cand.shape)
    jitter = rng.uniform(-0.5, 0.5, 3) * vox
    cx, cy, cz = (float(sc.c[ix] + jitter[0]), float(sc.c[jy] + jitter[1]),
                  float(sc.c[kz] + jitter[2]))
    # Lenticular, flattened along the gland's radius there (following the capsule), tilted.
    ang = math.atan2((cy - gy) / ay, (cx - gx) / ax)
    radial = np.array([math.cos(ang), math.sin(ang), rng.normal(0, 0.25)])
    rot = _rotation_to(radial)
    axes = (r1 * radial_f, r1, r1 * cc_f)
    ill = les["margin"] == "ill_defined"
    # ill-defined: a lumpy outline fading out over several millimetres ("erased charcoal");
    # circumscribed: a sharp, smooth edge
    fade = max(4.0, 0.4 * r1) if ill else e
    got = sc.ellipsoid((cx, cy, cz), axes, rot, margin=4.0 + fade / 2)
    assert got is not None  # its centre is a voxel of the volume
    sl, d = got
    if ill:
        d = d + np.float32(0.15 * r1) * sc.tex[12][sl]
    allowed = inside(dg[sl] - (2.5 if les["epe"] else -0.4), e)
    m = inside(d, fade) * allowed
    base = T2["pz"] if zone == "peripheral" else T2["tz"]
    value = base * (1 - les["h"]) * (1 + (0.15 if ill else 0.03) * sc.tex[12][sl])
    sc.paint(m, value, sl)
    hard = m > 0.5
    xs, ys, zs = (np.broadcast_to(v, m.shape) for v in sc.grid(sl))
    third_c = (cz - gz) / az
    epe = bool(les["epe"] and (hard & (dg[sl] > 0.5)).any())
    return {"zone": zone, "side": "right" if cx > gx else "left",
            "level": "base" if third_c > 1 / 3 else "apex" if third_c < -1 / 3 else "mid",
            "diameter_mm": mask_diameter(hard, (xs, ys, zs), vox), "t2_hypointensity": float(les["h"]),
            "margin": les["margin"], "extraprostatic_extension": "yes" if epe else "no",
            "lesion_volume_ml": float(hard.sum()) * vox ** 3 / 1000,
            "center_x_mm": cx, "center_y_mm": cy, "center_z_mm": cz}


_SIGNAL_WORDS = ((0.3, "mildly"), (0.45, "moderately"), (9.0, "markedly"))


def report_text(row: dict[str, Any], a: dict[str, Any], rng: np.random.Generator) -> str:
    """A short radiology-style report of the volume's ground truth."""
    parts = [f"T2-weighted MRI of the prostate (phantom). Prostate volume {row_gland(row):.0f} ml"]
    if a["tz_frac"] > 0.68:
        parts[0] += " with transition zone enlargement"
    parts[0] += "."
    if row["zone"] == "none":
        if row["pirads"] == 2:
            parts.append("A thin band-like area of low T2 signal in the peripheral zone, "
                         "without a focal lesion.")
        else:
            parts.append(str(rng.choice([
                "Homogeneous high T2 signal of the peripheral zone; no focal lesion.",
                "No focal lesion in the peripheral or transition zone."])))
        parts.append(f"PI-RADS {row['pirads']}.")
        return " ".join(parts)
    word = next(wd for lim, wd in _SIGNAL_WORDS if row["t2_hypointensity"] < lim)
    margin = "circumscribed" if row["margin"] == "circumscribed" else "ill-defined"
    level = {"base": "base", "mid": "mid-gland", "apex": "apex"}[row["level"]]
    epe = (", with extraprostatic extension" if row["extraprostatic_extension"] == "yes"
           else ", without extraprostatic extension" if row["pirads"] >= 4 else "")
    parts.append(f"A {row['diameter_mm']:.0f} mm {margin}, {word} T2-hypointense lesion in the "
                 f"{row['side']} {row['zone']} zone at the {level}{epe}.")
    parts.append(f"PI-RADS {row['pirads']}.")
    return " ".join(parts)


def row_gland(row: dict[str, Any]) -> float:
    return float(row.get("gland_volume_ml", 0.0))


def render(cls: str, index: int, size: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Volume ``index`` of class ``cls``: (1, size, size, size) uint16 and its attributes."""
    rng = image_rng(seed, CLASSES.index(cls), index)
    attrs = sample_attributes(cls, rng)
    return render_attributes(cls, attrs, rng, size)
