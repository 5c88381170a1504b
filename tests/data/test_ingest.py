from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.ingest import ImportConfig, import_dataset
from medsynth.errors import MedsynthError
from medsynth.imaging.dataset import assign_splits, open_dataset
from medsynth.imaging.transforms import resize_2d

runner = CliRunner()


def _npz(path: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(1)
    np.savez(
        path,
        train_images=rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8),
        train_labels=(np.arange(n) % 7).reshape(-1, 1),
        test_images=rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8),
        test_labels=np.array([[4], [5], [0]]),
    )
    return path


def test_import_folder_makes_a_stratified_seeded_split(image_folder: Path, tmp_path: Path) -> None:
    ds, bad = import_dataset(ImportConfig(str(image_folder), str(tmp_path / "ds"), seed=3))
    assert bad == [] and ds.classes == ["disc", "square"] and ds.channels == 3
    counts = ds.table.groupby(["class", "split"]).size().unstack(fill_value=0)
    assert (counts["test"] >= 1).all() and (counts["train"] >= 3).all()
    again, _ = import_dataset(ImportConfig(str(image_folder), str(tmp_path / "ds2"), seed=3))
    assert list(again.table["split"]) == list(ds.table["split"])
    first = ds.load(0)
    assert first.array.dtype == np.uint8 and first.array.shape == (3, 20, 24)


def test_import_csv_with_given_splits_and_extra_columns(image_folder: Path, tmp_path: Path) -> None:
    files = sorted(image_folder.rglob("*.png"))
    df = pd.DataFrame({
        "path": [str(f.relative_to(image_folder)) for f in files],
        "label": [f.parent.name for f in files],
        "split": ["train", "test"] * (len(files) // 2),
        "diameter_mm": np.arange(len(files), dtype=float),
    })
    df.to_csv(image_folder / "list.csv", index=False)
    ds, _ = import_dataset(ImportConfig(str(image_folder / "list.csv"), str(tmp_path / "ds"), size=16))
    assert set(ds.table["split"]) == {"train", "test"}
    assert ds.attribute_columns == ["diameter_mm"]
    assert ds.load(0).array.shape == (3, 16, 16)


def test_import_medmnist_npz_names_classes(tmp_path: Path) -> None:
    ds, _ = import_dataset(ImportConfig(str(_npz(tmp_path / "dermamnist.npz")), str(tmp_path / "ds")))
    assert "melanoma" in set(ds.table["class"]) and set(ds.table["split"]) == {"train", "test"}
    assert len(ds.table) == 11
    with pytest.raises(MedsynthError, match="outside the 2 classes"):
        import_dataset(ImportConfig(str(tmp_path / "dermamnist.npz"), str(tmp_path / "x"),
                                    classes=["a", "b"]))


def test_import_dicom_keeps_16_bits(pydicom_data_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "cr" / "chest"
    src.mkdir(parents=True)
    for n in ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG3_UNCR.dcm"):
        shutil.copy(pydicom_data_dir / n, src / n)
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "cr"), str(tmp_path / "ds"), size=64))
    img = ds.load(0)
    assert img.array.dtype == np.uint16 and img.array.shape == (1, 64, 64) and img.array.max() > 255
    assert ds.modality == "CR" and ds.dtype == "uint16"


def test_corrupt_file_stops_or_is_skipped(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / "square" / "z_broken.png").write_bytes(b"garbage")  # read last
    with pytest.raises(MedsynthError, match="z_broken.png"):
        import_dataset(ImportConfig(str(image_folder), str(tmp_path / "ds")))
    assert not (tmp_path / "ds").exists()  # nothing left that could pass for a dataset
    ds, bad = import_dataset(ImportConfig(str(image_folder), str(tmp_path / "ds"), skip_bad=True))
    assert len(bad) == 1 and "z_broken.png" in bad[0] and len(ds.table) == 12


def test_resize_pad_and_crop_keep_aspect_and_dtype() -> None:
    a = np.zeros((1, 10, 40), dtype=np.uint16)
    a[:, :, :20] = 60000
    p = resize_2d(a, 20, "pad")
    c = resize_2d(a, 20, "crop")
    assert p.shape == c.shape == (1, 20, 20) and p.dtype == np.uint16
    assert p[0, 10, 2] > 50000 and p[0, 10, 17] < 5000  # left half bright, right dark
    assert c[0, :, :9].min() > 50000 and c[0, :, 11:].max() < 5000


def test_assign_splits_is_stratified() -> None:
    s = assign_splits(pd.Series(["a"] * 10 + ["b"] * 20), (0.7, 0.1, 0.2), seed=0)
    df = pd.DataFrame({"c": ["a"] * 10 + ["b"] * 20, "s": s})
    assert (df[df.c == "a"].s == "test").sum() == 2 and (df[df.c == "b"].s == "test").sum() == 4


def test_cli_info_import_and_errors(image_folder: Path, tmp_path: Path, pydicom_data_dir: Path) -> None:
    r = runner.invoke(app, ["data", "info", str(image_folder)])
    assert r.exit_code == 0, r.output
    assert "disc" in r.output and "square" in r.output and "uint8" in r.output
    r = runner.invoke(app, ["data", "info", str(pydicom_data_dir), "--skip-bad", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output[r.output.index("{"):])
    assert info["modalities"]["CR"] >= 4 and len(info["bad"]) >= 1
    r = runner.invoke(app, ["data", "info", str(pydicom_data_dir)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    r = runner.invoke(app, ["data", "import", str(image_folder), "--out", str(tmp_path / "ds")])
    assert r.exit_code == 0, r.output
    assert len(open_dataset(tmp_path / "ds").table) == 12
    r = runner.invoke(app, ["data", "import", str(image_folder), "--out", str(tmp_path / "ds")])
    assert r.exit_code == 1 and "already exists" in r.output
    assert isinstance(r.exception, SystemExit)  # a handled error, not an escaped exception
    r = runner.invoke(app, ["data", "import", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "no such file or folder" in r.output
    r = runner.invoke(app, ["data", "import", str(image_folder), "--out", str(tmp_path / "y"),
                            "--resize", "stretch", "--size", "32"])
    assert r.exit_code == 2 and "--resize must be pad or crop" in r.output  # a usage error
    r = runner.invoke(app, ["data", "info"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("medsynth ")
