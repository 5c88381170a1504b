"""The DPO loss against a hand computation; LoRA on both denoiser kinds: the adapter-disabled
network is the base network exactly (the DPO reference), merging gives the adapted network."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from medsynth.models.adapters import (
    adapters_disabled,
    add_lora,
    has_lora,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
)
from medsynth.models.denoiser import DenoiserSpec, build_denoiser, load_denoiser
from medsynth.models.objective import per_sample_mse
from medsynth.refine.losses import dpo_loss


def test_per_sample_mse_averages_non_batch_axes() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.ones(2, 3, 4, 4)
    target[1] *= 2
    assert per_sample_mse(pred, target).tolist() == [1.0, 4.0]


def test_dpo_loss_by_hand() -> None:
    mw, ml = torch.tensor([0.10, 0.30, 0.2]), torch.tensor([0.20, 0.25, 0.2])
    rw, rl = torch.tensor([0.15, 0.20, 0.2]), torch.tensor([0.15, 0.30, 0.2])
    beta = 50.0
    loss, logits, acc = dpo_loss(mw, ml, rw, rl, beta)
    # logits = (ref_w - ref_l) - (model_w - model_l)
    hand = [(0.15 - 0.15) - (0.10 - 0.20), (0.20 - 0.30) - (0.30 - 0.25), 0.0]
    assert logits.tolist() == pytest.approx(hand)
    want = sum(-math.log(1 / (1 + math.exp(-beta * x))) for x in hand) / 3
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(acc) == pytest.approx((1 + 0 + 0.5) / 3)  # a zero logit counts half
    # the reference gets no gradient
    mw2 = mw.clone().requires_grad_(True)
    rw2 = rw.clone().requires_grad_(True)
    dpo_loss(mw2, ml, rw2, rl, beta)[0].backward()
    assert mw2.grad is not None and rw2.grad is None


def _inputs(spec: DenoiserSpec) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, spec.channels, *spec.shape), generator=g)
    t = torch.tensor([10, 500])
    text = torch.randn(2, 5, spec.cross_attention_dim, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return x, t, torch.tensor([0, 1]), text, mask


@pytest.mark.parametrize("kind", ["diffusers", "monai"])
def test_reference_is_the_adapter_disabled_model(kind: str, tmp_path) -> None:
    torch.manual_seed(0)
    spec = DenoiserSpec(channels=3, size=16, n_classes=2, cross_attention_dim=16, kind=kind,
                        block_out_channels=(16, 32), attention_levels=(False, True))
    den = build_denoiser(spec).eval()
    with torch.no_grad():  # MONAI zero-initialises its output convolution: wake it up
        for p in den.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    base = copy.deepcopy(den)
    args = _inputs(spec)
    with torch.no_grad():
        y_base = base(*args)
    params = add_lora(den, rank=4, seed=0)
    assert has_lora(den) and params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in den.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        assert torch.equal(den(*args), y_base)  # B = 0: a fresh adapter changes nothing
        for p in params:  # train the adapter a little
            p.add_(0.05 * torch.randn_like(p))
        y_adapted = den(*args)
        assert not torch.allclose(y_adapted, y_base, atol=1e-4)
        with adapters_disabled(den):
            assert torch.equal(den(*args), y_base)  # the reference: the base model exactly
        assert torch.equal(den(*args), y_adapted)  # adapters back on afterwards
    state = lora_state_dict(den)
    other = copy.deepcopy(base)
    add_lora(other, rank=4, seed=1)
    load_lora_state_dict(other, state)
    with torch.no_grad():
        assert torch.allclose(other(*args), y_adapted, atol=1e-6)
    # merged: plain modules, original keys, the adapted outputs; save/load without peft
    merge_lora(den)
    assert not has_lora(den)
    assert set(den.net.state_dict()) == set(base.net.state_dict())
    with torch.no_grad():
        assert torch.allclose(den(*args), y_adapted, atol=1e-5)
    den.save(tmp_path / "unet")
    again = load_denoiser(tmp_path / "unet")
    with torch.no_grad():
        assert torch.allclose(again(*args), y_adapted, atol=1e-5)
