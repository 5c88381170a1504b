"""The decoded training stack on disk (memory-mapped, shared) and the dtype-preserving batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.imaging.dataset import open_dataset
from medsynth.models.intensity import IntensityMapping
from medsynth.train.config import TrainConfig
from medsynth.train.data import batch_tensors, load_train_data, to_unit
from tests.train.fixtures import make_dataset


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16"])
def test_lookup_table_is_bitwise_from_pixels(dtype: str) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    a = rng.integers(info.min, info.max, (3, 2, 5, 7), endpoint=True).astype(dtype)
    for lo, hi in ((float(info.min), float(info.max)), (float(a.min()) + 3, float(a.max()) - 5)):
        m = IntensityMapping(dtype, lo, hi)
        got = to_unit(a, m)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), m.from_pixels(a))


def _old_batch(data, idx, gen, mapping):  # the pipeline before (float64 maths, then flips)
    x = torch.from_numpy(mapping.from_pixels(np.asarray(data.pixels)[idx.numpy()]))
    b = x.shape[0]
    if data.hflip:
        m = torch.rand(b, generator=gen) < 0.5
        x[m] = x[m].flip(-1)
    if data.vflip:
        m = torch.rand(b, generator=gen) < 0.5
        x[m] = x[m].flip(-2)
    return x


@pytest.mark.parametrize("dtype,channels", [("uint8", 3), ("uint16", 1)])
def test_disk_stack_matches_memory_and_batches_are_unchanged(tmp_path: Path, monkeypatch,
                                                             dtype: str, channels: int) -> None:
    monkeypatch.setenv("MEDSYNTH_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(make_dataset(tmp_path / "ds", dtype=dtype, channels=channels).root)
    cfg = TrainConfig.tiny(hflip="yes", vflip="yes")
    mem = load_train_data(ds, cfg.replace(data_cache="memory"), progress=False)
    disk = load_train_data(ds, cfg.replace(data_cache="disk"), progress=False)
    assert isinstance(disk.pixels, np.memmap) and not isinstance(mem.pixels, np.memmap)
    files = sorted(p.name for p in (tmp_path / "cache" / "train-data").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    np.testing.assert_array_equal(np.asarray(disk.pixels), mem.pixels)
    assert disk.pixels.dtype == np.dtype(dtype)
    for f in ("labels", "image_ids", "texts", "spacing", "affine", "value_range",
              "source_size"):
        assert np.array_equal(np.asarray(getattr(disk, f), dtype=object),
                              np.asarray(getattr(mem, f), dtype=object)), f
    m = mem.intensity_mapping()
    assert m == IntensityMapping.for_data(mem.pixels) == disk.intensity_mapping()
    for k in range(3):
        idx = torch.randperm(len(mem), generator=torch.Generator().manual_seed(k))[:4]
        want = _old_batch(mem, idx, torch.Generator().manual_seed(k), m)
        for d in (mem, disk):
            got = batch_tensors(d, idx, torch.Generator().manual_seed(k), m)
            assert torch.equal(got, want)
    # A later load reads the stack without decoding an image.
    monkeypatch.setattr(type(ds), "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = load_train_data(ds, cfg.replace(data_cache="disk"), progress=False)
    np.testing.assert_array_equal(np.asarray(again.pixels), mem.pixels)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".part")]
