"""The CLIP building blocks: InfoNCE against a hand computation, retrieval recall and its
chance level, text pooling, the 3D encoder path, pixels to [0, 1]."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsynth.models.clip import (
    ClipSpec,
    build_clip,
    info_nce,
    pool_text,
    retrieval_recall,
    unit_pixels,
)


def _ce(row: list[float], target: int) -> float:
    return -math.log(math.exp(row[target]) / sum(math.exp(v) for v in row))


def test_info_nce_matches_hand_computation() -> None:
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    txt = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    scale = 2.0
    logits = (scale * img @ txt.T).tolist()
    cols = [[logits[i][j] for i in range(3)] for j in range(3)]
    expect = 0.5 * (sum(_ce(logits[i], i) for i in range(3)) / 3
                    + sum(_ce(cols[j], j) for j in range(3)) / 3)
    got = float(info_nce(img, txt, torch.tensor(scale)))
    assert got == pytest.approx(expect, rel=1e-6)
    # Groups of one are the plain loss.
    assert float(info_nce(img, txt, torch.tensor(scale), groups=torch.tensor([0, 1, 2]))) == \
        pytest.approx(expect, rel=1e-6)


def test_info_nce_shared_text_targets_split_evenly() -> None:
    """Pairs 0 and 1 carry the same text: each image's target is half on each of the two."""
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    txt = torch.tensor([[0.8, 0.6], [0.8, 0.6], [0.0, 1.0]])
    logits = (img @ txt.T).tolist()
    cols = [[logits[i][j] for i in range(3)] for j in range(3)]

    def soft(row: list[float], targets: list[int]) -> float:
        return sum(_ce(row, t) for t in targets) / len(targets)

    groups = [[0, 1], [0, 1], [2]]
    expect = 0.5 * (sum(soft(logits[i], groups[i]) for i in range(3)) / 3
                    + sum(soft(cols[j], groups[j]) for j in range(3)) / 3)
    got = float(info_nce(img, txt, torch.tensor(1.0), groups=torch.tensor([5, 5, 7])))
    assert got == pytest.approx(expect, rel=1e-6)


def test_retrieval_recall_and_chance() -> None:
    texts = ["a", "b", "a", "c"]
    emb = torch.eye(3)
    owner = {"a": 0, "b": 1, "c": 2}
    img = torch.stack([emb[owner[t]] for t in texts])
    txt = img.clone()
    r = retrieval_recall(img, txt, texts, ks=(1, 2))
    assert r["n_texts"] == 3 and r["n_images"] == 4
    assert r["i2t_r1"] == 1.0 and r["t2i_r1"] == 1.0
    assert r["i2t_r1_chance"] == pytest.approx(1 / 3)
    # text->image chance at k=1: text a owns 2 of 4 images, b and c one each.
    assert r["t2i_r1_chance"] == pytest.approx((2 / 4 + 1 / 4 + 1 / 4) / 3)
    # k=2: P(at least one of m among 2 of 4) = 1 - C(4-m, 2)/C(4, 2).
    expect = np.mean([1 - math.comb(2, 2) / 6, 1 - math.comb(3, 2) / 6, 1 - math.comb(3, 2) / 6])
    assert r["t2i_r2_chance"] == pytest.approx(expect)
    # A model that maps every image to the wrong text scores 0 at k=1.
    wrong = torch.stack([emb[(owner[t] + 1) % 3] for t in texts])
    assert retrieval_recall(wrong, txt, texts)["i2t_r1"] == 0.0


def test_pool_text_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool_text(hidden, mask).tolist() == [[2.0, 2.0]]


def test_3d_encoder_runs_on_a_tiny_volume_batch() -> None:
    torch.manual_seed(0)
    spec = ClipSpec(spatial_dims=3, channels=1, size=16, widths=[4, 4, 8, 8], embed_dim=8,
                    text_dim=6, text_hidden=0)
    model = build_clip(spec)
    x = torch.rand(2, 1, 12, 20, 16)  # any shape: resized to 16^3 inside
    img = model.encode_image(x)
    txt = model.encode_text(torch.randn(2, 6))
    assert img.shape == (2, 8) and txt.shape == (2, 8)
    assert torch.allclose(img.norm(dim=1), torch.ones(2), atol=1e-5)
    loss = info_nce(img, txt, model.scale())
    loss.backward()
    assert model.image_encoder.conv1.weight.grad is not None
    assert model.image_encoder.conv1.weight.ndim == 5  # a 3D convolution


def test_unit_pixels_follows_dtype_range() -> None:
    assert unit_pixels(np.array([[[0, 255]]], dtype=np.uint8)).tolist() == [[[0.0, 1.0]]]
    assert unit_pixels(np.array([[[0, 65535]]], dtype=np.uint16)).tolist() == [[[0.0, 1.0]]]
    f = unit_pixels(np.array([[[-1000.0, 0.0, 1000.0]]], dtype=np.float32))
    assert f.tolist() == [[[0.0, 0.5, 1.0]]]


def test_unit_pixels_is_evaluate_rule() -> None:
    """The CLIP model sees the same [0, 1] images in training as evaluate gives it."""
    from medsynth.evaluate.inputs import to_unit

    rng = np.random.default_rng(0)
    for a in (rng.integers(0, 256, (3, 5, 5)).astype(np.uint8),
              rng.integers(0, 65536, (1, 5, 5)).astype(np.uint16),
              rng.normal(0, 300, (1, 5, 5)).astype(np.int16),
              rng.normal(0, 1, (1, 5, 5)).astype(np.float32)):
        assert np.array_equal(unit_pixels(a), to_unit(a))


def test_class_only_reference() -> None:
    """Two classes, each with two distinct texts over four images: a class-aware random ranker
    finds the image's text at k=1 half the time."""
    texts = ["a1", "a1", "a2", "a2", "b1", "b1", "b2", "b2"]
    labels = ["a"] * 4 + ["b"] * 4
    emb = torch.eye(8)
    r = retrieval_recall(emb, emb, texts, ks=(1, 2), labels=labels)
    assert r["i2t_r1_class_only"] == pytest.approx(0.5)
    assert r["i2t_r2_class_only"] == pytest.approx(1.0)
    # t2i k=1: 2 of the class's 4 images carry the text.
    assert r["t2i_r1_class_only"] == pytest.approx(0.5)
    assert r["t2i_r2_class_only"] == pytest.approx(1 - math.comb(2, 2) / math.comb(4, 2))
    assert r["i2t_r1_chance"] == pytest.approx(0.25)
