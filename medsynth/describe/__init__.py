"""``medsynth describe``: chain-of-thought visual descriptions per image, stored per class.

VAP-Diffusion (arXiv 2506.23641): a describer answers step-wise questions about each training
image with a controlled vocabulary and a validated JSON answer; the descriptions condition the
generator. Backends: ``attributes`` (offline pixel measurements), ``openai`` (any
OpenAI-compatible server) and ``transformers`` (a local vision-language model).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DescribeConfig"]


def __getattr__(name: str) -> Any:
    if name == "DescribeConfig":  # lazily: pydantic is not for `medsynth --help`
        from medsynth.describe.config import DescribeConfig

        return DescribeConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
