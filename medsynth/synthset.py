"""The synthetic-set contract: the ``samples.csv`` columns (defined here only), the one writer of
the table and the one reader of a set, with its lineage.

``generate`` writes sets with :func:`write_samples`; ``evaluate`` (and the judge and refine
stages) open them with :func:`open_synthetic`. A synthetic set is a folder with a manifest of
stage ``generate`` (or of any stage whose outputs say ``synthetic: true``, e.g. a filtered set)
and ``samples.csv`` beside it.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medsynth.artifacts import (
    MANIFEST_NAME,
    Lineage,
    Manifest,
    atomic_write_bytes,
    read_manifest,
    walk_lineage,
)
from medsynth.errors import MedsynthError

SAMPLES_CSV = "samples.csv"
COLUMNS: dict[str, str] = {
    "sample_id": "unique id, <class>-<index> (the image's file stem)",
    "class": "class name (as in the model and the real dataset)",
    "png": "path of the PNG file, relative to the set ('' when not written)",
    "dicom": "path of the DICOM file, relative to the set ('')",
    "nifti": "path of the NIfTI file, relative to the set ('')",
    "report": "path of the text report shipped beside the image",
    "description": "the text the image was conditioned on ('' for class only)",
    "seed": "the image's own seed: regenerates it alone",
    "sampler": "sampler name",
    "steps": "denoising steps",
    "guidance": "classifier-free guidance scale",
    "model_sha256": "sha256 of the model's manifest",
    "medsynth_version": "medsynth version that made the image",
    "class_id": "index of the class in the model's class list",
    "index": "index of the image within its class",
    "description_source": "where the description came from (store:<image_id>, prompt, csv, ...)",
    "png_values": "how PNG stored values map back to the image's values for int16/float32 models "
                  "(e.g. 'HU = stored * 1 + -1024'); '' when the PNG holds the values as they are",
    "text_cut": "1 when the description was longer than what the text encoder reads (its window, "
                "or the cap of its chunked windows) and was cut",
    "sr": "path of the DICOM Structured Report of the image's report ('' without DICOM or report)",
    "report_writer": "who wrote the report: template, llm, template-fallback (the model's "
                     "answers stayed invalid or it was unreachable) or '' (--report none)",
    "report_warning": "why the llm report fell back to the template one ('' when it did not)",
    "class_input": "how the class reached the model: 'id' (class id), or for CCELLA-mode models "
                   "'class' (one-hot of the requested class) or 'text:p0,p1,...' (the class "
                   "probabilities predicted from the description)",
    "init_image_id": "image-to-image (--init-images, --twin at strength < 1): id of the real image "
                     "the sample started from (its dataset image_id, or its path inside an image "
                     "folder); '' when it started from noise",
    "init_class": "class of that source image (the folder name for an image folder; '' when "
                  "unlabelled or from noise)",
    "strength": "share of the denoising schedule run from the source image, in (0, 1]; 1 = from "
                "noise ('' in runs without --init-images/--twin)",
    "twin_of": "--twin: the real image id this synthetic image stands for ('' otherwise)",
    "request": "index of the requested image within its class; the candidates of one request "
               "(generate --oversample) share it, its class and its description",
    "oversample": "candidates made per requested image (generate --oversample K; 1 = none)",
    "threads": "CPU threads torch used for the image: the same seed gives bitwise the same image "
               "again at the same threads and device (docs/generate.md, Reproducibility)",
    "device": "what computed the image: cpu, or cuda:<card name>",
    "batch": "how many images were sampled together with it (the last batch of a run, or of a "
             "resumed run, is smaller): float sums, hence the last bits, depend on it too",
}
"""Every samples.csv column, in file order, with its meaning (docs/artifacts.md)."""
SAMPLE_COLUMNS = tuple(COLUMNS)
REQUIRED_COLUMNS = ("sample_id", "class")
"""Columns a set must have to be read."""
IMAGE_COLUMNS = ("png", "nifti", "dicom")
"""Columns holding an image path, in the order readers prefer them."""
SYNTHETIC_STAGES = ("generate",)


def samples_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as the samples.csv table, columns in :data:`COLUMNS` order.

    Raises:
        ValueError: a row has a column that :data:`COLUMNS` does not define (add it there).
    """
    rows = list(rows)
    unknown = sorted({k for r in rows for k in r} - set(COLUMNS))
    if unknown:
        raise ValueError(f"samples.csv column(s) {unknown} are not defined in "
                         "medsynth.synthset.COLUMNS")
    return pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))


def write_samples(folder: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]
                  ) -> pd.DataFrame:
    """Write ``folder/samples.csv`` atomically; returns the table written."""
    table = samples_table(rows)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic_write_bytes(Path(folder) / SAMPLES_CSV, buf.getvalue().encode("utf-8"))
    return table


@dataclasses.dataclass
class SyntheticSet:
    """A synthetic set: manifest, samples.csv and where it came from."""

    root: Path
    name: str
    """Display name (the folder's name; callers may make it unique)."""
    manifest: Manifest
    table: pd.DataFrame
    model_manifest: Manifest | None
    """The model that generated the images (stage train or refine); None when unreadable."""
    image_column: str
    """The image column used to read the images (the first of :data:`IMAGE_COLUMNS` filled
    for every sample)."""
    lineage: Lineage
    """The whole chain: sets, models (refined-from included), datasets."""

    @property
    def classes(self) -> list[str]:
        return sorted(self.table["class"].astype(str).unique().tolist())

    def path_of(self, row: Mapping[str, Any]) -> Path:
        """The image file of one samples.csv row."""
        return self.root / str(row[self.image_column])


def open_synthetic(path: str | os.PathLike[str]) -> SyntheticSet:
    """Open a synthetic set through its manifest and samples.csv; walk its lineage."""
    root = Path(path)
    if not (root / MANIFEST_NAME).is_file():
        read_manifest(root, SYNTHETIC_STAGES[0])  # raises: not a medsynth generate artifact
    manifest = read_manifest(root)
    if manifest.stage not in SYNTHETIC_STAGES and manifest.outputs.get("synthetic") is not True:
        raise MedsynthError(f"{root}: is a '{manifest.stage}' artifact, expected a synthetic set "
                            f"(stage {' or '.join(SYNTHETIC_STAGES)})")
    csv = root / str(manifest.outputs.get("samples", SAMPLES_CSV))
    if not csv.is_file():
        raise MedsynthError(f"{root}: no {csv.name} beside its manifest (incomplete synthetic set?)")
    try:
        table = pd.read_csv(csv, keep_default_na=False, na_values=[""], dtype={"sample_id": str})
    except Exception as e:
        raise MedsynthError(f"{csv}: cannot read ({e})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise MedsynthError(f"{csv}: missing columns {missing}")
    if table.empty:
        raise MedsynthError(f"{csv}: holds no samples")
    table["class"] = table["class"].astype(str)
    column = next((c for c in IMAGE_COLUMNS if c in table.columns
                   and table[c].notna().all() and (table[c].astype(str) != "").all()), None)
    if column is None:
        raise MedsynthError(f"{csv}: no image column ({', '.join(IMAGE_COLUMNS)}) filled for "
                            "every sample")
    lineage = walk_lineage(root)
    return SyntheticSet(root=root, name=root.resolve().name, manifest=manifest, table=table,
                        model_manifest=lineage.generator, image_column=column, lineage=lineage)
