"""Refine on every model kind train writes (issue 22): tiny models made by the real
``medsynth train`` (pixel DDPM, 2D latent, rectified flow, CCELLA), each refined with DPO and
with RWR for one round and for ``--rounds 2`` (round 2 samples with the round-1 model, decoded
for latent models, and is judged by the shared core); each result is a model ``generate`` reads,
with the noise schedule it was trained with. A 3D latent model is refused with one line before
anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.errors import MedsynthError
from medsynth.refine.config import RefineConfig
from medsynth.refine.run import refine
from tests.latent.conftest import TINY_3D, store_from_reports, tiny_latent
from tests.refine.conftest import by_index, judge_factory, write_judged

CLASSES = ("melanoma", "nevus")
KINDS = {"pixel": {}, "latent2d": "latent", "rflow": {"noise_schedule": "rflow"},
         "ccella": {"ccella": True}}
ONE = dict(steps=2, batch_size=2, log_every=1, checkpoint_every=2, early_stop=False, rank=4,
           real_fraction=0.5)
TWO = dict(ONE, rounds=2, round_descriptions=1, round_candidates=4)
SCORES = by_index({0: 1.0, 1: 0.75, 2: 0.25, 3: 0.0})


def _sampler(model: Path) -> str:
    conf = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    return "rflow" if conf.get("_class_name") == "RFlowScheduler" else "ddim"


def _generate(model: Path, out: Path, n: int = 4, seed: int = 0) -> Path:
    from medsynth.generate.config import GenerateConfig
    from medsynth.generate.run import run_generate

    run_generate(GenerateConfig(model=str(model), out=str(out), n=n, prompt="a lesion", steps=2,
                                sampler=_sampler(model), guidance=1.0, seed=seed, threads=1))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.train.fixtures import make_dataset, make_store

    root = tmp_path_factory.mktemp("kinds")
    ds = make_dataset(root / "ds", classes=CLASSES, n_per_class=3)
    make_store(root / "store", ds)
    return {"root": root, "ds": root / "ds", "store": root / "store"}


@pytest.fixture(scope="module")
def kind_models(data: dict[str, Path]) -> dict[str, tuple[Path, Path]]:
    """kind -> (model trained by medsynth train, a judged folder of its generated set)."""
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import train

    out = {}
    for kind, changes in KINDS.items():
        cfg = tiny_latent() if changes == "latent" else TrainConfig.tiny(**changes)
        model = train(data["ds"], data["root"] / kind, cfg=cfg, store_path=data["store"],
                      progress=False)
        synth = _generate(model, data["root"] / f"{kind}-synth")
        out[kind] = (model, write_judged(synth, data["root"] / f"{kind}-judged", score=SCORES))
    return out


@pytest.mark.parametrize("method", ["dpo", "rwr"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_refine_each_kind_one_and_two_rounds(kind: str, method: str, kind_models: dict,
                                             tmp_path: Path) -> None:
    from medsynth.models.bundle import load_bundle

    model, judged = kind_models[kind]
    parent = load_bundle(model)
    for name, recipe in (("one", ONE), ("two", TWO)):
        cfg = RefineConfig(**{**recipe, "method": method})
        out = refine(model, judged, tmp_path / name, cfg=cfg, progress=False,
                     judge_factory=judge_factory(SCORES))
        rounds = json.loads((out / "medsynth.json").read_text())["outputs"]["rounds"]
        assert rounds == cfg.rounds
        for k in range(1, cfg.rounds + 1):  # every round trained (none skipped for lack of data)
            info = json.loads((out / "rounds" / str(k) / "round.json").read_text())
            assert not info.get("skipped") and info["steps"] == 2, info
        refined = load_bundle(out)
        # the schedule, latent space and conditioning it was trained with, carried over
        assert refined.scheduler_config["_class_name"] == parent.scheduler_config["_class_name"]
        assert refined.prediction_type == parent.prediction_type
        assert refined.latent == parent.latent and refined.sample_shape == parent.sample_shape
        assert refined.class_probabilities == parent.class_probabilities
        gen = _generate(out, tmp_path / f"{name}-gen", n=1, seed=1)  # n per class
        assert len(list((gen / "png").rglob("*.png"))) == 2
    if kind == "latent2d":  # round 2 sampled through the decoder: images at the pixel size
        from medsynth.imaging.readers import read_image

        pngs = sorted((tmp_path / "two" / "rounds" / "2" / "synth" / "png").rglob("*.png"))
        assert pngs and read_image(pngs[0]).array.shape == (3, 16, 16)


@pytest.fixture(scope="module")
def latent3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medsynth.data.demo.common import DemoConfig, write_demo
    from medsynth.train.loop import train

    root = tmp_path_factory.mktemp("kinds3d")
    ds = write_demo(DemoConfig(demo="prostate", out=str(root / "ds"), n_per_class=2, size=16,
                               seed=0, workers=1))
    store_from_reports(root / "store", ds)
    return train(root / "ds", root / "model", store_path=root / "store", progress=False,
                 cfg=tiny_latent(**TINY_3D, max_steps=1, checkpoint_every=1))


@pytest.mark.parametrize("method", ["dpo", "rwr"])
def test_3d_latent_model_is_refused_before_anything_is_written(latent3d: Path, method: str,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "m2"
    for rounds in (1, 2):
        with pytest.raises(MedsynthError, match="refine supports 2D models .* 3D model"):
            refine(latent3d, tmp_path / "judged", out, progress=False,
                   cfg=RefineConfig(**{**ONE, "method": method, "rounds": rounds}))
        assert not out.exists()
    r = CliRunner().invoke(app, ["refine", str(latent3d), "--judged", str(tmp_path / "judged"),
                                 "--out", str(out), "--method", method, "--rounds", "2"])
    assert r.exit_code != 0 and not out.exists()
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert "refine supports 2D models" in lines[0] and "3D model" in r.output


def test_refine_refuses_several_processes(kind_models: dict, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model, judged = kind_models["pixel"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MedsynthError, match="does not shard"):
        refine(model, judged, tmp_path / "m2", cfg=RefineConfig(**ONE), progress=False)
    assert not (tmp_path / "m2").exists()


def test_each_kind_is_refined_with_its_own_noise(kind_models: dict, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The old refine drew DDPM integer timesteps for every model: now the objective of the
    model's schedule draws them (rectified flow: continuous times in (0, T])."""
    import torch

    from medsynth.models.objective import Objective

    seen: list[tuple[bool, object]] = []
    real = Objective.draw

    def draw(self, shape, g):
        noise, t = real(self, shape, g)
        seen.append((self.rflow, t.dtype))
        return noise, t

    monkeypatch.setattr(Objective, "draw", draw)
    for kind in ("pixel", "rflow"):
        seen.clear()
        model, judged = kind_models[kind]
        refine(model, judged, tmp_path / kind, cfg=RefineConfig(**ONE), progress=False)
        want = (True, torch.float32) if kind == "rflow" else (False, torch.int64)
        assert seen and set(seen) == {want}
