"""The ct describe template on real CT: pydicom-data's head slice and pydicom's CT series
(dicomdirtests) imported as volumes, described offline, and the 3D ``ccella: true`` recipe
trained from that store (issue 26: the recipe failed on a CT set for want of a template)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.describe.ct import measure_ct
from medsynth.describe.prompts import load_template, template_for_modality
from medsynth.errors import MedsynthError
from medsynth.imaging.readers import read_image
from medsynth.store import open_store

runner = CliRunner()


def _dicomdir() -> Path:
    import pydicom.data

    return Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real CT series as volumes (16^3 after crop/pad), classes head and body, and their
    offline store."""
    root = tmp_path_factory.mktemp("ct")
    d = _dicomdir()
    shutil.copytree(d / "98892001" / "CT5N", root / "src" / "body" / "s2")  # 5 slices, 2.5 mm
    head = root / "src" / "head" / "s1"
    head.mkdir(parents=True)
    for n in ("17136", "17166", "17196"):  # the series' fourth slice lies 200 mm away
        shutil.copy(d / "77654033" / "CT2" / n, head / n)
    r = runner.invoke(app, ["data", "import", str(root / "src"), "--out", str(root / "ds"),
                            "--dicom-series", "--reorient", "--spacing", "1,1,2.5",
                            "--shape", "16,16,16"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["describe", str(root / "ds"), "--out", str(root / "store"),
                            "--split", "all"])
    assert r.exit_code == 0, r.output
    return {"root": root, "ds": root / "ds", "store": root / "store"}


def test_ct_datasets_get_the_ct_template() -> None:
    assert template_for_modality("auto", "CT", 3) == "ct"
    assert template_for_modality("auto", "CT", 2) == "ct"
    # MR volumes: prostate only where a class name says so (the measurer finds a gland anywhere)
    assert template_for_modality("auto", "MR", 3, ["no_lesion", "pirads_3"]) == "prostate"
    with pytest.raises(MedsynthError, match="no class name says prostate"):
        template_for_modality("auto", "MR", 3, ["brain", "tumour"])
    assert template_for_modality("prostate", "MR", 3, ["brain"]) == "prostate"
    t = load_template("ct")
    assert t.schema.names == ["region", "coverage_mm", "slice_mm", "air_share", "fat_share",
                              "bone_share", "contrast"]


def test_real_head_ct_slice_measured(pydicom_data_dir: Path) -> None:
    img = read_image(pydicom_data_dir / "693_UNCR.dcm")  # a plain axial head CT, 512 px
    m = measure_ct(img.array, img.affine, 0.48)
    assert m["region"] == "head" and m["bone_share"] > 0.1 and m["air_share"] < 0.05
    assert m["coverage_mm"] == "not_visible" and m["contrast"] == "uncertain"
    text = load_template("ct").render_text(m)
    assert text.startswith("CT of the head, a single slice;") and "bone 19%" in text


def test_ct_store_from_real_series(ct_set: dict[str, Path]) -> None:
    recs = {r.image_id: r for r in open_store(ct_set["store"]).records()}
    assert set(recs) == {"body__s2", "head__s1"}
    body, head = recs["body__s2"], recs["head__s1"]
    assert body.template_version.startswith("ct@") and body.status == "ok"
    # the padding of --shape 16,16,16 is no coverage: 5 and 2 slices of 2.5 mm
    assert body.attributes["coverage_mm"] == 12.5 and body.attributes["slice_mm"] == 2.5
    assert head.attributes["coverage_mm"] == 5.0
    # 16 px crops: fat-dominated soft tissue; a crop of skull bone. Neither names a region.
    assert body.attributes["fat_share"] > 0.5 and body.attributes["bone_share"] == 0
    assert head.attributes["bone_share"] > 0.9
    assert body.attributes["region"] == head.attributes["region"] == "uncertain"
    assert "12.5 mm craniocaudal coverage in 2.5 mm slices" in body.text


def test_2d_template_on_a_volume_is_one_line(ct_set: dict[str, Path], tmp_path: Path) -> None:
    r = runner.invoke(app, ["describe", str(ct_set["ds"]), "--out", str(tmp_path / "s"),
                            "--modality", "cxr"])
    assert r.exit_code != 0 and "made for 2D images, got a volume" in r.output
    assert "Traceback" not in r.output


@pytest.mark.slow
def test_3d_ccella_recipe_trains_on_the_ct_store(ct_set: dict[str, Path]) -> None:
    from medsynth.models.bundle import load_bundle
    from tests.latent.conftest import TINY_3D, tiny_latent

    recipe = ct_set["root"] / "tiny3d.yaml"
    recipe.write_text(tiny_latent(**TINY_3D, ccella=True, max_steps=2).to_yaml())
    out = ct_set["root"] / "model"
    r = runner.invoke(app, ["train", str(ct_set["ds"]), "--store", str(ct_set["store"]),
                            "--out", str(out), "--config", str(recipe), "--threads", "1"])
    assert r.exit_code == 0, r.output
    b = load_bundle(out)
    assert b.class_probabilities and b.sample_shape == (4, 8, 8, 8)  # latents of 16^3 volumes
    assert (out / "text_class_head.safetensors").is_file()
    assert np.isfinite([float(p.abs().sum()) for p in b.denoiser.parameters()]).all()
