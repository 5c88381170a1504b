"""A local vision-language model loaded with transformers (a folder, or a name already cached).

The model's own chat template and image processor build the inputs
(``processor.apply_chat_template(..., tokenize=True)``); requests are generated in batches with
left padding; CUDA (bf16 where supported, else fp16) is used when present, else CPU fp32.
Transformers has no constrained decoding of its own, so structured answers are prompted JSON,
validated by the engine.

:meth:`TransformersBackend.yes_no` asks yes/no questions without generating: the probabilities
of "yes" and "no" as the first answer token, read from the next-token logits (deterministic;
what a judge uses to check one criterion at a time).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.mllm.backend import RequestError
from medsynth.mllm.request import Request

YES_WORDS = ("yes", "Yes", "YES")
NO_WORDS = ("no", "No", "NO")
YES_NO_SUFFIX = "Answer with yes or no."
"""Appended to every yes/no question."""


@dataclasses.dataclass(frozen=True)
class YesNo:
    """Next-token probabilities of a yes/no question."""

    yes: float
    """P(the answer starts with a "yes" token), over the whole vocabulary."""
    no: float
    """P(the answer starts with a "no" token)."""

    @property
    def p_yes(self) -> float:
        """P(yes) among yes and no (0.5 when the model puts no mass on either)."""
        total = self.yes + self.no
        return self.yes / total if total > 0 else 0.5

    @property
    def mass(self) -> float:
        """How much of the next token's probability is yes or no at all: a low mass means the
        model is not answering the question, and its p_yes means little."""
        return self.yes + self.no


class TransformersBackend:
    """A local ``AutoModelForImageTextToText``; :meth:`answer` takes a batch."""

    name = "transformers"
    workers = 1
    writes_text = True
    can_revise = True

    def __init__(self, model: str, *, max_new_tokens: int = 512, temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 4) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.batch_size = max(1, batch_size)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        from medsynth.precision import amp_choice, amp_dtype

        # bf16 from compute capability 8 (pre-Ampere cards only emulate it), fp16 below
        dtype = amp_dtype(amp_choice()) or torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            # Any: transformers' decorated .to() is typed as if self were its first argument
            self.net: Any = cast(Any, AutoModelForImageTextToText.from_pretrained(model, dtype=dtype))
        except (OSError, ValueError) as e:
            raise MedsynthError(f"{model}: cannot load a vision-language model ({e})",
                                hint="pass a local folder saved with save_pretrained, or a model "
                                     "name already in the Hugging Face cache") from e
        self.net.to(self.device).eval()
        # transformers 5 takes processor options in processor_kwargs, 4.x as plain kwargs.
        sig = inspect.signature(self.processor.apply_chat_template).parameters
        self._pad: dict[str, Any] = ({"processor_kwargs": {"padding": True}}
                                     if "processor_kwargs" in sig else {"padding": True})
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # decoder-only batches need left padding
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._yes_no_ids: tuple[list[int], list[int]] | None = None

    def info(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": str(self.net.dtype).replace("torch.", ""),
                "structured_output": "prompted"}

    def _inputs(self, requests: Sequence[Request]) -> Any:
        inputs = self.processor.apply_chat_template(
            [r.chat_messages() for r in requests], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", **self._pad)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.net.dtype)
        return inputs

    def answer(self, requests: Sequence[Request]) -> list[str | RequestError]:
        """Generate one answer per request, batched (requests with the same sampling settings
        together)."""
        out: list[str | RequestError] = [""] * len(requests)
        groups: dict[tuple[float, int], list[int]] = {}
        for i, r in enumerate(requests):
            t = self.temperature if r.temperature is None else r.temperature
            groups.setdefault((float(t), int(r.max_tokens or self.max_new_tokens)), []).append(i)
        for (temperature, max_new), idx in groups.items():
            for i, text in zip(idx, self._generate([requests[i] for i in idx], temperature,
                                                   max_new), strict=True):
                out[i] = text
        return out

    def _generate(self, requests: Sequence[Request], temperature: float, max_new: int) -> list[str]:
        import torch

        inputs = self._inputs(requests)
        gen: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": temperature > 0}
        if temperature > 0:
            gen["temperature"] = temperature
            torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = self.net.generate(**inputs, **gen)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [str(t) for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def yes_no_token_ids(self) -> tuple[list[int], list[int]]:
        """The single-token spellings of yes and of no in this model's vocabulary."""
        if self._yes_no_ids is None:
            def ids(words: tuple[str, ...]) -> list[int]:
                found = set()
                for w in words:
                    for v in (w, " " + w):
                        enc = self.tokenizer.encode(v, add_special_tokens=False)
                        unk = getattr(self.tokenizer, "unk_token_id", None)
                        if len(enc) == 1 and enc[0] != unk:
                            found.add(int(enc[0]))
                return sorted(found)

            yes, no = ids(YES_WORDS), ids(NO_WORDS)
            if not yes or not no or set(yes) & set(no):
                raise MedsynthError(f"{self.model}: its tokenizer has no single token for 'yes' "
                                    "and for 'no'; yes/no probabilities need one each")
            self._yes_no_ids = (yes, no)
        return self._yes_no_ids

    def yes_no(self, image: np.ndarray | None, questions: Sequence[str], *, system: str = "",
               suffix: str = YES_NO_SUFFIX) -> list[YesNo]:
        """P(yes) and P(no) of each question about ``image``, from the next-token logits.

        Each question is its own conversation (system, image, question + ``suffix``); they run
        in batches of ``batch_size`` with left padding, positions counted from the first real
        token, so an answer does not depend on the other questions in its batch.
        """
        import torch

        yes_ids, no_ids = self.yes_no_token_ids()
        reqs = [Request(user=f"{q.strip()} {suffix}".strip(), system=system,
                        images=[image] if image is not None else []) for q in questions]
        out: list[YesNo] = []
        for start in range(0, len(reqs), self.batch_size):
            inputs = self._inputs(reqs[start:start + self.batch_size])
            mask = inputs["attention_mask"]
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.net(**inputs, position_ids=positions).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            p_yes = probs[:, yes_ids].sum(-1).tolist()
            p_no = probs[:, no_ids].sum(-1).tolist()
            out += [YesNo(float(y), float(n)) for y, n in zip(p_yes, p_no, strict=True)]
        return out

    def close(self) -> None:
        self.net = None
