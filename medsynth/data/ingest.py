"""``medsynth data import``: turn any source into a dataset folder (lossless PNG or NIfTI)."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth.artifacts import prepare_output_dir
from medsynth.data.dataset import Dataset, assign_splits, finish_dataset
from medsynth.data.save import save_lossless
from medsynth.data.sources import Source, scan_source
from medsynth.data.transforms import resize_2d
from medsynth.errors import MedsynthError


@dataclasses.dataclass
class ImportConfig:
    """Options of ``medsynth data import``."""

    source: str
    """Image folder, CSV, MedMNIST .npz or dataset folder to read."""
    out: str
    """Dataset folder to write."""
    size: int | None = None
    """Resize 2D images to size x size (aspect preserved); None keeps the original size."""
    resize: str = "pad"
    """'pad' (letterbox) or 'crop' (centre crop) when resizing."""
    seed: int = 0
    """Seed of the stratified split when the source gives none."""
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    classes: list[str] | None = None
    """Class names for .npz label indices (MedMNIST tables are known)."""
    skip_bad: bool = False
    """Skip unreadable files (listed at the end) instead of stopping."""
    voi: str = "auto"
    """DICOM VOI LUT/window: auto (projection radiography only), yes, no."""
    overwrite: bool = False
    """Replace an existing dataset folder at ``out``."""

    def __post_init__(self) -> None:
        if self.resize not in ("pad", "crop"):
            raise MedsynthError(f"--resize must be pad or crop, not {self.resize!r}")
        if self.size is not None and self.size < 8:
            raise MedsynthError(f"--size must be at least 8, not {self.size}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or \
                self.val_fraction + self.test_fraction >= 1:
            raise MedsynthError("--val-fraction and --test-fraction must be in [0, 1) and sum below 1")
        if self.voi not in ("auto", "yes", "no"):
            raise MedsynthError(f"--voi must be auto, yes or no, not {self.voi!r}")


def safe_name(name: str) -> str:
    """A file-system-safe version of a class or image name (no separators, no dot-dot)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return s or "x"


def import_dataset(cfg: ImportConfig, progress: object | None = None) -> tuple[Dataset, list[str]]:
    src = scan_source(cfg.source, classes=cfg.classes, voi=cfg.voi)
    created = not Path(cfg.out).exists()
    out = prepare_output_dir(cfg.out, "data", overwrite=cfg.overwrite)
    try:
        return _import(cfg, src, out, progress)
    except BaseException:
        if created:  # a failed import leaves nothing behind that could pass for a dataset
            shutil.rmtree(out, ignore_errors=True)
        raise


def _import(cfg: ImportConfig, src: Source, out: Path, progress: object | None) -> tuple[Dataset, list[str]]:
    items = src.items.reset_index(drop=True)
    bad: list[str] = []
    rows: list[dict[str, object]] = []
    channels: set[int] = set()
    dtypes: set[str] = set()
    modalities: set[str] = set()
    dims: set[int] = set()
    used: set[str] = set()
    track = progress if progress is not None else (lambda it, **_: it)
    for _, item in track(list(items.iterrows()), description="importing"):  # type: ignore[operator]
        try:
            img = src.load(item["key"])
        except MedsynthError as e:
            if not cfg.skip_bad:
                raise
            bad.append(str(e))
            continue
        arr = img.array
        if cfg.size and img.spatial_dims == 2:
            arr = resize_2d(arr, cfg.size, cfg.resize)
        cls = str(item["class"])
        key = str(item["key"])
        base = safe_name(key.replace("/", "_") if src.kind == "npz" else Path(key).name.split(".")[0])
        stem = f"{safe_name(cls)}/{base}"
        k = 1
        while stem in used:
            k += 1
            stem = f"{safe_name(cls)}/{base}_{k}"
        used.add(stem)
        written = save_lossless(arr, out / "images" / stem, affine=img.affine, spacing=img.spacing)
        channels.add(arr.shape[0])
        dtypes.add(str(arr.dtype))
        modalities.add(img.modality)
        dims.add(arr.ndim - 1)
        row = {"image_id": stem.replace("/", "__"), "path": str(written.relative_to(out)),
               "class": cls, "split": item.get("split"), "source": img.meta.get("source", str(item["key"]))}
        for c in items.columns:
            if c not in ("key", "class", "split"):
                row[c] = item[c]
        rows.append(row)
    if not rows:
        raise MedsynthError(f"{cfg.source}: no readable images")
    if len(channels) > 1 or len(dims) > 1:
        raise MedsynthError(
            f"{cfg.source}: mixes {sorted(channels)} channels / {sorted(dims)}D images",
            hint="split the source, or convert the images to one kind first",
        )
    table = pd.DataFrame(rows)
    if table["split"].isna().any():
        if table["split"].notna().any():
            raise MedsynthError(f"{cfg.source}: some rows have a split and some do not")
        table["split"] = assign_splits(
            table["class"], (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction), cfg.seed
        )
    dtype = sorted(dtypes, key=lambda d: np.dtype(d).itemsize)[-1]
    ds = finish_dataset(
        out, table, config=cfg, channels=channels.pop(), dtype=dtype,
        modality=modalities.pop() if len(modalities) == 1 else "OT", spatial_dims=dims.pop(),
        inputs=[{"path": str(Path(cfg.source).resolve()), "kind": src.kind}],
        extra={"skipped": bad},
    )
    return ds, bad
