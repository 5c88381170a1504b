"""Training data: the dataset decoded once into one tensor, texts chosen per image.

Images ``(C, H, W)`` and volumes ``(C, D, H, W)`` are decoded (and resized to the recipe's
size/shape if needed) once, kept in their own dtype (uint8 / uint16 / int16 / float32) and
mapped to [-1, 1] per batch (integer pixels through a lookup table: no float64 copy).

Where the stack goes (recipe ``data_cache``): ``memory`` (one array in RAM, per process), or
``disk``: a memory-mapped ``.npy`` in the shared cache folder (``$MEDSYNTH_CACHE``, default
``~/.cache/medsynth``; ``train-data/pixels_<key>.npy``, keyed by the dataset's checksum, the
selected images and the shape), decoded once by the main process and read by every rank and
by later runs; pages read for a batch are handed back at once, so the resident memory of
training does not grow with the dataset. ``auto`` (default) picks disk when the stack would
take more than a quarter of the available memory. Augmentations are only those that cannot change the diagnosis:
flips, and only where the modality has no meaningful orientation (dermoscopy, microscopy,
endoscopy). Chest X-rays, CT and MR (so prostate volumes) are never flipped: a flip moves the
heart to the right and swaps left/right findings. In 3D a horizontal flip mirrors the last axis
(x, columns), a vertical flip the rows (y).

Before decoding, the memory the stack will take is estimated from the first image; more than
the machine has available is an error that says what to lower.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.imaging.modality import allowed_flips
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
    value_range: tuple[float, float] | None = None
    """(min, max) of :attr:`pixels`, found while decoding (None: computed when asked)."""

    def intensity_mapping(self) -> Any:
        """The [-1, 1] mapping of these pixels, without a pass over a disk stack."""
        from medsynth.models.intensity import _LIMITS, IntensityMapping

        if self.value_range is None or self.pixels.dtype == np.uint8:
            return IntensityMapping.for_data(self.pixels)
        lo, hi = self.value_range  # the rule of IntensityMapping.for_data, without the pass
        dtype = str(self.pixels.dtype)
        return IntensityMapping(dtype if dtype in _LIMITS else "float32", lo,
                                hi if hi > lo else lo + 1.0)

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
    :func:`medsynth.imaging.modality.allowed_flips`)."""
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

    items = [r for _, r in rows.iterrows()]
    labels = np.array([classes.index(str(c)) for c in rows["class"]], dtype=np.int64)
    ids = [str(i) for i in rows["image_id"]]
    if progress:
        _note_units(rows, dataset)
    texts = [texts_by_id.get(i, "") for i in ids]
    disk = _disk_cache(dataset, cfg, items)
    if disk is None:
        pixels, meta = _decode(dataset, cfg, items, None, progress=progress)
        return _finish(pixels, meta, dataset, cfg, labels, texts, ids, classes, progress)
    from accelerate import PartialState

    with PartialState().main_process_first():  # main decodes the disk stack, the others read it
        if disk.is_file() and disk.with_suffix(".json").is_file():
            return _from_meta(np.load(disk, mmap_mode="r"), disk, dataset, cfg, labels, texts,
                              ids, classes, progress)
        pixels, meta = _decode(dataset, cfg, items, disk, progress=progress)
    return _finish(pixels, meta, dataset, cfg, labels, texts, ids, classes, progress)


def data_cache_root() -> Path:
    """The shared cache folder (``$MEDSYNTH_CACHE``, default ``~/.cache/medsynth``)."""
    import os

    return Path(os.environ.get("MEDSYNTH_CACHE") or Path.home() / ".cache" / "medsynth")


def _disk_cache(dataset: Any, cfg: TrainConfig, items: list[Any]) -> Path | None:
    """The disk stack for this selection (``data_cache`` disk, or auto and too big), or None."""
    import hashlib
    import json

    mode = getattr(cfg, "data_cache", "memory")
    if mode == "memory" or not items:
        return None
    key = hashlib.sha256(json.dumps(
        [1, str(getattr(dataset, "sha256", "")), str(Path(dataset.root).resolve()),
         [str(r["path"]) for r in items], cfg.shape, cfg.size]).encode()).hexdigest()[:20]
    path = data_cache_root() / "train-data" / f"pixels_{key}.npy"
    if mode == "auto" and not path.is_file():
        a = dataset.load(items[0]).array
        want = target_shape(cfg, a.ndim - 1) or a.shape[1:]
        need = len(items) * a.shape[0] * int(np.prod(want)) * a.dtype.itemsize
        avail = available_memory_bytes()
        if avail is None or need <= 0.25 * avail:
            return None
    return path


def release(pixels: Any) -> None:
    """Hand the pages of a memory-mapped stack back to the OS (they stay in the page cache,
    shared by every process): what one batch read does not stay in this process's memory."""
    import mmap

    m = getattr(pixels, "_mmap", None)
    if m is not None and hasattr(m, "madvise"):
        try:
            m.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _decode(dataset: Any, cfg: TrainConfig, items: list[Any], disk: Path | None, *,
            progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode (and resize) every image into one stack, in memory or into the disk cache."""
    import json
    import os

    from medsynth.ui import track

    arrays: list[np.ndarray] = []
    shapes: set[tuple[int, ...]] = set()
    dtypes: set[str] = set()
    spacings: list[tuple[float, ...]] = []
    affines: list[np.ndarray] = []
    src_shapes: list[tuple[int, ...]] = []
    it = track(items, "decoding images") if progress else items
    want = None
    out: Any = None
    lo, hi = np.inf, -np.inf
    first_dims = 0
    tmp = disk.with_name(f".{disk.name}.{os.getpid()}.part") if disk is not None else None
    try:
        for k, r in enumerate(it):
            img = dataset.load(r)
            a = img.array
            dims = a.ndim - 1
            if k == 0:
                _check_dims(dataset.root / str(r["path"]), dims, cfg)
                want = target_shape(cfg, dims)
                first_dims = dims
                full = (a.shape[0], *(want or a.shape[1:]))
                if tmp is None:
                    check_fits_memory(dataset.root, len(items), full, a.dtype)
                else:
                    _check_fits_disk(tmp.parent, len(items), full, a.dtype)
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=a.dtype,
                                                    shape=(len(items), *full))
            elif dims != first_dims:
                raise MedsynthError(f"{dataset.root / str(r['path'])}: a {dims}D image among "
                                    f"{first_dims}D ones; a dataset is 2D or 3D")
            shapes.add(tuple(a.shape))
            dtypes.add(str(a.dtype))
            _collect_geometry(img, a, dims, want, spacings, affines, src_shapes)
            if want is not None and tuple(a.shape[1:]) != want:
                a = _resize(a, want)
            if a.size:
                lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
            if out is None:
                arrays.append(a)
                continue
            if len(dtypes) > 1 or tuple(a.shape) != out.shape[1:]:
                _check_stack(dataset, shapes, dtypes, want, first_dims)
            out[k] = a
            if k % 64 == 63:
                out.flush()
                release(out)
        _check_stack(dataset, shapes, dtypes, want, first_dims)
        meta = {"shapes": sorted(shapes), "spacings": spacings,
                "affines": [a.tolist() for a in affines], "src_shapes": src_shapes,
                "value_range": [lo, hi], "n": len(items)}
        if out is None:
            return np.stack(arrays), meta
        out.flush()
        del out
        assert tmp is not None and disk is not None
        os.replace(tmp, disk)
        from medsynth.artifacts import atomic_write_text

        atomic_write_text(disk.with_suffix(".json"), json.dumps(meta))
        return np.load(disk, mmap_mode="r"), meta
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _check_fits_disk(folder: Path, n: int, shape: tuple[int, ...], dtype: Any) -> None:
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    need = n * int(np.prod(shape)) * np.dtype(dtype).itemsize
    free = shutil.disk_usage(folder).free
    if need > 0.9 * free:
        raise MedsynthError(f"{folder}: the training data need {need / 2**30:.1f} GiB on disk, "
                            f"{free / 2**30:.1f} GiB are free",
                            hint="set MEDSYNTH_CACHE to a larger disk, or data_cache: memory")


def _collect_geometry(img: Any, a: np.ndarray, dims: int, want: Any, spacings: list[Any],
                      affines: list[Any], src_shapes: list[Any]) -> None:
    if img.spacing is not None and len(img.spacing) == dims:
        new = want or a.shape[1:]
        # the resize stretches each axis to the target: spacing follows per axis
        spacings.append(tuple(float(sp) * n / m for sp, n, m in
                              zip(img.spacing, a.shape[1:], new, strict=True)))
        if img.affine is not None:
            affines.append(np.asarray(img.affine, dtype=np.float64))
            src_shapes.append(tuple(int(v) for v in a.shape[1:]))


def _check_stack(dataset: Any, shapes: set[tuple[int, ...]], dtypes: set[str], want: Any,
                 dims: int) -> None:
    """Channels, sizes and pixel types that cannot go into one stack are errors."""
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
    if len(dtypes) > 1:
        raise MedsynthError(
            f"{dataset.root}: images have mixed pixel types {sorted(dtypes)} (a dataset imported "
            "before import chose one type per dataset)",
            hint=f"import it again: medsynth data import {dataset.root} --out NEW_DATASET "
            "(add --dtype float32 to keep every value, or --dtype int16/uint16)")


def _from_meta(pixels: np.ndarray, disk: Path, dataset: Any, cfg: TrainConfig, labels: Any,
               texts: list[str], ids: list[str], classes: list[str],
               progress: bool) -> TrainData:
    """A disk stack decoded before (by the main process, or an earlier run)."""
    import json

    meta = json.loads(disk.with_suffix(".json").read_text("utf-8"))
    if int(meta.get("n", -1)) != len(ids) or len(pixels) != len(ids):
        raise MedsynthError(f"{disk}: the cached training data do not match the selection",
                            hint=f"delete {disk} and its .json to decode the images again")
    meta["shapes"] = [tuple(s) for s in meta["shapes"]]
    meta["src_shapes"] = [tuple(s) for s in meta["src_shapes"]]
    meta["spacings"] = [tuple(s) for s in meta["spacings"]]
    return _finish(pixels, meta, dataset, cfg, labels, texts, ids, classes, progress)


def _finish(pixels: np.ndarray, meta: dict[str, Any], dataset: Any, cfg: TrainConfig,
            labels: Any, texts: list[str], ids: list[str], classes: list[str],
            progress: bool) -> TrainData:
    spacings = meta["spacings"]
    affines = [np.asarray(a, dtype=np.float64) for a in meta["affines"]]
    src_shapes = meta["src_shapes"]
    n = len(pixels)
    dims = pixels.ndim - 2
    h, v = flips_for(dataset.modality, cfg)
    first = tuple(meta["shapes"][0])
    spacing = tuple(float(v) for v in np.median(np.array(spacings), axis=0)) if spacings else None
    if spacings and progress:
        _note_spacings(spacings, spacing, n)
    if dims == 2:
        affine = (model_affine(affines, spacing, int(pixels.shape[-1]))
                  if len(affines) == n else None)
    else:
        affine = (volume_affine(affines, src_shapes, spacing, tuple(pixels.shape[2:]))
                  if len(affines) == n else None)
    lo, hi = meta.get("value_range") or (None, None)
    return TrainData(pixels=pixels, labels=labels, texts=texts, image_ids=ids, classes=classes,
                     modality=dataset.modality, dtype=str(pixels.dtype), hflip=h, vflip=v,
                     n_described=sum(1 for t in texts if t), source_size=tuple(first[1:]),
                     spacing=spacing, affine=affine,
                     value_range=(float(lo), float(hi)) if lo is not None and n else None)


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
    from medsynth.imaging.modality import unit_kinds
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


def batch_pixels(data: TrainData, idx: Any, gen: Any) -> np.ndarray:
    """Images ``idx`` in the data's own dtype ``(B, C, *spatial)`` with seeded flips from ``gen``
    (the draws of :func:`batch_tensors`); a disk stack's pages are handed back after the read."""
    import torch

    a = np.array(data.pixels[idx.numpy()])
    release(data.pixels)
    b = a.shape[0]
    if data.hflip:
        m = (torch.rand(b, generator=gen) < 0.5).numpy()
        a[m] = a[m][..., ::-1]
    if data.vflip:
        m = (torch.rand(b, generator=gen) < 0.5).numpy()
        a[m] = a[m][..., ::-1, :]
    return a


def to_unit(a: np.ndarray, mapping: Any) -> Any:
    """Pixels (the data's dtype) -> float32 [-1, 1] tensor, bit for bit ``mapping.from_pixels``:
    integer pixels through a lookup table of every value (no float64 copy of the batch)."""
    import torch

    lut = _lut(mapping.dtype, mapping.low, mapping.high) if a.dtype.kind in "ui" \
        and a.dtype.itemsize <= 2 else None
    if lut is None:
        return torch.from_numpy(mapping.from_pixels(a))
    table, offset = lut
    return torch.from_numpy(table[a.astype(np.int32) + offset if offset else a])


@functools.lru_cache(maxsize=8)
def _lut(dtype: str, low: float, high: float) -> tuple[np.ndarray, int] | None:
    from medsynth.models.intensity import IntensityMapping

    if dtype not in ("uint8", "uint16", "int16"):
        return None
    info = np.iinfo(dtype)
    values = np.arange(int(info.min), int(info.max) + 1, dtype=np.int64)
    return IntensityMapping(dtype, low, high).from_pixels(values), -int(info.min)


def batch_tensors(data: TrainData, idx: Any, gen: Any, mapping: Any) -> Any:
    """Images ``idx`` as float32 [-1, 1] ``(B, C, *spatial)`` with seeded flips from ``gen``."""
    return to_unit(batch_pixels(data, idx, gen), mapping)


def cache_dir(out: Path) -> Path:
    return Path(out) / "checkpoints" / "cache"
