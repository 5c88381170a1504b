"""The explicit denoising loop: schedulers, per-image seeds whatever the batch, CFG arithmetic."""

from __future__ import annotations

import pytest
import torch

from medsynth.models.sampler import SAMPLERS, denoise, make_scheduler

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "beta_end": 0.012, "prediction_type": "epsilon"}


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    from medsynth.models.denoiser import DenoiserSpec, build_denoiser

    torch.manual_seed(0)
    spec = DenoiserSpec(channels=1, size=16, n_classes=2, cross_attention_dim=32,
                        block_out_channels=(16, 32), attention_levels=(False, True))
    return build_denoiser(spec).eval()


def _texts(b: int, length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(b, length, 32, generator=g)
    m = torch.ones(b, length, dtype=torch.long)
    m[0, 3:] = 0  # one shorter text, padded
    return h, m


def _run(unet, sampler, class_ids, h, m, seeds, guidance=3.0, steps=3):  # type: ignore[no-untyped-def]
    null_h, null_m = torch.zeros(1, 1, 32), torch.ones(1, 1, dtype=torch.long)
    return denoise(unet, make_scheduler(sampler, SCHEDULE), class_ids=class_ids, text_hidden=h,
                   text_mask=m, null_class=2, null_hidden=null_h, null_mask=null_m, seeds=seeds,
                   sample_shape=(1, 16, 16), steps=steps, guidance=guidance)


def test_schedulers_built_from_the_model_schedule() -> None:
    import diffusers

    kinds = {"dpmsolver++": diffusers.DPMSolverMultistepScheduler, "ddim": diffusers.DDIMScheduler,
             "ddpm": diffusers.DDPMScheduler, "unipc": diffusers.UniPCMultistepScheduler}
    for name in SAMPLERS:
        s = make_scheduler(name, SCHEDULE)
        assert isinstance(s, kinds[name])
        assert s.config.num_train_timesteps == 1000 and s.config.beta_schedule == "scaled_linear"
    assert make_scheduler("dpmsolver++", SCHEDULE).config.algorithm_type == "dpmsolver++"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_an_image_is_the_same_alone_or_in_a_batch(unet: torch.nn.Module, sampler: str) -> None:
    h, m = _texts(3)
    batch = _run(unet, sampler, [0, 1, 0], h, m, seeds=[11, 22, 33])
    alone = _run(unet, sampler, [1], h[1:2], m[1:2], seeds=[22])
    assert batch.shape == (3, 1, 16, 16) and batch.abs().max() <= 1
    # Same noise, same conditions; only float rounding of batched kernels may differ (~1e-5,
    # far below one 16-bit intensity level = 3e-5 of the [-1, 1] range).
    torch.testing.assert_close(alone[0], batch[1], atol=1e-4, rtol=0)
    # Another seed gives another image; the same seed again gives the same one.
    other = _run(unet, sampler, [1], h[1:2], m[1:2], seeds=[23])
    assert (other - alone).abs().max() > 1e-3
    torch.testing.assert_close(_run(unet, sampler, [1], h[1:2], m[1:2], seeds=[22]), alone)


def test_guidance_zero_is_the_unconditional_model(unet: torch.nn.Module) -> None:
    h, m = _texts(2)
    g0 = _run(unet, "ddim", [0, 1], h, m, seeds=[5, 6], guidance=0.0)
    # Unconditional = null class and null text, sampled without guidance.
    uncond = _run(unet, "ddim", [2, 2], torch.zeros(2, 1, 32), torch.ones(2, 1, dtype=torch.long),
                  seeds=[5, 6], guidance=1.0)
    torch.testing.assert_close(g0, uncond, atol=1e-5, rtol=0)
    g1 = _run(unet, "ddim", [0, 1], h, m, seeds=[5, 6], guidance=1.0)
    g3 = _run(unet, "ddim", [0, 1], h, m, seeds=[5, 6], guidance=3.0)
    assert (g1 - uncond).abs().max() > 1e-4 and (g3 - g1).abs().max() > 1e-4
