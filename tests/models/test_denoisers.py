"""The denoiser interface: both implementations, 2D and 3D, ids or probabilities, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsynth.models.denoiser import (
    DenoiserSpec,
    build_class_head,
    build_denoiser,
    load_denoiser,
    plan_denoiser,
)

KINDS = [("diffusers", 2), ("monai", 2), ("monai", 3)]


def _spec(kind: str, dims: int, size: int = 8) -> DenoiserSpec:
    return DenoiserSpec(kind=kind, channels=1, size=size, spatial_dims=dims, n_classes=2,
                        cross_attention_dim=12, block_out_channels=(8, 16),
                        attention_levels=(False, True), norm_num_groups=4)


def _den(kind: str, dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    den = build_denoiser(_spec(kind, dims)).eval()
    with torch.no_grad():  # MONAI zero-initialises its output conv: make the output depend on x
        for p in den.parameters():
            if bool((p == 0).all()):
                p.normal_(0, 0.2)
    return den


def _inputs(dims: int, b: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 1, *([8] * dims), generator=g)
    h = torch.randn(b, 5, 12, generator=g)
    m = torch.ones(b, 5, dtype=torch.long)
    m[0, 3:] = 0  # a shorter, padded text
    return x, h, m


@pytest.mark.parametrize("kind, dims", KINDS)
def test_one_call_signature_for_every_denoiser(kind: str, dims: int) -> None:
    den = _den(kind, dims)
    x, h, m = _inputs(dims)
    with torch.no_grad():
        out = den(x, torch.tensor(10), torch.tensor([0, 2]), h, m)
        feats = den.pooled_features()
        # Scalar or per-sample timesteps mean the same.
        torch.testing.assert_close(den(x, torch.tensor([10, 10]), torch.tensor([0, 2]), h, m), out)
        # The class conditions the output (through the timestep embedding).
        assert (den(x, torch.tensor(10), torch.tensor([1, 1]), h, m) - out).abs().max() > 1e-4
        # Padding is masked out: the first sample alone with its 3 real tokens is the same.
        alone = den(x[:1], torch.tensor(10), torch.tensor([0]), h[:1, :3], m[:1, :3])
    assert out.shape == x.shape and den.spatial_dims == dims and den.kind == kind
    assert feats.shape == (2, den.feature_dim) == (2, 16)
    assert build_class_head(_spec(kind, dims))(feats).shape == (2, 2)
    torch.testing.assert_close(alone, out[:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind, dims", KINDS)
def test_class_probabilities_reach_the_class_embedding(kind: str, dims: int) -> None:
    """CCELLA: a one-hot probability vector is the class id; a mixture is the mixed embedding."""
    den = _den(kind, dims)
    x, h, m = _inputs(dims)
    ids = torch.tensor([0, 2])
    with torch.no_grad():
        by_id = den(x, torch.tensor(7), ids, h, m)
        one_hot = den(x, torch.tensor(7), torch.nn.functional.one_hot(ids, 3).float(), h, m)
        # K = n_classes (no null column) is padded with a zero null probability.
        real_only = den(x, torch.tensor(7), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), h, m)
        by_id_01 = den(x, torch.tensor(7), torch.tensor([0, 1]), h, m)
        mixed = den(x, torch.tensor(7), torch.tensor([[0.5, 0.5], [0.5, 0.5]]), h, m)
    torch.testing.assert_close(one_hot, by_id, atol=1e-5, rtol=0)
    torch.testing.assert_close(real_only, by_id_01, atol=1e-5, rtol=0)
    assert (mixed - by_id_01).abs().max() > 1e-4
    emb = den.net.class_embedding
    torch.testing.assert_close(emb(torch.tensor([[0.5, 0.5, 0.0]])), emb.weight[:2].mean(0)[None])


@pytest.mark.parametrize("kind, dims", KINDS)
def test_save_and_load_round_trip(kind: str, dims: int, tmp_path: Path) -> None:
    den = _den(kind, dims)
    den.save(tmp_path / "unet")
    back = load_denoiser(tmp_path / "unet")
    assert type(back) is type(den) and not back.training
    x, h, m = _inputs(dims)
    with torch.no_grad():
        torch.testing.assert_close(back(x, torch.tensor(3), torch.tensor([0, 1]), h, m),
                                   den(x, torch.tensor(3), torch.tensor([0, 1]), h, m))
    assert not list(tmp_path.glob(".*"))  # atomic: no temp folders left
    # The state-dict keys are the network's own (the probability-aware embedding adds none).
    assert set(back.net.state_dict()) == set(den.net.state_dict())


def test_diffusers_folder_loads_in_plain_diffusers(tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    den = _den("diffusers", 2)
    den.save(tmp_path / "unet")
    plain = UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    x, h, m = _inputs(2)
    with torch.no_grad():
        ref = plain(x, 5, encoder_hidden_states=h, class_labels=torch.tensor([0, 1]),
                    encoder_attention_mask=m).sample
        torch.testing.assert_close(den(x, 5, torch.tensor([0, 1]), h, m), ref)


def test_factory_picks_from_dims_and_recipe() -> None:
    from medsynth.errors import MedsynthError

    assert plan_denoiser("auto", 2) == "diffusers" and plan_denoiser("auto", 3) == "monai"
    assert plan_denoiser("monai", 2) == "monai"
    with pytest.raises(MedsynthError, match="monai"):
        plan_denoiser("diffusers", 3)
    with pytest.raises(MedsynthError, match="unknown denoiser"):
        plan_denoiser("keras", 2)
    spec = DenoiserSpec(kind="monai", channels=4, shape=(8, 16, 16), n_classes=3,
                        cross_attention_dim=8, block_out_channels=(8, 16),
                        attention_levels=(False, True), norm_num_groups=4)
    assert spec.spatial_dims == 3 and spec.size == 16
    assert DenoiserSpec.from_dict(spec.to_dict()) == spec
    den = build_denoiser(spec)
    assert den.net.conv_in.conv.in_channels == 4 and den.n_class_embeds == 4
    assert den.lora_target_modules and all(
        any(n.endswith(t) for n, _ in den.net.named_modules()) for t in den.lora_target_modules)


@pytest.mark.parametrize("dims", [2, 3])
def test_monai_mask_is_an_argument_not_an_attribute(dims: int) -> None:
    """The padding mask reaches MONAI's cross-attention with the text (no module attribute set
    per call), and the masked attention equals MONAI's own where nothing is padded: bitwise,
    output and gradients, with MONAI's attention and with SDPA."""
    from medsynth.train.launch import use_sdpa

    den = _den("monai", dims).train()
    x, h, m = _inputs(dims)
    t, c = torch.tensor([3, 7]), torch.tensor([0, 2])
    before = {name: dict(vars(mod)) for name, mod in den.named_modules()}
    den(x, t, c, h, m)
    after = {name: dict(vars(mod)) for name, mod in den.named_modules()}
    changed = [(n, k) for n in before for k in set(before[n]) | set(after[n])
               if before[n].get(k, None) is not after[n].get(k, None) and k != "_features"]
    assert not changed, changed
    for sdpa in (False, True):
        use_sdpa(den, sdpa)
        outs = []
        for call in (lambda: den(x, t, c, h, torch.ones_like(m)), lambda: den.net(x, t, h, c)):
            den.zero_grad()
            out = call()
            out.square().sum().backward()
            outs.append((out.detach(), [p.grad.clone() for p in den.parameters()]))
        assert torch.equal(outs[0][0], outs[1][0])
        assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1], strict=True))


def test_monai_denoiser_compiles_to_one_graph() -> None:
    """torch.compile(fullgraph=True: any graph break raises) traces the wrapper, the mask and the
    feature hook as one graph; a new mask needs no recompile; the features of a compiled call are
    kept as in eager mode."""
    from torch._dynamo.testing import CompileCounter

    den = _den("monai", 2)
    x, h, m = _inputs(2)
    t, c = torch.tensor([3, 7]), torch.tensor([0, 2])
    counter = CompileCounter()
    compiled = torch.compile(den, backend=counter, fullgraph=True)
    with torch.no_grad():
        for mask in (m, torch.ones_like(m), m.flip(0)):
            out = compiled(x, t, c, h, mask)
            feats = den.pooled_features()
            torch.testing.assert_close(out, den(x, t, c, h, mask))
            torch.testing.assert_close(feats, den.pooled_features())
    assert counter.frame_count == 1
