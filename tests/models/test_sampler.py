"""The one denoising loop: schedulers, per-image seeds, CFG, image-to-image, latents, 3D."""

from __future__ import annotations

import pytest
import torch

from medsynth.models.sampler import SCHEDULERS, denoise, make_scheduler

# The DDPM-trained samplers; rflow (rectified-flow models only) is tested in tests/latent.
SAMPLERS = tuple(SCHEDULERS)

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


def _init(b: int = 2) -> torch.Tensor:
    """Smooth initial images in [-1, 1] (a gradient and its mirror)."""
    ramp = torch.linspace(-0.8, 0.8, 16)
    img = (ramp[None, :] * ramp[:, None].abs()).expand(1, 16, 16)
    return torch.stack([img, -img][:b])


class ZeroDenoiser(torch.nn.Module):
    """Predicts zero noise: DDIM then rescales the noise up, far outside [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, classes, text=None, text_mask=None):  # type: ignore[no-untyped-def]
        return torch.zeros_like(x) + self.w


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_image_to_image_strength(unet: torch.nn.Module, sampler: str) -> None:
    from medsynth.errors import BadUsageError

    h, m = _texts(2)
    init = _init()
    null_h, null_m = torch.zeros(1, 1, 32), torch.ones(1, 1, dtype=torch.long)

    def run(strength: float, with_init: bool = True, seen: list | None = None,
            den: torch.nn.Module = unet) -> torch.Tensor:
        sched = make_scheduler(sampler, SCHEDULE)
        return denoise(den, sched, class_ids=[0, 1], text_hidden=h, text_mask=m, null_class=2,
                       null_hidden=null_h, null_mask=null_m, seeds=[3, 4],
                       sample_shape=(1, 16, 16), steps=20, guidance=2.0,
                       init=init if with_init else None, strength=strength,
                       callback=None if seen is None else lambda i, t: seen.append(int(t)))

    # Strength 1 ignores the initial image: exactly text-to-image from the same noise.
    torch.testing.assert_close(run(1.0), run(1.0, with_init=False), atol=0, rtol=0)
    # Strength S runs the last round(20 S) steps of the 20-step schedule.
    full: list[int] = []
    run(1.0, seen=full)
    for s, n in ((0.05, 1), (0.5, 10), (0.74, 15)):
        part: list[int] = []
        run(s, seen=part)
        assert part == full[20 - n :], (s, part)
    # Strength near 0 gives the image back: no step at all (exactly) ...
    torch.testing.assert_close(run(0.01), init, atol=0, rtol=0)
    # ... and the image is noised to the level where the strength starts: a denoiser that
    # removes nothing (predicts zero noise) leaves that noise in, growing with the strength.
    zero = ZeroDenoiser()
    d = {s: float((run(s, den=zero) - init).abs().mean()) for s in (0.05, 0.5, 1.0)}
    assert d[0.05] < 0.25 * d[1.0] and d[0.05] < d[0.5] < d[1.0], d
    with pytest.raises(BadUsageError, match="strength"):
        run(0.0)
    with pytest.raises(BadUsageError, match="strength"):
        run(1.5)


def test_latents_are_never_clamped_pixels_are() -> None:
    den = ZeroDenoiser()
    h, m = torch.zeros(2, 1, 32), torch.ones(2, 1, dtype=torch.long)
    seen = {}

    def decode(z: torch.Tensor) -> torch.Tensor:
        seen["z"] = z.clone()
        return z / 100.0

    def run(latent: bool) -> torch.Tensor:
        return denoise(den, make_scheduler("ddim", SCHEDULE, latent=latent), class_ids=[0, 1],
                       text_hidden=h, text_mask=m, null_class=2, null_hidden=h[:1],
                       null_mask=m[:1], seeds=[1, 2], sample_shape=(4, 8, 8), steps=3,
                       guidance=1.0, decode=decode if latent else None)

    x = run(latent=True)
    assert seen["z"].abs().max() > 2  # the latents kept their range (no clipping anywhere)
    torch.testing.assert_close(x, (seen["z"] / 100).clamp(-1, 1))
    assert make_scheduler("ddim", SCHEDULE).config.clip_sample  # pixel space clips x0 ...
    assert not make_scheduler("ddim", SCHEDULE, latent=True).config.clip_sample
    assert run(latent=False).abs().max() <= 1  # ... and the pixels


def test_class_probabilities_in_guided_sampling(unet: torch.nn.Module) -> None:
    h, m = _texts(2)
    by_id = _run(unet, "ddim", [0, 1], h, m, seeds=[5, 6])
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # CCELLA: probabilities over the real classes
    by_prob = _run(unet, "ddim", probs, h, m, seeds=[5, 6])
    torch.testing.assert_close(by_prob, by_id, atol=1e-5, rtol=0)


def test_3d_volumes_alone_or_in_a_batch() -> None:
    from medsynth.models.denoiser import DenoiserSpec, build_denoiser

    torch.manual_seed(0)
    den = build_denoiser(DenoiserSpec(kind="monai", channels=1, shape=(8, 8, 8), n_classes=2,
                                      cross_attention_dim=32, block_out_channels=(8, 16),
                                      attention_levels=(False, True), norm_num_groups=4)).eval()
    with torch.no_grad():
        den.net.out[-1].conv.weight.normal_(0, 0.1)  # MONAI zero-initialises its output conv
    h, m = _texts(2)
    null_h, null_m = torch.zeros(1, 1, 32), torch.ones(1, 1, dtype=torch.long)
    kw = dict(null_class=2, null_hidden=null_h, null_mask=null_m, sample_shape=(1, 8, 8, 8),
              steps=2, guidance=3.0)
    both = denoise(den, make_scheduler("ddpm", SCHEDULE), class_ids=[0, 1], text_hidden=h,
                   text_mask=m, seeds=[7, 8], **kw)
    second = denoise(den, make_scheduler("ddpm", SCHEDULE), class_ids=[1], text_hidden=h[1:],
                     text_mask=m[1:], seeds=[8], **kw)
    assert both.shape == (2, 1, 8, 8, 8)
    torch.testing.assert_close(second[0], both[1], atol=1e-4, rtol=0)
