"""``medsynth refine`` end to end on tiny models: a loadable model that generate uses, lineage,
resume, early stop, bad input (no pairs, another model's judged folder), rwr, full fine-tuning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from medsynth.artifacts import read_manifest, walk_lineage
from medsynth.cli import app
from medsynth.errors import MedsynthError
from medsynth.models.bundle import load_bundle
from medsynth.refine.config import RefineConfig
from medsynth.refine.run import refine
from tests.refine.conftest import by_index, generate_set, judge_factory, manifest, write_judged

FAST = dict(steps=6, batch_size=2, log_every=2, checkpoint_every=2, early_stop=False, rank=4)


def unet_weights(model: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model / "unet" / "diffusion_pytorch_model.safetensors"))


def log_rows(model: Path) -> list[dict[str, str]]:
    with open(model / "refine_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_dpo_model_loads_generates_and_has_lineage(tiny_model: Path, judged: Path,
                                                   tmp_path: Path) -> None:
    out = refine(tiny_model, judged, tmp_path / "m2", cfg=RefineConfig(**FAST), progress=False)
    m = manifest(out)
    parent = read_manifest(tiny_model)
    assert m["stage"] == "refine"
    assert m["inputs"][0]["sha256"] == parent.sha256 and m["inputs"][0]["stage"] == "train"
    assert {i["stage"] for i in m["inputs"]} == {"train", "judge", "data", "describe"}
    assert m["config"]["train_splits"] == ["train"] and m["outputs"]["steps"] == 6
    bundle = load_bundle(out)
    assert bundle.info.refined_from.sha256 == parent.sha256
    assert bundle.info.refined_from.method == "dpo"
    assert bundle.classes == ["melanoma", "nevus"] and bundle.info.denoiser.raw_folder is None
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # the parent's library and licence, parent as base
    assert card.data.base_model == str(tiny_model) and {"refined", "dpo"} <= set(card.data.tags)
    assert card.data.library_name == "diffusers" and card.data.license == "other"
    # the LoRA is merged: plain keys, changed attention weights, untouched convolutions
    before, after = unet_weights(tiny_model), unet_weights(out)
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(any(t in k for t in ("to_q", "to_k", "to_v", "to_out")) for k in changed)
    # pairs: per class scores 1, .75, .5, .25, 0, .5 -> 15 candidates, 1 tie, 1 both bad
    pairs = pd.read_csv(out / "rounds" / "1" / "pairs.csv")
    assert len(pairs) == 26 and (pairs["score_w"] > pairs["score_l"]).all()
    rows = log_rows(out)
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert all(0 <= float(r["implicit_acc"]) <= 1 and r["model_w"] and r["ref_w"] for r in rows)
    # generate reads it like a trained model; the set's lineage walks refine -> train -> data
    synth = generate_set(out, tmp_path / "synth2", n=2)
    table = pd.read_csv(synth / "samples.csv")
    assert (table["model_sha256"] == read_manifest(out).sha256).all()
    lin = walk_lineage(synth)
    assert [mm.stage for mm in lin.models] == ["refine", "train"] and not lin.problems
    assert lin.trained.sha256 == parent.sha256 and lin.data_sha256()


def test_resume_within_a_round_matches_an_uninterrupted_run(tiny_model: Path, judged: Path,
                                                            tmp_path: Path) -> None:
    cfg = RefineConfig(**FAST)
    full = refine(tiny_model, judged, tmp_path / "full", cfg=cfg, progress=False)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        refine(tiny_model, judged, part, cfg=cfg, progress=False, interrupt_after=(1, 3))
    assert not (part / "medsynth.json").exists()
    with pytest.raises(MedsynthError, match="already exists"):
        refine(tiny_model, judged, part, cfg=cfg, progress=False)
    refine(tiny_model, judged, part, cfg=cfg, progress=False, resume=True)
    a, b = unet_weights(full), unet_weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if k not in ("items_per_s", "elapsed_s")}
             for r in log_rows(full)]
    assert strip == [{k: v for k, v in r.items() if k not in ("items_per_s", "elapsed_s")}
                     for r in log_rows(part)]
    # a different recipe is refused on resume; a finished run has nothing to resume
    with pytest.raises(MedsynthError, match="nothing to resume"):
        refine(tiny_model, judged, part, cfg=cfg, progress=False, resume=True)
    # --overwrite replaces a finished run
    refine(tiny_model, judged, part, cfg=RefineConfig(**{**FAST, "steps": 2}), progress=False,
           overwrite=True)
    assert manifest(part)["outputs"]["steps"] == 2
    assert not (part / "rounds" / "1" / "checkpoints" / "step-0000006").exists()


def test_resume_refuses_other_settings(tiny_model: Path, judged: Path, tmp_path: Path) -> None:
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        refine(tiny_model, judged, part, cfg=RefineConfig(**FAST), progress=False,
               interrupt_after=(1, 2))
    with pytest.raises(MedsynthError, match="beta"):
        refine(tiny_model, judged, part, cfg=RefineConfig(**{**FAST, "beta": 5.0}),
               progress=False, resume=True)


def test_early_stop_keeps_the_last_good_weights(tiny_model: Path, judged: Path,
                                                tmp_path: Path) -> None:
    # a wild learning rate ruins the model at the first update: the winners' loss jumps above
    # the reference's, the round stops and keeps the weights the last good window started from
    cfg = RefineConfig(**{**FAST, "early_stop": True, "early_stop_min_steps": 0,
                          "early_stop_patience": 1, "log_every": 1, "lr": 1.0, "warmup_steps": 0})
    out = refine(tiny_model, judged, tmp_path / "m2", cfg=cfg, progress=False)
    info = json.loads((out / "rounds" / "1" / "round.json").read_text())
    assert info["stopped_early"] and info["kept_step"] == 0 and info["steps"] == 2
    assert "winners' loss rose above the reference's" in info["reason"]
    rows = log_rows(out)
    assert float(rows[0]["model_w"]) == pytest.approx(float(rows[0]["ref_w"]), abs=1e-7)
    assert float(rows[1]["model_w"]) > float(rows[1]["ref_w"])
    before, after = unet_weights(tiny_model), unet_weights(out)
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)


def test_no_informative_pairs_writes_nothing(tiny_model: Path, tmp_path: Path) -> None:
    synth = generate_set(tiny_model, tmp_path / "synth", n=3)
    flat = write_judged(synth, tmp_path / "judged", score=lambda sid, img: 0.5)
    out = tmp_path / "m2"
    with pytest.raises(MedsynthError, match="no informative pairs") as e:
        refine(tiny_model, flat, out, cfg=RefineConfig(**FAST), progress=False)
    assert "6 candidate pairs, 6 ties" in str(e.value) and "--oversample" in str(e.value)
    assert not out.exists()
    # images with different descriptions never pair either
    other = generate_set(tiny_model, tmp_path / "synth-desc", n=1, prompt=None)
    j2 = write_judged(other, tmp_path / "judged-desc", score=by_index({0: 1.0}))
    with pytest.raises(MedsynthError, match="no informative pairs"):
        refine(tiny_model, j2, out, cfg=RefineConfig(**FAST), progress=False)
    assert not out.exists()


def test_judged_folder_of_another_model_is_refused(other_model: Path, judged: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "m2"
    with pytest.raises(MedsynthError, match="judges images made by"):
        refine(other_model, judged, out, cfg=RefineConfig(**FAST), progress=False)
    assert not out.exists()
    with pytest.raises(MedsynthError, match="expected 'judge'"):
        refine(other_model, other_model, out, cfg=RefineConfig(**FAST), progress=False)
    assert not out.exists()


ROUNDS = dict(FAST, steps=4, rounds=2, round_descriptions=1, round_candidates=4)


def test_rounds_sample_judge_train_and_resume_between_and_within(
        tiny_model: Path, judged: Path, tmp_path: Path) -> None:
    jf = judge_factory(by_index({0: 1.0, 1: 0.75, 2: 0.25, 3: 0.0}))
    cfg = RefineConfig(**ROUNDS)
    full = refine(tiny_model, judged, tmp_path / "full", cfg=cfg, progress=False,
                  judge_factory=jf)
    m = manifest(full)
    assert m["outputs"]["rounds"] == 2 and m["outputs"]["steps"] == 8
    r2 = full / "rounds" / "2"
    # round 2 sampled with round 1's model (a model folder of its own), judged by the core
    synth = pd.read_csv(r2 / "synth" / "samples.csv")
    assert len(synth) == 8 and synth.groupby("class").size().tolist() == [4, 4]
    assert synth["description"].eq("a lesion").all()  # the judged set's description
    m1 = read_manifest(full / "rounds" / "1" / "model")
    assert m1.stage == "refine" and (synth["model_sha256"] == m1.sha256).all()
    lin = walk_lineage(r2 / "synth")
    assert [x.stage for x in lin.models] == ["refine", "train"]
    assert manifest(r2 / "judged")["outputs"]["status"] == "complete"
    assert len(pd.read_csv(r2 / "pairs.csv")) == 2 * 5  # 6 candidates, (.25, 0) both bad
    assert {int(r["round"]) for r in log_rows(full)} == {1, 2}
    # killed after round 1, then inside round 2: each resume continues exactly
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        refine(tiny_model, judged, part, cfg=cfg, progress=False, judge_factory=jf,
               interrupt_after=(1, None))
    assert (part / "rounds" / "1" / "round.json").is_file()
    assert not (part / "rounds" / "2").exists()
    with pytest.raises(KeyboardInterrupt):
        refine(tiny_model, judged, part, cfg=cfg, progress=False, judge_factory=jf,
               resume=True, interrupt_after=(2, 2))
    refine(tiny_model, judged, part, cfg=cfg, progress=False, judge_factory=jf, resume=True)
    a, b = unet_weights(full), unet_weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert manifest(part)["outputs"]["steps"] == 8


def test_round_without_pairs_keeps_the_previous_model(tiny_model: Path, judged: Path,
                                                      tmp_path: Path) -> None:
    out = refine(tiny_model, judged, tmp_path / "m2", cfg=RefineConfig(**ROUNDS),
                 progress=False, judge_factory=judge_factory(lambda sid, img: 0.5))
    m = manifest(out)
    assert "round 2: no informative pairs" in m["outputs"]["stop_reason"]
    assert m["outputs"]["steps"] == 4 and m["outputs"]["rounds"] == 2
    one = unet_weights(out / "rounds" / "1" / "model")
    fin = unet_weights(out)
    assert all(torch.equal(one[k], fin[k]) for k in one)


def test_rwr_and_full_fine_tuning(tiny_model: Path, judged: Path, tmp_path: Path) -> None:
    rwr = refine(tiny_model, judged, tmp_path / "rwr", progress=False, cfg=RefineConfig(
        method="rwr", steps=4, batch_size=4, log_every=2, accept_score=0.5, real_fraction=0.5))
    acc = pd.read_csv(rwr / "rounds" / "1" / "accepted.csv")
    assert len(acc) == 8 and (acc["score"] >= 0.5).all()
    assert acc["weight"].mean() == pytest.approx(1.0)
    assert acc.sort_values("score")["weight"].is_monotonic_increasing
    m = manifest(rwr)
    assert m["outputs"]["method"] == "rwr" and m["config"]["train_splits"] == ["train"]
    summary = m["outputs"]["round_summaries"][0]["stats"]
    assert summary["real_images"] == 4 and summary["accepted"] == 8
    rows = log_rows(rwr)
    assert rows[-1]["mse_real"] and rows[-1]["mse_synth"] and not rows[-1]["implicit_acc"]
    full = refine(tiny_model, judged, tmp_path / "full", progress=False,
                  cfg=RefineConfig(**{**FAST, "adapter": "full", "steps": 2}))
    before, after = unet_weights(tiny_model), unet_weights(full)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("conv" in k for k in changed)  # every weight trains, not only attention
    assert load_bundle(full).info.refined_from.method == "dpo"


def test_cli(tiny_model: Path, judged: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["refine", "--help"])
    assert res.exit_code == 0
    for opt in ("--judged", "--method", "--rounds", "--beta", "--rank", "--resume"):
        assert opt in res.output
    out = tmp_path / "m2"
    res = runner.invoke(app, ["refine", str(tiny_model), "--judged", str(judged), "--out",
                              str(out), "--steps", "2", "--batch-size", "2", "--rank", "2",
                              "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert read_manifest(out).stage == "refine"
    res = runner.invoke(app, ["refine", str(tiny_model), "--judged", str(judged), "--out",
                              str(tmp_path / "m3"), "--method", "nope"])
    assert res.exit_code == 2 and "method" in res.output


def test_recipes_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    recipes = sorted(root.glob("refine-*.yaml"))
    assert recipes
    for r in recipes:
        RefineConfig.from_yaml(r)
