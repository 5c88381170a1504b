"""Find the images and labels of a source: image folder, CSV, MedMNIST .npz or dataset folder.

:func:`scan_source` returns a table of items (``key``, ``class``, ``split``) and a loader that
turns a key into an :class:`Image`, without writing anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medsynth.artifacts import MANIFEST_NAME
from medsynth.errors import MedsynthError
from medsynth.imaging.image import Image, to_channel_first
from medsynth.imaging.readers import image_kind, read_image

UNLABELLED = "unlabelled"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Source:
    kind: str
    """'dataset', 'folder', 'csv' or 'npz'."""
    path: Path
    items: pd.DataFrame
    """Columns: key, class, split (None where the source gives none), plus extra CSV columns."""
    load: Callable[[str], Image]
    notes: list[str] = dataclasses.field(default_factory=list)
    """What the scan found worth telling (e.g. class folders without images)."""


def _empty_classes(root: Path, rows: list[dict[str, object]]) -> list[str]:
    """A note naming the class folders of ``root`` that hold no image (they are left out)."""
    found = {str(r["class"]) for r in rows}
    empty = sorted(p.name for p in root.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and p.name not in found)
    if not empty:
        return []
    return [f"class folder(s) without images left out: {', '.join(empty)} (in {root})"]


def _normalise_split(value: object, where: str) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    s = str(value).strip().lower()
    s = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}.get(s, s)
    if s not in SPLITS:
        raise MedsynthError(f"{where}: unknown split {value!r}", hint="use train, val or test")
    return s


def scan_folder(root: Path, voi: str = "auto", series: bool = False) -> Source:
    """Images under ``root`` (the first folder level is the class). With ``series``, each
    folder of DICOM files is one volume (a series of slices), read as a whole."""
    rows: list[dict[str, object]] = []
    if series:
        return _scan_series(root, voi)
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.name in (MANIFEST_NAME, "labels.csv"):
            continue
        if image_kind(p) is None:
            continue
        rel = p.relative_to(root)
        cls = rel.parts[0] if len(rel.parts) > 1 else UNLABELLED
        rows.append({"key": str(p), "class": cls, "split": None})
    if not rows:
        raise MedsynthError(
            f"{root}: no images found",
            hint="expected root/<class>/*.png|jpg|bmp|tif|dcm|nii|nii.gz",
        )
    return Source("folder", root, pd.DataFrame(rows), lambda k: read_image(k, voi=voi),
                  notes=_empty_classes(root, rows))


def _scan_series(root: Path, voi: str) -> Source:
    """One item per folder holding DICOM files (key: the folder); other image files as usual."""
    from medsynth.imaging.dicom_series import read_dicom_series

    rows: list[dict[str, object]] = []
    seen: set[Path] = set()
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.name in (MANIFEST_NAME, "labels.csv"):
            continue
        kind = image_kind(p)
        if kind is None:
            continue
        key = p.parent if kind == "dicom" else p
        if key in seen:
            continue
        seen.add(key)
        rel = key.relative_to(root)
        cls = rel.parts[0] if len(rel.parts) > 1 else UNLABELLED
        rows.append({"key": str(key), "class": cls, "split": None})
    if not rows:
        raise MedsynthError(f"{root}: no images found",
                            hint="expected root/<class>/<series folder>/*.dcm")

    def load(key: str) -> Image:
        k = Path(key)
        return read_dicom_series(k, voi="no" if voi == "auto" else voi) if k.is_dir() \
            else read_image(k, voi=voi)

    return Source("folder", root, pd.DataFrame(rows), load, notes=_empty_classes(root, rows))


def scan_csv(path: Path, voi: str = "auto") -> Source:
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise MedsynthError(f"{path}: cannot read CSV ({e})") from e
    cols = {c.lower(): c for c in df.columns}
    if "path" not in cols:
        raise MedsynthError(f"{path}: CSV needs a 'path' column (has {list(df.columns)})")
    label_col = cols.get("label") or cols.get("class")
    if label_col is None:
        raise MedsynthError(f"{path}: CSV needs a 'label' (or 'class') column")
    base = path.parent
    out = pd.DataFrame(
        {
            "key": [str((base / str(p)).resolve()) for p in df[cols["path"]]],
            "class": df[label_col].astype(str).str.strip(),
            "split": [
                _normalise_split(v, f"{path} row {i + 2}")
                for i, v in enumerate(df[cols["split"]] if "split" in cols else [None] * len(df))
            ],
        }
    )
    extra = [c for c in df.columns if c.lower() not in ("path", "label", "class", "split")]
    for c in extra:
        out[c] = df[c].values
    return Source("csv", path, out, lambda k: read_image(k, voi=voi))


def scan_npz(path: Path, classes: list[str] | None = None) -> Source:
    from medsynth.data.medmnist import medmnist_classes

    try:
        npz = np.load(path)
        keys = set(npz.files)
    except Exception as e:
        raise MedsynthError(f"{path}: not a readable .npz file ({e})") from e
    names = classes or medmnist_classes(path.stem.replace(".npz", ""))
    rows: list[dict[str, object]] = []
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        ik, lk = f"{split}_images", f"{split}_labels"
        if ik not in keys:
            continue
        if lk not in keys:
            raise MedsynthError(f"{path}: has {ik} but no {lk}")
        images, labels = npz[ik], np.asarray(npz[lk])
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise MedsynthError(f"{path}: multi-label sets (labels {labels.shape}) are not supported")
        labels = labels.reshape(-1).astype(int)
        arrays[split] = images
        for i, lab in enumerate(labels):
            if names is not None and not 0 <= lab < len(names):
                raise MedsynthError(f"{path}: label {lab} of {split}[{i}] is outside the {len(names)} classes")
            cls = names[lab] if names is not None else f"class_{lab}"
            rows.append({"key": f"{split}/{i}", "class": cls, "split": split})
    if not rows:
        raise MedsynthError(f"{path}: no *_images/*_labels arrays (expected MedMNIST layout)")

    def load(key: str) -> Image:
        split, idx = key.split("/")
        arr = np.asarray(arrays[split][int(idx)])
        return Image(array=to_channel_first(arr), modality="OT",
                     meta={"format": "npz", "source": f"{path}#{key}"})

    return Source("npz", path, pd.DataFrame(rows), load)


def scan_dataset(root: Path) -> Source:
    from medsynth.imaging.dataset import open_dataset

    ds = open_dataset(root)
    items = ds.table.rename(columns={"path": "key"}).copy()
    items["key"] = [str(ds.root / k) for k in items["key"]]
    rows = {k: i for i, k in enumerate(items["key"])}
    # Through the dataset, so each image keeps the modality and geometry recorded for it.
    return Source("dataset", root, items, lambda k: ds.load(ds.table.iloc[rows[k]]))


def scan_source(path: str | Path, *, classes: list[str] | None = None, voi: str = "auto",
                series: bool = False) -> Source:
    """Recognise ``path`` and list its items (``series``: DICOM folders are volumes)."""
    path = Path(path)
    if not path.exists():
        raise MedsynthError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file() and (path / "labels.csv").is_file():
            return scan_dataset(path)
        return scan_folder(path, voi=voi, series=series)
    name = path.name.lower()
    if name.endswith(".csv"):
        return scan_csv(path, voi=voi)
    if name.endswith(".npz"):
        return scan_npz(path, classes)
    if image_kind(path) is not None:
        return Source("file", path, pd.DataFrame([{"key": str(path), "class": UNLABELLED, "split": None}]),
                      lambda k: read_image(k, voi=voi))
    raise MedsynthError(
        f"{path}: not a dataset source", hint="give an image folder, a CSV, a .npz or a dataset folder"
    )
