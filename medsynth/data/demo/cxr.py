"""PA chest radiograph-like PHANTOM images (16-bit grayscale) with ground-truth findings.

Radiological convention: the patient's left is on the image's right. MONOCHROME2: air dark,
bone and fluid bright. Geometry is in units of the image width (0..1, y down), so the anatomy
is the same at every size; the field of view is 430 mm (a 43 cm detector).

Each image: :func:`sample_attributes` draws the patient (thorax width, lung heights, diaphragm
domes, heart size as a cardiothoracic ratio, rib spacing, exposure) and the finding (side, zone,
extent), then :func:`render_attributes` builds an attenuation map (body soft tissue, lungs,
mediastinum and spine, heart, diaphragm and abdomen, posterior and anterior ribs, clavicles,
humeral heads, lung vessels, then the finding), blurs it like a detector, adds quantum noise
and maps it to the full 16-bit range.

- ``pneumonia``: a patchy consolidation inside one lung zone (upper/middle/lower third of the
  lung height) on one side or both.
- ``pleural_effusion``: dependent fluid with a meniscus (higher laterally) that blunts the
  costophrenic angle and hides the hemidiaphragm.
- ``cardiomegaly``: cardiothoracic ratio above 0.5 (0.38-0.49 otherwise).
"""

from __future__ import annotations

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

CLASSES = ("normal", "pneumonia", "pleural_effusion", "cardiomegaly")
MODALITY = "DX"
CHANNELS = 1
DTYPE = "uint16"
FOV_MM = 430.0
"""Field of view (mm) at every image size: mm per pixel = 430 / size."""
SUPERSAMPLE = 2

SIDES = ("right", "left")
"""Patient sides; the patient's right lung is on the image's left."""
ZONES = ("upper", "middle", "lower")


def sample_attributes(cls: str, rng: np.random.Generator) -> dict[str, Any]:
    """Draw the patient and the finding of one image of class ``cls``."""
    hw = rng.uniform(0.325, 0.385)  # half the inner thoracic width
    a: dict[str, Any] = {
        "mid": 0.5 + rng.normal(0, 0.008),
        "hw": hw,
        "apex": rng.uniform(0.10, 0.15),
        "dome_r": rng.uniform(0.63, 0.71),  # the right hemidiaphragm sits higher (the liver)
    }
    a["dome_l"] = a["dome_r"] + rng.uniform(0.01, 0.04)
    a["cp_drop"] = rng.uniform(0.09, 0.13)
    if cls == "cardiomegaly":
        ctr = rng.uniform(0.52, 0.68)
    else:
        ctr = float(np.clip(rng.normal(0.44, 0.028), 0.38, 0.49))
    a["ctr"] = ctr
    a["side"], a["zone"], a["target_extent"] = "none", "none", 0.0
    if cls == "pneumonia":
        a["side"] = str(rng.choice(["right", "left", "bilateral"], p=[0.45, 0.4, 0.15]))
        a["zone"] = str(rng.choice(ZONES, p=[0.25, 0.35, 0.40]))
        a["target_extent"] = rng.uniform(0.10, 0.28)
    elif cls == "pleural_effusion":
        a["side"] = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.4, 0.2]))
        a["zone"] = "lower"
        a["target_extent"] = rng.uniform(0.12, 0.35)
    return a


def _sides(side: str) -> list[int]:
    """Image-x sign of the affected hemithorax: -1 image left (patient right), +1 image right."""
    return {"right": [-1], "left": [1], "bilateral": [-1, 1], "none": []}[side]


def render_attributes(cls: str, a: dict[str, Any], rng: np.random.Generator,
                      size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw the radiograph of ``a``; returns (1, size, size) uint16 and the label row."""
    ss = SUPERSAMPLE
    n = size * ss
    coords = (np.arange(n) + 0.5) / n
    xx, yy = np.meshgrid(coords, coords)
    px = 1.0 / size  # one output pixel in width units
    mid, hw, apex = a["mid"], a["hw"], a["apex"]
    dx = xx - mid
    sgn = np.sign(dx)
    xi = np.abs(dx)  # lateral distance from the midline
    dome = np.where(dx < 0, a["dome_r"], a["dome_l"])
    cp = dome + a["cp_drop"]  # costophrenic angle height

    # --- lungs: a rounded apex and convex lateral wall (upper half-ellipse), the lateral recess
    # down to the costophrenic angle, the diaphragm dome below --------------------------------
    xc = 0.55 * hw
    ax = 0.45 * hw
    by = dome - apex
    ell = ((xi - xc) / ax) ** 2 + ((yy - dome) / by) ** 2
    upper = (yy < dome) & (ell < 1)
    wall = hw * (1 - 0.04 * (yy - dome) / a["cp_drop"])
    xd = 0.42 * hw  # the top of the dome
    ydia = np.where(xi > xd, dome + (cp - dome) * ((xi - xd) / (hw - xd)) ** 2,
                    dome + 0.12 * a["cp_drop"] * ((xd - xi) / xd) ** 2)
    lower = (yy >= dome) & (xi < wall) & (yy < ydia)
    # Heart: an ellipse shifted to the patient's left, its widest part at the diaphragm.
    heart_w = a["ctr"] * 2 * hw
    hx = mid + rng.uniform(0.12, 0.2) * heart_w
    hy = max(a["dome_r"], a["dome_l"]) - 0.005
    hb = rng.uniform(0.19, 0.24)
    heart = ((xx - hx) / (heart_w / 2)) ** 2 + ((yy - hy) / hb) ** 2 < 1
    # Mediastinum: trachea, great vessels and the aortic knob on the patient's left.
    knob_y = rng.uniform(0.28, 0.33)
    med_w = rng.uniform(0.05, 0.065) + 0.02 * np.clip((yy - 0.2) / 0.3, 0, 1)
    med_w = med_w + np.where(dx > 0, rng.uniform(0.02, 0.04) * np.exp(-0.5 * ((yy - knob_y) / 0.035) ** 2), 0)
    mediast = (xi < med_w) & (yy < hy + hb)
    lung = (upper | lower) & ~heart & ~mediast
    # Exact shares are measured on the output grid.
    lung_soft = ndi.gaussian_filter(lung.astype(float), 0.8 * ss)

    # --- the finding --------------------------------------------------------------------
    opaque = np.zeros((n, n))
    affected = np.zeros((n, n), bool)
    if cls in ("pneumonia", "pleural_effusion"):
        for s in _sides(a["side"]):
            side_lung = lung & (sgn == s)
            affected |= side_lung
            area = side_lung.sum()
            if cls == "pneumonia":
                # Zones: thirds of this lung's height, apex to costophrenic angle.
                cps = (a["dome_r"] if s < 0 else a["dome_l"]) + a["cp_drop"]
                z = ZONES.index(a["zone"])
                z0 = apex + (cps - apex) * z / 3
                z1 = apex + (cps - apex) * (z + 1) / 3
                cy = rng.uniform(z0 + 0.25 * (z1 - z0), z1 - 0.25 * (z1 - z0))
                cx = mid + s * rng.uniform(0.4, 0.7) * hw
                zone_mask = side_lung & (yy >= z0) & (yy < z1)
                field = (smooth_noise(rng, n, 9) - 1.5 * np.hypot((xx - cx) / 0.08, (yy - cy) / 0.06)
                         + 0.4 * smooth_noise(rng, n, 22))
                k = int(min(a["target_extent"] * area, 0.9 * zone_mask.sum()))
                if k > 0:
                    vals = field[zone_mask]
                    thr = np.partition(vals, vals.size - k)[vals.size - k]
                    opaque = np.maximum(opaque, (zone_mask & (field >= thr)).astype(float))
            else:
                # Dependent fluid up to a level; the meniscus climbs the lateral wall.
                rel = np.clip((xi - 0.06) / (hw - 0.06), 0, 1)
                dome_s = a["dome_r"] if s < 0 else a["dome_l"]
                best = None
                for level in np.linspace(dome_s - 0.3, dome_s + a["cp_drop"], 40):
                    fl = side_lung & (yy > level - 0.06 * rel ** 2)
                    if fl.sum() <= a["target_extent"] * area:
                        best = fl
                        break
                if best is not None:
                    opaque = np.maximum(opaque, best.astype(float))
    # A finding replaces air: it takes a share of the lung's darkening away (no dark rims).
    fill = np.zeros((n, n))
    if opaque.any():
        soft = ndi.gaussian_filter(opaque, 1.3 * ss)
        if cls == "pneumonia":  # patchy, with some aerated lung left inside
            fill = soft * rng.uniform(0.75, 0.92) * np.clip(0.85 + 0.25 * smooth_noise(rng, n, 18), 0, 1)
        else:  # fluid: homogeneous, fading upwards at its top
            fill = soft * rng.uniform(0.9, 1.0)
    air = lung_soft * (1 - fill)

    # --- body and attenuation --------------------------------------------------------------
    # Body outline: the neck, shoulders out to the image edge, the chest wall outside the ribs.
    neck = rng.uniform(0.08, 0.1)
    top = 0.03 + 0.1 * np.clip((xi - neck) / (0.5 - neck), 0, 1) ** 1.4  # the trapezius slope
    side = hw + 0.075 + (0.56 - hw - 0.075) * np.where(
        yy < 0.14, 1.0, np.exp(-0.5 * ((yy - 0.14) / 0.09) ** 2))
    body = np.maximum(smoothstep(neck + 0.01, neck - 0.01, xi), smoothstep(top - 0.01, top + 0.01, yy))
    body = body * smoothstep(side + 0.012, side - 0.012, xi)
    body_half = side
    tissue = rng.uniform(0.50, 0.56)
    att = 0.03 + (tissue - 0.03) * body
    # The arms beside the chest: thinner soft tissue after a narrow gap of air.
    gap = rng.uniform(0.005, 0.03)
    arms = smoothstep(side + gap, side + gap + 0.015, xi) * smoothstep(0.1, 0.2, yy)
    att = np.maximum(att, rng.uniform(0.3, 0.42) * arms)
    # Soft tissue is thickest where the x-ray grazes the chest wall.
    att = att + 0.06 * smoothstep(hw - 0.01, hw + 0.05, xi) * smoothstep(body_half, body_half - 0.05, xi)
    air_l = rng.uniform(0.22, 0.28)
    lung_tone = air_l + 0.05 * smoothstep(0.55, 1.0, (yy - apex) / (cp - apex))  # denser bases
    lung_tone = lung_tone + 0.015 * smooth_noise(rng, n, 10) + 0.012 * smooth_noise(rng, n, max(16, size // 4))
    lung_tone = lung_tone + 0.04 * smoothstep(0.75, 1.0, xi / hw)  # the lateral chest wall overlaps
    att = att - (tissue - lung_tone) * air
    # Abdomen below the diaphragm, with the stomach gas bubble under the left dome.
    abd = smoothstep(ydia - 0.005, ydia + 0.01, yy) * (xi < hw + 0.02) * (1 - lung_soft)
    att = np.maximum(att, (tissue + 0.08) * abd * body)
    heart &= yy < ydia + 0.01  # below the diaphragm the heart merges with the abdomen
    if rng.random() < 0.6:
        gx, gy = mid + rng.uniform(0.12, 0.2), a["dome_l"] + rng.uniform(0.04, 0.07)
        bubble = ((xx - gx) / rng.uniform(0.03, 0.05)) ** 2 + ((yy - gy) / 0.025) ** 2 < 1
        att = att - 0.12 * ndi.gaussian_filter(bubble.astype(float), ss) * (yy > a["dome_l"])
    heart_soft = ndi.gaussian_filter(heart.astype(float), 0.6 * ss)
    att = np.maximum(att, (tissue + 0.08) * heart_soft)
    med_soft = ndi.gaussian_filter(mediast.astype(float), 0.6 * ss)
    att = np.maximum(att, (tissue + 0.07) * med_soft)
    # Spine (seen through the mediastinum) with vertebral end plates; the trachea.
    spine_w = rng.uniform(0.028, 0.035)
    spine = smoothstep(spine_w + 0.006, spine_w - 0.006, xi)
    plates = 0.5 + 0.5 * np.cos(2 * np.pi * (yy - rng.uniform(0, 1)) / rng.uniform(0.055, 0.065))
    att = att + spine * body * (0.06 + 0.03 * plates ** 6)
    trachea = smoothstep(0.016, 0.010, np.abs(dx + 0.004 * np.sin(yy * 9))) * smoothstep(0.34, 0.30, yy)
    att = att - 0.14 * trachea * smoothstep(0.02, 0.06, yy)

    # --- bones ----------------------------------------------------------------------------
    bones = np.zeros((n, n))
    cp_mean = (a["dome_r"] + a["dome_l"]) / 2 + a["cp_drop"]
    rib_gap = (cp_mean - apex) / rng.uniform(9.0, 10.0)
    y0 = apex - 0.02
    th = rng.uniform(0.016, 0.022)
    tt = np.linspace(0, 1, 12)
    for i in range(11):
        base = y0 + i * rib_gap
        for s in (-1, 1):
            # Posterior rib: leaves the spine nearly flat, rises a little, curves down laterally.
            u = tt * (hw + 0.03) / hw
            xs = mid + s * (0.03 + tt * (hw + 0.01))
            ys = base + hw * (-0.12 * u + 0.42 * u ** 2.2) + rng.normal(0, 0.003)
            pts = np.stack([xs, ys], 1)
            stamp_polyline(bones, coords, pts, th / 2, 0.065)
            # Anterior rib (fainter): from the lateral wall down towards the sternum.
            ya = base + 0.10 + hw * 0.30 * (1 - tt) ** 1.5
            xa = mid + s * (hw + 0.01 - tt * 0.7 * hw)
            stamp_polyline(bones, coords, np.stack([xa, ya], 1)[:9], th * 0.4, 0.03)
    cl_y = apex + rng.uniform(0.0, 0.03)
    for s in (-1, 1):  # clavicles: an S from the sternum out and up to the shoulder
        t2 = np.linspace(0, 1, 10)
        xs = mid + s * (0.035 + t2 * (hw + 0.02))
        ys = cl_y + 0.035 - 0.045 * t2 + 0.012 * np.sin(2 * np.pi * t2)
        stamp_polyline(bones, coords, np.stack([xs, ys], 1), 0.012, 0.13)
        hh = ((xx - (mid + s * (hw + 0.1))) ** 2 + (yy - (cl_y + 0.04)) ** 2) < 0.055 ** 2
        bones = np.maximum(bones, 0.07 * hh)  # humeral head
    bone_edge = bones - ndi.gaussian_filter(bones, 1.2 * ss)  # cortical margins stand out
    # Bone contrast is lower over the dense mediastinum and abdomen.
    dense = np.clip(np.maximum(np.maximum(abd, heart_soft), med_soft), 0, 1)
    att = att + (bones + 0.6 * np.clip(bone_edge, 0, None)) * body * (1 - 0.65 * dense)

    # --- lung vessels from the hila --------------------------------------------------------
    vessels = np.zeros((n, n))
    for s in (-1, 1):
        hx0, hy0 = mid + s * rng.uniform(0.08, 0.1), rng.uniform(0.40, 0.45)
        for _ in range(int(rng.integers(18, 26))):
            ang = math.atan2(rng.uniform(-0.9, 1.0), s * rng.uniform(0.2, 1.0))
            length = rng.uniform(0.08, 0.25)
            branch = [(hx0, hy0)]
            for _ in range(4):
                ang += rng.normal(0, 0.25)
                x0, y0_ = branch[-1]
                branch.append((x0 + math.cos(ang) * length / 4, y0_ + math.sin(ang) * length / 4))
            pts_a = np.array(branch)
            w0 = rng.uniform(0.004, 0.007)
            for k in range(4):  # each segment thinner than the last
                stamp_polyline(vessels, coords, pts_a[k:k + 2], max(w0 * (1 - 0.2 * k), 0.35 * px),
                               rng.uniform(0.04, 0.07) * (1 - 0.15 * k))
    hila = sum(np.exp(-0.5 * (((xx - (mid + s * 0.09)) / 0.03) ** 2 + ((yy - 0.43) / 0.05) ** 2))
               for s in (-1, 1))
    vessels = ndi.gaussian_filter(vessels, 0.5 * ss)
    att = att + (vessels + 0.06 * hila) * air

    # --- detector: blur, exposure, quantum noise, 16 bits ---------------------------------
    att = ndi.gaussian_filter(att, rng.uniform(0.4, 0.8) * ss)
    img = downsample(att, ss)
    gamma = rng.uniform(0.85, 1.15)
    img = np.clip(img, 0, None) ** gamma
    img = img * rng.uniform(0.95, 1.05) + rng.normal(0, 0.004, img.shape) * (0.5 + img)
    scale = 65535 / 0.95
    array = np.clip(np.rint(img * scale), 0, 65535).astype(np.uint16)[None]

    # Ground truth measured on the output grid where it is a share of pixels.
    if affected.any():
        aff = downsample(affected.astype(float), ss) > 0.5
        opq = downsample(opaque, ss) > 0.5
        extent = float((opq & aff).sum() / max(aff.sum(), 1))
    else:
        extent = 0.0
    row = {
        "side": a["side"],
        "zone": a["zone"],
        "opacity_extent": extent,
        "ctr": heart_w / (2 * hw),
        "heart_width_px": heart_w * size,
        "thorax_width_px": 2 * hw * size,
    }
    return array, row


def render(cls: str, index: int, size: int, seed: int,
           site: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Image ``index`` of class ``cls``: (1, size, size) uint16 and its labels.csv attributes
    (``site``: the writer applies its film exposure and contrast curve afterwards)."""
    rng = image_rng(seed, CLASSES.index(cls), index)
    attrs = sample_attributes(cls, rng)
    return render_attributes(cls, attrs, rng, size)
