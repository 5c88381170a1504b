"""What is asked: one request to a model (system text, user text, images, re-ask turns, answer
schema), and the 8-bit display copies of images that models are shown."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Request:
    """One question to a backend, usually about one image.

    The user text must itself say what form the answer takes (prompted JSON): ``schema`` is an
    extra guarantee that only some servers give, and every answer is validated anyway.
    """

    user: str
    """The question (for structured answers: including the answer format)."""
    system: str = ""
    """System text ("" = none)."""
    images: list[np.ndarray] = dataclasses.field(default_factory=list)
    """Channel-first arrays as stored (any dtype, 2D or 3D); backends make 8-bit display copies."""
    turns: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """Later (role, text) turns: rejected answers and the requests to correct them."""
    schema: dict[str, Any] | None = None
    """JSON Schema of the answer: sent as ``response_format`` where a server accepts it."""
    schema_name: str = "answer"
    """Name of the schema in ``response_format`` (letters, digits, ``_`` and ``-``)."""
    temperature: float | None = None
    """Sampling temperature for this request (None = the backend's setting)."""
    max_tokens: int | None = None
    """Answer length limit for this request (None = the backend's setting)."""
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Facts for measuring backends (e.g. ``mm_per_px``); never sent to a model."""
    reask_hint: str = "Answer again with only the JSON object in the required format."
    """What a re-ask asks for after listing the problems (free-text answers say so)."""

    @property
    def image(self) -> np.ndarray | None:
        """The first image, if any."""
        return self.images[0] if self.images else None

    def reask(self, answer: str, problems: list[str]) -> None:
        """Append the rejected answer and a request to fix exactly the listed problems."""
        self.turns.append(("assistant", answer))
        self.turns.append(("user", "Your answer could not be used: " + "; ".join(problems)
                           + ". " + self.reask_hint))

    def openai_messages(self) -> list[dict[str, Any]]:
        """OpenAI chat-completions messages (images as PNG data URLs before the text)."""
        msgs: list[dict[str, Any]] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        if self.images:
            content: Any = [{"type": "image_url", "image_url": {"url": data_url(a)}}
                            for a in self.images]
            content.append({"type": "text", "text": self.user})
        else:
            content = self.user
        msgs.append({"role": "user", "content": content})
        msgs += [{"role": r, "content": t} for r, t in self.turns]
        return msgs

    def chat_messages(self) -> list[dict[str, Any]]:
        """Messages for a transformers processor's chat template (images as PIL images)."""
        msgs: list[dict[str, Any]] = []
        if self.system:
            msgs.append({"role": "system", "content": [{"type": "text", "text": self.system}]})
        content = [{"type": "image", "image": pil_image(a)} for a in self.images]
        content.append({"type": "text", "text": self.user})
        msgs.append({"role": "user", "content": content})
        msgs += [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in self.turns]
        return msgs


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
