"""Describer backends, one file each; :func:`make_backend` picks one from the config.

Two kinds:

* measuring backends (``attributes``) return the structured attributes directly;
* chat backends (``openai``, ``transformers``) answer :class:`~medsynth.describe.prompts.Conversation`
  objects with raw text, which ``run.py`` validates and re-asks.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medsynth.describe.config import DescribeConfig
    from medsynth.describe.prompts import Template


class RequestError(Exception):
    """One image's request failed for good (retries exhausted): the image stays undescribed,
    nothing is recorded, and a later ``--resume`` tries it again."""


def display_uint8(array: np.ndarray) -> np.ndarray:
    """A channel-first image as an 8-bit (H, W) or (H, W, 3) array for a model to look at.

    Only the copy sent to a model is windowed to 8 bits (0.5-99.5 percentiles for other
    dtypes); the dataset keeps its depth. 3D volumes show their middle slice.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        # The window comes from the whole image or volume, so a slice keeps its true contrast.
        lo, hi = np.percentile(a.astype(np.float64), [0.5, 99.5])
        if hi - lo < 1e-9:
            lo, hi = float(a.min()), float(a.max())
        if a.ndim == 4:
            a = a[:, a.shape[1] // 2]
        f = a.astype(np.float64)
        a = (np.clip((f - lo) / max(hi - lo, 1e-9), 0, 1) * 255 + 0.5).astype(np.uint8)
    elif a.ndim == 4:
        a = a[:, a.shape[1] // 2]
    if a.shape[0] == 1:
        return a[0]
    return np.ascontiguousarray(np.moveaxis(a[:3], 0, -1))


def pil_image(array: np.ndarray) -> Any:
    """The display copy as an RGB PIL image (what vision-language processors expect)."""
    from PIL import Image as PILImage

    return PILImage.fromarray(display_uint8(array)).convert("RGB")


def data_url(array: np.ndarray) -> str:
    """The display copy as a ``data:image/png;base64,...`` URL."""
    import io

    buf = io.BytesIO()
    pil_image(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def make_backend(cfg: DescribeConfig, template: Template, **kw: Any) -> Any:
    """Instantiate the backend named by ``cfg.backend``."""
    if cfg.backend == "attributes":
        from medsynth.describe.backends.attributes import AttributesBackend

        return AttributesBackend(template, **kw)
    if cfg.backend == "openai":
        from medsynth.describe.backends.openai import OpenAIBackend

        return OpenAIBackend(base_url=str(cfg.base_url), model=str(cfg.model), timeout=cfg.timeout,
                             retries=cfg.request_retries, max_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature)
    from medsynth.describe.backends.transformers import TransformersBackend

    return TransformersBackend(str(cfg.model), max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, seed=cfg.seed)
