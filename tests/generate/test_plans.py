"""Image prompts, twins and balancing as plans: source assignment, counts, image fitting, hooks."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsynth.errors import BadUsageError, MedsynthError
from medsynth.generate.conditioning import plan_samples, requests_from_options
from medsynth.generate.config import GenerateConfig
from medsynth.generate.plans import (
    assign_sources,
    balance_counts,
    fit_image,
    open_source,
    to_model_space,
    twin_specs,
)
from medsynth.imaging.image import Image


def make_dataset(root: Path, counts: dict[str, dict[str, int]], *, channels: int = 1,
                 dtype: str = "uint16", size: int | tuple[int, int] = 16, hi: int = 4095,
                 seed: int = 0) -> Path:
    """A dataset folder: ``counts[class][split]`` random images of the given kind."""
    from medsynth.imaging.dataset import finish_dataset
    from medsynth.imaging.save import save_png

    rng = np.random.default_rng(seed)
    h, w = (size, size) if isinstance(size, int) else size
    rows = []
    for cls, splits in counts.items():
        for split, n in splits.items():
            for i in range(n):
                arr = rng.integers(0, hi, (channels, h, w)).astype(dtype)
                rel = f"images/{cls}/{split}{i}.png"
                save_png(arr, root / rel)
                rows.append({"image_id": f"{cls}_{split}{i}", "path": rel, "class": cls,
                             "split": split})
    finish_dataset(root, pd.DataFrame(rows), config={"test": True}, classes=sorted(counts),
                   channels=channels, dtype=dtype, modality="DX")
    return root


CLASSES = ["normal", "pneumonia"]


def test_assignment_is_seeded_cycled_and_per_class(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", {"normal": {"train": 3, "test": 2},
                                        "pneumonia": {"train": 2}})
    src = open_source(ds, ["train"], option="--init-images")
    assert len(src.items) == 5 and {it.split for it in src.items} == {"train"}
    specs = plan_samples(requests_from_options(["*"], CLASSES, 7, None), CLASSES, base_seed=3,
                         store=None)
    a = assign_sources(specs, src, base_seed=3, init_classes=[])
    b = assign_sources(specs, src, base_seed=3, init_classes=[])
    assert a == b
    for cls in CLASSES:
        ids = [s.init_id for s in a if s.cls == cls]
        assert sorted(set(ids[:5])) == sorted(it.image_id for it in src.items)  # one full pass
        assert ids[5:] == ids[:2]  # then the same order again
    # A sample's source depends only on its class and index, not on what else the run makes.
    alone = plan_samples(requests_from_options(["pneumonia"], CLASSES, 3, None), CLASSES,
                         base_seed=3, store=None)
    sub = assign_sources(alone, src, base_seed=3, init_classes=[])
    assert [s.init_id for s in sub] == [s.init_id for s in a if s.cls == "pneumonia"][:3]
    # Another seed shuffles differently; --init-class keeps only that source class.
    c = assign_sources(specs, src, base_seed=4, init_classes=[])
    assert [s.init_id for s in c] != [s.init_id for s in a]
    only = assign_sources(specs, src, base_seed=3, init_classes=["Pneumonia"])
    assert {s.init_class for s in only} == {"pneumonia"}
    with pytest.raises(MedsynthError, match="(?s)--init-class 'effusion'.*their classes"):
        assign_sources(specs, src, base_seed=3, init_classes=["effusion"])
    # Pairing: the target's own class (variations) or the other classes (translation).
    same = assign_sources(specs, src, base_seed=3, init_classes=[], pairing="same")
    other = assign_sources(specs, src, base_seed=3, init_classes=[], pairing="other")
    assert all(s.init_class == s.cls for s in same)
    assert all(s.init_class != s.cls for s in other)
    assert {s.init_id for s in other if s.cls == "normal"} == {"pneumonia_train0",
                                                               "pneumonia_train1"}
    with pytest.raises(MedsynthError, match="--init-pairing same: no init images for class "
                                            "'pneumonia'"):
        assign_sources(specs, src, base_seed=3, init_classes=["normal"], pairing="same")


def test_balance_counts_and_bad_targets(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", {"normal": {"train": 5, "test": 9},
                                        "pneumonia": {"train": 2}})
    src = open_source(ds, ["train"], option="--balance", need_dataset=True)
    bal = balance_counts(src, CLASSES, "max")
    assert bal["real_counts"] == {"normal": 5, "pneumonia": 2}
    assert bal["synthetic_counts"] == {"normal": 0, "pneumonia": 3} and bal["target"] == 5
    bal = balance_counts(src, CLASSES, "8")
    assert bal["synthetic_counts"] == {"normal": 3, "pneumonia": 6}
    assert bal["after"] == {"normal": 8, "pneumonia": 8}
    with pytest.raises(BadUsageError, match=r"--target 4: below the real count of normal \(5\)"):
        balance_counts(src, CLASSES, "4")
    # A class the dataset lacks needs the whole target.
    assert balance_counts(src, [*CLASSES, "effusion"], "max")["synthetic_counts"]["effusion"] == 5


def test_sources_need_images_of_the_split(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", {"normal": {"test": 2}})
    with pytest.raises(MedsynthError, match="no images in split.s. train .it has test.*twin"):
        open_source(ds, ["train"], option="--twin", need_dataset=True)
    folder = tmp_path / "folder"
    (folder / "normal").mkdir(parents=True)
    from medsynth.imaging.save import save_png

    save_png(np.zeros((1, 16, 16), np.uint16), folder / "normal" / "a.png")
    with pytest.raises(MedsynthError, match="not a medsynth dataset.*--twin needs a dataset"):
        open_source(folder, ["train"], option="--twin", need_dataset=True)
    src = open_source(folder, ["train"], option="--init-images")
    assert [(it.image_id, it.cls, it.split) for it in src.items] == [("normal/a.png", "normal", "")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsynthError, match="no images found"):
        open_source(tmp_path / "empty", ["train"], option="--init-images")
    with pytest.raises(MedsynthError, match="missing: no such folder"):
        open_source(tmp_path / "missing", ["train"], option="--init-images")


def _bundle(**kw: object) -> types.SimpleNamespace:
    from medsynth.models.intensity import IntensityMapping

    base = {"spatial_dims": 2, "channels": 1, "dtype": "uint16", "shape": (16, 16),
            "intensity": IntensityMapping("uint16", 0, 4095), "latent": False}
    return types.SimpleNamespace(**{**base, **kw})


def test_fit_image_follows_the_training_rules() -> None:
    from medsynth.imaging.transforms import fit_to_size, resize_square

    b = _bundle()
    rng = np.random.default_rng(0)
    same = rng.integers(0, 4095, (1, 16, 16)).astype(np.uint16)
    assert fit_image(Image(same), b, resize="pad", where="x") is not None
    np.testing.assert_array_equal(fit_image(Image(same), b, resize="pad", where="x"), same)
    big = rng.integers(0, 4095, (1, 32, 32)).astype(np.uint16)
    np.testing.assert_array_equal(fit_image(Image(big), b, resize="pad", where="x"),
                                  resize_square(big, 16))
    wide = rng.integers(0, 4095, (1, 20, 40)).astype(np.uint16)
    for mode in ("pad", "crop"):
        got = fit_image(Image(wide), b, resize=mode, where="x")
        assert got.shape == (1, 16, 16)
        np.testing.assert_array_equal(got, fit_to_size(wide, 16, mode)[0])
    # Exact widenings only; anything else names the file and the types.
    f = fit_image(Image(same), _bundle(dtype="float32"), resize="pad", where="x")
    assert f.dtype == np.float32 and np.array_equal(f, same.astype(np.float32))
    with pytest.raises(MedsynthError, match="a.png: uint8 pixels, but the model's are uint16"):
        fit_image(Image(same.astype(np.uint8)), b, resize="pad", where="a.png")
    with pytest.raises(MedsynthError, match="b.png: 3-channel .RGB. image, but the model makes "
                                            "1-channel .grayscale."):
        fit_image(Image(np.zeros((3, 16, 16), np.uint16)), b, resize="pad", where="b.png")
    with pytest.raises(MedsynthError, match="v.nii.gz: a 3D image, but the model makes 2D"):
        fit_image(Image(np.zeros((1, 4, 16, 16), np.uint16)), b, resize="pad", where="v.nii.gz")


def test_square_resize_is_the_train_stage_rule() -> None:
    from medsynth.imaging.transforms import resize_square
    from medsynth.train.data import _resize

    rng = np.random.default_rng(1)
    for dtype, hi in (("uint8", 255), ("uint16", 65535)):
        a = rng.integers(0, hi, (3, 40, 40)).astype(dtype)
        np.testing.assert_array_equal(resize_square(a, 16), _resize(a, 16))


def test_latent_models_encode_init_images() -> None:
    """The hook latent models use: init images go through the bundle's encoder."""
    import torch

    x = torch.zeros(2, 1, 16, 16)
    assert to_model_space(_bundle(), x) is x
    seen = []

    def encode(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return torch.ones(t.shape[0], 4, 4, 4)

    z = to_model_space(_bundle(latent=True, encode=encode), x)
    assert seen == [(2, 1, 16, 16)] and z.shape == (2, 4, 4, 4)
    with pytest.raises(MedsynthError, match="latent model without an image encoder"):
        to_model_space(_bundle(latent=True, folder="M"), x)


def test_twin_specs_one_per_real_image(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", {"normal": {"train": 3, "test": 1},
                                        "pneumonia": {"train": 2}})
    src = open_source(ds, ["train"], option="--twin", need_dataset=True)
    cfg = GenerateConfig(model="m", out="o", twin=str(ds))
    specs = twin_specs(src, cfg, CLASSES, None, from_image=False, store_splits=None)
    assert [(s.sample_id, s.twin_of, s.init_id) for s in specs] == [
        ("normal-000000", "normal_train0", ""), ("normal-000001", "normal_train1", ""),
        ("normal-000002", "normal_train2", ""), ("pneumonia-000000", "pneumonia_train0", ""),
        ("pneumonia-000001", "pneumonia_train1", "")]
    specs = twin_specs(src, cfg, CLASSES, None, from_image=True, store_splits=None)
    assert all(s.init_id == s.twin_of for s in specs)
    cfg = GenerateConfig(model="m", out="o", twin=str(ds), classes=["pneumonia"])
    assert {s.cls for s in twin_specs(src, cfg, CLASSES, None, from_image=False,
                                      store_splits=None)} == {"pneumonia"}
    with pytest.raises(MedsynthError, match=r"class\(es\) \['pneumonia'\] are not classes"):
        twin_specs(src, GenerateConfig(model="m", out="o", twin=str(ds)), ["normal"], None,
                   from_image=False, store_splits=None)


@pytest.mark.parametrize("kw, message", [
    ({"init_images": "d", "strength": 0.0}, r"--strength must be in \(0, 1\]"),
    ({"init_images": "d", "strength": 1.5}, r"--strength must be in \(0, 1\]"),
    ({"strength": 0.5}, "--strength needs --init-images or --twin"),
    ({"init_classes": ["a"]}, "--init-class and --init-pairing need --init-images"),
    ({"init_pairing": "other"}, "--init-class and --init-pairing need --init-images"),
    ({"init_images": "d", "init_pairing": "others"},
     "--init-pairing must be one of any, same, other"),
    ({"twin": "d", "init_images": "d"}, "--twin excludes --init-images"),
    ({"twin": "d", "balance": "d"}, "--twin excludes --balance"),
    ({"balance": "d", "prompts_csv": "p.csv", "classes": []}, "--balance and --prompts-csv"),
    ({"balance": "d", "balance_target": "0"}, "--target must be 'max' or a positive number"),
    ({"balance": "d", "balance_target": "many"}, "--target must be 'max'"),
    ({"init_images": "d", "splits": ["training"]}, "--split: unknown split"),
    ({"init_images": "d", "init_resize": "stretch"}, "--init-resize must be one of pad, crop"),
])
def test_bad_options(kw: dict[str, object], message: str) -> None:
    with pytest.raises(BadUsageError, match=message):
        GenerateConfig(model="m", out="o", **kw)  # type: ignore[arg-type]


def test_config_defaults_and_identity() -> None:
    assert GenerateConfig(model="m", out="o", init_images="d").strength == 0.7
    assert GenerateConfig(model="m", out="o", twin="d").strength == 1.0
    assert GenerateConfig(model="m", out="o", balance="d").strength is None
    cfg = GenerateConfig(model="m", out="o", init_images="d", splits=["train,val"])
    assert cfg.splits == ["train", "val"] and cfg.identity()["init_images"] == "d"
    # Text-to-image runs keep the identity they had before image prompts existed (resume).
    assert "strength" not in GenerateConfig(model="m", out="o").identity()


def test_oversampled_twin_candidates_keep_their_real_image(tmp_path: Path) -> None:
    from medsynth.generate import oversample
    from medsynth.generate.plans import prepare

    ds = make_dataset(tmp_path / "ds", {"normal": {"train": 2}, "pneumonia": {"train": 1}})
    cfg = GenerateConfig(model="m", out="o", twin=str(ds), strength=0.5, oversample=2)
    bundle = types.SimpleNamespace(classes=CLASSES)
    images = prepare(cfg, bundle, None, None, base=lambda: [])
    assert images is not None
    plan = oversample.expand(images.specs, cfg.oversample, cfg.seed)
    images.expanded(plan)
    stands_for = images.outputs["twin"]["stands_for"]
    assert stands_for == {"normal-000000": "normal_train0", "normal-000001": "normal_train0",
                          "normal-000002": "normal_train1", "normal-000003": "normal_train1",
                          "pneumonia-000000": "pneumonia_train0",
                          "pneumonia-000001": "pneumonia_train0"}
    assert all(s.init_id == s.twin_of for s in plan)  # both candidates start from the same image
    assert len({s.seed for s in plan}) == len(plan)
