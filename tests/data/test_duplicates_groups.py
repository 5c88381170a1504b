"""Duplicates and grouped splits at data import and data info (issue 26 items 2, 3).

Real files: pydicom's dicomdirtests MR slices (one patient, three studies), the emri_small
multi-frame MR in four encodings (the same pixels), nilearn's MNI152 T1/GM/WM volumes sliced.
Constructed sets: exact copies across classes and formats, near copies, copies across a CSV's
own train/test split.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.ingest import ImportConfig, import_dataset
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.imaging.dataset import assign_splits
from medsynth.imaging.duplicates import find_duplicates, pixel_hash, thumbnail

runner = CliRunner()


def _noise(seed: int, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth blobs (not white noise): a re-compressed copy must stay recognisable
    base = rng.random((6, 6))
    img = np.kron(base, np.ones((size // 6, size // 6))) * 200 + rng.random((size, size)) * 30
    return img.astype(np.uint8)


def _save(arr: np.ndarray, path: Path, fmt: str | None = None, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(arr).save(path, format=fmt, **kw)
    return path


@pytest.fixture
def dup_folder(tmp_path: Path) -> Path:
    """Classes 'all' (6) and 'b' (6 + an exact copy of an 'all' image, a BMP copy of its own,
    a JPEG copy and a brightened copy); an empty class folder."""
    root = tmp_path / "src"
    for i in range(6):
        _save(_noise(i), root / "all" / f"{i}.png")
        _save(_noise(10 + i), root / "b" / f"{i}.png")
    _save(_noise(0), root / "b" / "copy_of_all0.png")
    _save(_noise(11), root / "b" / "bmp_copy.bmp")
    buf = io.BytesIO()
    PILImage.fromarray(_noise(12)).save(buf, "JPEG", quality=70)
    _save(np.asarray(PILImage.open(buf)), root / "b" / "jpeg_copy.png")
    _save(np.clip(_noise(13).astype(int) + 9, 0, 255).astype(np.uint8), root / "b" / "bright.png")
    (root / "empty").mkdir()
    return root


def test_hashes_exact_near_and_distinct() -> None:
    a = _noise(1)
    assert pixel_hash(a) == pixel_hash(a.copy()) != pixel_hash(a.astype(np.uint16))
    t = [thumbnail(x[None]) for x in (a, np.clip(a * 1.1 + 4, 0, 255), _noise(2), _noise(3))]
    groups, kinds, searched = find_duplicates(["h0", "h1", "h2", "h3"], t)
    assert searched and groups[0] == groups[1] is not None and groups[2] is None is groups[3]
    assert kinds[:2] == ["near", "near"]
    assert thumbnail(np.zeros((1, 8, 8))) is None  # flat: never a near copy of anything
    # slices of one volume are never near copies of each other (they look alike by nature)
    groups, _, _ = find_duplicates(["h0", "h1"], t[:2], ["vol", "vol"])
    assert groups == [None, None]


def test_import_finds_duplicates_keeps_them_in_one_split_and_dedups(dup_folder: Path,
                                                                    tmp_path: Path) -> None:
    ds, _ = import_dataset(ImportConfig(str(dup_folder), str(tmp_path / "ds")))
    t = ds.table.set_index("image_id")
    d = ds.manifest.outputs["duplicates"]
    assert d["groups"] == 4 and d["exact_groups"] == 2 and d["near_groups"] == 2
    assert d["across_classes"] == 1 and d["train_test"] == 0 and d["across_splits"] == 0
    for a, b in (("all__0", "b__copy_of_all0"), ("b__1", "b__bmp_copy"),
                 ("b__2", "b__jpeg_copy"), ("b__3", "b__bright")):
        assert t.loc[a, "dup_group"] == t.loc[b, "dup_group"]
        assert t.loc[a, "split"] == t.loc[b, "split"]  # a group never straddles splits
    assert t["dup_group"].notna().sum() == 8
    listing = pd.read_csv(ds.root / "duplicates.csv")
    assert len(listing) == 8 and set(listing["dup_kind"]) == {"exact", "near"}
    notes = " ".join(ds.manifest.outputs["notes"])
    assert "empty" in notes and "span classes" in notes
    # --dedup keeps one image per group
    dd, _ = import_dataset(ImportConfig(str(dup_folder), str(tmp_path / "dd"), dedup=True))
    assert len(dd.table) == 16 - 4 and dd.manifest.outputs["duplicates"]["removed"] == 4
    files = list((dd.root / "images").rglob("*.png"))
    assert len(files) == 12  # the removed copies' files are gone too
    kept = pd.read_csv(dd.root / "duplicates.csv")
    assert kept.groupby("dup_group")["kept"].sum().eq(1).all()


def test_source_split_with_copies_in_train_and_test_is_refused(dup_folder: Path,
                                                               tmp_path: Path) -> None:
    rows = [("all/0.png", "a", "train"), ("all/1.png", "a", "train"), ("all/2.png", "a", "test"),
            ("b/copy_of_all0.png", "a", "test"), ("b/0.png", "b", "train"),
            ("b/1.png", "b", "train"), ("b/2.png", "b", "test")]
    csv = dup_folder / "list.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(csv, index=False)
    with pytest.raises(MedsynthError) as e:
        import_dataset(ImportConfig(str(csv), str(tmp_path / "no")))
    msg = str(e.value)
    assert "a__0 (train) and a__copy_of_all0 (test)" in msg
    assert "--dedup" in msg and "--allow-duplicates" in msg
    assert "a__copy_of_all0 (test)" in msg.split("\n")[0]  # one line, then the hint
    assert not (tmp_path / "no").exists()
    # --dedup keeps the train copy; --allow-duplicates keeps both, and evaluate would warn
    dd, _ = import_dataset(ImportConfig(str(csv), str(tmp_path / "dd"), dedup=True))
    assert "a__copy_of_all0" not in set(dd.table["image_id"]) and len(dd.table) == 6
    ok, _ = import_dataset(ImportConfig(str(csv), str(tmp_path / "ok"), allow_duplicates=True))
    assert ok.manifest.outputs["duplicates"]["train_test"] == 1
    from medsynth.evaluate.inputs import split_leaks

    assert any("duplicate group" in w and "a__0 (train)" in w for w in split_leaks(ok))
    assert split_leaks(dd) == []
    r = runner.invoke(app, ["data", "import", str(csv), "--out", str(tmp_path / "cli")])
    assert r.exit_code != 0 and "--dedup" in r.output


def test_group_by_column_keeps_patients_apart(tmp_path: Path) -> None:
    rows = []
    for p in range(8):
        for k in range(4):
            path = _save(_noise(100 + 10 * p + k), tmp_path / "src" / f"p{p}_{k}.png")
            rows.append((path.name, "a" if p % 2 else "b", f"P{p}"))
    csv = tmp_path / "src" / "list.csv"
    pd.DataFrame(rows, columns=["path", "label", "patient"]).to_csv(csv, index=False)
    ds, _ = import_dataset(ImportConfig(str(csv), str(tmp_path / "ds"), group_by="patient"))
    per = ds.table.groupby("patient")["split"].nunique()
    assert (per == 1).all() and set(ds.table["split"]) >= {"train", "test"}
    assert ds.table["split_group"].str.startswith("patient:").all()
    assert ds.manifest.outputs["grouping"]["groups"] == {"patient": 8}
    with pytest.raises(BadUsageError, match="--group-by ward"):
        import_dataset(ImportConfig(str(csv), str(tmp_path / "x"), group_by="ward"))


def test_grouped_split_keeps_units_whole_and_matches_the_old_split_without_groups() -> None:
    classes = pd.Series(["a"] * 30 + ["b"] * 20)
    assert assign_splits(classes, seed=3) == assign_splits(classes, seed=3,
                                                           units=list(range(50)))
    units = [i // 5 for i in range(50)]  # ten volumes of five slices
    out = assign_splits(classes, seed=3, units=units)
    for u in set(units):
        assert len({out[i] for i in range(50) if units[i] == u}) == 1
    assert out.count("test") >= 5 and out.count("train") >= 25


def test_real_dicom_slices_split_by_study(tmp_path: Path) -> None:
    """pydicom's dicomdirtests MR: 17 slices of one patient in three studies."""
    import pydicom.data

    base = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    src = tmp_path / "src" / "mr"
    src.mkdir(parents=True)
    for p in sorted(base.glob("98892003/MR*/*")):
        shutil.copy(p, src / f"{p.parent.name}_{p.name}.dcm")
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds")))
    t = ds.table
    assert t["split_group"].str.startswith("study:").all()
    assert t.groupby("split_group")["split"].nunique().eq(1).all()
    assert set(t["split"]) >= {"train", "test"}
    notes = " ".join(ds.manifest.outputs["notes"])
    assert "same patient (98890234)" in notes and "3 study group(s)" in notes
    r = runner.invoke(app, ["data", "info", str(tmp_path / "src")])
    assert r.exit_code == 0 and "3 study" in r.output, r.output


def test_multiframe_copies_sliced_are_one_group(pydicom_data_dir: Path, tmp_path: Path) -> None:
    """emri_small in four encodings: the same 10 frames (exact duplicates), one series."""
    names = ["emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm",
             "emri_small_jpeg_2k_lossless.dcm"]
    src = tmp_path / "src" / "mr"
    src.mkdir(parents=True)
    for n in names:
        shutil.copy(pydicom_data_dir / n, src / n)
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"), slices=True))
    t = ds.table
    # one series for all four files: the split falls back to the volumes, and the exact
    # copies (frame k of each file) join them into one unit, so one split
    assert len(t) == 40 and t["split_group"].str.startswith("volume:").all()
    assert "same series" in " ".join(ds.manifest.outputs["notes"])
    assert t["split"].nunique() == 1
    d = ds.manifest.outputs["duplicates"]
    assert d["exact_groups"] == 10 and d["images_in_groups"] == 40  # frame k of every file
    dd, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "dd"),
                                        slices=True, dedup=True))
    assert len(dd.table) == 10


def test_nilearn_volumes_sliced_stay_whole(mni_t1: Path, tmp_path: Path) -> None:
    """Three real MNI152 volumes (T1, GM, WM) and shifted T1 crops, sliced: every volume's
    slices in one split, no near duplicates between neighbouring slices of one volume."""
    d = mni_t1.parent
    src = tmp_path / "src" / "brain"
    src.mkdir(parents=True)
    names = [mni_t1.name, mni_t1.name.replace("_t1_", "_gm_"), mni_t1.name.replace("_t1_", "_wm_")]
    for i, n in enumerate(names):
        img = nib.load(d / n)
        a = np.asarray(img.dataobj, dtype=np.float32)[::6, ::6, 60:120:6]
        a = (255 * a / a.max()).astype(np.uint8)
        nib.save(nib.Nifti1Image(a, img.affine @ np.diag([6, 6, 6, 1.0])), src / f"v{i}.nii.gz")
    t1 = np.asarray(nib.load(mni_t1).dataobj, dtype=np.float32)
    for i, z0 in enumerate((30, 130)):
        a = t1[::6, ::6, z0:z0 + 30:6]
        nib.save(nib.Nifti1Image((255 * a / t1.max()).astype(np.uint8), np.eye(4)),
                 src / f"c{i}.nii.gz")
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"),
                                        slices=True))
    t = ds.table
    assert t["split_group"].str.startswith("volume:").all() and t["split_group"].nunique() == 5
    assert t.groupby("split_group")["split"].nunique().eq(1).all()
    assert "test" in set(t["split"])
    assert ds.manifest.outputs["duplicates"]["near_groups"] == 0


def test_info_shows_duplicates_and_a_class_called_all(dup_folder: Path) -> None:
    r = runner.invoke(app, ["data", "info", str(dup_folder)], env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    assert r.output.count("│ all ") == 1 and "(all classes)" in r.output
    assert "4 (2 exact, 2 near) holding 8 of 16 images" in r.output
    assert "copy_of_all0.png (b, unsplit)" in r.output
    assert "class folder(s) without images left out: empty" in r.output
    j = runner.invoke(app, ["data", "info", str(dup_folder), "--json"])
    info = json.loads(j.output)
    assert info["duplicates"]["groups"] == 4 and info["duplicates"]["across_classes"] == 1


def test_real_ct_slices_of_two_patients_split_by_patient(tmp_path: Path) -> None:
    """pydicom's dicomdirtests CT: 11 slices, 2 patients, 3 series, as 2D images. Class 'ct'
    has only 2 patient groups: no test images (a patient is never split), said in a note;
    class 'mr' (the MR slices) splits by study."""
    import pydicom.data

    base = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    for cls, pattern in (("ct", "*/CT*/*"), ("mr", "98892003/MR*/*")):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for p in sorted(base.glob(pattern)):
            shutil.copy(p, tmp_path / "src" / cls / f"{p.parent.name}_{p.name}.dcm")
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds"),
                                        dtype="float32", size=16))
    t = ds.table
    ct = t[t["class"] == "ct"]
    assert sorted(ct["split_group"].unique()) == ["patient:77654033", "patient:98890234"]
    assert set(ct["split"]) == {"train"}
    # the MR slices are the CT patient 98890234's: the patient holds both classes, so the
    # whole patient (CT and MR) stays in one split
    assert t[t["split_group"] == "patient:98890234"]["split"].nunique() == 1
    notes = " ".join(ds.manifest.outputs["notes"])
    assert "no test images for class(es) whose images come from fewer than 3 groups" in notes
    assert "ct (11 images, 2 group(s))" in notes
