"""The transformers backend on a tiny random LLaVA built in the test: batched answers through
the engine, and yes/no probabilities from the next-token logits (what a local judge reads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.mllm import Engine, Request, TextAnswer
from medsynth.mllm.local import YES_NO_SUFFIX, TransformersBackend, YesNo

QUESTIONS = ["Is the lesion asymmetric?", "Does the lesion show more than two colours in it?",
             "Is there a blue-white veil?", "Is the border irregular and notched?", "Hair?"]


@pytest.fixture(scope="module")
def backend(tiny_llava: Path) -> TransformersBackend:
    return TransformersBackend(str(tiny_llava), max_new_tokens=6, batch_size=3)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (3, 40, 40), dtype=np.uint8)


def test_yes_no_probabilities(backend: TransformersBackend) -> None:
    yes_ids, no_ids = backend.yes_no_token_ids()
    assert backend.tokenizer.convert_ids_to_tokens(yes_ids) == ["yes"]
    assert backend.tokenizer.convert_ids_to_tokens(no_ids) == ["no"]
    img = _image(0)
    got = backend.yes_no(img, QUESTIONS)
    assert len(got) == len(QUESTIONS) and all(isinstance(g, YesNo) for g in got)
    for g in got:
        assert 0 < g.yes < 1 and 0 < g.no < 1 and g.mass <= 1 + 1e-6
        assert g.p_yes == pytest.approx(g.yes / (g.yes + g.no))
    assert backend.yes_no(img, QUESTIONS) == got  # deterministic
    # Batches of 3 with left padding give what each question gives alone.
    backend.batch_size = 1
    try:
        alone = backend.yes_no(img, QUESTIONS)
    finally:
        backend.batch_size = 3
    for a, b in zip(alone, got, strict=True):
        assert a.yes == pytest.approx(b.yes, rel=1e-4) and a.no == pytest.approx(b.no, rel=1e-4)
    # The image matters.
    assert backend.yes_no(_image(1), QUESTIONS[:1])[0].yes != got[0].yes


def test_yes_no_equals_the_softmax_of_the_next_token(backend: TransformersBackend) -> None:
    import torch

    img, q = _image(2), QUESTIONS[1]
    (got,) = backend.yes_no(img, [q])
    req = Request(user=f"{q} {YES_NO_SUFFIX}", images=[img])
    inputs = backend.processor.apply_chat_template(
        [req.chat_messages()], add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt")
    with torch.inference_mode():
        logits = backend.net(**inputs).logits[0, -1].float()
    probs = torch.softmax(logits, -1)
    yes_ids, no_ids = backend.yes_no_token_ids()
    assert got.yes == pytest.approx(float(probs[yes_ids].sum()), rel=1e-5)
    assert got.no == pytest.approx(float(probs[no_ids].sum()), rel=1e-5)


def test_answers_through_the_engine(backend: TransformersBackend) -> None:
    assert backend.batch_size == 3 and backend.workers == 1
    reqs = {f"r{k}": Request(user=f"Describe image {k}.", images=[_image(k)]) for k in range(4)}
    engine = Engine(backend, max_reasks=1)
    out = {o.item: o for o in engine.run(list(reqs), reqs.__getitem__, TextAnswer(min_chars=1))}
    assert set(out) == set(reqs) and all(o.status in ("ok", "failed") for o in out.values())
    assert all(o.answers for o in out.values())
    # Per-request sampling settings: a longer limit gives at least as long an answer.
    short, long_ = backend.answer([Request(user="Hi.", images=[_image(9)], max_tokens=2),
                                   Request(user="Hi.", images=[_image(9)], max_tokens=8)])
    assert isinstance(short, str) and isinstance(long_, str)
    assert len(backend.tokenizer.encode(short, add_special_tokens=False)) <= 2
    assert backend.info()["structured_output"] == "prompted"
