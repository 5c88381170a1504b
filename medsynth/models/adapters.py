"""LoRA adapters on a denoiser (peft), for preference fine-tuning (``medsynth refine``).

::

    params = add_lora(denoiser, rank=8)        # peft LoRA on denoiser.lora_target_modules
    with adapters_disabled(denoiser):          # the base network: the DPO reference, no copy
        ref = denoiser(x, t, classes, text, mask)
    state = lora_state_dict(denoiser)          # adapter weights only (checkpoints)
    load_lora_state_dict(denoiser, state)
    merge_lora(denoiser)                       # fold W + (alpha / r) B A into W, drop the layers

The adapters are injected with ``peft.inject_adapter_in_model`` into ``denoiser.net`` (the
diffusers UNet and the MONAI net alike; for diffusers this is what ``unet.add_adapter`` does).
LoRA ``B`` starts at zero (``init_lora_weights="gaussian"`` draws ``A`` only), so a fresh
adapter changes nothing. After :func:`merge_lora` the network has its original modules and
state-dict keys again: ``denoiser.save`` writes a plain model that loads without peft.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from medsynth.errors import MedsynthError

ADAPTER_NAME = "default"


def _tuner_layers(denoiser: Any) -> list[tuple[str, Any]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(n, m) for n, m in denoiser.net.named_modules() if isinstance(m, BaseTunerLayer)]


def has_lora(denoiser: Any) -> bool:
    """True when the denoiser carries LoRA layers."""
    return bool(_tuner_layers(denoiser))


def add_lora(denoiser: Any, rank: int, *, alpha: float | None = None, dropout: float = 0.0,
             targets: tuple[str, ...] | None = None, seed: int | None = None) -> list[Any]:
    """Inject a LoRA adapter into the denoiser's attention projections; return its parameters.

    Args:
        denoiser: a :class:`~medsynth.models.denoiser.Denoiser`.
        rank: LoRA rank r.
        alpha: scale numerator (update scaled by alpha / r); None = r.
        dropout: LoRA dropout.
        targets: module names (default ``denoiser.lora_target_modules``).
        seed: seeds the draw of the ``A`` matrices (None = the global RNG).

    Only the adapter parameters require gradients afterwards; the base weights are frozen.
    """
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    targets = tuple(targets or denoiser.lora_target_modules)
    if not targets:
        raise MedsynthError(f"{type(denoiser).__name__}: no LoRA target modules known")
    if has_lora(denoiser):
        raise MedsynthError("the denoiser already carries a LoRA adapter")
    # peft annotates lora_alpha as int but scales by alpha / r: a float alpha stays exact
    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),  # type: ignore[arg-type]
                     lora_dropout=float(dropout), init_lora_weights="gaussian",
                     target_modules=list(targets))
    denoiser.requires_grad_(False)
    device = next(denoiser.parameters()).device
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(int(seed))
        try:
            inject_adapter_in_model(cfg, denoiser.net, adapter_name=ADAPTER_NAME)
        except ValueError as e:
            raise MedsynthError(f"cannot add LoRA to {type(denoiser).__name__} "
                                f"(targets {list(targets)}): {e}") from e
    params = []
    for name, p in denoiser.net.named_parameters():
        if "lora_" in name:
            p.data = p.data.float().to(device)  # adapters train in fp32 (diffusers' example)
            p.requires_grad_(True)
            params.append(p)
    if not params:
        raise MedsynthError(f"LoRA matched no module of {type(denoiser).__name__} "
                            f"(targets {list(targets)})")
    return params


def set_adapters(denoiser: Any, enabled: bool) -> None:
    """Switch every LoRA layer on or off (off = the base network exactly)."""
    for _, m in _tuner_layers(denoiser):
        m.enable_adapters(enabled)


@contextlib.contextmanager
def adapters_disabled(denoiser: Any) -> Iterator[Any]:
    """The base network inside the block (the DPO reference); adapters back on afterwards."""
    set_adapters(denoiser, False)
    try:
        yield denoiser
    finally:
        set_adapters(denoiser, True)


def lora_state_dict(denoiser: Any) -> dict[str, Any]:
    """The adapter weights (``lora_`` keys of ``denoiser.net``), detached on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in denoiser.net.state_dict().items()
            if "lora_" in k}


def load_lora_state_dict(denoiser: Any, state: dict[str, Any]) -> None:
    """Load adapter weights saved by :func:`lora_state_dict` (keys must match exactly)."""
    own = {k for k in denoiser.net.state_dict() if "lora_" in k}
    if set(state) != own:
        missing, extra = sorted(own - set(state)), sorted(set(state) - own)
        raise MedsynthError(f"adapter weights do not fit this denoiser (missing {missing[:3]}, "
                            f"unexpected {extra[:3]})")
    denoiser.net.load_state_dict(state, strict=False)


def merge_lora(denoiser: Any) -> Any:
    """Fold the adapters into the base weights and put the plain modules back; returns it."""
    layers = _tuner_layers(denoiser)
    for name, m in layers:
        m.enable_adapters(True)
        m.merge()
        parent_name, _, child = name.rpartition(".")
        parent = denoiser.net.get_submodule(parent_name) if parent_name else denoiser.net
        setattr(parent, child, m.get_base_layer())
    if hasattr(denoiser.net, "peft_config"):
        del denoiser.net.peft_config
    if hasattr(denoiser.net, "_hf_peft_config_loaded"):
        denoiser.net._hf_peft_config_loaded = False
    return denoiser
