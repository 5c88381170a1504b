"""Training data: the dataset decoded once into one in-memory tensor, texts chosen per image.

Images are decoded (and resized to the recipe's size if needed) once, kept in their own dtype
(uint8 / uint16) and mapped to [-1, 1] per batch. Augmentations are only those that cannot
change the diagnosis: flips, and only where the modality has no meaningful orientation
(dermoscopy, microscopy, endoscopy). Chest X-rays are never flipped: a flip moves the heart to
the right and swaps left/right findings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.data.modality import allowed_flips
from medsynth.errors import MedsynthError
from medsynth.train.config import TrainConfig


@dataclasses.dataclass
class TrainData:
    """Decoded training images, labels and per-image texts."""

    pixels: np.ndarray
    """(N, C, H, W), or (N, C, D, H, W) for volumes, in the data's own dtype."""
    labels: np.ndarray
    """(N,) class ids into :attr:`classes`."""
    texts: list[str]
    """Description per image; "" = none (class-only condition)."""
    image_ids: list[str]
    classes: list[str]
    modality: str
    dtype: str
    hflip: bool
    vflip: bool
    n_described: int
    source_size: tuple[int, int]
    spacing: tuple[float, float] | None = None
    """Pixel spacing (rows, cols) in mm of the images as trained (after any resize): the
    per-axis median over the training images that record one; None when none does."""
    affine: list[list[float]] | None = None
    """4x4 RAS voxel-to-world affine of a generated image (NIfTI convention): the training
    images' orientation (when they all share one) scaled to :attr:`spacing`, centred on the
    world origin (a synthetic image has no position in any patient); None when unknown."""

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def size(self) -> int:
        return int(self.pixels.shape[-1])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """(H, W) or (D, H, W)."""
        return tuple(int(s) for s in self.pixels.shape[2:])

    @property
    def spatial_dims(self) -> int:
        return self.pixels.ndim - 2

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def flips_for(modality: str, cfg: TrainConfig) -> tuple[bool, bool]:
    """(horizontal, vertical) flips for ``modality`` under the recipe's auto/yes/no (auto =
    :func:`medsynth.data.modality.allowed_flips`)."""
    auto_h, auto_v = allowed_flips(modality)
    h = auto_h if cfg.hflip == "auto" else cfg.hflip == "yes"
    v = auto_v if cfg.vflip == "auto" else cfg.vflip == "yes"
    return h, v


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize (C, H, W) to (C, size, size) with antialiasing, keeping the dtype and its range."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(arr.astype(np.float32))[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    info = np.iinfo(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else None
    out = t.numpy()
    if info is not None:
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(arr.dtype)


def load_train_data(dataset: Any, cfg: TrainConfig, store: Any = None,
                    progress: bool = True) -> TrainData:
    """Select the recipe's splits/classes from ``dataset``, decode images, attach store texts.

    Errors (MedsynthError) for unknown class names, a class without training images, images of
    mixed shapes without a ``size``, and a store whose image ids or classes do not match.
    """
    from medsynth.ui import track

    all_classes = list(dataset.classes)
    classes = list(cfg.classes) if cfg.classes else all_classes
    unknown = [c for c in classes if c not in all_classes]
    if unknown:
        raise MedsynthError(f"{dataset.root}: unknown classes {unknown}",
                            hint=f"the dataset has: {', '.join(all_classes)}")
    table = dataset.table
    rows = table[table["split"].isin(cfg.splits) & table["class"].isin(classes)]
    counts = rows["class"].value_counts()
    empty = [c for c in classes if int(counts.get(c, 0)) == 0]
    if empty:
        raise MedsynthError(
            f"{dataset.root}: no images of class(es) {empty} in split(s) {cfg.splits}",
            hint="drop them with --classes, or train on more splits with --splits",
        )
    texts_by_id = _store_texts(dataset, store, classes) if store is not None else {}

    arrays: list[np.ndarray] = []
    shapes: set[tuple[int, ...]] = set()
    spacings: list[tuple[float, float]] = []
    affines: list[np.ndarray] = []
    items = [r for _, r in rows.iterrows()]
    it = track(items, "decoding images") if progress else items
    for r in it:
        img = dataset.load(r)
        a = img.array
        if a.ndim != 3:
            raise MedsynthError(f"{dataset.root / str(r['path'])}: {a.ndim - 1}D data; medsynth train is 2D only",
                                hint="train on 2D slices (medsynth data import --slices)")
        shapes.add(tuple(a.shape))
        if img.spacing is not None and len(img.spacing) == 2:
            h, w = a.shape[1:]
            size = cfg.size or h
            # the resize below stretches each axis to `size`: spacing follows per axis
            spacings.append((img.spacing[0] * h / size, img.spacing[1] * w / (cfg.size or w)))
            if img.affine is not None:
                affines.append(np.asarray(img.affine, dtype=np.float64))
        if cfg.size is not None and a.shape[1:] != (cfg.size, cfg.size):
            a = _resize(a, cfg.size)
        arrays.append(a)
    chans = {s[0] for s in shapes}
    if len(chans) > 1:
        raise MedsynthError(f"{dataset.root}: images have mixed channel counts {sorted(chans)}")
    if cfg.size is None:
        sizes = {s[1:] for s in shapes}
        if len(sizes) > 1 or any(h != w for h, w in sizes):
            raise MedsynthError(
                f"{dataset.root}: images are not all one square size ({sorted(sizes)[:4]})",
                hint="set size: N in the recipe or --size N to resize them",
            )
    dtypes = {str(a.dtype) for a in arrays}
    if len(dtypes) > 1:
        raise MedsynthError(
            f"{dataset.root}: images have mixed pixel types {sorted(dtypes)} (a dataset imported "
            "before import chose one type per dataset)",
            hint=f"import it again: medsynth data import {dataset.root} --out NEW_DATASET "
            "(add --dtype float32 to keep every value, or --dtype int16/uint16)")
    pixels = np.stack(arrays)
    labels = np.array([classes.index(str(c)) for c in rows["class"]], dtype=np.int64)
    ids = [str(i) for i in rows["image_id"]]
    texts = [texts_by_id.get(i, "") for i in ids]
    h, v = flips_for(dataset.modality, cfg)
    first = next(iter(shapes))
    spacing = tuple(float(v) for v in np.median(np.array(spacings), axis=0)) if spacings else None
    if spacings and progress:
        from medsynth.ui import console

        lo, hi = np.min(np.array(spacings), axis=0), np.max(np.array(spacings), axis=0)
        if len(spacings) < len(arrays):
            console.print(
                f"[yellow]note:[/] {len(arrays) - len(spacings)} of {len(arrays)} training images "
                f"record no pixel spacing; the model records the median of the others, "
                f"{spacing[0]:.3g} x {spacing[1]:.3g} mm (generate --spacing overrides it)",
                soft_wrap=True)
        elif np.any(hi > lo * 1.1):
            console.print(
                f"[yellow]note:[/] the training images' pixel spacings (as trained) range from "
                f"{lo[0]:.3g} x {lo[1]:.3g} to {hi[0]:.3g} x {hi[1]:.3g} mm; the model records "
                f"the median {spacing[0]:.3g} x {spacing[1]:.3g} mm for generated DICOM/NIfTI "
                "(generate --spacing overrides it)", soft_wrap=True)
    return TrainData(pixels=pixels, labels=labels, texts=texts, image_ids=ids, classes=classes,
                     modality=dataset.modality, dtype=str(pixels.dtype), hflip=h, vflip=v,
                     n_described=sum(1 for t in texts if t), source_size=(first[1], first[2]),
                     spacing=spacing,  # type: ignore[arg-type]
                     affine=model_affine(affines, spacing, int(pixels.shape[-1]))
                     if len(affines) == len(arrays) else None)


def model_affine(affines: list[np.ndarray], spacing: tuple[float, ...] | None,
                 size: int) -> list[list[float]] | None:
    """The affine of a generated ``size`` x ``size`` image (see :attr:`TrainData.affine`).

    None unless every training image has an affine and they share one orientation (direction
    cosines within 0.01), and the spacing is known.
    """
    if not affines or spacing is None:
        return None
    dirs = []
    for a in affines:
        norms = np.linalg.norm(a[:3, :3], axis=0)
        if np.any(norms <= 0):
            return None
        dirs.append(a[:3, :3] / norms)
    if any(np.abs(d - dirs[0]).max() > 0.01 for d in dirs[1:]):
        return None
    thickness = float(np.median([np.linalg.norm(a[:3, 2]) for a in affines]))
    out = np.eye(4)
    # NIfTI voxel axes (i, j, k) = (column, row, slice); spacing is (rows, cols)
    out[:3, :3] = dirs[0] * np.array([spacing[1], spacing[0], thickness])
    centre = np.array([(size - 1) / 2, (size - 1) / 2, 0.0])
    out[:3, 3] = -out[:3, :3] @ centre
    return [[float(v) for v in row] for row in out]


def _store_texts(dataset: Any, store: Any, classes: list[str]) -> dict[str, str]:
    """image_id -> description text from the store; mismatching ids or classes are errors."""
    known = dict(zip(dataset.table["image_id"].astype(str), dataset.table["class"].astype(str),
                     strict=False))
    extra = sorted(set(store.classes) - set(dataset.classes))
    if extra:
        raise MedsynthError(
            f"{store.root}: the store has classes {extra} that the dataset {dataset.root} lacks",
            hint="describe this dataset (medsynth describe DATASET --out STORE) or pick its store",
        )
    out: dict[str, str] = {}
    wrong_id: list[str] = []
    wrong_cls: list[str] = []
    for image_id, rec in store.by_image().items():
        if image_id not in known:
            wrong_id.append(image_id)
        elif known[image_id] != rec.cls:
            wrong_cls.append(image_id)
        elif rec.cls in classes and rec.text.strip():
            out[image_id] = rec.text.strip()
    if wrong_id or wrong_cls:
        parts = []
        if wrong_id:
            parts.append(f"{len(wrong_id)} image ids not in the dataset (e.g. {wrong_id[:3]})")
        if wrong_cls:
            parts.append(f"{len(wrong_cls)} images with a different class (e.g. {wrong_cls[:3]})")
        raise MedsynthError(
            f"{store.root}: the store does not match the dataset {dataset.root}: " + "; ".join(parts),
            hint="pass the store made from this dataset by medsynth describe",
        )
    return out


def batch_tensors(data: TrainData, idx: Any, gen: Any, mapping: Any) -> Any:
    """Images ``idx`` as float32 [-1, 1] ``(B, C, *spatial)`` with seeded flips from ``gen``."""
    import torch

    x = torch.from_numpy(mapping.from_pixels(data.pixels[idx.numpy()]))
    b = x.shape[0]
    if data.hflip:
        m = torch.rand(b, generator=gen) < 0.5
        x[m] = x[m].flip(-1)
    if data.vflip:
        m = torch.rand(b, generator=gen) < 0.5
        x[m] = x[m].flip(-2)
    return x


def cache_dir(out: Path) -> Path:
    return Path(out) / "checkpoints" / "cache"
