"""The demo phantoms' acquisition site (--site): the reference site is unchanged, another site
shifts the device but keeps the patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsynth.data.demo.common import DemoConfig, write_demo
from medsynth.errors import MedsynthError


def _load(root: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    from PIL import Image

    t = pd.read_csv(root / "labels.csv")
    return t, {r: np.asarray(Image.open(root / r)) for r in t["path"]}


@pytest.mark.parametrize("demo", ["derm", "cxr"])
def test_reference_site_is_the_old_rendering(demo: str, tmp_path: Path) -> None:
    from medsynth.data.demo.common import _module

    ds = write_demo(DemoConfig(demo=demo, out=str(tmp_path / "a"), n_per_class=2, size=16,
                               workers=1))
    assert "site" not in ds.table.columns
    _, imgs = _load(ds.root)
    mod = _module(demo)
    for rel, got in imgs.items():
        cls, i = rel.split("/")[1], int(rel.rsplit("_", 1)[1].split(".")[0])
        want, _ = mod.render(cls, i, 16, 0)  # the rendering of earlier releases, no site
        chw = got[None] if got.ndim == 2 else np.moveaxis(got, -1, 0)
        assert np.array_equal(chw, want), rel


@pytest.mark.parametrize("demo", ["derm", "cxr"])
def test_other_site_same_patients_other_device(demo: str, tmp_path: Path) -> None:
    a = write_demo(DemoConfig(demo=demo, out=str(tmp_path / "a"), n_per_class=3, size=16,
                              workers=1))
    b = write_demo(DemoConfig(demo=demo, out=str(tmp_path / "b"), n_per_class=3, size=16,
                              workers=1, site="b"))
    ta, ia = _load(a.root)
    tb, ib = _load(b.root)
    assert (tb["site"] == "b").all() and b.manifest.outputs.get("site", "b") == "b"
    keep = [c for c in ta.columns if c not in ("skin_tone",)]
    pd.testing.assert_frame_equal(ta[keep], tb[keep])  # same patients, ids and splits
    assert all(not np.array_equal(ia[r], ib[r]) for r in ia)
    if demo == "derm":
        ma = np.mean([x.reshape(-1, 3).mean(0) for x in ia.values()], axis=0)
        mb = np.mean([x.reshape(-1, 3).mean(0) for x in ib.values()], axis=0)
        assert mb[0] / mb[2] > ma[0] / ma[2]  # site b's warm colour cast
    else:
        assert np.mean([x.mean() for x in ib.values()]) < np.mean([x.mean() for x in ia.values()])


def test_site_refused_where_it_means_nothing(tmp_path: Path) -> None:
    with pytest.raises(MedsynthError, match="unknown --site"):
        DemoConfig(demo="derm", out=str(tmp_path / "x"), site="z")
    with pytest.raises(MedsynthError, match="2D phantoms"):
        DemoConfig(demo="prostate", out=str(tmp_path / "x"), site="b")
