"""The mixed-precision choice, once for every stage that autocasts.

``torch.cuda.is_bf16_supported()`` is True on pre-Ampere cards (T4, V100), where bf16 is
emulated and slow; bf16 is chosen only on compute capability >= 8 (Ampere and later), fp16
(with a GradScaler in training) below, and no autocast without CUDA.
"""

from __future__ import annotations

from typing import Any


def amp_choice(device: Any = None) -> str:
    """``"bf16"``, ``"fp16"`` or ``"no"`` for ``device`` (default: the current CUDA device)."""
    import torch

    if not torch.cuda.is_available():
        return "no"
    if device is not None and torch.device(device).type != "cuda":
        return "no"
    major, _minor = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


def amp_dtype(choice: str) -> Any:
    """The autocast dtype of a choice (None for ``"no"``)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(choice)


def resolve(mixed_precision: str, device: Any = None) -> str:
    """A recipe's ``mixed_precision`` (auto | no | fp16 | bf16) made concrete."""
    return amp_choice(device) if mixed_precision == "auto" else mixed_precision
