"""The one denoising loop (training grids, generate, and later judge and refine), written out.

Samplers are diffusers schedulers built from the model's training noise schedule
(``MODEL/scheduler``) with ``.from_config``; their names are defined here only:

===============  ==========================================================
``dpmsolver++``  ``DPMSolverMultistepScheduler`` (algorithm ``dpmsolver++``)
``ddim``         ``DDIMScheduler`` (eta 0, deterministic)
``ddpm``         ``DDPMScheduler`` (ancestral, stochastic)
``unipc``        ``UniPCMultistepScheduler``
``rflow``        rectified flow, Euler steps (MONAI ``RFlowScheduler``,
                 :mod:`medsynth.models.rflow`): only for models trained with
                 ``noise_schedule: rflow``, which take no other sampler
===============  ==========================================================

Classifier-free guidance acts on class and text together: the unconditional branch uses the
null class id and the null text, and ``eps = eps_uncond + g * (eps_cond - eps_uncond)``.

The loop is shape-generic: pixels or latents, 2D ``(C, H, W)`` or 3D ``(C, D, H, W)``. In latent
space nothing is clamped (a ``decode`` hook maps the result to pixels, which are then clipped
to [-1, 1]; the scheduler is built without sample clipping). With an initial image (SDEdit
image-to-image) the image is noised to the timestep where ``strength`` S of the schedule
begins and only the remaining steps run: S -> 0 gives the image back, S = 1 ignores it
(text-to-image from noise).

Precision (``precision``, generate ``--precision``): ``fp32`` runs the network in float32 (the
CPU default before bf16 existed; bitwise the old path); ``bf16`` runs it under bfloat16 autocast
(CPU autocast on CPUs with bf16 units, AVX512-BF16 or AMX; on CUDA bf16, or fp16 where the GPU
has no bf16); ``auto`` picks bf16 on CUDA and on CPUs with bf16 units, else fp32
(:func:`resolve_precision`; measured in docs/benchmarks.md). The scheduler state, the guidance
arithmetic and the returned images are float32 in every case.

Every image draws its initial noise (and, for ``ddpm``, its per-step noise) from its own
``torch.Generator`` seeded with the image's seed, on the CPU, so an image is the same whether
it is made alone or inside any batch, on any device.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from medsynth.choices import Precision, Sampler, values
from medsynth.errors import BadUsageError

if TYPE_CHECKING:
    import torch

    from medsynth.models.denoiser import Denoiser


SCHEDULERS = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
RFLOW = "rflow"
SAMPLERS = values(Sampler)
assert set(SAMPLERS) == {*SCHEDULERS, RFLOW}, "medsynth.choices.Sampler is out of date"
"""Sampler names accepted by generate (``--sampler``), the training grids and later stages."""
GRID_SAMPLER = "ddim"
"""The sampler of the training sample grids (:data:`RFLOW` for rectified-flow models)."""


def sampler_for(scheduler_config: dict[str, Any], requested: str | None = None) -> str:
    """``requested``, or the default sampler of a schedule: rflow for rectified-flow models,
    else :data:`GRID_SAMPLER`."""
    from medsynth.models.rflow import is_rflow

    if requested:
        return requested
    return RFLOW if is_rflow(scheduler_config) else GRID_SAMPLER


def make_scheduler(name: str, scheduler_config: dict[str, Any], *, latent: bool = False) -> Any:
    """A diffusers scheduler of kind ``name`` built from the model's training schedule config.

    ``latent``: switch off sample clipping/thresholding (latents are not in [-1, 1]).
    """
    import diffusers

    from medsynth.models.rflow import RectifiedFlowScheduler, is_rflow

    if name not in SAMPLERS:
        raise BadUsageError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    if is_rflow(scheduler_config) != (name == RFLOW):
        if name == RFLOW:
            raise BadUsageError("sampler rflow needs a model trained with rectified flow "
                                "(noise_schedule: rflow); this one was trained with DDPM noise",
                                hint=f"use one of {', '.join(SCHEDULERS)}")
        raise BadUsageError(f"this model was trained with rectified flow: sample it with rflow, "
                            f"not {name}", hint="pass --sampler rflow")
    if name == RFLOW:
        return RectifiedFlowScheduler(dict(scheduler_config))
    cls_name, overrides = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    kwargs: dict[str, Any] = dict(overrides)
    if latent:
        accepted = inspect.signature(cls.__init__).parameters
        kwargs.update({k: False for k in ("clip_sample", "thresholding") if k in accepted})
    return cls.from_config(dict(scheduler_config), **kwargs)


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


PRECISIONS = values(Precision)
"""``--precision`` values: ``auto`` = :func:`resolve_precision` (bf16 where there are bf16 units)."""


def cpu_bf16_units() -> bool:
    """True when this CPU computes bf16 natively (avx512_bf16 or amx_bf16 in /proc/cpuinfo).

    Without them torch emulates bf16 through fp32 and autocast only adds conversions.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """The precision a run uses: ``fp32``, ``bf16`` or (CUDA without bf16) ``fp16``."""
    if requested not in PRECISIONS:
        raise BadUsageError(f"--precision {requested!r}: choose from {', '.join(PRECISIONS)}")
    from medsynth.precision import amp_choice

    cuda = getattr(device, "type", str(device)) == "cuda"
    # pre-Ampere cards emulate bf16 (is_bf16_supported() says yes): fp16 there, one rule
    half = amp_choice(device) if cuda else "bf16"
    if requested == "fp32":
        return "fp32"
    if requested == "bf16":
        return half
    # auto: bf16 on a GPU; on the CPU fp32, since bf16's FID on 510 images came out 0.5 %
    # worse with a paired interval above 0 (docs/benchmarks.md): bf16 stays an opt-in there
    return half if cuda else "fp32"


def autocast_for(device: torch.device | str, precision: str | None = None
                 ) -> contextlib.AbstractContextManager[Any]:
    """Autocast for ``precision`` (:func:`resolve_precision`'s answer) on ``device``.

    None keeps the callers' old rule: bf16 (or fp16) autocast on CUDA, float32 on the CPU.
    """
    import torch

    kind = getattr(device, "type", str(device))
    if precision is None:
        precision = resolve_precision("auto", device) if kind == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda" if kind == "cuda" else "cpu", dtype=dtype)


def image_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per image, seeded with the image's seed."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def initial_noise(generators: list[torch.Generator], shape: tuple[int, ...],
                  device: torch.device | str) -> torch.Tensor:
    """Gaussian noise ``[B, *shape]``, image ``i`` drawn from ``generators[i]`` (on the CPU)."""
    import torch

    x = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
    return x.to(device)


def _pad_to(h: torch.Tensor, m: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad features ``[B, L, D]`` and mask ``[B, L]`` with masked-out zeros to ``length``."""
    import torch.nn.functional as F

    extra = length - h.shape[1]
    if extra <= 0:
        return h, m
    return F.pad(h, (0, 0, 0, extra)), F.pad(m, (0, extra))


def _class_conditions(class_ids: torch.Tensor | Sequence[int], null_class: int,
                      device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional, unconditional) class inputs: long ids, or float probabilities (one-hot null)."""
    import torch

    if torch.is_tensor(class_ids) and class_ids.is_floating_point():
        cond = class_ids.float().to(device)
        if cond.shape[-1] == null_class:  # probabilities over the real classes only
            cond = torch.nn.functional.pad(cond, (0, 1))
        uncond = torch.zeros_like(cond)
        uncond[:, null_class] = 1.0
        return cond, uncond
    cond = torch.as_tensor(class_ids, dtype=torch.long, device=device)
    return cond, torch.full_like(cond, int(null_class))


def start_step(scheduler: Any, steps: int, strength: float) -> int:
    """Index into ``scheduler.timesteps`` where image-to-image at ``strength`` begins.

    ``round(steps * strength)`` steps run (diffusers' img2img uses the floor; rounding makes
    S = 0.5 of 25 steps run 12 or 13 the same way on every sampler); 0 = none.
    """
    run = min(steps, int(steps * strength + 0.5))
    return (steps - run) * int(getattr(scheduler, "order", 1))


def denoise(
    denoiser: Denoiser,
    scheduler: Any,
    *,
    class_ids: torch.Tensor | Sequence[int],
    text_hidden: torch.Tensor,
    text_mask: torch.Tensor,
    null_class: int,
    null_hidden: torch.Tensor,
    null_mask: torch.Tensor,
    seeds: Sequence[int],
    sample_shape: tuple[int, ...],
    steps: int,
    guidance: float,
    device: torch.device | str | None = None,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """Sample a batch with classifier-free guidance on class and text (see module doc).

    Args:
        denoiser: a :class:`~medsynth.models.denoiser.Denoiser` (eval mode, on ``device``).
        scheduler: a diffusers scheduler (see :func:`make_scheduler`); its state is reset here.
        class_ids: the class id of each image (B entries), or a float tensor ``[B, K]`` of
            class probabilities (CCELLA); the unconditional branch gets the null class.
        text_hidden: text features ``[B, L, D]`` of each image's description.
        text_mask: their attention mask ``[B, L]`` (1 = real token).
        null_class: the class id meaning "no class" (the unconditional branch).
        null_hidden: the null text's features ``[1, L0, D]`` (broadcast to the batch).
        null_mask: the null text's mask ``[1, L0]``.
        seeds: the seed of each image (its initial noise and any per-step noise).
        sample_shape: ``(C, *spatial)`` of one sample in the denoiser's space (pixels or latents).
        steps: number of denoising steps of the full schedule.
        guidance: CFG scale g (1 = plain conditional sampling, 0 = unconditional).
        device: where to run (default: the denoiser's device).
        init: image-to-image: the initial images ``[B, *sample_shape]`` in the denoiser's space
            (pixels in [-1, 1], or scaled latents); None = from noise.
        strength: share of the schedule run from ``init`` in (0, 1]; 1 = from pure noise.
        decode: latent models: maps the final latents to pixels in [-1, 1]; None = pixel space.
        callback: called as ``callback(step_index, timestep)`` after every step.
        precision: the network's precision (:func:`resolve_precision`: ``fp32``, ``bf16``,
            ``fp16``); None = bf16/fp16 autocast on CUDA, float32 on the CPU.

    Returns:
        The batch ``[B, C, *spatial]`` in pixel space, float32 on the CPU, clipped to [-1, 1].
    """
    import torch

    if not 0.0 < strength <= 1.0:
        raise BadUsageError(f"strength must be in (0, 1], got {strength}")
    device = device if device is not None else next(denoiser.parameters()).device
    b = len(seeds)
    # 1. Per-image generators: initial noise and stochastic steps never depend on the batch.
    generators = image_generators(seeds)
    noise = initial_noise(generators, tuple(sample_shape), device)
    # 2. The timestep schedule of the chosen sampler; image-to-image runs only its tail.
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    if init is None or strength >= 1.0:
        x = noise * scheduler.init_noise_sigma
    else:
        first = start_step(scheduler, steps, strength)
        timesteps = timesteps[first:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        init = init.float().to(device)
        if init.shape != noise.shape:
            raise BadUsageError(f"init images have shape {tuple(init.shape)}, the sampler makes "
                                f"{tuple(noise.shape)}")
        # SDEdit: the initial image noised to the first remaining timestep.
        x = scheduler.add_noise(init, noise, timesteps[:1].repeat(b)) if len(timesteps) else init
    # 3. Conditions: the conditional half (class, text) and the unconditional half (null, null).
    cond_c, null_c = _class_conditions(class_ids, null_class, device)
    use_cfg = guidance != 1.0
    length = max(text_hidden.shape[1], null_hidden.shape[1])
    th, tm = _pad_to(text_hidden, text_mask, length)
    if use_cfg:
        nh, nm = _pad_to(null_hidden, null_mask, length)
        hidden = torch.cat([nh.expand(b, -1, -1), th]).to(device)
        mask = torch.cat([nm.expand(b, -1), tm]).to(device)
        classes = torch.cat([null_c, cond_c])
    else:
        hidden, mask, classes = th.to(device), tm.to(device), cond_c
    # Deterministic multistep samplers (UniPC) take no generator argument.
    step_kwargs = {"generator": generators} if "generator" in inspect.signature(
        scheduler.step).parameters else {}
    # inference_mode: no autograd bookkeeping at all (no version counters) on every step.
    with torch.inference_mode(), autocast_for(device, precision):
        for i, t in enumerate(timesteps):
            # 4. Duplicate the batch for the two CFG branches and let the scheduler scale it.
            model_in = torch.cat([x, x]) if use_cfg else x
            model_in = scheduler.scale_model_input(model_in, t)
            # 5. Predict the noise (or v / x0, as the model was trained) for both branches.
            out = denoiser(model_in, t, classes, hidden, mask).float()
            # 6. Classifier-free guidance: eps = eps_uncond + g * (eps_cond - eps_uncond).
            if use_cfg:
                out_uncond, out_cond = out.chunk(2)
                out = out_uncond + guidance * (out_cond - out_uncond)
            # 7. One scheduler step x_t -> x_{t-1}; stochastic samplers use each image's generator.
            x = scheduler.step(out, t, x, return_dict=False, **step_kwargs)[0]
            if callback is not None:
                callback(i, t)
        # 8. Latents -> pixels (latent models); never clamp the latents themselves.
        if decode is not None:
            x = decode(x)
    # 9. Back to the CPU in [-1, 1]; the bundle maps this to the pixel dtype. The clone, made
    # outside inference mode, is an ordinary tensor that callers may change in place.
    return x.float().clamp(-1, 1).cpu().clone()
