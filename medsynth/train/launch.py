"""What training needs from ``accelerate launch`` and the GPU, in one place.

The process group (with the recipe's timeout), the world size before any group exists, the CPU
threads of one rank among several, the recipe's GPU levers (TF32, SDPA attention) and a warning
when ``accelerate launch --mixed_precision`` differs from the recipe (medsynth takes the recipe's:
``mixed_precision`` is passed to the Accelerator explicitly, which accelerate lets win silently).
"""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    """Processes of this launch (``WORLD_SIZE`` from accelerate/torchrun; 1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def local_world_size() -> int:
    """Processes of this launch on this machine."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world_size())))
    except ValueError:
        return world_size()


def process_group_kwargs(cfg: Any) -> dict[str, Any]:
    """Keyword arguments of accelerate's ``PartialState`` (passed on to init_process_group)."""
    t = getattr(cfg, "process_group_timeout_s", None)
    if not t:
        return {}
    from datetime import timedelta

    return {"timeout": timedelta(seconds=int(t))}


def rank_threads(requested: int | None) -> int | None:
    """Torch threads for this rank: ``requested``, else (launched with several processes on this
    machine) its share of the free cores, so that N ranks do not each take all of them; None =
    leave torch's default (one process)."""
    if requested:
        return int(requested)
    n = local_world_size()
    if n <= 1:
        return None
    from medsynth.threads import default_threads

    return max(1, default_threads() // n)


def is_cuda(device: Any) -> bool:
    """True for ``cuda`` and ``cuda:N`` devices (``str(device) == "cuda"`` misses ``cuda:1``)."""
    return getattr(device, "type", str(device).split(":")[0]) == "cuda"


def launch_precision_warning(recipe_precision: str, used: str) -> str | None:
    """The warning for ``accelerate launch --mixed_precision X`` that the run does not use."""
    asked = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if not asked or asked == used:
        return None
    return (f"accelerate launch --mixed_precision {asked} is not what this run uses: the recipe's "
            f"mixed_precision {recipe_precision} gives {used} (set it in the recipe or with "
            "--mixed-precision)")


def setup(cfg: Any, used_precision: str) -> None:
    """Apply the recipe's process-wide levers for this rank (threads, TF32) and warn about an
    ignored ``--mixed_precision``. Called once per training run, before the models are built."""
    import torch

    from medsynth.ui import console

    threads = rank_threads(getattr(cfg, "num_threads", None))
    if threads:
        torch.set_num_threads(threads)
    if getattr(cfg, "tf32", False):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    msg = launch_precision_warning(getattr(cfg, "mixed_precision", "auto"), used_precision)
    if msg and int(os.environ.get("RANK", "0")) == 0:
        console.print(f"[yellow]warning:[/] {msg}", soft_wrap=True)


def use_sdpa(module: Any, on: bool = True) -> int:
    """Switch MONAI attention blocks inside ``module`` to torch's scaled_dot_product_attention
    (``use_flash_attention``); returns how many blocks were switched. The weights are unchanged."""
    n = 0
    for m in module.modules():
        if hasattr(m, "use_flash_attention") and hasattr(m, "to_q"):
            if getattr(m, "rel_positional_embedding", None) is not None:
                continue  # MONAI refuses SDPA with relative positions
            m.use_flash_attention = bool(on)
            n += 1
    return n
