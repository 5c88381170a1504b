"""Files that let users' tools load a medsynth set in one line (real or synthetic, the same way).

* Hugging Face ``datasets``: ``metadata.csv`` in an image folder, one row per image with
  ``file_name`` (relative to that folder) and the other columns, so that
  ``datasets.load_dataset("imagefolder", data_dir=FOLDER)`` gives the image and every column.
* MONAI: a datalist JSON in the Medical Segmentation Decathlon layout (``training``,
  ``validation``, ``test`` lists of ``{"image": path, "label": class id, ...}``, paths relative
  to the JSON file) that ``monai.data.load_decathlon_datalist(path, is_segmentation=False)``
  reads; ``labels`` maps class ids to names.

Both are written atomically and whole (temp file + rename): a file from an earlier run is
replaced, never appended to or mixed; other metadata files in the folder (``metadata.jsonl``,
``metadata.parquet``), which ``datasets`` would read too, are removed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medsynth.artifacts import atomic_write_bytes, atomic_write_json

HF_METADATA = "metadata.csv"
OTHER_METADATA = ("metadata.jsonl", "metadata.parquet")
SET_IMAGE_FORMATS = ("png", "nifti", "dicom")
"""Image formats of a synthetic set, in the order ``datalist.json`` prefers them."""
DATALIST_SECTIONS = {"train": "training", "val": "validation", "test": "test"}
"""Dataset split -> datalist key (synthetic sets are all ``training``)."""


def write_hf_metadata(folder: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``folder/metadata.csv`` (``file_name`` first) atomically; drop other metadata files."""
    folder = Path(folder)
    table = pd.DataFrame(list(rows))
    if "file_name" not in table.columns:
        raise ValueError("metadata rows need a file_name column")
    table = table[["file_name"] + [c for c in table.columns if c != "file_name"]]
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    path = atomic_write_bytes(folder / HF_METADATA, buf.getvalue().encode("utf-8"))
    for name in OTHER_METADATA:
        (folder / name).unlink(missing_ok=True)
    return path


def write_datalist(path: str | os.PathLike[str], sections: Mapping[str, list[dict[str, Any]]],
                   classes: list[str], **extra: Any) -> Path:
    """Write a Decathlon-style datalist JSON atomically (``labels``: id -> class name).

    Empty text fields are written as null: ``monai.data.load_decathlon_datalist`` joins every
    string that names an existing path to the folder, and "" names the folder itself (an
    empty ``description`` became the set's path)."""
    doc: dict[str, Any] = {**extra, "labels": {str(i): c for i, c in enumerate(classes)},
                           "numTraining": len(sections.get("training", []))}
    doc.update({k: [{f: None if v == "" else v for f, v in e.items()} for e in entries]
                for k, entries in sections.items()})
    return atomic_write_json(Path(path), doc)


def relative_to(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``path`` relative to ``start``, with forward slashes (portable JSON and CSV)."""
    return Path(os.path.relpath(Path(path), Path(start))).as_posix()


def read_text(path: Path) -> str:
    """A report file's text ('' when absent)."""
    try:
        return path.read_text("utf-8").strip()
    except OSError:
        return ""


def dataset_datalist(root: str | os.PathLike[str], table: pd.DataFrame,
                     classes: list[str]) -> dict[str, str]:
    """The datalist of a real dataset folder (``medsynth data import``/``data demo``):
    ``DATASET/datalist.json`` with one section per split; a ``report`` column, when the labels
    have one, becomes each entry's report. Returns ``{"monai": "datalist.json"}``."""
    root = Path(root)
    sections: dict[str, list[dict[str, Any]]] = {}
    for _, row in table.iterrows():
        cls = str(row["class"])
        entry: dict[str, Any] = {"image": str(row["path"]), "label": classes.index(cls)
                                 if cls in classes else -1, "class": cls,
                                 "image_id": str(row["image_id"])}
        if "report" in row.index and isinstance(row["report"], str):
            entry["report"] = row["report"]
        key = DATALIST_SECTIONS.get(str(row.get("split", "train")), "training")
        sections.setdefault(key, []).append(entry)
    for key in DATALIST_SECTIONS.values():
        sections.setdefault(key, [])
    write_datalist(root / "datalist.json", sections, classes, description="medsynth dataset",
                   synthetic=False)
    return {"monai": "datalist.json"}


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else str(v)


def write_set_loaders(out: Path, table: pd.DataFrame, classes: list[str],
                      formats: Sequence[str]) -> dict[str, Any]:
    """The one-line loaders of a finished synthetic set (``generate``, ``judge filter``):

    * ``png/metadata.csv``: ``datasets.load_dataset("imagefolder", data_dir=SYNTH/png)`` gives
      ``image``, ``label`` (class name), ``class_id``, ``report`` (the report text),
      ``description`` (the text the image was conditioned on), ``seed`` and ``sample_id``;
    * ``datalist.json`` (and ``datalist_<format>.json`` per image format): MONAI Decathlon
      datalists, ``training`` = every image as ``{image, label (class id), class, report,
      description, seed, sample_id}``; ``datalist.json`` points at the PNG files when there
      are any, else NIfTI, else DICOM.

    ``classes``: the model's classes (class id = index). Returns what was written."""
    reports = {str(r["sample_id"]): read_text(out / _text(r.get("report")))
               if _text(r.get("report")) else "" for _, r in table.iterrows()}
    written: dict[str, Any] = {}
    common = []
    for _, r in table.iterrows():
        sid = str(r["sample_id"])
        common.append({"label": str(r["class"]), "class_id": classes.index(str(r["class"])),
                       "report": reports[sid], "description": _text(r.get("description")),
                       "seed": int(r["seed"]), "sample_id": sid})
    if "png" in formats:
        rows = [{"file_name": Path(_text(r["png"])).relative_to("png").as_posix(), **c}
                for (_, r), c in zip(table.iterrows(), common, strict=True)]
        write_hf_metadata(out / "png", rows)
        written["huggingface"] = "png/metadata.csv"
    lists = {}
    for fmt in SET_IMAGE_FORMATS:
        if fmt not in formats:
            continue
        entries = [{"image": _text(r[fmt]), "label": c["class_id"], "class": c["label"],
                    "report": c["report"], "description": c["description"], "seed": c["seed"],
                    "sample_id": c["sample_id"]}
                   for (_, r), c in zip(table.iterrows(), common, strict=True)]
        name = f"datalist_{fmt}.json"
        write_datalist(out / name, {"training": entries, "validation": [], "test": []}, classes,
                       name=out.resolve().name, description="medsynth synthetic set",
                       synthetic=True, image_format=fmt)
        lists[fmt] = entries
        written[f"monai_{fmt}"] = name
    main = next((f for f in SET_IMAGE_FORMATS if f in lists), None)
    if main is not None:
        write_datalist(out / "datalist.json", {"training": lists[main], "validation": [],
                                               "test": []}, classes, name=out.resolve().name,
                       description="medsynth synthetic set", synthetic=True, image_format=main)
        written["monai"] = "datalist.json"
    return written
