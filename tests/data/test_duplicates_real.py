"""The near-duplicate threshold on real files (issue 26: it was calibrated on phantoms and MNI
slices only). Figures in docs/intensities.md ("The near-duplicate threshold on real files").

Real images: pydicom-data's head CT, CR, ultrasound, MR and the OT face, pydicom's CT_small,
an MNI152 slice; their re-saved JPEG (quality 70), half-size and 2 %-noise copies must be found,
the distinct images kept apart. pydicom's real MR series (dicomdirtests MR700, seven slices
about 1-3 mm apart) imported slice by slice as files: neighbours are not near duplicates; the
same MR image in lossy JPEG 2000 (MR2_J2KI) and uncompressed is one group.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image as PILImage

from medsynth.data.ingest import ImportConfig, import_dataset
from medsynth.imaging.readers import read_image

BASES = {"ct_head": "693_UNCR.dcm", "cr": "RG1_UNCR.dcm", "us": "US1_UNCR.dcm",
         "mr": "MR2_UNCR.dcm", "face": "OT-PAL-8-face.dcm"}


def _u8(a: np.ndarray, side: int = 128) -> np.ndarray:
    """A display copy (0.5-99.5 % window) at most ``side`` px wide, as a user's PNG export."""
    a = np.asarray(a, dtype=np.float64)
    a = a.mean(0) if a.ndim == 3 else a
    lo, hi = np.percentile(a, [0.5, 99.5])
    g = (np.clip((a - lo) / (hi - lo + 1e-9), 0, 1) * 255).astype(np.uint8)
    h, w = g.shape
    k = max(h, w) / side
    return np.asarray(PILImage.fromarray(g).resize((round(w / k), round(h / k)), PILImage.BILINEAR))


def _save(a: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(a).save(path)


def _jpeg(a: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    PILImage.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(PILImage.open(buf))


def test_real_png_copies_found_distinct_kept_apart(pydicom_data_dir: Path, mni_t1: Path,
                                                   tmp_path: Path) -> None:
    import pydicom.data

    arrays = {k: read_image(pydicom_data_dir / f).array for k, f in BASES.items()}
    arrays["ct_small"] = read_image(pydicom.data.get_testdata_file("CT_small.dcm")).array
    arrays["mni"] = np.asarray(nib.load(str(mni_t1)).dataobj)[None, :, :, 80]
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for name, a in arrays.items():
        g = _u8(a)
        h, w = g.shape
        _save(g, src / "orig" / f"{name}.png")
        _save(_jpeg(g, 70), src / "copies" / f"{name}_jpeg70.png")
        _save(np.asarray(PILImage.fromarray(g).resize((w // 2, h // 2), PILImage.BILINEAR)),
              src / "copies" / f"{name}_half.png")
        _save(np.clip(g + rng.normal(0, 5.1, g.shape), 0, 255).astype(np.uint8),
              src / "copies" / f"{name}_noise2.png")
    ds, _ = import_dataset(ImportConfig(str(src), str(tmp_path / "ds"), size=64,
                                        allow_duplicates=True))
    t = ds.table.set_index("image_id")
    groups = {n: t.loc[f"orig__{n}", "dup_group"] for n in arrays}
    assert all(isinstance(g, str) for g in groups.values()), groups  # every original has copies
    assert len(set(groups.values())) == len(arrays)  # distinct images never joined
    for n, g in groups.items():
        for v in ("jpeg70", "half", "noise2"):
            assert t.loc[f"copies__{n}_{v}", "dup_group"] == g, (n, v)


def test_real_mr_series_slices_are_not_near_copies(pydicom_data_dir: Path,
                                                   tmp_path: Path) -> None:
    import pydicom.data

    series = (Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
              / "98892003" / "MR700")
    src = tmp_path / "src"
    shutil.copytree(series, src / "series")
    (src / "encodings").mkdir()
    for v in ("UNCR", "J2KI", "J2KR"):  # one image in three encodings, one of them lossy
        shutil.copy(pydicom_data_dir / f"MR2_{v}.dcm", src / "encodings" / f"MR2_{v}.dcm")
    ds, _ = import_dataset(ImportConfig(str(src), str(tmp_path / "ds"), size=16))
    t = ds.table.set_index("image_id")
    slices = t[t["class"] == "series"]
    assert len(slices) == 7 and slices["dup_group"].isna().all()
    enc = t[t["class"] == "encodings"]
    assert enc["dup_group"].nunique() == 1 and enc["dup_group"].notna().all()
    kinds = pd.read_csv(ds.root / "duplicates.csv").set_index("image_id")["dup_kind"]
    assert kinds["encodings__MR2_J2KI"] == "near"  # lossy; J2KR decodes bit-exact
    assert kinds["encodings__MR2_J2KR"] == kinds["encodings__MR2_UNCR"] == "exact"
