"""The data-stage rough edges of issue 26 item 9, one test each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.data.ingest import PARTIAL_MARKER, ImportConfig, import_dataset
from medsynth.errors import MedsynthError
from medsynth.imaging.dataset import finish_dataset
from medsynth.imaging.save import save_nifti, save_png

runner = CliRunner()


def _gray(seed: int, size: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size)).astype(np.uint8)


def test_alpha_channel_dropped_with_a_note(tmp_path: Path) -> None:
    src = tmp_path / "src" / "a"
    src.mkdir(parents=True)
    PILImage.fromarray(np.dstack([_gray(0), np.full((12, 12), 255, np.uint8)]), "LA").save(
        src / "opaque.png")
    PILImage.fromarray(np.dstack([_gray(1), np.full((12, 12), 90, np.uint8)]), "LA").save(
        src / "see_through.png")
    PILImage.fromarray(_gray(2)).save(src / "plain.png")
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds")))
    notes = " ".join(ds.manifest.outputs["notes"])
    assert "2 image(s) had an alpha channel (RGBA/LA), dropped" in notes
    assert "1 of them had transparent pixels" in notes
    np.testing.assert_array_equal(ds.load(ds.table.index[ds.table["image_id"] == "a__opaque"][0])
                                  .array[0], _gray(0))
    r = runner.invoke(app, ["data", "info", str(tmp_path / "src")])
    assert "2 image(s) have an alpha channel" in r.output


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    save_png(_gray(0)[None], tmp_path / "src" / "a" / "x.png")
    (tmp_path / "src" / "nothing_here").mkdir()
    r = runner.invoke(app, ["data", "import", str(tmp_path / "src"), "--out", str(tmp_path / "ds")])
    assert r.exit_code == 0, r.output
    assert "class folder(s) without images left out: nothing_here" in " ".join(r.output.split())


def test_killed_import_is_named_and_overwrite_replaces_it(tmp_path: Path) -> None:
    for i in range(4):
        save_png(_gray(i)[None], tmp_path / "src" / "a" / f"{i}.png")
    out = tmp_path / "ds"
    # what a kill -9 leaves: the marker and some images, no labels.csv, no manifest
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(out)))
    assert not (out / PARTIAL_MARKER).exists()  # a finished import removes its marker
    for name in ("medsynth.json", "labels.csv", "datalist.json"):
        (out / name).unlink()
    (out / PARTIAL_MARKER).write_text("x")
    r = runner.invoke(app, ["data", "import", str(tmp_path / "src"), "--out", str(out)])
    assert r.exit_code != 0 and "unfinished data import" in r.output
    assert "--overwrite" in r.output and "--resume" not in r.output
    r = runner.invoke(app, ["data", "import", str(tmp_path / "src"), "--out", str(out),
                            "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (out / "medsynth.json").is_file() and not (out / PARTIAL_MARKER).exists()
    # a killed import of a release before the marker (only what an import writes): named,
    # never deleted (it could be someone's images folder), even with --overwrite
    (out / "medsynth.json").unlink()
    for extra in ([], ["--overwrite"]):
        r = runner.invoke(app, ["data", "import", str(tmp_path / "src"), "--out", str(out),
                                *extra])
        assert "unfinished data import?" in r.output and "--resume" not in r.output
        assert (out / "images").is_dir()
    # a finished dataset, and any other folder: no --resume either
    done = tmp_path / "done"
    import_dataset(ImportConfig(str(tmp_path / "src"), str(done)))
    r = runner.invoke(app, ["data", "import", str(tmp_path / "src"), "--out", str(done)])
    assert "already exists and holds a dataset" in r.output and "--resume" not in r.output
    # a folder that is not ours is still never deleted
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(MedsynthError, match="refusing to delete"):
        import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "mine"), overwrite=True))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    r = runner.invoke(app, ["data", "import", str(tmp_path / "src"), "--out",
                            str(tmp_path / "mine")])
    assert "not empty" in r.output and "--resume" not in r.output


def test_datalist_empty_text_is_not_turned_into_the_folder(tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist

    from medsynth.loaders import write_datalist

    (tmp_path / "set").mkdir()
    save_png(_gray(0)[None], tmp_path / "set" / "a.png")
    write_datalist(tmp_path / "set" / "datalist.json",
                   {"training": [{"image": "a.png", "label": 0, "description": "",
                                  "report": "", "class": "a"}]}, ["a"])
    item = load_decathlon_datalist(str(tmp_path / "set" / "datalist.json"),
                                   is_segmentation=False)[0]
    assert item["description"] is None and item["report"] is None
    assert item["image"] == str(tmp_path / "set" / "a.png") and item["class"] == "a"


def test_mixed_units_forced_to_float32_are_warned_at_import_and_training(
        pydicom_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medsynth.train.config import TrainConfig
    from medsynth.train.data import load_train_data

    src = tmp_path / "mixed"
    for cls, name in (("ct", "693_UNCR.dcm"), ("mr", "MR2_UNCR.dcm"), ("cr", "RG3_UNCR.dcm")):
        (src / cls).mkdir(parents=True)
        shutil.copy(pydicom_data_dir / name, src / cls / name)
    ds, _ = import_dataset(ImportConfig(str(src), str(tmp_path / "ds"), size=16, dtype="float32"))
    notes = " ".join(ds.manifest.outputs["notes"])
    assert "--dtype float32 put values of different units in one set" in notes
    assert "HU: CT" in notes and "display values: CR" in notes
    ds.table["split"] = "train"
    capsys.readouterr()
    load_train_data(ds, TrainConfig(splits=["train"]), progress=True)
    err = " ".join(capsys.readouterr().err.split())
    assert "mix kinds of pixel values" in err and "CT 1" in err and "MR 1" in err


def test_spacing_range_note_shown_beside_missing_spacing(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from medsynth.train.config import TrainConfig
    from medsynth.train.data import load_train_data

    root = tmp_path / "ds"
    rows = []
    for i, sp in enumerate(["0.5,0.5", "2,2", ""]):
        save_nifti(np.full((1, 8, 8), i, np.int16), root / "images" / "a" / f"{i}.nii.gz")
        rows.append({"image_id": f"a_{i}", "path": f"images/a/{i}.nii.gz", "class": "a",
                     "split": "train", "modality": "CT", "spacing": sp})
    ds = finish_dataset(root, pd.DataFrame(rows), config={}, channels=1, dtype="int16",
                        modality="CT")
    capsys.readouterr()
    load_train_data(ds, TrainConfig(splits=["train"]), progress=True)
    err = " ".join(capsys.readouterr().err.split())
    assert "1 of 3 training images record no pixel spacing" in err
    assert "range from 0.5 x 0.5 to 2 x 2 mm" in err


def test_one_image_class_warned_at_import_and_at_balance(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from medsynth.generate.plans import balance_counts, open_source

    for i in range(8):
        save_png(_gray(i)[None], tmp_path / "src" / "common" / f"{i}.png")
    save_png(_gray(99)[None], tmp_path / "src" / "rare" / "only.png")
    ds, _ = import_dataset(ImportConfig(str(tmp_path / "src"), str(tmp_path / "ds")))
    notes = " ".join(ds.manifest.outputs["notes"])
    assert "fewer than 3 images" in notes and "rare (1)" in notes
    capsys.readouterr()
    src = open_source(tmp_path / "ds", ["train"], option="--balance", need_dataset=True)
    counts = src.dataset.table[src.dataset.table["split"] == "train"]["class"].value_counts()
    bal = balance_counts(src, ["common", "rare"], "max")
    assert bal["synthetic_counts"]["rare"] == int(counts["common"]) - 1
    assert bal["warnings"] and "class rare" in bal["warnings"][0]
    assert "from 1 real one(s)" in " ".join(capsys.readouterr().err.split())
    assert json.dumps(bal)  # the manifest section stays JSON
