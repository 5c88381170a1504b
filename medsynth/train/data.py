"""Training data: the dataset decoded once into one in-memory tensor, texts chosen per image.

Images ``(C, H, W)`` and volumes ``(C, D, H, W)`` are decoded (and resized to the recipe's
size/shape if needed) once, kept in their own dtype (uint8 / uint16 / int16 / float32) and
mapped to [-1, 1] per batch. Augmentations are only those that cannot change the diagnosis:
flips, and only where the modality has no meaningful orientation (dermoscopy, microscopy,
endoscopy). Chest X-rays, CT and MR (so prostate volumes) are never flipped: a flip moves the
heart to the right and swaps left/right findings. In 3D a horizontal flip mirrors the last axis
(x, columns), a vertical flip the rows (y).

Before decoding, the memory the stack will take is estimated from the first image; more than
the machine has available is an error that says what to lower.
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
    source_size: tuple[int, ...]
    spacing: tuple[float, ...] | None = None
    """Pixel spacing (rows, cols) or voxel spacing (slices, rows, cols) in mm of the images as
    trained (after any resize): the per-axis median over the training images that record one;
    None when none does."""
    affine: list[list[float]] | None = None
    """4x4 RAS voxel-to-world affine of a generated image (NIfTI convention): the training
    images' orientation (when they all share one) scaled to :attr:`spacing`; 2D images are
    centred on the world origin (a synthetic image has no position in any patient), volumes
    on the median centre of the training volumes (so volumes that share one affine keep it
    exactly); None when unknown."""
    eval_pixels: np.ndarray | None = None
    """Held-out images for the autoencoder's reconstruction metrics (the validation split,
    resized like the training images), or None."""
    eval_split: str = ""
    """Where :attr:`eval_pixels` come from (``val``, or ``train (no val split)``)."""

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


def _resize(arr: np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
    """Resize (C, H, W) (bilinear, antialiased) or (C, D, H, W) (trilinear) to ``size`` (an edge
    length or a spatial shape), keeping the dtype and its range."""
    import torch
    import torch.nn.functional as F

    dims = arr.ndim - 1
    shape = (size,) * dims if isinstance(size, int) else tuple(size)
    t = torch.from_numpy(arr.astype(np.float32))[None]
    if dims == 2:
        t = F.interpolate(t, size=shape, mode="bilinear", antialias=True, align_corners=False)[0]
    else:
        t = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0]
    info = np.iinfo(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else None
    out = t.numpy()
    if info is not None:
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(arr.dtype)


def target_shape(cfg: TrainConfig, dims: int) -> tuple[int, ...] | None:
    """The spatial shape the recipe resizes to (``shape``, else ``size`` on every axis), or None."""
    if cfg.shape is not None:
        return tuple(int(v) for v in cfg.shape)
    if cfg.size is not None:
        return (int(cfg.size),) * dims
    return None


def available_memory_bytes() -> int | None:
    """Memory the system can still give (Linux MemAvailable), or None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits_memory(where: Any, n: int, shape: tuple[int, ...], dtype: Any,
                      available: int | None = None) -> None:
    """Refuse a stack of ``n`` arrays of ``shape`` (channels first) that will not fit in memory."""
    need = n * int(np.prod(shape)) * np.dtype(dtype).itemsize
    avail = available_memory_bytes() if available is None else available
    # The stack, one decoded copy in flight and the batches: keep a quarter free.
    if avail is None or need <= 0.75 * avail:
        return
    kind = "volumes" if len(shape) == 4 else "images"
    gib = 2**30
    raise MedsynthError(
        f"{where}: the {n} training {kind} of {'x'.join(map(str, shape[1:]))} x {shape[0]} "
        f"channel(s) ({np.dtype(dtype).name}) need {need / gib:.1f} GiB in memory, only "
        f"{avail / gib:.1f} GiB are available",
        hint="lower shape (or size) in the recipe, e.g. shape: [32, 128, 128], train on fewer "
        "images (--classes, --splits), or use a machine with more memory")


def load_train_data(dataset: Any, cfg: TrainConfig, store: Any = None,
                    progress: bool = True) -> TrainData:
    """Select the recipe's splits/classes from ``dataset``, decode images, attach store texts.

    Errors (MedsynthError) for unknown class names, a class without training images, images of
    mixed shapes without a ``size``/``shape``, a 2D dataset with a 3D recipe (and the reverse),
    more data than memory, and a store whose image ids or classes do not match.
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
    spacings: list[tuple[float, ...]] = []
    affines: list[np.ndarray] = []
    src_shapes: list[tuple[int, ...]] = []
    items = [r for _, r in rows.iterrows()]
    it = track(items, "decoding images") if progress else items
    want = None
    for k, r in enumerate(it):
        img = dataset.load(r)
        a = img.array
        dims = a.ndim - 1
        if k == 0:
            _check_dims(dataset.root / str(r["path"]), dims, cfg)
            want = target_shape(cfg, dims)
            check_fits_memory(dataset.root, len(items), (a.shape[0], *(want or a.shape[1:])),
                              a.dtype)
        elif dims != arrays[0].ndim - 1:
            raise MedsynthError(f"{dataset.root / str(r['path'])}: a {dims}D image among "
                                f"{arrays[0].ndim - 1}D ones; a dataset is 2D or 3D")
        shapes.add(tuple(a.shape))
        if img.spacing is not None and len(img.spacing) == dims:
            new = want or a.shape[1:]
            # the resize stretches each axis to the target: spacing follows per axis
            spacings.append(tuple(float(sp) * n / m for sp, n, m in
                                  zip(img.spacing, a.shape[1:], new, strict=True)))
            if img.affine is not None:
                affines.append(np.asarray(img.affine, dtype=np.float64))
                src_shapes.append(tuple(int(v) for v in a.shape[1:]))
        if want is not None and tuple(a.shape[1:]) != want:
            a = _resize(a, want)
        arrays.append(a)
    dims = arrays[0].ndim - 1
    chans = {s[0] for s in shapes}
    if len(chans) > 1:
        raise MedsynthError(f"{dataset.root}: images have mixed channel counts {sorted(chans)}")
    if want is None:
        sizes = {s[1:] for s in shapes}
        if dims == 2 and (len(sizes) > 1 or any(h != w for h, w in sizes)):
            raise MedsynthError(
                f"{dataset.root}: images are not all one square size ({sorted(sizes)[:4]})",
                hint="set size: N in the recipe or --size N to resize them",
            )
        if dims == 3 and len(sizes) > 1:
            raise MedsynthError(
                f"{dataset.root}: volumes have different shapes ({sorted(sizes)[:4]})",
                hint="set shape: [D, H, W] in the recipe to resample them to one shape, or "
                "resample at import")
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
        _note_spacings(spacings, spacing, len(arrays))
    if progress:
        _note_units(rows, dataset)
    if dims == 2:
        affine = (model_affine(affines, spacing, int(pixels.shape[-1]))
                  if len(affines) == len(arrays) else None)
    else:
        affine = (volume_affine(affines, src_shapes, spacing, tuple(pixels.shape[2:]))
                  if len(affines) == len(arrays) else None)
    return TrainData(pixels=pixels, labels=labels, texts=texts, image_ids=ids, classes=classes,
                     modality=dataset.modality, dtype=str(pixels.dtype), hflip=h, vflip=v,
                     n_described=sum(1 for t in texts if t), source_size=tuple(first[1:]),
                     spacing=spacing, affine=affine)


def attach_eval_pixels(dataset: Any, cfg: TrainConfig, data: TrainData, *,
                       split: str = "val", limit: int = 32) -> None:
    """Set ``data.eval_pixels``: up to ``limit`` images of ``split`` (never the test split),
    every class in turn, resized like the training images; training images when there are none."""
    table = dataset.table
    rows = table[(table["split"] == split) & table["class"].isin(data.classes)]
    if split == "test" or rows.empty or split in cfg.splits:
        data.eval_pixels = data.pixels[:limit]
        data.eval_split = "train (no held-out val split)"
        return
    # round-robin over classes so a short limit still sees every class
    rows = rows.assign(_k=rows.groupby("class").cumcount()).sort_values(["_k", "class"])
    want = tuple(int(v) for v in data.spatial_shape)
    arrays = []
    for _, r in rows.head(limit).iterrows():
        a = dataset.load(r).array
        if a.ndim - 1 != data.spatial_dims or a.shape[0] != data.channels:
            continue
        if tuple(a.shape[1:]) != want:
            a = _resize(a, want)
        arrays.append(a.astype(data.pixels.dtype))
    if not arrays:
        data.eval_pixels, data.eval_split = data.pixels[:limit], "train (no held-out val split)"
        return
    data.eval_pixels, data.eval_split = np.stack(arrays), split


def _check_dims(path: Any, dims: int, cfg: TrainConfig) -> None:
    """A 2D dataset with a 3D recipe (or the reverse) is an error naming both."""
    want = cfg.spatial_dims or (len(cfg.shape) if cfg.shape else None)
    if dims not in (2, 3):
        raise MedsynthError(f"{path}: {dims}D data; medsynth trains on 2D images or 3D volumes")
    if want is not None and want != dims:
        kind = {2: "2D images", 3: "3D volumes"}
        raise MedsynthError(
            f"{path}: the dataset holds {kind[dims]} but the recipe is for {kind[want]} "
            f"(spatial_dims: {want}{', shape: ' + str(cfg.shape) if cfg.shape else ''})",
            hint="use a recipe for this kind of data (examples/prostate-cpu.yaml for volumes, "
            "examples/derm-cpu.yaml for images)" + (", or import 2D slices with medsynth data "
                                                    "import --slices" if dims == 3 else ""))


def _note_spacings(spacings: list[tuple[float, ...]], spacing: Any, n: int) -> None:
    from medsynth.ui import console

    arr = np.array(spacings)
    lo, hi = np.min(arr, axis=0), np.max(arr, axis=0)

    def mm(v: Any) -> str:
        return " x ".join(f"{x:.3g}" for x in v)

    if len(spacings) < n:
        console.print(
            f"[yellow]note:[/] {n - len(spacings)} of {n} training images record no pixel "
            f"spacing; the model records the median of the others, {mm(spacing)} mm "
            "(generate --spacing overrides it)", soft_wrap=True)
    if np.any(hi > lo * 1.1):  # shown beside the missing-spacing note, not instead of it
        console.print(
            f"[yellow]note:[/] the training images' pixel spacings (as trained) range from "
            f"{mm(lo)} to {mm(hi)} mm; the model records the median {mm(spacing)} mm for "
            "generated DICOM/NIfTI (generate --spacing overrides it)", soft_wrap=True)


def _note_units(rows: Any, dataset: Any) -> None:
    """Warn when the training images mix kinds of values (CT HU, MR units, display values):
    a set that ``data import --dtype`` forced into one type."""
    from medsynth.data.ingest import unit_kinds
    from medsynth.ui import console

    col = rows["modality"] if "modality" in rows.columns else None
    found = col.dropna().astype(str).value_counts().to_dict() if col is not None else {}
    kinds = unit_kinds(found)
    if len(kinds) > 1:
        console.print(
            "[yellow]warning:[/] the training images mix kinds of pixel values ("
            + "; ".join(f"{k}: {', '.join(f'{m} {found[m]}' for m in ms)}"
                        for k, ms in kinds.items())
            + f") in one {dataset.dtype} scale: the model learns them as one intensity range; "
            "train a model per modality (import each one separately) for comparable "
            "intensities", soft_wrap=True)


def shared_direction(affines: list[np.ndarray]) -> np.ndarray | None:
    """The direction cosines all ``affines`` share (within 0.01), or None (none given, a
    degenerate axis, or orientations that differ)."""
    if not affines:
        return None
    dirs = []
    for a in affines:
        norms = np.linalg.norm(a[:3, :3], axis=0)
        if np.any(norms <= 0):
            return None
        dirs.append(a[:3, :3] / norms)
    if any(np.abs(d - dirs[0]).max() > 0.01 for d in dirs[1:]):
        return None
    return dirs[0]


def volume_affine(affines: list[np.ndarray], src_shapes: list[tuple[int, ...]],
                  spacing: tuple[float, ...] | None, shape: tuple[int, ...]
                  ) -> list[list[float]] | None:
    """The affine of a generated ``(D, H, W)`` volume (see :attr:`TrainData.affine`).

    The training volumes' shared orientation (direction cosines within 0.01, else None), the
    voxel spacing (slices, rows, cols) on the NIfTI axes (i, j, k) = (cols, rows, slices), and
    the median world position of the training volumes' centres at the volume's centre.
    """
    direction = shared_direction(affines)
    if direction is None or spacing is None:
        return None
    centres = [a[:3, :3] @ np.array([(s[2] - 1) / 2, (s[1] - 1) / 2, (s[0] - 1) / 2]) + a[:3, 3]
               for a, s in zip(affines, src_shapes, strict=True)]
    out = np.eye(4)
    out[:3, :3] = direction * np.array([spacing[2], spacing[1], spacing[0]])
    centre_vox = np.array([(shape[2] - 1) / 2, (shape[1] - 1) / 2, (shape[0] - 1) / 2])
    out[:3, 3] = np.median(np.array(centres), axis=0) - out[:3, :3] @ centre_vox
    return [[float(v) for v in row] for row in out]


def model_affine(affines: list[np.ndarray], spacing: tuple[float, ...] | None,
                 size: int) -> list[list[float]] | None:
    """The affine of a generated ``size`` x ``size`` image (see :attr:`TrainData.affine`).

    None unless every training image has an affine and they share one orientation (direction
    cosines within 0.01), and the spacing is known.
    """
    direction = shared_direction(affines)
    if direction is None or spacing is None:
        return None
    thickness = float(np.median([np.linalg.norm(a[:3, 2]) for a in affines]))
    out = np.eye(4)
    # NIfTI voxel axes (i, j, k) = (column, row, slice); spacing is (rows, cols)
    out[:3, :3] = direction * np.array([spacing[1], spacing[0], thickness])
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
