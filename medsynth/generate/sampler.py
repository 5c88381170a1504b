"""The denoising loop, written out in full: class- and text-conditioned sampling with CFG.

Schedulers are diffusers' own, built from the model's training noise schedule
(``MODEL/scheduler``) with ``.from_config``:

===============  ==========================================================
``dpmsolver++``  ``DPMSolverMultistepScheduler`` (algorithm ``dpmsolver++``)
``ddim``         ``DDIMScheduler`` (eta 0, deterministic)
``ddpm``         ``DDPMScheduler`` (ancestral, stochastic)
``unipc``        ``UniPCMultistepScheduler``
===============  ==========================================================

Classifier-free guidance acts on class and text together: the unconditional branch uses the
null class id (``bundle.null_class``) and the null text (``""``), and

    eps = eps_uncond + g * (eps_cond - eps_uncond)

Every image draws its initial noise (and, for ``ddpm``, its per-step noise) from its own
``torch.Generator`` seeded with the image's seed, on the CPU, so an image is the same whether
it is made alone or inside any batch, on any device.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

from medsynth.errors import BadUsageError

SCHEDULERS = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, scheduler_config: dict[str, Any]) -> Any:
    """A diffusers scheduler of kind ``name`` built from the model's training schedule config."""
    import diffusers

    if name not in SCHEDULERS:
        raise BadUsageError(f"unknown sampler {name!r}; choose from {', '.join(SCHEDULERS)}")
    cls_name, overrides = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    return cls.from_config(dict(scheduler_config), **overrides)


def default_device() -> Any:
    """CUDA when present, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(device: Any) -> contextlib.AbstractContextManager[Any]:
    """bf16 (or fp16) autocast on CUDA; nothing on the CPU (float32 there)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def image_generators(seeds: list[int]) -> list[Any]:
    """One CPU ``torch.Generator`` per image, seeded with the image's seed."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def initial_noise(generators: list[Any], shape: tuple[int, ...], device: Any) -> Any:
    """Gaussian noise ``[B, *shape]``, image ``i`` drawn from ``generators[i]`` (on the CPU)."""
    import torch

    x = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
    return x.to(device)


def _pad_to(h: Any, m: Any, length: int) -> tuple[Any, Any]:
    """Right-pad features ``[B, L, D]`` and mask ``[B, L]`` with masked-out zeros to ``length``."""
    import torch.nn.functional as F

    extra = length - h.shape[1]
    if extra <= 0:
        return h, m
    return F.pad(h, (0, 0, 0, extra)), F.pad(m, (0, extra))


def denoise(
    unet: Any,
    scheduler: Any,
    *,
    class_ids: list[int],
    text_hidden: Any,
    text_mask: Any,
    null_class: int,
    null_hidden: Any,
    null_mask: Any,
    seeds: list[int],
    sample_shape: tuple[int, ...],
    steps: int,
    guidance: float,
    device: Any = None,
    callback: Any = None,
) -> Any:
    """Sample a batch of images in [-1, 1] with classifier-free guidance on class and text.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (eval mode, on ``device``).
        scheduler: a diffusers scheduler (see :func:`make_scheduler`); its state is reset here.
        class_ids: the class id of each image (B entries).
        text_hidden: text features ``[B, L, D]`` of each image's description.
        text_mask: their attention mask ``[B, L]`` (1 = real token).
        null_class: the class id meaning "no class" (the unconditional branch).
        null_hidden: the null text's features ``[1, L0, D]`` (broadcast to the batch).
        null_mask: the null text's mask ``[1, L0]``.
        seeds: the seed of each image (its initial noise and any per-step noise).
        sample_shape: ``(C, H, W)`` of one image.
        steps: number of denoising steps.
        guidance: CFG scale g (1 = plain conditional sampling, 0 = unconditional).
        device: where to run (default: the UNet's device).
        callback: called as ``callback(step_index, timestep)`` after every step.

    Returns:
        The denoised batch ``[B, C, H, W]`` as float32 on the CPU, clipped to [-1, 1].
    """
    import torch

    device = device if device is not None else next(unet.parameters()).device
    b = len(class_ids)
    # 1. Per-image generators: initial noise and stochastic steps never depend on the batch.
    generators = image_generators(seeds)
    x = initial_noise(generators, tuple(sample_shape), device)
    # 2. The timestep schedule of the chosen sampler; scale noise to the scheduler's sigma.
    scheduler.set_timesteps(steps, device=device)
    x = x * scheduler.init_noise_sigma
    # 3. Conditions: the conditional half (class, text) and the unconditional half (null, null).
    cond_c = torch.tensor(class_ids, dtype=torch.long, device=device)
    use_cfg = guidance != 1.0
    length = max(text_hidden.shape[1], null_hidden.shape[1])
    th, tm = _pad_to(text_hidden, text_mask, length)
    if use_cfg:
        nh, nm = _pad_to(null_hidden, null_mask, length)
        hidden = torch.cat([nh.expand(b, -1, -1), th]).to(device)
        mask = torch.cat([nm.expand(b, -1), tm]).to(device)
        classes = torch.cat([torch.full_like(cond_c, int(null_class)), cond_c])
    else:
        hidden, mask, classes = th.to(device), tm.to(device), cond_c
    # Deterministic multistep samplers (UniPC) take no generator argument.
    step_kwargs = {"generator": generators} if "generator" in inspect.signature(
        scheduler.step).parameters else {}
    with torch.no_grad(), autocast_for(device):
        for i, t in enumerate(scheduler.timesteps):
            # 4. Duplicate the batch for the two CFG branches and let the scheduler scale it.
            model_in = torch.cat([x, x]) if use_cfg else x
            model_in = scheduler.scale_model_input(model_in, t)
            # 5. Predict the noise (or v / x0, as the model was trained) for both branches.
            out = unet(model_in, t, encoder_hidden_states=hidden, class_labels=classes,
                       encoder_attention_mask=mask).sample.float()
            # 6. Classifier-free guidance: eps = eps_uncond + g * (eps_cond - eps_uncond).
            if use_cfg:
                out_uncond, out_cond = out.chunk(2)
                out = out_uncond + guidance * (out_cond - out_uncond)
            # 7. One scheduler step x_t -> x_{t-1}; stochastic samplers use each image's generator.
            x = scheduler.step(out, t, x, return_dict=False, **step_kwargs)[0]
            if callback is not None:
                callback(i, t)
    # 8. Back to the CPU in [-1, 1]; the bundle maps this to the pixel dtype.
    return x.float().clamp(-1, 1).cpu()
