"""Dermoscopy attributes measured from the pixels (ABCD rule, colours, structures).

The pipeline is classical image analysis, each step chosen to survive what dermoscopy photos
(and the demo phantoms) contain: vignetting, hairs, noise and blur.

1. Hairs: a black top-hat on luminance finds thin dark lines; they are painted over with the
   grey closing (the DullRazor idea) before segmentation.
2. Background: a quadratic surface per colour channel fitted to the skin (robust to vignetting).
3. Lesion: the Mahalanobis distance of each pixel's colour ratio to that surface, with the skin's
   own covariance (the skin varies mostly in brightness, a lesion also in chroma); seeded above
   a noise level, then grown from the core to half the contrast of the nearest core pixel (the
   middle of the soft edge, whatever the colour there). The dark corners of a round dermoscope
   field are excluded from the skin.
4. Outline: the sub-pixel 0-level of that edge field; its radius r(θ) about the area centroid
   as Fourier harmonics in the frame of the long axis.
5. A (asymmetry): the third harmonic's sine (cosine) amplitude breaks the mirror symmetry about
   the major (minor) axis; an axis counts above a share of the mean radius.
6. B (border): roughness of the outline, the harmonics 6-12 of r(θ) relative to the mean radius
   (lobes and notches, not the oval and lobed shape), mapped to 0..1 on a log scale.
7. C (colours): illumination-flattened pixels inside the lesion labelled with the nearest
   vocabulary colour in CIE Lab, each colour taken as it looks through a thin layer of the
   skin; a colour is present when it covers a minimum share.
8. D (diameter): the largest Feret diameter of the outline, in mm.
9. Structures: dots/globules (dark blobs: Hessian peaks at the scale of a dot, in mm), streaks
   (thin protrusions at the border), pigment network (a mesh of lighter holes and thin lines:
   Hessian blob and line strength at the mesh's scale, less the line strength at twice that
   scale), blue-white veil (a large blue-grey share).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from medsynth.pixel_attributes.common import feret_diameter, fill_holes
from medsynth.vocabulary import DERM_COLOR_RGB, DERM_COLORS, DERM_SKIN_RGB, DERM_STRUCTURES

COLOR_VOCAB = DERM_COLORS
"""Dermoscopy colour vocabulary, in the canonical order used in ``labels.csv``."""
STRUCTURE_VOCAB = DERM_STRUCTURES
"""Dermoscopy structure vocabulary, in canonical order (``none`` when empty)."""
DERM_COLUMNS = ("diameter_mm", "asymmetry", "border_irregularity", "border", "colors", "n_colors",
                "structures", "skin_tone", "hair", "center_x", "center_y")
"""The keys :func:`measure_derm` returns (the demo ``labels.csv`` attribute columns)."""

COLOR_RGB = DERM_COLOR_RGB
"""Reference sRGB values of the vocabulary colours (typical dermoscopy appearance)."""
SKIN_RGB = DERM_SKIN_RGB
"""Reference skin colours of the Fitzpatrick-like types 1..6 under dermoscope light."""
# Decision thresholds, calibrated on the demo phantoms (benchmarks/describe_agreement.py).
MIN_SHARE: dict[str, float] = {"light_brown": 0.12, "dark_brown": 0.15, "black": 0.03,
                               "blue_grey": 0.035, "red": 0.01, "white": 0.01}
"""A colour is present when at least this share of lesion pixels is nearest to it."""
LESION_OPACITY = 0.9
"""How much of a lesion's colour shows over the skin beneath (the rest is the skin's)."""
ASYMMETRY_THRESHOLDS = (0.065, 0.055)
"""Relative amplitude of the outline's third harmonic that breaks the mirror symmetry about a
principal axis, for the more and the less asymmetric axis to count."""
ROUGH_MID = 0.0059
"""Outline roughness (weighted RMS of the radial harmonics 6-12, relative to the mean radius)
at border_irregularity 0.5."""
ROUGH_SLOPE = 0.3
"""border_irregularity = clip(0.5 + ROUGH_SLOPE * ln(roughness / ROUGH_MID), 0, 1)."""
ROUGH_HARMONICS = (6, 12)
"""Radial harmonics of the roughness: above the oval (2, 4) and lobed (3, 5) shape terms."""
NETWORK_SIGMA_MM = 0.065
"""Scale of the pigment network's lines and holes (mm), at least ``NETWORK_MIN_SIGMA_PX``: a mesh
of about 0.45 mm, or the finest mesh the pixels resolve (about 4.5 px) when that is coarser."""
NETWORK_MIN_SIGMA_PX = 0.7
NETWORK_LEVEL = 0.0045
"""Mesh texture (see :func:`network_texture`) above which a pigment network is reported."""
MIN_DOTS = 2
"""Small dark blobs needed for dots/globules."""
DOT_SIGMA_MM, DOT_RIM_MM, DOT_STRENGTH = 0.16, 0.3, 0.025
"""Dot detection: blob scale (mm), lesion rim left out (mm), least scale-normalised curvature
of the relative luminance (see :func:`count_dots`)."""
DOT_MESH, DOT_RING = 0.8, 0.01
"""A dot's strength must also exceed ``DOT_MESH`` times the lesion's mesh texture (a network's
line crossings are small dark blobs too), and it must be darker, by ``DOT_RING``, than 10 of 12
points around it at three blob scales (a blotch's edge or a line is not)."""
MIN_STREAKS = 3
"""Thin rim protrusions needed for streaks."""
VEIL_BLUE, VEIL_WHITE = 0.17, 0.0
"""Blue-grey and white shares that together make a blue-white veil."""
SKIN_NOISE_FLOOR = 0.01
"""Smallest skin colour-ratio noise (per channel) assumed by the skin distance."""
SEED_DISTANCE = 4.0
"""Skin distance (Mahalanobis) above which a pixel seeds the lesion."""
GROW_DISTANCE = 3.0
"""Smoothed skin distance below which the lesion never grows (skin texture)."""
EDGE_LEVEL = 0.5
"""The lesion's edge: this share of the contrast of the nearest lesion core pixel."""
IRREGULAR_AT = 0.5
"""``border`` is ``irregular`` when border_irregularity >= this (the demo's rule)."""
MIN_LESION_MM = 1.5
"""A segmented region smaller than this (largest diameter, mm) is not a lesion."""
MIN_FILL = 0.3
"""Least share of its Feret-diameter disc a lesion covers: thinner regions are hairs, skin
furrows or the edge of the dermoscope's dark field (phantom lesions: 0.35 and more)."""
MIN_CONTRAST = 3.0
"""Least median skin distance inside a lesion: fainter regions are skin texture (phantom
lesions: 4.2 and more)."""
LESION_VIEWS = ("whole", "partial", "none")
"""What :func:`lesion_view` can say about an image: one whole lesion, a lesion cut by the image
edge, or no lesion at all (skin only)."""


# ---------------------------------------------------------------------------------------------
# helpers


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1], shape (..., 3) -> CIE Lab (D65)."""
    c = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                    200 * (f[..., 1] - f[..., 2])], axis=-1)
    return lab


_VOCAB_RGB = np.array([COLOR_RGB[c] for c in COLOR_VOCAB], dtype=float) / 255.0
_VOCAB_LAB = _rgb_to_lab(_VOCAB_RGB)
_SKIN_LAB = _rgb_to_lab(np.array([SKIN_RGB[k] for k in range(1, 7)], dtype=float) / 255.0)


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


@functools.lru_cache(maxsize=8)
def _quad_basis(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    return np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], axis=-1)


def _fit_surface(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares quadratic surface per channel fitted on ``mask`` pixels; img (H, W, C).

    Normal equations on every other pixel: a 6x6 solve, no BLAS thread start-up per call.
    """
    h, w = mask.shape
    basis = _quad_basis(h, w)
    sel = mask.copy()
    if sel.sum() > 800:
        sel[1::2, :] = False
        sel[:, 1::2] = False
    a = basis[sel]
    ata = a.T @ a + 1e-6 * np.eye(a.shape[1])
    coef = np.linalg.solve(ata, a.T @ img[sel])
    return basis @ coef


def _largest_central_component(mask: np.ndarray) -> np.ndarray:
    """The connected component that is large and close to the image centre."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    idx = np.arange(1, n + 1)
    areas = ndi.sum(mask, lab, idx)
    cy, cx = (np.array(mask.shape) - 1) / 2
    coms = np.array(ndi.center_of_mass(mask, lab, idx))
    dist = np.hypot(coms[:, 0] - cy, coms[:, 1] - cx) / max(mask.shape)
    score = areas * np.exp(-3 * dist)
    return lab == idx[int(np.argmax(score))]


def _contour(mask: np.ndarray, edge: np.ndarray | None = None) -> np.ndarray:
    """Longest sub-pixel outline (x, y): the 0-level of the edge field when given, else the
    0.5-level of the slightly smoothed mask."""
    import contourpy

    if edge is not None:
        lines = contourpy.contour_generator(z=edge).lines(0.0)
        offset = 0.0
    else:
        z = ndi.gaussian_filter(np.pad(mask.astype(float), 2), 0.7)
        lines = contourpy.contour_generator(z=z).lines(0.5)
        offset = 2.0
    if not lines:
        return np.zeros((0, 2))
    best = max(lines, key=len)
    return np.asarray(best, dtype=float) - offset


def _polygon_centroid(pts: np.ndarray) -> tuple[float, float] | None:
    """Area centroid (x, y) of a closed polygon (shoelace), None when degenerate."""
    x, y = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    if abs(area) < 1e-6:
        return None
    return float(((x + x1) * cross).sum() / (6 * area)), float(((y + y1) * cross).sum() / (6 * area))


# ---------------------------------------------------------------------------------------------
# steps


def hair_mask(lum: np.ndarray) -> np.ndarray:
    """Thin dark lines (hairs): black top-hat of luminance above a robust threshold, long
    components only."""
    h = lum.shape[0]
    closed = ndi.grey_closing(lum, size=(max(3, h // 20 | 1),) * 2)
    tophat = closed - lum
    med = float(np.median(tophat))
    thr = max(0.06, med + 6 * float(np.median(np.abs(tophat - med))))
    m = tophat > thr
    lab, n = ndi.label(m, structure=np.ones((3, 3)))
    if n == 0:
        return m
    # Hairs are long and thin: keep components whose extent is large for their area.
    objs = ndi.find_objects(lab)
    keep = np.zeros(n + 1, bool)
    for i, sl in enumerate(objs, start=1):
        ext = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        keep[i] = ext >= max(6, h / 8)
    return keep[lab]


def _clean_mask(mask: np.ndarray, h: int) -> np.ndarray:
    mask = ndi.binary_opening(mask, structure=_disk(max(1, h // 64)))
    if not mask.any():
        return mask
    return fill_holes(_largest_central_component(mask))


def _quad_form(d: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """d^T inv d for every row vector of ``d`` (..., 3), written out (no small BLAS calls)."""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return (inv[0, 0] * x * x + inv[1, 1] * y * y + inv[2, 2] * z * z
            + 2 * (inv[0, 1] * x * y + inv[0, 2] * x * z + inv[1, 2] * y * z))


def _skin_distance(clean: np.ndarray, bg: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each pixel's colour ratio to the skin surface (``clean / bg - 1``,
    linear in the lesion's opacity), with the covariance of the skin's own residuals.

    The skin varies mostly in brightness (illumination, texture); a lesion that differs in
    chroma (light brown on dark skin) stands out even when its luminance contrast is small.
    """
    d = clean / np.maximum(bg, 1e-3) - 1.0
    res = d[skin]
    cov = np.cov(res.T)
    for _ in range(2):  # trimmed: hairs, lesion rim and stray spots do not widen the skin model
        md = _quad_form(res, np.linalg.inv(cov + 1e-5 * np.eye(3)))
        cov = np.cov(res[md <= np.percentile(md, 90)].T) * 1.5
    inv = np.linalg.inv(cov + SKIN_NOISE_FLOOR ** 2 * np.eye(3))
    return np.sqrt(np.maximum(_quad_form(d, inv), 0.0))


def segment_lesion(rgb: np.ndarray, hairs: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Lesion mask, skin-distance map, fitted skin surface and edge field; rgb (H, W, 3) in [0, 1].

    The edge field is positive inside the lesion and crosses 0 at its edge (for a sub-pixel
    outline); None when the lesion is too small to have a core.

    1. Seed: pixels far (Mahalanobis) from the skin surface, the component that is large and
       central; skin and surface refitted around it (three rounds).
    2. Edge: grown from the seed's core through pixels above half of the contrast of the
       nearest core pixel (the middle of the soft edge), so the diameter does not depend on the
       contrast, and a dark centre does not cut off a paler rim of another colour.
    """
    h, w, _ = rgb.shape
    clean = rgb
    if hairs.any():
        closed = ndi.grey_closing(rgb, size=(max(3, h // 20 | 1), max(3, h // 20 | 1), 1))
        grown = ndi.binary_dilation(hairs, iterations=1)
        clean = rgb.copy()
        clean[grown] = closed[grown]
    clean = ndi.gaussian_filter(clean, sigma=(max(h / 128, 0.5), max(w / 128, 0.5), 0))
    # The dermoscope's round field can leave the corners almost black: they are not skin.
    lum = clean @ np.array([0.299, 0.587, 0.114])
    field = fill_holes(lum > 0.5 * float(np.median(lum)))
    if not field.all():  # drop the soft transition ring of the round field as well
        field = ndi.binary_erosion(field, iterations=max(2, h // 16), border_value=1)
    ring = np.zeros((h, w), bool)
    b = max(2, h // 10)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    ring &= field
    if ring.sum() < 0.02 * h * w:
        ring = field & ~ndi.binary_erosion(field, iterations=b)
    skin = ring
    mask = np.zeros((h, w), bool)
    small = _disk(max(1, h // 64))
    bg, dist, lo = clean, np.zeros((h, w)), SEED_DISTANCE
    for _ in range(3):
        bg = _fit_surface(clean, skin)
        dist = _skin_distance(clean, bg, skin)
        lo = max(SEED_DISTANCE, float(np.percentile(dist[skin], 99)))
        cand = ndi.binary_closing(ndi.binary_opening((dist > lo) & field, structure=small),
                                  structure=small)
        if not cand.any():
            break
        mask = fill_holes(_largest_central_component(cand))
        skin = field & ~ndi.binary_dilation(mask, iterations=max(2, h // 16))
        if skin.sum() < 0.05 * h * w:
            skin = ring
    if not mask.any():
        return mask, dist, bg, None
    core = ndi.binary_erosion(mask, iterations=max(2, h // 32))
    if core.sum() < 6:
        core = ndi.binary_erosion(mask, iterations=1)
        if core.sum() < 3:
            return mask, dist, bg, None
    sm = ndi.gaussian_filter(dist, 1.0)
    floor = max(GROW_DISTANCE, float(np.percentile(sm[skin], 99.5)))
    # The contrast of the nearest core pixel (smoothed over the core only).
    weight = ndi.gaussian_filter(core.astype(float), 1.0)
    level = ndi.gaussian_filter(np.where(core, dist, 0.0), 1.0) / np.maximum(weight, 1e-6)
    _, (iy, ix) = ndi.distance_transform_edt(~core, return_indices=True)
    thr = np.maximum(EDGE_LEVEL * level[iy, ix], floor)
    grown = ndi.binary_propagation(core, mask=((sm > thr) & field) | core)
    grown = ndi.binary_opening(grown, structure=small) | core
    mask = fill_holes(_largest_central_component(grown))
    edge = np.where(ndi.binary_dilation(mask, iterations=2), sm / thr - 1.0, -1.0)
    edge[mask & (edge <= 0)] = 0.05  # holes filled and opened-away specks stay inside
    edge[~mask & (edge > 0)] = -0.05
    return mask, dist, bg, edge


def axis_asymmetry(c: np.ndarray) -> tuple[float, float]:
    """Asymmetry about the major and the minor axis from the harmonics ``c`` of the outline in
    its long-axis frame (relative to the mean radius).

    Mirroring about the major axis (θ -> -θ) keeps the cosine terms and flips the sine terms;
    mirroring about the minor axis (θ -> π - θ) flips the odd cosine terms. The third harmonic
    is the lowest that changes the shape (the first only moves it): its sine amplitude breaks
    the symmetry about the major axis, its cosine amplitude the symmetry about the minor axis.
    """
    return float(2 * abs(c[3].imag)), float(2 * abs(c[3].real))


def polar_harmonics(pts: np.ndarray, center: tuple[float, float], n: int = 128,
                    kmax: int = 16) -> tuple[np.ndarray, float]:
    """Fourier coefficients c_k (k = 0..kmax) of the radius r(θ) of a closed contour about
    ``center`` (x, y), in the frame of its long axis (arg c_2 = 0); returns (c, r0)."""
    cx, cy = center
    th = np.arctan2(pts[:, 1] - cy, pts[:, 0] - cx)
    r = np.hypot(pts[:, 0] - cx, pts[:, 1] - cy)
    order = np.argsort(th)
    grid = np.linspace(-np.pi, np.pi, n, endpoint=False)
    rg = np.interp(grid, th[order], r[order], period=2 * np.pi)
    c = np.fft.rfft(rg)[: kmax + 1] / n
    r0 = float(c[0].real)
    # Rotate to the long axis: r(θ) ~ r0 + 2|c2| cos 2(θ - φ) with φ = -arg(c2) / 2, so that
    # c_2 becomes real and positive in the new frame (θ = 0 along the long axis).
    phi = -np.angle(c[2]) / 2 if abs(c[2]) > 0 else 0.0
    k = np.arange(len(c))
    c = c * np.exp(1j * k * phi)
    return c, r0


def color_shares(lab_pixels: np.ndarray, skin_rgb: np.ndarray | None = None) -> dict[str, float]:
    """Share of pixels whose nearest vocabulary colour (Lab distance) is each colour.

    A lesion is seen through a thin layer of skin: with ``skin_rgb`` (sRGB in [0, 1]) each
    vocabulary colour is compared as it appears on that skin (``LESION_OPACITY`` of the colour
    over the skin), not as the bare reference.
    """
    if len(lab_pixels) == 0:
        return {c: 0.0 for c in COLOR_VOCAB}
    ref = _VOCAB_LAB
    if skin_rgb is not None:
        seen = LESION_OPACITY * _VOCAB_RGB + (1 - LESION_OPACITY) * np.clip(skin_rgb, 0, 1)[None]
        ref = _rgb_to_lab(seen)
    d = np.linalg.norm(lab_pixels[:, None, :] - ref[None], axis=-1)
    nearest = np.argmin(d, axis=1)
    counts = np.bincount(nearest, minlength=len(COLOR_VOCAB)) / len(lab_pixels)
    return {c: float(counts[i]) for i, c in enumerate(COLOR_VOCAB)}


def count_dots(lum: np.ndarray, mask: np.ndarray, hairs: np.ndarray, mm_per_px: float,
               mesh: float = 0.0) -> int:
    """Dots and globules: small dark blobs inside the lesion (its rim and hairs excluded).

    A blob is a local maximum of the Hessian's smaller eigenvalue (both curvatures positive: a
    dark spot, not a line) of the luminance relative to the lesion's median, at the scale of a
    dot (``DOT_SIGMA_MM``, at least 0.7 px), with scale-normalised strength above
    ``DOT_STRENGTH`` plus ``DOT_MESH`` times the lesion's ``mesh`` texture
    (:func:`network_texture`), and darker than nearly all of a ring around it.
    """
    sig = max(0.7, DOT_SIGMA_MM / mm_per_px)
    inner = ndi.binary_erosion(mask, iterations=max(1, round(DOT_RIM_MM / mm_per_px)))
    inner &= ~ndi.binary_dilation(hairs, iterations=1)
    if inner.sum() < 5:
        return 0
    rel = lum / max(float(np.median(lum[mask])), 1e-3)
    lmin, _ = _hessian_eigen(rel, sig)
    strength = DOT_STRENGTH + DOT_MESH * max(mesh, 0.0)
    peaks = (lmin == ndi.maximum_filter(lmin, size=3)) & inner & (lmin > strength)
    ys, xs = np.nonzero(peaks)
    if len(ys) == 0:
        return 0
    smooth = ndi.gaussian_filter(rel, 0.5)
    ang = np.arange(12) * np.pi / 6
    ry = ys[:, None] + 3 * sig * np.sin(ang)[None]
    rx = xs[:, None] + 3 * sig * np.cos(ang)[None]
    ring = ndi.map_coordinates(smooth, [ry.ravel(), rx.ravel()], order=1, mode="nearest").reshape(ry.shape)
    lighter = np.sort(ring - smooth[ys, xs][:, None], axis=1)[:, 2]  # all but the two darkest
    return int((lighter > DOT_RING).sum())


def _hessian_eigen(img: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale-normalised eigenvalues (smaller, larger) of the Hessian of ``img`` at ``sigma``."""
    hxx = ndi.gaussian_filter(img, sigma, order=(0, 2))
    hyy = ndi.gaussian_filter(img, sigma, order=(2, 0))
    hxy = ndi.gaussian_filter(img, sigma, order=(1, 1))
    half_tr = (hxx + hyy) / 2
    root = np.sqrt(np.maximum(half_tr ** 2 - (hxx * hyy - hxy ** 2), 0.0))
    return (half_tr - root) * sigma ** 2, (half_tr + root) * sigma ** 2


def network_texture(lum: np.ndarray, mask: np.ndarray, hairs: np.ndarray, mm_per_px: float) -> float:
    """Pigment network: a mesh of lighter holes inside thin lines of the lesion's brown.

    From the scale-normalised Hessian of the log luminance at the mesh's scale, averaged over
    the lesion without its rim and hairs: twice the strength of light holes (both curvatures
    negative) plus that of dark lines (the larger curvature positive, the smaller one not: not a
    dot), less half the line strength at twice the scale, where colour borders and blotches
    respond as much and a fine mesh hardly at all. 0 when the lesion is too small to tell.
    """
    core = ndi.binary_erosion(mask, iterations=2) & ~ndi.binary_dilation(hairs, iterations=1)
    if core.sum() < 8:
        core = ndi.binary_erosion(mask, iterations=1) & ~hairs
        if core.sum() < 8:
            return 0.0
    log_lum = np.log(np.maximum(lum, 0.02))
    sigma = max(NETWORK_MIN_SIGMA_PX, NETWORK_SIGMA_MM / mm_per_px)
    small, large = _hessian_eigen(log_lum, sigma)
    holes = float(np.maximum(-large, 0.0)[core].mean())
    lines = float(np.maximum(large - np.maximum(small, 0.0), 0.0)[core].mean())
    small, large = _hessian_eigen(log_lum, 2 * sigma)
    coarse_lines = float(np.maximum(large - np.maximum(small, 0.0), 0.0)[core].mean())
    return 2 * holes + lines - 0.5 * coarse_lines


def skin_tone_of(skin_rgb: np.ndarray) -> int:
    """Fitzpatrick-like type 1..6: the nearest reference skin colour in CIE Lab."""
    lab = _rgb_to_lab(np.clip(skin_rgb, 0, 1)[None])[0]
    return int(np.argmin(np.linalg.norm(_SKIN_LAB - lab, axis=1))) + 1


def count_hairs(hairs: np.ndarray) -> int:
    """Number of hairs: connected thin dark line components."""
    return int(ndi.label(hairs, structure=np.ones((3, 3)))[1])


# ---------------------------------------------------------------------------------------------


def derm_features(array: np.ndarray, mm_per_px: float) -> dict[str, Any]:
    """Raw measurements of a dermoscopy image (before the calibrated decisions of
    :func:`measure_derm`); also used to calibrate those decisions."""
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"measure_derm needs a (3, H, W) RGB array, got {array.shape}")
    rgb = np.moveaxis(array, 0, -1).astype(np.float64)
    if array.dtype == np.uint8:
        rgb /= 255.0
    elif array.dtype == np.uint16:
        rgb /= 65535.0
    h, w, _ = rgb.shape
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    hairs = hair_mask(lum)
    mask, dist, bg, edge = segment_lesion(rgb, hairs)
    centre_bg = bg[h // 2, w // 2]
    f: dict[str, Any] = {"h": h, "w": w, "area": int(mask.sum()), "hair": count_hairs(hairs),
                         "skin_rgb": centre_bg,
                         "edge_px": int(mask[0].sum() + mask[-1].sum() + mask[1:-1, 0].sum()
                                        + mask[1:-1, -1].sum())}
    if mask.sum() < 6:
        return f
    f["contrast"] = float(np.median(dist[mask]))
    ys, xs = np.nonzero(mask)
    f["center"] = (float(xs.mean()), float(ys.mean()))
    pts = _contour(mask, edge)
    if len(pts) < 8 or _polygon_centroid(pts) is None:
        pts = _contour(mask)
    f["diameter_px"] = feret_diameter(pts) if len(pts) >= 3 else 0.0
    f["fill"] = float(mask.sum() / (np.pi / 4 * max(f["diameter_px"], 1.0) ** 2))
    centroid = _polygon_centroid(pts) if len(pts) >= 8 else None
    if centroid is not None:
        c, r0 = polar_harmonics(pts, centroid, n=256, kmax=ROUGH_HARMONICS[1])
        c = c / max(r0, 1e-6)
    else:
        c, r0 = np.zeros(ROUGH_HARMONICS[1] + 1, complex), 0.0
    # r(θ) = r0 (1 + 2 Σ Re(c_k e^{ikθ})): the harmonics' amplitudes relative to the mean radius,
    # weighted up with k because a ragged outline's spectrum falls off with k.
    k = np.arange(ROUGH_HARMONICS[0], ROUGH_HARMONICS[1] + 1)
    weight = (k / 4.0) ** 1.6
    f["rough"] = float(np.sqrt((np.abs(c[k]) ** 2 * weight).sum() / weight.sum()))
    f["r0_px"] = r0
    f["asym_major"], f["asym_minor"] = axis_asymmetry(c)
    # Colours: illumination-normalised pixels, edge and hairs excluded.
    illum = bg / np.maximum(centre_bg, 1e-3)
    flat = np.clip(rgb / np.maximum(illum, 0.2), 0, 1)
    # The mask shrunk by a pixel: the soft edge is a blend of lesion and skin.
    inner = ndi.binary_erosion(mask, iterations=1) & ~ndi.binary_dilation(hairs, iterations=1)
    if inner.sum() < 4:
        inner = mask
    f["shares"] = color_shares(_rgb_to_lab(flat[inner]), centre_bg)
    # Texture inside the lesion (structures).
    flum = flat @ np.array([0.299, 0.587, 0.114])
    f["network"] = network_texture(flum, mask, hairs, float(mm_per_px))
    f["dots"] = count_dots(flum, mask, hairs, float(mm_per_px), f["network"])
    opened = ndi.binary_opening(mask, structure=_disk(max(2, h // 24)))
    spikes = mask & ~opened
    lab, n = ndi.label(spikes)
    if n:
        sizes = ndi.sum(spikes, lab, np.arange(1, n + 1))
        f["streaks"] = int((sizes >= max(3, h / 16)).sum())
    return f


def lesion_view(f: dict[str, Any], mm_per_px: float) -> str:
    """``whole``, ``partial`` (the lesion touches the image edge: its size and shape are not
    all in view) or ``none`` (nothing segmented, or only a region too small, too thin or too
    faint to be a lesion: skin texture, a hair, the dark rim of the dermoscope's field), from
    the features of :func:`derm_features`."""
    if "center" not in f:
        return "none"
    if (f["diameter_px"] * mm_per_px < MIN_LESION_MM or f["fill"] < MIN_FILL
            or f["contrast"] < MIN_CONTRAST):
        return "none"
    return "partial" if f["edge_px"] > 0 else "whole"


def measure_derm(array: np.ndarray, mm_per_px: float, *, with_view: bool = False
                 ) -> dict[str, Any]:
    """Measure the ABCD attributes, colours and structures of a dermoscopy image.

    Args:
        array: channel-first RGB image, ``(3, H, W)`` (uint8, or float in [0, 1]).
        mm_per_px: pixel size in millimetres (the demo set: 20 mm field of view / image size).
        with_view: add the key ``lesion``: :func:`lesion_view` (whole, partial or none).

    Returns:
        A dict with exactly :data:`DERM_COLUMNS` as keys (plus ``lesion`` with ``with_view``);
        ``colors`` and ``structures`` are semicolon-joined in vocabulary order (``structures``
        is ``none`` when empty). Without a segmented lesion the numbers are zeros: callers that
        describe the image check ``lesion`` instead of reading them.
    """
    f = derm_features(array, mm_per_px)
    view = {"lesion": lesion_view(f, float(mm_per_px))} if with_view else {}
    h, w = f["h"], f["w"]
    tone = skin_tone_of(f["skin_rgb"])
    if "center" not in f:
        return {"diameter_mm": 0.0, "asymmetry": 0, "border_irregularity": 0.0, "border": "regular",
                "colors": "", "n_colors": 0, "structures": "none", "skin_tone": tone,
                "hair": f["hair"], "center_x": (w - 1) / 2, "center_y": (h - 1) / 2, **view}
    hi, lo = sorted((f["asym_major"], f["asym_minor"]), reverse=True)
    asym = int(hi > ASYMMETRY_THRESHOLDS[0]) + int(lo > ASYMMETRY_THRESHOLDS[1])
    rough = max(f["rough"], 1e-9)
    irregularity = float(np.clip(0.5 + ROUGH_SLOPE * np.log(rough / ROUGH_MID), 0.0, 1.0))
    shares = f["shares"]
    colors = [c for c in COLOR_VOCAB if shares[c] >= MIN_SHARE[c]]
    if not colors:
        colors = [max(shares, key=shares.get)]
    structures = []
    if f.get("network", 0.0) > NETWORK_LEVEL:
        structures.append("pigment_network")
    if f.get("dots", 0) >= MIN_DOTS:
        structures.append("dots_globules")
    if f.get("streaks", 0) >= MIN_STREAKS:
        structures.append("streaks")
    if shares["blue_grey"] >= VEIL_BLUE and shares["white"] >= VEIL_WHITE:
        structures.append("blue_white_veil")
    return {
        "diameter_mm": round(f["diameter_px"] * float(mm_per_px), 3),
        "asymmetry": asym,
        "border_irregularity": round(irregularity, 3),
        "border": "irregular" if irregularity >= IRREGULAR_AT else "regular",
        "colors": ";".join(colors),
        "n_colors": len(colors),
        "structures": ";".join(structures) if structures else "none",
        "skin_tone": tone,
        "hair": f["hair"],
        "center_x": round(f["center"][0], 2),
        "center_y": round(f["center"][1], 2),
        **view,
    }


# The thresholds above were calibrated on the demo phantoms (600 images, 64 px, seed 0; checked
# on seed 1 by benchmarks/describe_agreement.py, and at 128 px); on real dermoscopy they are a
# starting point, not a truth.
