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


def test_evaluate_warns_on_shared_images_and_reports_no_reference(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """End to end: a test split of 4 images, 2 of them copies of training images (recorded as
    one dup_group by data import): warnings, and "no reference" instead of a share."""
    import json
    import shutil

    from typer.testing import CliRunner

    from medsynth.cli import app
    from medsynth.imaging.dataset import finish_dataset, open_dataset

    from .conftest import make_dataset, make_model, make_synthetic

    data = make_dataset(tmp_path / "gray", n_per_class=10, gray16=True)
    ds = open_dataset(data)
    t = ds.table.copy()
    t = t[t["split"] != "test"].reset_index(drop=True)
    t["dup_group"] = None
    new = []
    for k, (_, row) in enumerate(t[t["split"] == "train"].head(2).iterrows()):
        rel = row["path"].replace(".png", "_copy.png")
        shutil.copy(data / row["path"], data / rel)
        t.loc[t["image_id"] == row["image_id"], "dup_group"] = f"d{k + 1:04d}"
        new.append({**row.to_dict(), "image_id": row["image_id"] + "_copy", "path": rel,
                    "split": "test", "dup_group": f"d{k + 1:04d}"})
    for cls in ds.classes[:2]:  # two distinct test images
        row = t[(t["class"] == cls) & (t["split"] == "val")].iloc[0]
        t.loc[t["image_id"] == row["image_id"], "split"] = "test"
    t = pd.concat([t, pd.DataFrame(new)], ignore_index=True)
    finish_dataset(data, t, config={"fixture": "dups"}, classes=ds.classes, channels=1,
                   dtype="uint16", modality="DX")
    synth = make_synthetic(tmp_path / "s", data, make_model(tmp_path / "m", data), n_per_class=4)
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["evaluate", "--real", str(data), "--synthetic", str(synth),
                                   "--out", str(out), "--no-benchmark", "--epochs", "1",
                                   "--feature-size", "32"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "1 duplicate group(s)" not in text and "2 duplicate group(s)" in text
    assert "2 of 4 real test image(s) have an exact copy" in text
    assert "no reference" in text
    m = json.loads((out / "metrics.json").read_text())
    assert any("dup_group in labels.csv" in w for w in m["warnings"])
    p = m["privacy"]["sets"]["s"]["feature"]
    assert p["threshold"] is None and p["near_copy_share"] is None and "4 held-out" in \
        p["no_reference"]
    assert m["privacy"]["reference"]["with_copy"] == 2
    assert "No reference, so no near-copy share" in (out / "report.html").read_text()
