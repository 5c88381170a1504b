"""What both demo phantoms share: the config, seeded per-image rendering and the dataset writer.

Every image is made from its own seed, ``SeedSequence([seed, class_index, image_index])``: its
ground-truth attributes are sampled first (and recorded), then rendered deterministically. The
output is therefore byte-identical for a seed whatever the number of worker processes, and any
single image can be reproduced alone.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import MedsynthError

DEMOS = ("derm", "cxr", "prostate")
DEFAULT_SIZE = {"derm": 64, "cxr": 128, "prostate": 64}


@dataclasses.dataclass(frozen=True)
class Site:
    """An acquisition site of the 2D phantoms (``--site``): how its device shows the same
    patients. Site ``a`` is the reference (exactly the phantoms of earlier releases); another
    site is the public set P of another hospital in the pretrained-prior study (docs/priors.md).
    Applied after rendering, from its own per-image generator, so the patients (attributes,
    anatomy) of image ``i`` are the same at every site except the derm skin-tone mix."""

    name: str
    about: str
    colour_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Derm colour calibration: per-channel (R, G, B) gain of the camera."""
    illumination: float = 0.0
    """Uneven illumination: amplitude of a smooth multiplicative field (0.1 = +-10 %)."""
    gamma: float = 1.0
    """Contrast curve ``out = in ** gamma`` on [0, 1] (< 1 flatter, > 1 harder)."""
    noise: float = 0.0
    """Extra sensor noise: std of additive Gaussian noise, a share of the full range."""
    exposure: float = 1.0
    """CXR film exposure: the detector signal times this (before the contrast curve)."""
    skin_tone_p: tuple[float, ...] | None = None
    """Derm skin-tone mix (Fitzpatrick I-VI probabilities); None = the reference mix."""


SITES = {
    "a": Site("a", "the reference site (the phantoms of earlier releases, byte for byte)"),
    "b": Site("b", "another hospital: warm colour cast, uneven illumination, flatter contrast, "
              "more noise, darker skin-tone mix; films under-exposed with a harder curve",
              colour_gain=(1.10, 0.97, 0.86), illumination=0.18, gamma=0.8, noise=0.025,
              exposure=0.8, skin_tone_p=(0.04, 0.09, 0.15, 0.26, 0.28, 0.18)),
    "c": Site("c", "a third site: cool cast, mild vignetting, harder contrast, over-exposed "
              "films with a flatter curve", colour_gain=(0.92, 1.0, 1.10), illumination=0.1,
              gamma=1.2, noise=0.01, exposure=1.15, skin_tone_p=(1 / 6,) * 6),
}
DEFAULT_SITE = "a"


def apply_site(array: np.ndarray, site: Site, rng: np.random.Generator) -> np.ndarray:
    """A rendered (C, H, W) uint8 or uint16 image as ``site``'s device records it."""
    top = 255.0 if array.dtype == np.uint8 else 65535.0
    x = array.astype(np.float64) / top
    n = x.shape[-1]
    if x.shape[0] == 3:
        x = x * np.asarray(site.colour_gain)[:, None, None]
    else:
        x = x * site.exposure
    if site.illumination:
        x = x * (1.0 + site.illumination * np.clip(smooth_noise(rng, n, 2), -2, 2) / 2)
    x = np.clip(x, 0, 1) ** site.gamma
    if site.noise:
        x = x + rng.normal(0, site.noise, x.shape)
    return np.clip(np.rint(np.clip(x, 0, 1) * top), 0, top).astype(array.dtype)


@dataclasses.dataclass
class DemoConfig:
    """Options of ``medsynth data demo derm|cxr|prostate``."""

    demo: str
    """Which phantom: ``derm`` (RGB dermoscopy-like), ``cxr`` (16-bit chest radiograph-like) or
    ``prostate`` (3D T2-weighted prostate MRI-like volumes)."""
    out: str
    """Dataset folder to write."""
    n_per_class: int = 200
    """Images per class (the classes are balanced)."""
    size: int | None = None
    """Image side in pixels (volume side in voxels); None = 64 (derm, prostate) or 128 (cxr).
    The field of view is fixed in mm."""
    seed: int = 0
    """Seed of everything (attributes, rendering, split); the same seed gives identical files."""
    val_fraction: float = 0.1
    """Share of each class in the validation split."""
    test_fraction: float = 0.2
    """Share of each class in the held-out test split."""
    overwrite: bool = False
    """Replace an existing dataset folder at ``out``."""
    workers: int = 0
    """Worker processes; 0 = automatic (up to 2, one for small sets). Does not change the output."""
    site: str = DEFAULT_SITE
    """Acquisition site (:data:`SITES`, derm and cxr): ``a`` = the reference phantoms; another
    site shifts colour, illumination, contrast, noise, skin tones or film exposure."""

    def __post_init__(self) -> None:
        if self.demo not in DEMOS:
            raise MedsynthError(f"unknown demo {self.demo!r}; choose one of {', '.join(DEMOS)}")
        if self.site not in SITES:
            raise MedsynthError(f"unknown --site {self.site!r}; choose one of {', '.join(SITES)}")
        if self.site != DEFAULT_SITE and self.demo == "prostate":
            raise MedsynthError("--site is for the 2D phantoms (derm, cxr), not prostate")
        if self.size is None:
            self.size = DEFAULT_SIZE[self.demo]
        top = int(getattr(_module(self.demo), "MAX_SIZE", 1024))
        if not 16 <= self.size <= top:
            raise MedsynthError(f"--size must be between 16 and {top} for {self.demo}, not {self.size}")
        if not 1 <= self.n_per_class <= 100_000:
            raise MedsynthError(f"--n-per-class must be between 1 and 100000, not {self.n_per_class}")
        if self.seed < 0:
            raise MedsynthError(f"--seed must be 0 or positive, not {self.seed}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or \
                self.val_fraction + self.test_fraction >= 1:
            raise MedsynthError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
        if self.workers < 0:
            raise MedsynthError(f"--workers must be 0 (automatic) or positive, not {self.workers}")


# ---------------------------------------------------------------------------------------------
# rendering helpers (shared by derm.py and cxr.py)


def image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The generator of one image: independent of every other image and of the worker count."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, index]))


@functools.lru_cache(maxsize=64)
def _basis(n: int, cells: int) -> np.ndarray:
    """(n, cells+2) matrix of normalised Gaussian bumps: smooth interpolation of a coarse grid."""
    x = (np.arange(n) + 0.5) / n * cells + 0.5  # grid nodes sit at 0..cells+1
    nodes = np.arange(cells + 2)
    w = np.exp(-0.5 * ((x[:, None] - nodes[None, :]) / 0.7) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """A smooth random field of shape (n, n), zero mean and unit std, ``cells`` blobs across.

    A coarse Gaussian grid interpolated separably (two small matrix products): far cheaper
    than filtering a full-resolution white-noise image.
    """
    g = rng.standard_normal((cells + 2, cells + 2))
    b = _basis(n, cells)
    # einsum, not a BLAS matmul: threaded BLAS stalls on a busy machine for this tiny product.
    f = np.einsum("ij,kj->ik", np.einsum("ij,jk->ik", b, g, optimize=False), b, optimize=False)
    return (f - f.mean()) / (f.std() + 1e-9)


def downsample(a: np.ndarray, ss: int) -> np.ndarray:
    """Box-average an (..., n*ss, n*ss) array by ``ss``: supersampled anti-aliasing."""
    if ss == 1:
        return a
    *lead, h, w = a.shape
    return a.reshape(*lead, h // ss, ss, w // ss, ss).mean(axis=(-3, -1))


def segment_distance(xx: np.ndarray, yy: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Distance from each grid point to the polyline ``pts`` (k, 2) of (x, y) vertices."""
    d = np.full(xx.shape, np.inf)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        dx, dy = x1 - x0, y1 - y0
        L2 = dx * dx + dy * dy + 1e-12
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / L2, 0.0, 1.0)
        d = np.minimum(d, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)))
    return d


def stamp_polyline(acc: np.ndarray, coords: np.ndarray, pts: np.ndarray, width: float,
                   value: float = 1.0, soft: float | None = None) -> None:
    """Max-accumulate a soft line of half-width ``width`` along ``pts`` into ``acc`` in place.

    ``coords`` are the (equally spaced) pixel-centre coordinates of both axes of the square
    grid; only the polyline's bounding box is computed, so thin short lines are cheap.
    """
    step = float(coords[1] - coords[0])
    soft = step if soft is None else soft
    pad = width + soft + step
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    j0, j1 = np.searchsorted(coords, [lo[0], hi[0]])
    i0, i1 = np.searchsorted(coords, [lo[1], hi[1]])
    if j1 <= j0 or i1 <= i0:
        return
    yy, xx = np.meshgrid(coords[i0:i1], coords[j0:j1], indexing="ij")
    d = segment_distance(xx, yy, pts)
    a = value * smoothstep(width + soft, max(width - soft, 0.0), d)
    np.maximum(acc[i0:i1, j0:j1], a, out=acc[i0:i1, j0:j1])


def smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# ---------------------------------------------------------------------------------------------
# writing a dataset

RenderFn = Callable[[str, int, int, int], tuple[np.ndarray, dict[str, Any]]]
"""render(class_name, index, size, seed) -> ((C, H, W) array, attribute dict)."""


def _module(demo: str) -> Any:
    if demo == "derm":
        from medsynth.data.demo import derm as mod
    elif demo == "prostate":
        from medsynth.data.demo import prostate as mod
    else:
        from medsynth.data.demo import cxr as mod
    return mod


def _render_chunk(demo: str, root: str, size: int, seed: int,
                  jobs: list[tuple[str, int]], site: str = DEFAULT_SITE) -> list[dict[str, Any]]:
    """Render and save a list of (class, index) images; return their label rows.

    2D images are PNG files; volumes are NIfTI files with the phantom's RAS affine.
    """
    from medsynth.imaging.save import save_nifti, save_png

    mod = _module(demo)
    rows = []
    for cls, i in jobs:
        if site == DEFAULT_SITE:
            array, attrs = mod.render(cls, i, size, seed)
        else:
            where = SITES[site]
            array, attrs = mod.render(cls, i, size, seed, site=where)
            ci = list(mod.CLASSES).index(cls)
            srng = np.random.default_rng(np.random.SeedSequence([seed, ci, i, ord(site)]))
            array = apply_site(array, where, srng)
            attrs = {**attrs, "site": site}
        image_id = f"{demo}_{cls}_{i:05d}"
        if array.ndim == 4:
            rel = f"images/{cls}/{image_id}.nii.gz"
            save_nifti(array, Path(root) / rel, affine=mod.affine(size),
                       description=f"medsynth PHANTOM {demo} {cls}")
        else:
            rel = f"images/{cls}/{image_id}.png"
            save_png(array, Path(root) / rel)
        rows.append({"image_id": image_id, "path": rel, "class": cls, **attrs})
    return rows


def _round_floats(rows: list[dict[str, Any]]) -> None:
    # Fixed decimals keep labels.csv byte-identical and readable.
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = round(v, 4)


def write_demo(cfg: DemoConfig) -> Any:
    """Write the demo dataset of ``cfg`` and return it as an opened :class:`Dataset`."""
    import pandas as pd

    from medsynth.artifacts import prepare_output_dir
    from medsynth.imaging.dataset import assign_splits, finish_dataset
    from medsynth.ui import progress_bar

    mod = _module(cfg.demo)
    assert cfg.size is not None
    created = not Path(cfg.out).exists()
    root = prepare_output_dir(cfg.out, "data", overwrite=cfg.overwrite)
    jobs = [(cls, i) for cls in mod.CLASSES for i in range(cfg.n_per_class)]
    parallel_min = int(getattr(mod, "PARALLEL_MIN", 200))
    workers = cfg.workers or (min(2, os.cpu_count() or 1) if len(jobs) >= parallel_min else 1)
    chunk = max(1, min(32, len(jobs) // (workers * 8) or 1))
    chunks = [jobs[k:k + chunk] for k in range(0, len(jobs), chunk)]
    rows: list[dict[str, Any]] = []
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"demo {cfg.demo}", total=len(jobs), rate="")
            if workers == 1:
                for c in chunks:
                    rows += _render_chunk(cfg.demo, str(root), cfg.size, cfg.seed, c, cfg.site)
                    bar.advance(task, len(c))
            else:
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor, as_completed

                # spawn, not fork: the parent may hold threads (progress bar, torch) and locks.
                with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                    futs = [pool.submit(_render_chunk, cfg.demo, str(root), cfg.size, cfg.seed, c,
                                        cfg.site) for c in chunks]
                    for f in as_completed(futs):
                        got = f.result()
                        rows += got
                        bar.advance(task, len(got))
                        speed = bar.tasks[0].speed
                        if speed:
                            bar.update(task, rate=f"{speed:.1f} img/s")
        order = {(cls, i): k for k, (cls, i) in enumerate(jobs)}
        rows.sort(key=lambda r: order[(r["class"], int(r["image_id"].rsplit("_", 1)[1]))])
        _round_floats(rows)
        table = pd.DataFrame(rows)
        table.insert(3, "split", assign_splits(
            table["class"], (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction,
                             cfg.test_fraction), seed=cfg.seed))
        dims = int(getattr(mod, "SPATIAL_DIMS", 2))
        geometry = {"spacing": [mod.FOV_MM / cfg.size] * dims,
                    "affine": mod.affine(cfg.size).tolist()} if dims == 3 else {}
        return finish_dataset(
            root, table, config=cfg, classes=list(mod.CLASSES), channels=mod.CHANNELS,
            dtype=mod.DTYPE, modality=mod.MODALITY, spatial_dims=dims,
            extra={"phantom": True, "demo": cfg.demo, "mm_per_px": mod.FOV_MM / cfg.size,
                   "seed": cfg.seed, "size": cfg.size, **geometry,
                   **({"site": cfg.site, "site_about": SITES[cfg.site].about}
                      if cfg.site != DEFAULT_SITE else {}),
                   "note": "PHANTOM: procedurally generated demo data, not patient images",
                   "image_seed": "numpy SeedSequence([seed, class_index, image_index])"},
        )
    except BaseException:
        if created:  # a failed run leaves nothing behind that could pass for a dataset
            shutil.rmtree(root, ignore_errors=True)
        raise
