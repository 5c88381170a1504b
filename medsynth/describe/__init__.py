"""``medsynth describe``: chain-of-thought visual descriptions per image, stored per class.

VAP-Diffusion (arXiv 2506.23641): a describer answers step-wise questions about each training
image with a controlled vocabulary and a validated JSON answer; the descriptions condition the
generator. Backends: ``attributes`` (offline pixel measurements), ``openai`` (any
OpenAI-compatible server) and ``transformers`` (a local vision-language model).
"""

from __future__ import annotations

from medsynth.describe.config import DescribeConfig

__all__ = ["DescribeConfig"]
