"""The contract end to end: real ``medsynth train`` (2 steps) -> real ``generate`` -> evaluate.

The other tests emulate the generate layout; this one checks evaluate reads what generate
really writes, and that the leakage guard follows the real model manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsynth.artifacts import input_ref, now_iso, write_manifest
from medsynth.imaging.dataset import open_dataset
from medsynth.store import DescriptionRecord, record_writer

from .conftest import make_dataset


def _store(root: Path, dataset: Path) -> Path:
    ds = open_dataset(dataset)
    for cls in ds.classes:
        with record_writer(root, cls) as w:
            for _, row in ds.split("train")[ds.split("train")["class"] == cls].iterrows():
                w.write(DescriptionRecord(
                    image_id=row["image_id"], path=row["path"], cls=cls, split="train",
                    attributes={}, text=f"a bright {cls} on a dark noisy background",
                    backend="fixture", model="none", template_version="0",
                    timestamp=now_iso()).to_dict())
    write_manifest(root, "describe", config={}, inputs=[input_ref(dataset, "data")],
                   outputs={"classes": ds.classes})
    return root


@pytest.mark.parametrize("splits", [
    ["train"],
    # A second real training run: slow; test_inputs covers the guard on emulated manifests.
    pytest.param(["train", "test"], marks=pytest.mark.slow),
])
def test_real_train_generate_evaluate(tmp_path: Path, splits: list[str]) -> None:
    from medsynth.errors import MedsynthError
    from medsynth.evaluate.config import EvaluateConfig
    from medsynth.evaluate.run import run_evaluate
    from medsynth.generate.config import GenerateConfig
    from medsynth.generate.run import run_generate
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import train

    data = make_dataset(tmp_path / "data", n_per_class=10, size=16)
    store = _store(tmp_path / "store", data)
    cfg = TrainConfig(block_out_channels=[16, 32], attention_levels=[False, True], max_steps=2,
                      batch_size=4, warmup_steps=1, prototypes_per_class=2, checkpoint_every=2,
                      log_every=1, sample_every=0, sample_per_class=1, sample_steps=2,
                      splits=splits)
    model = train(data, tmp_path / "model", cfg=cfg, store_path=store, progress=False)
    synth = tmp_path / "synth"
    run_generate(GenerateConfig(model=str(model), out=str(synth), n=3, steps=2, batch_size=9))
    ecfg = EvaluateConfig(real=data, synthetic=[synth], out=tmp_path / "report", seeds=1,
                          real_fractions=["1.0"], epochs=1, feature_size=32)
    if "test" in splits:
        with pytest.raises(MedsynthError, match="trained on the test split"):
            run_evaluate(ecfg)
        assert not (tmp_path / "report").exists()
        return
    manifest = run_evaluate(ecfg)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["synthetic"]["synth"]["n_images"] == 9
    assert manifest.inputs[1]["stage"] == "generate"
    arms = {a["setting"] for a in metrics["benchmark"]["arms"]}
    assert arms == {"real", "real+synth", "real+augment", "synth"}  # augment: the default
