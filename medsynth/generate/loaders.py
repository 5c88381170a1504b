"""A synthetic set's one-line loaders (:mod:`medsynth.loaders`), written when a run finishes.

* ``png/metadata.csv``: ``datasets.load_dataset("imagefolder", data_dir=SYNTH/png)`` gives
  ``image``, ``label`` (class name), ``class_id``, ``report`` (the report text),
  ``description`` (the text the image was conditioned on), ``seed`` and ``sample_id``;
* ``datalist.json`` (and ``datalist_<format>.json`` per image format): MONAI Decathlon
  datalists, ``training`` = every image as ``{image, label (class id), class, report,
  description, seed, sample_id}``; ``datalist.json`` points at the PNG files when there are
  any, else NIfTI, else DICOM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medsynth.loaders import read_text, write_datalist, write_hf_metadata

IMAGE_FORMATS = ("png", "nifti", "dicom")


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else str(v)


def write_loaders(out: Path, table: pd.DataFrame, classes: list[str],
                  formats: list[str]) -> dict[str, Any]:
    """Write the metadata file and the datalists of a finished set; returns what was written."""
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
    for fmt in IMAGE_FORMATS:
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
    main = next((f for f in IMAGE_FORMATS if f in lists), None)
    if main is not None:
        write_datalist(out / "datalist.json", {"training": lists[main], "validation": [],
                                               "test": []}, classes, name=out.resolve().name,
                       description="medsynth synthetic set", synthetic=True, image_format=main)
        written["monai"] = "datalist.json"
    return written
