"""The prior `make demo` adapts (examples/priors/derm-site-b): intact, loadable, adaptable."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PRIOR = ROOT / "examples" / "priors" / "derm-site-b"


def test_weights_match_the_recorded_sha256() -> None:
    readme = (ROOT / "examples" / "priors" / "README.md").read_text("utf-8")
    recorded = re.findall(r"`([0-9a-f]{64})`", readme)
    weights = PRIOR / "unet" / "diffusion_pytorch_model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == recorded[0]
    assert hashlib.sha256((PRIOR / "medsynth.json").read_bytes()).hexdigest() == recorded[1]
    assert not (PRIOR / "checkpoints").exists()


def test_it_is_the_demo_network_on_other_site_phantoms() -> None:
    from medsynth.artifacts import read_manifest
    from medsynth.models.bundle import load_bundle

    b = load_bundle(PRIOR)
    assert b.classes == ["melanoma", "nevus", "seborrheic_keratosis"]
    assert sum(p.numel() for p in b.denoiser.parameters()) == 1_150_195
    m = read_manifest(PRIOR)
    assert m.config["splits"] == ["train", "val"] and m.config["max_steps"] == 3000
    demo = (ROOT / "scripts" / "demo.sh").read_text("utf-8")
    assert "examples/priors/derm-site-b" in demo and "--site b" in \
        (ROOT / "scripts" / "make-demo-prior.sh").read_text("utf-8")


def test_adapting_it_starts_from_its_weights(tmp_path: Path) -> None:
    """Two steps of the demo's `train --init`: the run starts at the prior's weights (class rows
    matched by name) and moves from them."""
    from medsynth.data.demo.common import DemoConfig, write_demo
    from medsynth.models.bundle import load_bundle
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import train

    data = tmp_path / "data"
    write_demo(DemoConfig(demo="derm", out=data, n_per_class=4, size=32, seed=5))
    cfg = TrainConfig.from_yaml(ROOT / "examples" / "derm-demo.yaml").replace(
        init=str(PRIOR), max_steps=2, warmup_steps=1, checkpoint_every=2, sample_every=0,
        num_threads=None)
    out = train(data, tmp_path / "m", cfg=cfg, progress=False)
    prior, child = load_bundle(PRIOR, ema=False), load_bundle(out, ema=False)
    a, b = prior.denoiser.net.state_dict(), child.denoiser.net.state_dict()
    assert a.keys() == b.keys()
    moved = [k for k in a if not torch.equal(a[k], b[k])]
    assert moved
    step = max((a[k] - b[k]).abs().max().item() for k in moved)
    assert 0 < step < 0.05  # two small AdamW steps away from the prior, not a fresh network
