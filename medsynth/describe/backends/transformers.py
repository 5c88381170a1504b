"""A local vision-language model loaded with transformers (path or hub name already on disk).

The model's own chat template and image processor build the inputs
(``processor.apply_chat_template(..., tokenize=True)``); conversations are generated in batches
with left padding; CUDA (bf16 where supported, else fp16) is used when present, else CPU fp32.
"""

from __future__ import annotations

import inspect
from typing import Any

from medsynth.describe.backends import pil_image
from medsynth.describe.prompts import Conversation
from medsynth.errors import MedsynthError


def _messages(conv: Conversation) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": conv.system}]},
        {"role": "user", "content": [{"type": "image", "image": pil_image(conv.image)},
                                     {"type": "text", "text": conv.user}]},
    ]
    msgs += [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in conv.turns]
    return msgs


class TransformersBackend:
    """Chat backend running a local ``AutoModelForImageTextToText``; :meth:`chat` takes a batch."""

    name = "transformers"
    batched = True

    def __init__(self, model: str, *, max_new_tokens: int = 512, temperature: float = 0.0,
                 seed: int = 0) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float32
        if self.device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.net = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
        except (OSError, ValueError) as e:
            raise MedsynthError(f"{model}: cannot load a vision-language model ({e})",
                                hint="pass a local folder saved with save_pretrained, or a model "
                                     "name already in the Hugging Face cache") from e
        self.net.to(self.device).eval()
        # transformers 5 takes processor options in processor_kwargs, 4.x as plain kwargs.
        sig = inspect.signature(self.processor.apply_chat_template).parameters
        self._pad: dict[str, Any] = ({"processor_kwargs": {"padding": True}}
                                     if "processor_kwargs" in sig else {"padding": True})
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only generation needs left padding in a batch
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token

    def chat(self, convs: list[Conversation]) -> list[str]:
        """Generate one answer per conversation, as a batch."""
        import torch

        inputs = self.processor.apply_chat_template(
            [_messages(c) for c in convs], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", **self._pad)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.net.dtype)
        gen: dict[str, Any] = {"max_new_tokens": self.max_new_tokens,
                               "do_sample": self.temperature > 0}
        if self.temperature > 0:
            gen["temperature"] = self.temperature
            torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = self.net.generate(**inputs, **gen)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [str(t) for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def close(self) -> None:
        self.net = None
