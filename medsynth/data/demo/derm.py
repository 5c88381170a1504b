"""Dermoscopy-like PHANTOM images (RGB) with ground truth from the ABCD rule of dermoscopy.

Each image is made in two steps (the torchio pattern: sample, record, then apply):

1. :func:`sample_attributes` draws the ground truth from class-conditional distributions that
   overlap on purpose (a melanoma can be small, symmetric and brown; a nevus can have three
   colours): diameter, asymmetry (0-2 axes), border irregularity, colours, structures, skin
   tone, hairs, position.
2. :func:`render_attributes` draws them at 2x supersampling over a fixed 20 mm field of view:
   a lesion outline from Fourier harmonics (even harmonics keep both mirror axes, ``cos 3θ``
   breaks one, ``sin 3θ`` the other; high harmonics and notches make the border ragged), colour
   regions that cover exact shares of the lesion, pigment network, dots/globules, streaks,
   blue-white veil, skin texture, hairs, vignetting, blur and noise.

The images are phantoms, not patient data.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medsynth.data.demo.common import (
    downsample,
    image_rng,
    smooth_noise,
    smoothstep,
    stamp_polyline,
)
from medsynth.vocabulary import DERM_COLOR_RGB, DERM_COLORS, DERM_SKIN_RGB, DERM_STRUCTURES

CLASSES = ("melanoma", "nevus", "seborrheic_keratosis")
MODALITY = "XC"
CHANNELS = 3
DTYPE = "uint8"
FOV_MM = 20.0
"""Field of view (mm) at every image size: mm per pixel = 20 / size."""
SUPERSAMPLE = 2
COLOR_VOCAB = DERM_COLORS
STRUCTURE_VOCAB = DERM_STRUCTURES
COLOR_RGB = DERM_COLOR_RGB
"""Typical dermoscopic appearance of each vocabulary colour (sRGB; :mod:`medsynth.vocabulary`)."""
SKIN_RGB = DERM_SKIN_RGB
"""Fitzpatrick-like skin tones under dermoscope light (:mod:`medsynth.vocabulary`)."""
SKIN_TONE_P = (0.18, 0.28, 0.26, 0.15, 0.09, 0.04)


@dataclasses.dataclass(frozen=True)
class ClassPrior:
    """Class-conditional distributions of the ground-truth attributes."""

    diameter: tuple[float, float, float, float]
    """Normal (mean, sd) in mm, clipped to (lo, hi)."""
    asymmetry: tuple[float, float, float]
    """P(0, 1, 2 asymmetric axes)."""
    border: tuple[float, float]
    """Beta(a, b) of border_irregularity."""
    colors: tuple[float, ...]
    """P(present) per colour of COLOR_VOCAB."""
    structures: tuple[float, ...]
    """P(present) per structure of STRUCTURE_VOCAB."""
    edge_mm: tuple[float, float]
    """Uniform range of the width of the lesion's soft edge (sharp in SK, fading in nevi)."""
    fissures: float
    """P(cerebriform fissures and ridges), the 'brain-like' look of seborrheic keratosis."""


PRIORS: dict[str, ClassPrior] = {
    "melanoma": ClassPrior(
        diameter=(9.0, 2.6, 3.0, 16.0), asymmetry=(0.12, 0.35, 0.53), border=(3.6, 2.2),
        colors=(0.65, 0.85, 0.55, 0.50, 0.35, 0.30), structures=(0.45, 0.60, 0.45, 0.40),
        edge_mm=(0.08, 0.35), fissures=0.03),
    "nevus": ClassPrior(
        diameter=(5.2, 1.7, 2.5, 12.0), asymmetry=(0.65, 0.28, 0.07), border=(1.8, 4.6),
        colors=(0.90, 0.55, 0.06, 0.05, 0.05, 0.03), structures=(0.75, 0.35, 0.08, 0.03),
        edge_mm=(0.20, 0.60), fissures=0.03),
    "seborrheic_keratosis": ClassPrior(
        diameter=(7.4, 2.4, 3.0, 15.0), asymmetry=(0.35, 0.40, 0.25), border=(2.6, 3.0),
        colors=(0.75, 0.70, 0.22, 0.10, 0.10, 0.50), structures=(0.08, 0.35, 0.04, 0.05),
        edge_mm=(0.03, 0.15), fissures=0.75),
}


def sample_attributes(cls: str, rng: np.random.Generator,
                      tone_p: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Draw the ground truth of one lesion of class ``cls`` (lists, not yet joined strings);
    ``tone_p``: another site's skin-tone mix (same draws, so the rest of the lesion is the
    same)."""
    p = PRIORS[cls]
    mu, sd, lo, hi = p.diameter
    diameter = float(np.clip(rng.normal(mu, sd), lo, hi))
    asymmetry = int(rng.choice(3, p=p.asymmetry))
    border = float(np.clip(rng.beta(*p.border), 0.0, 1.0))
    colors = {c for c, q in zip(COLOR_VOCAB, p.colors, strict=True) if rng.random() < q}
    structures = {s for s, q in zip(STRUCTURE_VOCAB, p.structures, strict=True) if rng.random() < q}
    if "blue_white_veil" in structures:  # the veil is blue-grey under a white haze by definition
        colors |= {"blue_grey", "white"}
    if not colors & {"light_brown", "dark_brown"}:  # pigmented lesions keep some brown
        colors.add("light_brown" if rng.random() < 0.6 else "dark_brown")
    tone = int(rng.choice(6, p=tone_p or SKIN_TONE_P)) + 1
    hair = 0 if rng.random() < 0.45 else int(min(12, 1 + rng.geometric(0.3)))
    # Keep the lesion inside the field of view.
    room = max(0.0, FOV_MM / 2 - diameter / 2 - 0.6)
    cx, cy = (float(np.clip(rng.normal(0, 1.3), -room, room)) for _ in range(2))
    return {
        "diameter_mm": diameter, "asymmetry": asymmetry, "border_irregularity": border,
        "colors": [c for c in COLOR_VOCAB if c in colors],
        "structures": [s for s in STRUCTURE_VOCAB if s in structures],
        "skin_tone": tone, "hair": hair, "center_mm": (cx, cy),
    }


# ---------------------------------------------------------------------------------------------
# the lesion outline


def _outline(rng: np.random.Generator, asymmetry: int, border: float,
             n: int = 720) -> tuple[np.ndarray, np.ndarray]:
    """Relative radius r(θ) (unscaled) of the outline, sampled at ``n`` angles in the lesion frame.

    The ellipse's long axis is x. Only cos(2kθ) terms keep both mirror axes (x and y); cos(3θ)
    and cos(5θ) are symmetric about x but not y; sin(3θ) and sin(5θ) about y but not x.
    """
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    e = rng.uniform(0.62, 0.92)
    r = 1.0 / np.sqrt(np.cos(th) ** 2 + (np.sin(th) / e) ** 2)
    mod = 1.0 + rng.uniform(-0.05, 0.05) * np.cos(4 * th)
    if asymmetry >= 1:
        a = rng.uniform(0.12, 0.22) * rng.choice([-1, 1])
        mod += a * np.cos(3 * th) + 0.35 * a * np.cos(5 * th) * rng.uniform(-1, 1)
    if asymmetry == 2:
        b = rng.uniform(0.12, 0.22) * rng.choice([-1, 1])
        mod += b * np.sin(3 * th) + 0.35 * b * np.sin(5 * th) * rng.uniform(-1, 1)
    # Border irregularity: high harmonics with a 1/k^0.7 spectrum, plus notches when ragged.
    # A steep 1/k^1.6 spectrum gives lobes and wiggles, not spikes (slope k * a stays small).
    ks = np.arange(4, 26)
    amp = (0.006 + 0.075 * border ** 1.3) * (ks / 4.0) ** -1.6
    ca, sa = rng.standard_normal((2, len(ks))) * amp
    mod += ca @ np.cos(np.outer(ks, th)) + sa @ np.sin(np.outer(ks, th))
    for _ in range(int(rng.poisson(3 * border ** 2))):
        c, w = rng.uniform(0, 2 * np.pi), rng.uniform(0.08, 0.22)
        dist = np.angle(np.exp(1j * (th - c)))
        mod -= rng.uniform(0.08, 0.2) * border * np.exp(-0.5 * (dist / w) ** 2)
    return th, r * np.clip(mod, 0.35, None)


def _feret(th: np.ndarray, r: np.ndarray) -> tuple[float, float, float]:
    """Largest Feret diameter and the area centroid (x, y) of a polar outline."""
    x, y = r * np.cos(th), r * np.sin(th)
    sub = slice(None, None, 2)
    px, py = x[sub], y[sub]
    feret = float(np.sqrt(((px[:, None] - px[None]) ** 2 + (py[:, None] - py[None]) ** 2).max()))
    # Polygon area centroid (shoelace).
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    return feret, float(((x + x1) * cross).sum() / (6 * area)), float(((y + y1) * cross).sum() / (6 * area))


# ---------------------------------------------------------------------------------------------
# rendering


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], sd: float = 7.0) -> np.ndarray:
    # Mostly brightness, a little hue: per-channel noise alone turns skin green or yellow.
    c = np.asarray(rgb, float) * rng.normal(1.0, sd / 160) + rng.normal(0, sd / 3, 3)
    return np.clip(c, 0, 255) / 255.0


def _cell_edges(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, period: float,
                jitter: float) -> np.ndarray:
    """Distance to the nearest Voronoi cell wall (Worley F2 - F1) of a jittered grid of seeds.

    The walls form an irregular honeycomb: the pigment network's lines around lighter holes.
    """
    gi, gj = np.floor(u / period), np.floor(v / period)
    lo_i, lo_j = int(gi.min()) - 1, int(gj.min()) - 1
    shape = (int(gi.max()) - lo_i + 2, int(gj.max()) - lo_j + 2)
    off = 0.5 + jitter * (rng.random((2, *shape)) - 0.5)  # seed position inside each cell
    f1 = np.full(u.shape, np.inf)
    f2 = np.full(u.shape, np.inf)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ci, cj = (gi + di).astype(int) - lo_i, (gj + dj).astype(int) - lo_j
            sx = (gi + di + off[0, ci, cj]) * period
            sy = (gj + dj + off[1, ci, cj]) * period
            d = np.hypot(u - sx, v - sy)
            f2 = np.where(d < f1, f1, np.minimum(f2, d))
            f1 = np.minimum(f1, d)
    return f2 - f1


def _disc_stamp(alpha_acc: np.ndarray, xx: np.ndarray, yy: np.ndarray,
                x: float, y: float, rad: float, soft: float) -> None:
    """Max-accumulate a soft disc into ``alpha_acc`` (only inside its bounding box)."""
    step = xx[0, 1] - xx[0, 0]
    n = xx.shape[1]
    x0 = xx[0, 0]
    j0 = max(0, int((x - rad - soft - x0) / step) - 1)
    j1 = min(n, int((x + rad + soft - x0) / step) + 2)
    i0 = max(0, int((y - rad - soft - x0) / step) - 1)
    i1 = min(n, int((y + rad + soft - x0) / step) + 2)
    if j1 <= j0 or i1 <= i0:
        return
    d = np.hypot(xx[i0:i1, j0:j1] - x, yy[i0:i1, j0:j1] - y)
    a = smoothstep(rad + soft, rad - soft, d)
    np.maximum(alpha_acc[i0:i1, j0:j1], a, out=alpha_acc[i0:i1, j0:j1])


def render_attributes(cls: str, a: dict[str, Any], rng: np.random.Generator,
                      size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw the lesion of attributes ``a``; returns (3, size, size) uint8 and the label row."""
    p = PRIORS[cls]
    ss = SUPERSAMPLE
    n = size * ss
    px_out = FOV_MM / size  # mm per output pixel
    step = FOV_MM / n
    coords = (np.arange(n) + 0.5) * step - FOV_MM / 2
    xx, yy = np.meshgrid(coords, coords)

    # --- outline, scaled so that its largest Feret diameter is exactly diameter_mm ---------
    th_s, r_s = _outline(rng, a["asymmetry"], a["border_irregularity"])
    feret, gx, gy = _feret(th_s, r_s)
    scale = a["diameter_mm"] / feret
    rot = rng.uniform(0, 2 * np.pi)
    cx, cy = a["center_mm"]
    # Lesion frame: origin at the area centroid, x along the long axis.
    ox = cx - scale * (gx * math.cos(rot) - gy * math.sin(rot))
    oy = cy - scale * (gx * math.sin(rot) + gy * math.cos(rot))
    dx, dy = xx - ox, yy - oy
    u = dx * math.cos(rot) + dy * math.sin(rot)
    v = -dx * math.sin(rot) + dy * math.cos(rot)
    rho = np.hypot(u, v)
    theta = np.mod(np.arctan2(v, u), 2 * np.pi)
    r_mm = np.interp(theta, th_s, r_s * scale, period=2 * np.pi)
    q = rho / r_mm  # < 1 inside the lesion
    q = q * (1 + 0.03 * a["border_irregularity"] * smooth_noise(rng, n, 14))
    rmean = a["diameter_mm"] / 2
    # The edge fades more on some sides than on others.
    edge = rng.uniform(*p.edge_mm) / rmean * np.exp(0.5 * smooth_noise(rng, n, 4))
    alpha = smoothstep(1 + edge, 1 - edge, q)
    # The direction in which the dark colours gather (eccentric when asymmetric).
    if a["asymmetry"] == 0:
        ecc_dir, ecc = 0.0, 0.0
    else:
        ecc_dir = rng.choice([0.0, np.pi]) if a["asymmetry"] == 1 else rng.uniform(0, 2 * np.pi)
        ecc = rng.uniform(0.5, 1.2)
    eccf = (np.cos(ecc_dir) * u + np.sin(ecc_dir) * v) / rmean

    # --- colour regions covering exact shares of the lesion -------------------------------
    colors = list(a["colors"])
    base = next(c for c in ("light_brown", "dark_brown", *COLOR_VOCAB) if c in colors)
    inside = q < 1.06
    n_in = int(inside.sum())
    label = np.full((n, n), -1, int)
    share = {"dark_brown": (0.25, 0.45), "black": (0.08, 0.18), "blue_grey": (0.14, 0.30),
             "red": (0.10, 0.22), "white": (0.08, 0.18), "light_brown": (0.25, 0.45)}
    veil = "blue_white_veil" in a["structures"]
    for c in ("black", "white", "blue_grey", "red", "dark_brown", "light_brown"):
        if c not in colors or c == base:
            continue
        if c == "white" and cls == "seborrheic_keratosis":
            field = smooth_noise(rng, n, 16)  # milia-like cysts: small scattered white spots
        elif c == "white" and veil:
            field = 1.2 * smooth_noise(rng, n, 5) + 1.5 * ecc * eccf - 0.8 * q
        else:
            bias = {"black": -1.2 * q + 2.0 * ecc * eccf, "dark_brown": -1.5 * q + 1.2 * ecc * eccf,
                    "blue_grey": -0.6 * q + 1.5 * ecc * eccf, "red": 1.0 * q,
                    "white": -1.0 * q, "light_brown": 1.2 * q}[c]
            field = smooth_noise(rng, n, int(rng.integers(3, 7))) + bias
        free = inside & (label < 0)
        k = int(rng.uniform(*share[c]) * n_in)
        if k <= 0 or not free.any():
            continue
        vals = field[free]
        k = min(k, vals.size)
        thr = np.partition(vals, vals.size - k)[vals.size - k]
        label[free & (field >= thr)] = COLOR_VOCAB.index(c)
    label[label < 0] = COLOR_VOCAB.index(base)
    palette = np.stack([_jitter(rng, COLOR_RGB[c]) for c in COLOR_VOCAB])
    # Regression areas are a milky, slightly pink white, not a specular highlight.
    palette[COLOR_VOCAB.index("white")] = 0.85 * palette[COLOR_VOCAB.index("white")] + 0.15 * palette[COLOR_VOCAB.index("red")]
    lesion = np.moveaxis(palette[label], -1, 0)  # (3, n, n)
    # Colour regions blend over about 0.25 mm, with mottling inside (the fine mottling is faint:
    # it sits at the pigment network's scale).
    soft = max(ss, 0.25 / step)
    lesion = ndi.gaussian_filter(lesion, (0, soft, soft))
    lesion *= 1 + 0.07 * smooth_noise(rng, n, 10) + 0.015 * smooth_noise(rng, n, max(12, size // 4))
    if veil and "blue_grey" in colors:
        region = ndi.gaussian_filter((label == COLOR_VOCAB.index("blue_grey")).astype(float), 2 * soft)
        haze = np.clip(region * 1.3, 0, 1) * rng.uniform(0.08, 0.16) * (0.7 + 0.3 * smooth_noise(rng, n, 9))
        lesion = lesion * (1 - haze) + palette[COLOR_VOCAB.index("white")][:, None, None] * haze
    elif "blue_grey" in colors:  # regression peppering: grey granules on the base colour
        # Only the blue-grey region is peppered: between its granules it is half the base colour;
        # the rest of the lesion keeps its colours.
        granules = smooth_noise(rng, n, max(8, size // 3)) > 0.3
        region = ndi.gaussian_filter((label == COLOR_VOCAB.index("blue_grey")).astype(float), soft)
        wash = 0.5 * np.clip(3 * region, 0, 1) * ~granules
        lesion = lesion * (1 - wash) + palette[COLOR_VOCAB.index(base)][:, None, None] * wash

    dark = palette[COLOR_VOCAB.index("dark_brown")][:, None, None]
    blackc = palette[COLOR_VOCAB.index("black")][:, None, None]
    # --- structures ---------------------------------------------------------------------
    net_gain: np.ndarray | None = None
    net_period = 0.0
    if "pigment_network" in a["structures"]:
        # A honeycomb of lighter holes (less pigment) in a mesh of the lesion's own brown (the
        # Worley cell walls), at the finest mesh the image resolves: a period of 0.45 mm or
        # 4.5 px, whichever is larger. Typical in nevi (thin regular lines, fading towards the
        # periphery), atypical in melanoma (thicker lines of varying width, in patches that reach
        # the edge). Only over the brown areas: veil, regression and black blotches have none.
        period = max(0.45, 4.5 * px_out) * rng.uniform(0.9, 1.3)
        atyp = cls == "melanoma"
        warp = (0.5 if atyp else 0.3) * period
        uu = u + warp * smooth_noise(rng, n, 8)
        vv = v + warp * smooth_noise(rng, n, 8)
        edges = _cell_edges(rng, uu, vv, period, 1.0 if atyp else 0.85)
        # F2 - F1 is about twice the distance to the wall: a line is about ``thick`` wide.
        width = period * (rng.uniform(0.28, 0.40) if atyp else rng.uniform(0.22, 0.30))
        thick = width * (1 + (0.35 if atyp else 0.15) * smooth_noise(rng, n, 6))
        line = smoothstep(thick + step, np.maximum(thick - step, 0), edges)
        fade = smoothstep(1.05, 0.75, q) if not atyp else (smooth_noise(rng, n, 5) > -0.7) * smoothstep(1.05, 0.8, q)
        fade = fade * np.clip(0.8 + 0.3 * smooth_noise(rng, n, 7), 0, 1)
        brown = (label == COLOR_VOCAB.index("light_brown")) | (label == COLOR_VOCAB.index("dark_brown"))
        fade = fade * ndi.gaussian_filter(brown.astype(float), soft)
        # Holes up to 45-60 % lighter; applied after the dots (globules replace the mesh).
        net_gain = rng.uniform(0.45, 0.6) * fade * (1 - ndi.gaussian_filter(line, 0.35 * ss))
        net_period = period
    fiss = rng.random() < p.fissures
    if fiss:  # cerebriform: curved fissures (dark) between ridges
        per = max(0.8, 4 * px_out) * rng.uniform(1.0, 1.6)
        w2 = smooth_noise(rng, n, 4) * 1.2 * per
        ridges = np.abs(np.sin(np.pi * (u * 0.8 + 0.4 * v + w2) / per))
        sulc = smoothstep(0.35, 0.0, ridges) * smoothstep(1.0, 0.7, q) * rng.uniform(0.35, 0.6)
        lesion = lesion * (1 - sulc) + dark * 0.7 * sulc
    acc = np.zeros((n, n))
    if "dots_globules" in a["structures"]:
        nd = int(rng.integers(6, 28))
        for _ in range(nd):
            if cls == "melanoma":  # irregular: clustered towards the periphery, in a sector
                t0 = ecc_dir + rng.normal(0, 1.1)
                qq = rng.uniform(0.55, 1.0)
            else:  # regular: spread over the body of the lesion
                t0 = rng.uniform(0, 2 * np.pi)
                qq = math.sqrt(rng.uniform(0, 0.7))
            rr = qq * float(np.interp(t0 % (2 * np.pi), th_s, r_s * scale, period=2 * np.pi))
            x = ox + rr * math.cos(t0 + rot)
            y = oy + rr * math.sin(t0 + rot)
            rad = max(rng.uniform(0.10, 0.32), 0.45 * px_out)
            _disc_stamp(acc, xx, yy, x, y, rad, 0.4 * step + 0.05)
        col = blackc if (cls != "nevus" and rng.random() < 0.6) else dark * 0.85
        acc = ndi.gaussian_filter(acc, 0.5 * ss) * np.clip(0.8 + 0.2 * smooth_noise(rng, n, 12), 0, 1)
        if net_gain is not None:  # no mesh within about half a cell of a globule
            near = ndi.gaussian_filter(acc, 0.5 * net_period / step)
            net_gain = net_gain * (1 - np.clip(8 * near, 0, 1))
        lesion = lesion * (1 - 0.85 * acc) + col * 0.85 * acc
        acc[:] = 0
    if net_gain is not None:
        lit = lesion * (1 + net_gain)
        lesion = lit / np.maximum(lit.max(axis=0), 1.0)  # lighter holes, same hue
    streak_alpha = np.zeros((n, n))
    if "streaks" in a["structures"]:
        ns = int(rng.integers(6, 16))
        if cls == "nevus":  # Reed/Spitz starburst: all around, evenly spaced
            angles = np.linspace(0, 2 * np.pi, ns, endpoint=False) + rng.normal(0, 0.12, ns)
        else:  # focal, irregular
            angles = ecc_dir + rng.uniform(-1.2, 1.2) + rng.normal(0, 0.6, ns)
        width = max(0.09, 0.35 * px_out)
        for t0 in angles:
            rb = float(np.interp(t0 % (2 * np.pi), th_s, r_s * scale, period=2 * np.pi))
            q0, q1 = rng.uniform(0.75, 0.9), rng.uniform(1.12, 1.4)
            bend = rng.normal(0, 0.08)
            pts = np.array([[(rb * qq) * math.cos(t0 + rot + bend * (qq - q0)),
                             (rb * qq) * math.sin(t0 + rot + bend * (qq - q0))]
                            for qq in np.linspace(q0, q1, 4)]) + [ox, oy]
            stamp_polyline(streak_alpha, coords, pts, width, rng.uniform(0.55, 0.85))
        col = blackc if rng.random() < 0.5 else dark * 0.8
        lesion = lesion * (1 - streak_alpha) + col * streak_alpha

    # --- skin, composite, hairs, optics ---------------------------------------------------
    skin_c = _jitter(rng, SKIN_RGB[a["skin_tone"]], 6.0)[:, None, None]
    skin = skin_c * (1 + 0.035 * smooth_noise(rng, n, 6) + 0.012 * smooth_noise(rng, n, 24))
    if rng.random() < 0.5:  # faint skin furrows
        per = rng.uniform(0.6, 1.1)
        w3 = smooth_noise(rng, n, 3) * 0.8
        furrow = smoothstep(0.08, 0.0, np.abs(np.sin(np.pi * (xx * 0.9 + yy * 0.45 + w3) / per)))
        skin = skin * (1 - 0.05 * furrow)
    if rng.random() < 0.3:  # mild erythema around the lesion
        halo = np.exp(-0.5 * (np.maximum(q - 1, 0) / 0.5) ** 2) * (1 - alpha)
        skin = skin * (1 - 0.12 * halo) + np.array([0.82, 0.42, 0.42])[:, None, None] * 0.12 * halo
    translucent = rng.uniform(0.82, 0.95)  # lesions take a little of the skin colour
    lesion = translucent * lesion + (1 - translucent) * skin
    alpha_all = np.maximum(alpha, streak_alpha)
    img = skin * (1 - alpha_all) + lesion * alpha_all
    if a["hair"]:
        hair_alpha = np.zeros((n, n))
        for _ in range(a["hair"]):
            p0 = rng.uniform(-FOV_MM / 2 - 2, FOV_MM / 2 + 2, 2)
            ang = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(6, 28)
            d = np.array([math.cos(ang), math.sin(ang)])
            p2 = p0 + length * d
            p1 = (p0 + p2) / 2 + np.array([-d[1], d[0]]) * rng.normal(0, 0.15) * length
            t = np.linspace(0, 1, 12)[:, None]
            pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
            width = max(rng.uniform(0.035, 0.07), 0.18 * px_out)
            stamp_polyline(hair_alpha, coords, pts, width, rng.uniform(0.75, 0.95))
        hair_c = _jitter(rng, (45, 32, 26), 8.0)[:, None, None]
        img = img * (1 - hair_alpha) + hair_c * hair_alpha
    rr = np.hypot(xx, yy) / (FOV_MM / 2)
    img = img * (1 - rng.uniform(0.12, 0.4) * rr ** 3 / 2.83)  # illumination fall-off
    if rng.random() < 0.25:  # the dermoscope's round field darkens the corners
        rc = rng.uniform(1.1, 1.38)
        img = img * (0.06 + 0.94 * smoothstep(rc + 0.06, rc - 0.06, rr))
    img = img * (1 + rng.normal(0, 0.015, 3))[:, None, None]  # white balance
    blur = rng.uniform(0.25, 0.7) * ss
    img = ndi.gaussian_filter(img, (0, blur, blur))
    out = downsample(img, ss) * 255 + rng.normal(0, rng.uniform(1.0, 3.5), (3, size, size))
    array = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    row = {
        "diameter_mm": a["diameter_mm"],
        "asymmetry": a["asymmetry"],
        "border_irregularity": a["border_irregularity"],
        "border": "irregular" if a["border_irregularity"] >= 0.5 else "regular",
        "colors": ";".join(a["colors"]),
        "n_colors": len(a["colors"]),
        "structures": ";".join(a["structures"]) or "none",
        "skin_tone": a["skin_tone"],
        "hair": a["hair"],
        "center_x": (cx + FOV_MM / 2) / px_out - 0.5,
        "center_y": (cy + FOV_MM / 2) / px_out - 0.5,
    }
    return array, row


def render(cls: str, index: int, size: int, seed: int,
           site: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Image ``index`` of class ``cls``: (3, size, size) uint8 and its labels.csv attributes
    (``site``: a :class:`~medsynth.data.demo.common.Site`'s skin-tone mix; its device is applied
    by the writer)."""
    rng = image_rng(seed, CLASSES.index(cls), index)
    attrs = sample_attributes(cls, rng, getattr(site, "skin_tone_p", None))
    return render_attributes(cls, attrs, rng, size)
