"""evaluate's privacy reference on real sets with duplicates and groups (issue 26 item 2)."""

from __future__ import annotations

import pandas as pd
import torch

from medsynth.evaluate.inputs import ImageSet
from medsynth.evaluate.privacy import privacy_report, privacy_warnings


def _sets(n_train: int = 20, n_copies: int = 8, n_new: int = 12
          ) -> tuple[ImageSet, ImageSet, ImageSet, pd.DataFrame]:
    g = torch.Generator().manual_seed(0)
    train = torch.rand(n_train, 1, 8, 8, generator=g)
    test = torch.cat([train[:n_copies], torch.rand(n_new, 1, 8, 8, generator=g)])
    twins = (train + 0.01 * torch.randn(train.shape, generator=g)).clamp(0, 1)
    y = lambda n: torch.zeros(n, dtype=torch.long)  # noqa: E731
    tr = ImageSet("real-train", train, y(n_train), [f"tr{i}" for i in range(n_train)])
    te = ImageSet("real-test", test, y(len(test)), [f"te{i}" for i in range(len(test))])
    sy = ImageSet("twin", twins, y(n_train), [f"s{i}" for i in range(n_train)])
    table = pd.DataFrame({"image_id": tr.ids + te.ids, "class": "a",
                          "split": ["train"] * n_train + ["test"] * len(test)})
    return tr, te, sy, table


def _run(tr: ImageSet, te: ImageSet, sy: ImageSet, table: pd.DataFrame | None) -> dict:
    feats = lambda s: s.x.reshape(len(s), -1) + 0.1  # noqa: E731  (pixels as features)
    m, _ = privacy_report(tr, te, feats(tr), feats(te), {"twin": sy}, {"twin": feats(sy)},
                          q=0.01, n_pairs=2, classes=["a"], table=table)
    return m


def test_exact_copies_in_test_do_not_set_the_threshold_to_zero() -> None:
    tr, te, sy, table = _sets()
    m = _run(tr, te, sy, table)
    assert m["reference"]["with_copy"] == 8 and m["reference"]["kept"] == 20
    for space in ("feature", "pixel"):
        s = m["sets"]["twin"][space]
        assert s["threshold"] > 0 and s["near_copy_share"] == 1.0  # 40 % copies: still caught
    assert any("8 of 20 real test image(s) have an exact copy" in w for w in privacy_warnings(m))


def test_group_mates_are_left_out_and_too_few_give_no_reference() -> None:
    tr, te, sy, table = _sets(n_train=6, n_copies=0, n_new=6)
    # test image k belongs to the patient of train image k: none may calibrate
    table["split_group"] = [f"patient:{i}" for i in range(6)] * 2
    table.loc[6:, "split_group"] = [f"patient:{i}" for i in range(6)]
    m = _run(tr, te, sy, table)
    assert m["reference"]["group_pairs"] == 6 and m["reference"]["kept"] == 6
    # every test image shares a group with every train image: nothing left to calibrate
    table["split_group"] = "patient:one"
    m = _run(tr, te, sy, table)
    s = m["sets"]["twin"]["pixel"]
    assert s["threshold"] is None and s["near_copy_share"] is None
    assert "0 held-out real image(s)" in s["no_reference"]
    assert any("no reference" in w for w in privacy_warnings(m))
