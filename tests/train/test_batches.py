"""The training batch pipeline's levers (issue 25): ``prefetch`` (drawn one ahead on a worker
thread, pinned on a GPU) and ``compile`` (torch.compile of the denoiser) train the same run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from medsynth.models.bundle import load_bundle
from medsynth.train.batches import BatchStream, pin, to_device
from medsynth.train.config import TrainConfig
from medsynth.train.loop import train
from tests.train.fixtures import log_rows, make_dataset, make_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batches")
    ds = make_dataset(root / "ds")
    make_store(root / "store", ds)
    return {"root": root, "ds": root / "ds", "store": root / "store"}


def _losses(folder: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")}
            for r in log_rows(folder)]


def test_prefetch_trains_the_same_run(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Same micro-batches (every tensor), same loss CSV, same weights, prefetch on or off."""
    seen: dict[bool, list[dict[str, torch.Tensor]]] = {False: [], True: []}
    get = BatchStream.get

    def spy(self: BatchStream, step: int, micro: int):
        b = get(self, step, micro)
        seen[self.prefetch].append({f.name: getattr(b, f.name).clone()
                                    for f in dataclasses.fields(b) if f.name != "size"})
        return b

    monkeypatch.setattr(BatchStream, "get", spy)
    cfg = TrainConfig.tiny(max_steps=3, grad_accum=2, batch_size=3, p_drop_class=0.5,
                           p_drop_text=0.5)
    for on in (False, True):
        train(tiny["ds"], tiny["root"] / f"p{on}", cfg=cfg.replace(prefetch=on),
              store_path=tiny["store"], progress=False)
    assert len(seen[True]) == len(seen[False]) == 6
    for a, b in zip(seen[False], seen[True], strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tiny["root"] / "pFalse") == _losses(tiny["root"] / "pTrue")
    u0, u1 = (load_bundle(tiny["root"] / f"p{on}").unet for on in (False, True))
    assert all(torch.equal(p, q) for p, q in zip(u0.parameters(), u1.parameters(), strict=True))


@dataclasses.dataclass
class _B:
    x: torch.Tensor
    y: torch.Tensor
    size: int


def test_stream_draws_one_ahead_in_order_and_pins_gracefully() -> None:
    drawn: list[tuple[int, int]] = []

    def draw(step: int, micro: int) -> _B:
        drawn.append((step, micro))
        return _B(torch.full((2,), float(step)), torch.full((1,), micro), 2)

    keys = [(s, m) for s in range(2, 4) for m in range(2)]
    s = BatchStream(draw, keys, torch.device("cpu"), prefetch=True)
    assert not s.pinned  # pinning only for a CUDA device
    b = s.get(2, 0)
    assert (b.x.tolist(), b.y.tolist(), b.size) == ([2.0, 2.0], [0], 2)
    s.get(2, 1)
    with pytest.raises(RuntimeError, match="drawn ahead"):  # an order change is a bug: loud
        s.get(3, 1)
    s.close()
    # in order; the one drawn ahead, (3, 0), may have been cancelled by close() before it ran
    assert drawn[:2] == keys[:2] and drawn[2:] in ([], [keys[2]])
    off = BatchStream(draw, keys, torch.device("cpu"))
    drawn.clear()
    assert off.get(3, 1).y.tolist() == [1] and drawn == [(3, 1)]  # drawn when asked
    # pin: pinned where torch can (a CUDA build with a GPU), else the batch as it was
    p = pin(b)
    assert torch.equal(p.x, b.x) and p.size == 2
    assert p.x.is_pinned() == torch.cuda.is_available()
    assert to_device(p, "cpu").x.device.type == "cpu"


@pytest.mark.slow
def test_compiled_denoiser_trains_like_eager(tiny: dict[str, Path]) -> None:
    """``compile: true`` on the CPU (inductor): losses within float tolerance of eager, and the
    saved model and checkpoints are the bare module's (loadable, resumable)."""
    cfg = TrainConfig.tiny(max_steps=3, checkpoint_every=2, lr_schedule="constant")
    root = tiny["root"]
    train(tiny["ds"], root / "eager", cfg=cfg, store_path=tiny["store"], progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(tiny["ds"], root / "comp", cfg=cfg.replace(compile=True), store_path=tiny["store"],
              progress=False, interrupt_after=2)
    train(tiny["ds"], root / "comp", cfg=cfg.replace(compile=True), store_path=tiny["store"],
          resume=True, progress=False)
    a, b = log_rows(root / "eager"), log_rows(root / "comp")
    assert [r["step"] for r in b] == ["1", "2", "3"]
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "mse", "class_ce"):
            assert float(rb[k]) == pytest.approx(float(ra[k]), rel=1e-3, abs=1e-5), (k, ra, rb)
    ua, ub = load_bundle(root / "eager").unet, load_bundle(root / "comp").unet
    for p, q in zip(ua.parameters(), ub.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_packed_text_features_give_back_the_dense_rows() -> None:
    """Right-padded, zero-padded features (medsynth's encoders) pack to their real tokens and
    index back bitwise (tensor, list, int, slice, repeated rows); anything else stays dense."""
    from medsynth.models.text_encoder import pad_features
    from medsynth.train.text_cache import PackedTokens

    g = torch.Generator().manual_seed(0)
    hidden, mask = pad_features([torch.randn(n, 6, generator=g) for n in (1, 4, 2, 7, 3)])
    p = PackedTokens.pack(hidden, mask)
    assert isinstance(p, PackedTokens) and p.shape == tuple(hidden.shape) and len(p) == 5
    assert p.data.shape == (17, 6)  # 17 real tokens instead of 5 x 7
    idx = torch.tensor([3, 0, 3, 4, 1])
    assert torch.equal(p[idx], hidden[idx]) and torch.equal(p[[2, 2]], hidden[[2, 2]])
    assert torch.equal(p[3], hidden[3]) and torch.equal(p[:1], hidden[:1])
    assert torch.equal(p.dense(), hidden)
    clip = torch.randn(2, 5, 6, generator=g)  # CLIP: every position real, nothing to pack
    assert torch.equal(PackedTokens.pack(clip, torch.ones(2, 5, dtype=torch.long))[[1]], clip[[1]])
    left = mask.flip(1)  # not right-padded: kept dense
    assert not isinstance(PackedTokens.pack(hidden.flip(1), left), PackedTokens)
