"""``medsynth data import``: turn any source into a dataset folder (lossless PNG or NIfTI).

Every image is read (DICOM modality LUT applied, so CT is in Hounsfield units), optionally cut
into 2D slices (``--slices``) and resized (``--size``, 2D and 3D alike, spacing and affine
following), and written in its own type. Then the dataset's one representation is decided
(:func:`decide_dtype`, the rule of docs/intensities.md) and the few images of another type are
converted exactly; images that cannot join the set (another dimensionality or channel count)
are named, and skipped with ``--skip-bad``.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsynth.artifacts import prepare_output_dir
from medsynth.data.sources import Source, scan_source
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.imaging.dataset import Dataset, assign_splits, finish_dataset, format_numbers
from medsynth.imaging.image import Image
from medsynth.imaging.modality import unit_kinds
from medsynth.imaging.readers import read_image
from medsynth.imaging.save import can_png, save_lossless
from medsynth.imaging.transforms import fit_to_size, resample_affine, resample_spacing

DTYPES = ("auto", "uint8", "uint16", "int16", "float32")
_LIMITS = {"uint8": (0, 255), "uint16": (0, 65535), "int16": (-32768, 32767)}
#: Pixel values with a physical unit: CT (HU), PET/NM (counts, SUV), MR (scanner units). Their
#: values are never rescaled to join another type; display-referred 8-bit images are widened.
QUANTITATIVE = {"CT", "PT", "NM", "MR"}


@dataclasses.dataclass
class ImportConfig:
    """Options of ``medsynth data import``."""

    source: str
    """Image folder, CSV, MedMNIST .npz or dataset folder to read."""
    out: str
    """Dataset folder to write."""
    size: int | None = None
    """Resize images (2D) and volumes (3D) to size on every axis, voxel aspect kept (pad or crop);
    None keeps the original size."""
    resize: str = "pad"
    """'pad' (letterbox) or 'crop' (centre crop) when resizing."""
    seed: int = 0
    """Seed of the stratified split when the source gives none."""
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    classes: list[str] | None = None
    """Class names for .npz label indices (MedMNIST tables are known)."""
    skip_bad: bool = False
    """Skip unreadable files and files that cannot join the set (listed at the end) instead of
    stopping."""
    voi: str = "auto"
    """DICOM VOI LUT/window: auto (projection radiography only), yes, no."""
    dtype: str = "auto"
    """Pixel type of the dataset: auto (the rule of docs/intensities.md), uint8, uint16, int16
    or float32 (values converted exactly, floats rounded to integers; out of range = error)."""
    modality: str | None = None
    """DICOM modality code for every image (CT, MR, CR, DX, XC, ...); None = each file's own
    (DICOM), OT (other) where the file records none (PNG, JPEG, NIfTI)."""
    slices: bool = False
    """Import each 3D volume (NIfTI volume, multi-frame DICOM) as its 2D slices along the first
    axis (z / frames), each slice one image."""
    dicom_series: bool = False
    """Read each folder of single-frame DICOM slices as one volume (one series per folder)."""
    reorient: bool = False
    """Turn every volume to the closest RAS voxel order (axes permuted/flipped, no
    interpolation; oblique volumes keep their tilt). Needed when a set mixes orientations."""
    spacing: list[float] | None = None
    """Resample every image to this voxel spacing in mm, given as (x, y[, z]) (NIfTI order:
    in-plane first, e.g. 0.5, 0.5, 3); the affine's directions are kept. Needed when a set of
    volumes mixes spacings."""
    shape: list[int] | None = None
    """Centre-crop or pad every image to this size, given as (x, y[, z]) voxels, after any
    resampling (padding with the border median)."""
    normalize: str = "none"
    """Intensity normalisation for training: none (values kept), auto (by modality: MR
    percentiles, CT window), mr or ct. See medsynth/data/normalize.py."""
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    """MR normalisation: these percentiles of each image become 0 and 1."""
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    """CT normalisation: Hounsfield units clipped to this window (values stay HU)."""
    overwrite: bool = False
    """Replace an existing dataset folder at ``out``."""
    dedup: bool = False
    """Keep one image of each duplicate group (exact or near, medsynth/imaging/duplicates.py);
    with the source's own splits, the one in the earliest split (train, val, test)."""
    allow_duplicates: bool = False
    """Import duplicates that the source's own splits put in train (or val) and test, with a
    warning, instead of refusing."""
    group_by: str | None = None
    """A CSV column naming the group of each image (patient, study, volume, ...): a generated
    split keeps every group on one side."""

    def __post_init__(self) -> None:
        if self.resize not in ("pad", "crop"):
            raise BadUsageError(f"--resize must be pad or crop, not {self.resize!r}")
        if self.size is not None and self.size < 8:
            raise BadUsageError(f"--size must be at least 8, not {self.size}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or \
                self.val_fraction + self.test_fraction >= 1:
            raise BadUsageError("--val-fraction and --test-fraction must be in [0, 1) and sum below 1")
        if self.voi not in ("auto", "yes", "no"):
            raise BadUsageError(f"--voi must be auto, yes or no, not {self.voi!r}")
        if self.dtype not in DTYPES:
            raise BadUsageError(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        from medsynth.data.normalize import NORMALIZE_MODES

        if self.normalize not in NORMALIZE_MODES:
            raise BadUsageError(f"--normalize must be one of {', '.join(NORMALIZE_MODES)}, "
                                f"not {self.normalize!r}")
        if self.spacing is not None:
            self.spacing = [float(v) for v in self.spacing]
            if len(self.spacing) not in (2, 3) or not all(v > 0 for v in self.spacing):
                raise BadUsageError("--spacing takes 2 (x,y) or 3 (x,y,z) positive numbers in mm, "
                                    f"not {self.spacing}")
        if self.shape is not None:
            self.shape = [int(v) for v in self.shape]
            if len(self.shape) not in (2, 3) or not all(v >= 4 for v in self.shape):
                raise BadUsageError("--shape takes 2 (x,y) or 3 (x,y,z) sizes of at least 4 voxels, "
                                    f"not {self.shape}")
        if self.size is not None and (self.spacing is not None or self.shape is not None):
            raise BadUsageError("--size fits every image into a cube; --spacing/--shape resample to "
                                "a spacing and size: choose one")
        if self.slices and self.dicom_series:
            raise BadUsageError("--slices and --dicom-series contradict each other: choose one")
        if self.modality is not None:
            self.modality = self.modality.strip().upper()
            if not re.fullmatch(r"[A-Z0-9]{2,16}", self.modality):
                raise BadUsageError(f"--modality {self.modality!r}: give a DICOM modality code "
                                    "such as CT, MR, CR, DX, MG, US, XC")


def safe_name(name: str) -> str:
    """A file-system-safe version of a class or image name (no separators, no dot-dot)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return s or "x"


@dataclasses.dataclass
class _Entry:
    """One written image, before the dataset's representation is decided."""

    row: dict[str, Any]
    path: Path
    """Written file (absolute)."""
    where: str
    """The source file (and slice), for messages."""
    channels: int
    dims: int
    shape: tuple[int, ...]
    dtype: str
    low: float
    high: float
    modality: str
    spacing: tuple[float, ...] | None
    affine: np.ndarray | None
    normalized: str | None = None
    """``mr`` or ``ct`` when its intensities were normalised (--normalize)."""
    keys: list[str] = dataclasses.field(default_factory=list)
    """Split-group keys (``patient:ID``, ``study:UID``, ``series:UID``, ``volume:FILE``,
    ``COLUMN:value``)."""
    volume: str | None = None
    """The volume this slice was cut from (--slices); None for a whole image."""
    pixel_hash: str = ""
    thumb: Any = None
    alpha: str | None = None
    """'opaque'/'transparent' when the source had an alpha channel (dropped)."""


PARTIAL_MARKER = ".medsynth-import-unfinished"
"""Written first and removed last by ``data import``: a folder holding it (and no manifest) is
an import that was killed, which ``--overwrite`` may replace."""


def import_dataset(cfg: ImportConfig, progress: object | None = None) -> tuple[Dataset, list[str]]:
    src = scan_source(cfg.source, classes=cfg.classes, voi=cfg.voi, series=cfg.dicom_series)
    if cfg.group_by is not None and cfg.group_by not in src.items.columns:
        raise BadUsageError(f"--group-by {cfg.group_by}: {cfg.source} has no such column "
                            f"(columns: {', '.join(map(str, src.items.columns[3:])) or 'none'})")
    target = Path(cfg.out)
    _check_target(target, cfg.overwrite)
    if _unfinished(target) == "marker":
        shutil.rmtree(target)  # --overwrite of a killed import (nothing else is in it)
    created = not target.exists()
    out = prepare_output_dir(cfg.out, "data", overwrite=cfg.overwrite)
    (out / PARTIAL_MARKER).write_text("medsynth data import in progress\n")
    try:
        result = _import(cfg, src, out, progress)
    except BaseException:
        if created:  # a failed import leaves nothing behind that could pass for a dataset
            shutil.rmtree(out, ignore_errors=True)
        raise
    (out / PARTIAL_MARKER).unlink(missing_ok=True)
    return result


_IMPORT_FILES = {"images", "labels.csv", "datalist.json", "duplicates.csv", PARTIAL_MARKER}


def _unfinished(target: Path) -> str | None:
    """'marker' for a folder an import was killed in (its marker, no manifest); 'maybe' for one
    holding only what an import writes (a release before the marker: never deleted, it may
    be someone's images); None otherwise."""
    if not target.is_dir() or (target / "medsynth.json").is_file():
        return None
    names = {p.name for p in target.iterdir()}
    if PARTIAL_MARKER in names:
        return "marker"
    return "maybe" if "images" in names and names <= _IMPORT_FILES else None


def _check_target(target: Path, overwrite: bool) -> None:
    """The refusals of an existing --out, with the options data import has (no --resume)."""
    if not target.is_dir() or not any(target.iterdir()):
        return
    kind = _unfinished(target)
    if kind == "maybe":
        raise MedsynthError(f"{target}: holds images but no dataset manifest (an unfinished "
                            "data import?)", hint="delete the folder if it is one, or choose "
                            "another --out")
    if overwrite:
        return
    if kind == "marker":
        raise MedsynthError(f"{target}: holds an unfinished data import (stopped or killed)",
                            hint="pass --overwrite to import again into it, or choose another "
                                 "--out")
    if (target / "medsynth.json").is_file():
        from medsynth.artifacts import read_manifest

        if read_manifest(target).stage == "data":
            raise MedsynthError(f"{target}: already exists and holds a dataset",
                                hint="pass --overwrite to replace it, or choose another --out")
        return  # another stage's artifact: prepare_output_dir names it
    raise MedsynthError(f"{target}: already exists and is not empty",
                        hint="choose a new or empty --out folder")


def volume_slices(img: Image) -> list[tuple[int, Image]]:
    """A (C, D, H, W) volume as D images (C, H, W), each with its own spacing and affine."""
    out = []
    for k in range(img.array.shape[1]):
        affine = None
        if img.affine is not None:
            affine = np.asarray(img.affine, dtype=np.float64).copy()
            affine[:3, 3] = affine[:3, 3] + affine[:3, 2] * k  # voxel (0, 0, k) is the new origin
        out.append((k, Image(array=np.ascontiguousarray(img.array[:, k]), modality=img.modality,
                             spacing=tuple(img.spacing[1:]) if img.spacing else None,
                             affine=affine, meta={**img.meta, "slice": k})))
    return out


def _import(cfg: ImportConfig, src: Source, out: Path, progress: object | None) -> tuple[Dataset, list[str]]:
    items = src.items.reset_index(drop=True)
    bad: list[str] = []
    entries: list[_Entry] = []
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
        key = str(item["key"])
        where = str(img.meta.get("source", key))
        parts = volume_slices(img) if cfg.slices and img.spatial_dims == 3 else [(None, img)]
        cls = str(item["class"])
        base = safe_name(key.replace("/", "_") if src.kind == "npz" else Path(key).name.split(".")[0])
        for k, part in parts:
            name = base if k is None else f"{base}_s{k:03d}"
            stem = f"{safe_name(cls)}/{name}"
            n = 1
            while stem in used:
                n += 1
                stem = f"{safe_name(cls)}/{name}_{n}"
            used.add(stem)
            e = _write(cfg, out, part, stem, cls, item, items.columns,
                       where if k is None else f"{where} slice {k}")
            e.keys = _group_keys(cfg, img, item) + ([f"volume:{where}"] if k is not None else [])
            e.volume = where if k is not None else None
            entries.append(e)
    if not entries:
        raise MedsynthError(f"{cfg.source}: no readable images")
    entries = _one_kind(cfg, entries, bad)
    if entries[0].dims == 3:
        from medsynth.imaging.resample import check_one_geometry

        check_one_geometry([(e.where, e.spacing, e.affine) for e in entries], cfg.source)
    dtype, note = decide_dtype(entries, cfg.dtype, cfg.source)
    for e in entries:
        if e.dtype != dtype:
            _convert(e, dtype, out)
    modalities = Counter(e.modality for e in entries)
    modality = next(iter(modalities)) if len(modalities) == 1 else "OT"
    notes = list(src.notes) + ([note] if note else [])
    mixed = unit_kinds(modalities)
    if cfg.dtype != "auto" and len(mixed) > 1:
        notes.append(f"--dtype {dtype} put values of different units in one set ("
                     + ", ".join(f"{k}: {', '.join(v)}" for k, v in mixed.items())
                     + "): a model trained on it learns them on one scale; import each "
                     "modality separately for comparable intensities")
    alpha = Counter(e.alpha for e in entries if e.alpha)
    if alpha:
        notes.append(f"{sum(alpha.values())} image(s) had an alpha channel (RGBA/LA), dropped: "
                     "medsynth images are grayscale or RGB"
                     + (f"; {alpha['transparent']} of them had transparent pixels, kept with "
                        "their stored colour" if alpha.get("transparent") else ""))
    normalized = Counter(e.normalized for e in entries if e.normalized)
    if normalized:
        lo, hi = cfg.mr_percentiles
        w0, w1 = cfg.ct_window
        what = {"mr": f"MR percentiles {lo:g}-{hi:g} -> 0-1", "ct": f"CT window {w0:g}..{w1:g} HU"}
        notes.append("intensities normalised for training: " + ", ".join(
            f"{n} image(s) {what[k]}" for k, n in sorted(normalized.items())))
    if cfg.normalize != "none" and len(normalized) < len(entries):
        notes.append(f"{len(entries) - sum(normalized.values())} image(s) left as they are "
                     "(--normalize applies to MR and CT grayscale images)")
    if len(modalities) > 1:
        notes.append("the set mixes modalities " + ", ".join(f"{m} ({n})" for m, n in
                                                                sorted(modalities.items()))
                     + "; each image's is in labels.csv, the dataset's is OT (pass --modality "
                     "CODE to label them all)")
    table, entries, dup, grouping = _split_and_dedup(cfg, entries, out, notes)
    spacings = Counter(e.row.get("spacing") for e in entries if e.row.get("spacing"))
    ds = finish_dataset(
        out, table, config=cfg, channels=entries[0].channels, dtype=dtype,
        modality=modality, spatial_dims=entries[0].dims,
        inputs=[{"path": str(Path(cfg.source).resolve()), "kind": src.kind}],
        extra={"skipped": bad, "modalities": dict(sorted(modalities.items())),
               "normalization": ({"mode": cfg.normalize, "applied": dict(sorted(normalized.items())),
                                  "mr_percentiles": list(cfg.mr_percentiles),
                                  "ct_window": list(cfg.ct_window)}
                                 if cfg.normalize != "none" else None),
               "orientations": _orientations(entries),
               "sizes": dict(Counter("x".join(map(str, e.shape)) for e in entries).most_common()),
               "spacings": dict(spacings.most_common(5)), "duplicates": dup,
               "grouping": grouping, "notes": notes},
    )
    return ds, bad


def _group_keys(cfg: ImportConfig, img: Image, item: pd.Series) -> list[str]:
    """The split-group keys of one source image: DICOM patient, study and series, and the
    ``--group-by`` column's value."""
    keys = [f"{level}:{img.meta[m]}" for level, m in (("patient", "patient_id"),
                                                       ("study", "study_uid"),
                                                       ("series", "series_uid"))
            if img.meta.get(m)]
    kept = item.get("split_group") if "split_group" in item.index else None
    if isinstance(kept, str) and ":" in kept:  # a dataset folder re-imported keeps its groups
        keys.append(kept)
    if cfg.group_by is not None:
        v = item.get(cfg.group_by)
        if v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v).strip():
            keys.insert(0, f"{cfg.group_by}:{str(v).strip()}")
    return keys


def _split_and_dedup(cfg: ImportConfig, entries: list[_Entry], out: Path, notes: list[str]
                     ) -> tuple[pd.DataFrame, list[_Entry], dict[str, Any], dict[str, Any]]:
    """Duplicate groups, the grouped split (or the source's own, checked for duplicates in
    train and test), ``--dedup``; writes duplicates.csv. Returns the table of the images kept,
    those entries, and the manifest's ``duplicates`` and ``grouping`` sections."""
    from medsynth.imaging import duplicates as dups

    table = pd.DataFrame([e.row for e in entries])
    groups, kinds, searched = dups.find_duplicates([e.pixel_hash for e in entries],
                                              [e.thumb for e in entries],
                                              [e.volume for e in entries])
    table["dup_group"], table["dup_kind"] = groups, kinds
    given = table["split"].notna().any()
    if given and table["split"].isna().any():
        raise MedsynthError(f"{cfg.source}: some rows have a split and some do not")
    if given:
        leak = dups.leak_example(table, "dup_group")
        if leak and not (cfg.dedup or cfg.allow_duplicates):
            raise MedsynthError(
                f"{cfg.source}: {leak[0]} duplicate group(s) have images in the source's test "
                f"split and in train/val, e.g. {leak[1]}: evaluation would test on training "
                "images", hint="--dedup keeps one image of each group; --allow-duplicates "
                "imports them as they are (evaluate warns)")
    n = len(entries)
    shared, dropped = dups.drop_shared_levels([e.keys for e in entries])
    for e, ks in zip(entries, shared, strict=True):
        e.keys = ks
    for level, value in dropped.items():
        notes.append(f"every image has the same {level} ({value}): the split cannot keep "
                     f"{level}s apart and uses finer groups")
    units = dups.union_groups([e.keys + ([f"dup:{g}"] if g else []) for e, g in
                          zip(entries, groups, strict=True)])
    if not given:
        table["split"] = assign_splits(
            table["class"], (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction,
                             cfg.test_fraction), cfg.seed, units=units)
        per = pd.DataFrame({"class": table["class"], "unit": units}).groupby("class")["unit"]
        few = {c: (int(n), int(k)) for c, n, k in zip(per.size().index, per.size(),
                                                      per.nunique(), strict=True)
               if k < 3 <= n and cfg.test_fraction > 0}
        if few:
            notes.append("no test images for class(es) whose images come from fewer than 3 "
                         "groups (a group is never split): " + ", ".join(
                             f"{c} ({n} images, {k} group(s))" for c, (n, k) in few.items()))
    table["split_group"] = [dups.coarsest(e.keys) for e in entries]
    dup = dups.summarize(table)
    dup["near_searched"] = searched
    if not searched:
        notes.append(f"{n} images: near duplicates not searched (exact ones only)")
    order = {"train": 0, "val": 1, "test": 2}
    keep = pd.Series(True, index=table.index)
    if cfg.dedup:
        for _, part in table[table["dup_group"].notna()].groupby("dup_group"):
            first = min(part.index, key=lambda i: (order.get(table.at[i, "split"], 3), i))
            keep[part.index[part.index != first]] = False
    rows = table[table["dup_group"].notna()]
    listing = rows[["dup_group", "dup_kind", "image_id", "class", "split", "path", "source"]]
    listing = listing.assign(kept=keep[rows.index].astype(int).values,
                             pixel_sha1=[entries[i].pixel_hash for i in rows.index])
    dup["removed"] = int((~keep).sum())
    dup["file"] = dups.DUPLICATES_CSV if len(rows) else None
    if len(rows):
        import io

        from medsynth.artifacts import atomic_write_bytes

        buf = io.StringIO()
        listing.sort_values(["dup_group", "image_id"]).to_csv(buf, index=False)
        atomic_write_bytes(out / dups.DUPLICATES_CSV, buf.getvalue().encode("utf-8"))
        notes.append(_dup_note(dup, cfg, given))
    for i in table.index[~keep]:
        entries[i].path.unlink(missing_ok=True)
    kept = [e for e, k in zip(entries, keep, strict=True) if k]
    table = table[keep.values].drop(columns=["dup_kind"]).reset_index(drop=True)
    grouping = _grouping(table, given, notes)
    few = table.groupby("class").size()
    small = few[few < 3]
    if len(small):
        notes.append("class(es) with fewer than 3 images: little to learn from or test on, "
                     "and generate --balance would make many images from them: "
                     + ", ".join(f"{c} ({k})" for c, k in small.items()))
    return table, kept, dup, grouping


def _dup_note(dup: dict[str, Any], cfg: ImportConfig, given: bool) -> str:
    parts = [f"{dup['groups']} duplicate group(s) ({dup['exact_groups']} exact, "
             f"{dup['near_groups']} near) hold {dup['images_in_groups']} images"]
    if dup["across_classes"]:
        parts.append(f"{dup['across_classes']} group(s) span classes (conflicting labels)")
    if dup["train_test"]:
        parts.append(f"{dup['train_test']} in train/val and test"
                     + (" (the copies in later splits removed)" if cfg.dedup else
                        " (--allow-duplicates: evaluate will warn)"))
    elif not given:
        parts.append("each group kept in one split")
    parts.append(f"--dedup removed {dup['removed']} image(s)" if cfg.dedup else
                 "--dedup keeps one of each")
    return "; ".join(parts) + f" (see {dup['file']})"


def _grouping(table: pd.DataFrame, given: bool, notes: list[str]) -> dict[str, Any]:
    """The manifest's ``grouping`` section: groups per level, and for a source's own split
    the groups in train/val and test (a note)."""
    from medsynth.imaging.duplicates import leak_example

    col = table["split_group"].dropna().astype(str)
    levels = Counter(v.split(":", 1)[0] for v in col.unique())
    out: dict[str, Any] = {"column": "split_group", "groups": dict(sorted(levels.items())),
                           "grouped_images": int(len(col)), "split": "source" if given else
                           "grouped" if len(col) else "images"}
    if given:
        leak = leak_example(table, "split_group")
        out["train_test"] = leak[0] if leak else 0
        if leak:
            notes.append(f"the source's split puts {leak[0]} group(s) (split_group) in train/val "
                         f"and test, e.g. {leak[1]}: evaluation partly measures memory")
    elif len(col):
        notes.append("split keeps groups together: " + ", ".join(
            f"{n} {lv} group(s)" for lv, n in sorted(levels.items()))
            + " (split_group in labels.csv)")
    return out


def _orientations(entries: list[_Entry]) -> dict[str, int] | None:
    if entries[0].dims != 3:
        return None
    from medsynth.imaging.resample import axcodes

    return dict(Counter(axcodes(e.affine) for e in entries if e.affine is not None))


def _geometry(cfg: ImportConfig, arr: np.ndarray, spacing: tuple[float, ...] | None,
              affine: np.ndarray | None, where: str
              ) -> tuple[np.ndarray, tuple[float, ...] | None, np.ndarray | None]:
    """Reorient, resample, crop/pad or fit one image as the options ask; geometry follows."""
    dims = arr.ndim - 1
    if cfg.reorient and dims == 3 and affine is not None:
        from medsynth.imaging.resample import reorient_ras

        arr, affine, spacing = reorient_ras(arr, affine, spacing)
    if cfg.spacing is not None or cfg.shape is not None:
        from medsynth.imaging.resample import resample_geometry

        for name, v in (("--spacing", cfg.spacing), ("--shape", cfg.shape)):
            if v is not None and len(v) != dims:
                raise MedsynthError(f"{where}: a {dims}D image, but {name} gives {len(v)} values",
                                    hint=f"give {name} as {'x,y,z' if dims == 3 else 'x,y'}")
        target = tuple(reversed(cfg.spacing)) if cfg.spacing is not None else None  # array order
        shape = tuple(reversed(cfg.shape)) if cfg.shape is not None else None
        arr, spacing, affine = resample_geometry(arr, spacing, affine, target=target, shape=shape,
                                                 where=where)
    elif cfg.size:
        arr, r = fit_to_size(arr, cfg.size, cfg.resize)
        spacing, affine = resample_spacing(spacing, r), resample_affine(affine, r)
    return arr, spacing, affine


def _write(cfg: ImportConfig, out: Path, img: Image, stem: str, cls: str, item: pd.Series,
           columns: pd.Index, where: str) -> _Entry:
    """Reorient/resample/resize one image (geometry following), normalise its intensities when
    asked, write it in its own type, describe it."""
    arr, spacing, affine = img.array, img.spacing, img.affine
    if spacing is not None and len(spacing) != img.spatial_dims:
        spacing = None
    given = item.get("modality") if "modality" in item.index else None  # a CSV's own column
    given = str(given).strip().upper() if isinstance(given, str) and given.strip() else None
    modality = cfg.modality or given or img.modality or "OT"
    normalized = None
    if cfg.normalize != "none":
        from medsynth.data.normalize import normalize

        arr, normalized = normalize(arr, modality, cfg.normalize, percentiles=cfg.mr_percentiles,
                                    window=cfg.ct_window)
    arr, spacing, affine = _geometry(cfg, arr, spacing, affine, where)
    written = save_lossless(arr, out / "images" / stem, affine=affine, spacing=spacing)
    from medsynth.imaging.duplicates import pixel_hash, thumbnail
    row: dict[str, Any] = {"image_id": stem.replace("/", "__"), "path": str(written.relative_to(out)),
                           "class": cls, "split": item.get("split"),
                           "source": img.meta.get("source", str(item["key"]))
                           + (f"#slice={img.meta['slice']}" if "slice" in img.meta else "")}
    for c in columns:  # extra CSV columns (ground truth); geometry/modality are recomputed
        if c not in ("key", "class", "split", "modality", "spacing", "affine"):
            row[c] = item[c]
    row["modality"] = modality
    row["spacing"] = format_numbers(spacing) if spacing is not None else None
    row["affine"] = format_numbers(affine) if affine is not None and written.suffix == ".png" else None
    return _Entry(row=row, path=written, where=where, channels=int(arr.shape[0]), dims=arr.ndim - 1,
                  shape=tuple(int(s) for s in arr.shape[1:]), dtype=str(arr.dtype),
                  low=float(np.min(arr)), high=float(np.max(arr)), modality=modality,
                  spacing=spacing, affine=affine, normalized=normalized,
                  pixel_hash=pixel_hash(arr), thumb=thumbnail(arr), alpha=img.meta.get("alpha"))


def _kind(e: _Entry) -> str:
    chans = {1: "1-channel (grayscale)", 3: "3-channel (RGB)"}.get(e.channels, f"{e.channels}-channel")
    return f"{e.dims}D {chans}"


def _one_kind(cfg: ImportConfig, entries: list[_Entry], bad: list[str]) -> list[_Entry]:
    """Keep the images of the most common kind (2D/3D, channels); name the others.

    Without --skip-bad the others stop the import (every one named); with it they are left out
    and listed. Ties go to 2D, then to fewer channels.
    """
    kinds = Counter(_kind(e) for e in entries)
    if len(kinds) == 1:
        return entries
    keep = max(kinds, key=lambda k: (kinds[k], k.startswith("2D"), k.startswith("2D 1")))
    odd = [e for e in entries if _kind(e) != keep]
    lines = [f"{e.where}: {_kind(e)} {'x'.join(map(str, e.shape))}, the set is {keep}" for e in odd]
    if not cfg.skip_bad:
        shown = "\n  ".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else "")
        volumes = any(e.dims == 3 for e in odd) and keep.startswith("2D")
        raise MedsynthError(
            f"{cfg.source}: {len(odd)} image(s) cannot join a set of {kinds[keep]} {keep} images:\n  "
            + shown,
            hint=("--slices imports volumes and multi-frame files as 2D slices; " if volumes else "")
            + "--skip-bad leaves these out; or import them separately",
        )
    for e in odd:
        e.path.unlink(missing_ok=True)
    bad.extend(lines)
    return [e for e in entries if _kind(e) == keep]


def decide_dtype(entries: list[Any], forced: str = "auto", source: str = "source") -> tuple[str, str | None]:
    """The dataset's one pixel type, and a note for the user when images had to be converted.

    The rule (docs/intensities.md): every image keeps its values in its narrowest type (uint8,
    uint16, int16 for signed integers such as CT Hounsfield units, float32 for non-integer values
    such as MR with a fractional Rescale Slope). When types differ:

    - 8-bit images joining 16-bit ones of display-referred modalities are widened by 257
      (0 -> 0, 255 -> 65535: the same look);
    - integers of one quantitative modality (e.g. CT slices >= 0 HU stored as uint16 beside
      int16 ones) join in int16, values kept; a quantitative modality with float32 -> float32;
    - anything else (e.g. radiograph display values beside CT Hounsfield units) has no common
      scale: a MedsynthError names the groups and advises --dtype / --voi / separate imports.

    ``forced`` (--dtype) overrides: every image is converted to it (exactly, floats rounded).
    """
    dtypes = Counter(e.dtype for e in entries)
    if forced != "auto":
        n = sum(c for d, c in dtypes.items() if d != forced)
        return forced, (f"{n} image(s) converted to {forced} (--dtype)" if n else None)
    if len(dtypes) == 1:
        return next(iter(dtypes)), None
    groups = Counter((e.modality, e.dtype) for e in entries)
    listing = ", ".join(f"{n} {d} {m}" for (m, d), n in sorted(groups.items()))
    quantitative = {e.modality for e in entries if e.modality in QUANTITATIVE}
    lo, hi = min(e.low for e in entries), max(e.high for e in entries)
    if set(dtypes) == {"uint8", "uint16"} and not quantitative:
        return "uint16", f"{dtypes['uint8']} 8-bit image(s) widened to 16 bits (x 257) to join " \
                         f"{dtypes['uint16']} 16-bit one(s)"
    modalities = {e.modality for e in entries}
    if len(modalities) == 1 and modalities <= QUANTITATIVE and "uint8" not in dtypes:
        m = next(iter(modalities))
        kinds = ", ".join(f"{n} {d}" for d, n in sorted(dtypes.items()))
        if "float32" in dtypes:
            return "float32", f"{m} values ({kinds} images) kept exactly as float32"
        if lo >= -32768 and hi <= 32767:
            return "int16", f"{m} values ({kinds} images) kept exactly as int16"
    raise MedsynthError(
        f"{source}: images of different kinds of values ({listing}) have no common representation",
        hint="import each modality separately (--modality labels a set); or --voi yes to store "
        "DICOM images through their window as 16-bit display values; or --dtype float32 to keep "
        "every value as it is (mixed units in one set); or --dtype int16/uint16 to round them",
    )


def convert_values(arr: np.ndarray, dtype: str, where: str = "", *, widen_8bit: bool = False) -> np.ndarray:
    """``arr`` as ``dtype``: exact for integers, floats rounded; values out of range are an error."""
    if str(arr.dtype) == dtype:
        return arr
    if widen_8bit and arr.dtype == np.uint8 and dtype == "uint16":
        return arr.astype(np.uint16) * np.uint16(257)
    if dtype == "float32":
        return arr.astype(np.float32)
    v = np.rint(arr) if arr.dtype.kind == "f" else arr
    lo, hi = _LIMITS[dtype]
    vmin, vmax = float(np.min(v)), float(np.max(v))
    if vmin < lo or vmax > hi:
        raise MedsynthError(
            f"{where}: values {vmin:g}..{vmax:g} do not fit {dtype} ({lo}..{hi})",
            hint="choose another --dtype (float32 holds every value), or --voi yes for display "
            "values",
        )
    return v.astype(dtype)


def _convert(e: _Entry, dtype: str, out: Path) -> None:
    """Rewrite one written image in the dataset's type (the file may change from PNG to NIfTI)."""
    arr = read_image(e.path).array
    quantitative = e.modality in QUANTITATIVE
    arr = convert_values(arr, dtype, e.where, widen_8bit=not quantitative)
    stem = e.path.parent / e.path.name.split(".")[0]
    written = save_lossless(arr, stem, affine=e.affine, spacing=e.spacing)
    if written != e.path:
        e.path.unlink(missing_ok=True)
    e.path, e.dtype = written, dtype
    from medsynth.imaging.duplicates import pixel_hash

    e.pixel_hash = pixel_hash(arr)  # as stored: what data info and evaluate read back
    e.row["path"] = str(written.relative_to(out))
    if e.affine is not None and not can_png(arr):
        e.row["affine"] = None  # the NIfTI file holds it
    elif e.affine is not None:
        e.row["affine"] = format_numbers(e.affine)
