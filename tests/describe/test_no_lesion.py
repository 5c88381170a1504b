"""describe on images without a whole lesion (skin texture patches cut from the phantoms) says
"no whole lesion" with the schema's not-visible value, not "a 0.0 mm symmetric lesion"; images
with a lesion are described as before."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medsynth.describe.config import DescribeConfig
from medsynth.describe.measured import DERM_LESION_ATTRIBUTES
from medsynth.describe.run import run_describe
from medsynth.imaging.dataset import finish_dataset
from medsynth.imaging.save import save_png
from medsynth.store import open_store
from tests.pixel_attributes.patches import MM_PER_PX, skin_patches, whole_lesions


def test_skin_patches_are_no_lesion(tmp_path: Path) -> None:
    rows = []
    images = [("skin", a) for a in skin_patches(4)] + [("lesion", a) for a in whole_lesions(2)]
    for k, (cls, arr) in enumerate(images):
        rel = f"images/{cls}/{k}.png"
        save_png(arr, tmp_path / "ds" / rel)
        rows.append({"image_id": f"{cls}_{k}", "path": rel, "class": cls, "split": "train"})
    ds = tmp_path / "ds"
    finish_dataset(ds, pd.DataFrame(rows), config={}, classes=["lesion", "skin"],
                        channels=3, dtype="uint8", modality="XC",
                        extra={"mm_per_px": MM_PER_PX})
    s = run_describe(DescribeConfig(dataset=str(ds), out=str(tmp_path / "store")), progress=False)
    assert (s.described, s.failed) == (6, 0)
    st = open_store(tmp_path / "store")
    for r in st.records("skin"):
        assert r.text == "No whole lesion found in the image."
        assert all(r.attributes[a] == "not_visible" for a in DERM_LESION_ATTRIBUTES)
        assert r.attributes["lesion"] == "none" and "center_x" not in r.attributes
        assert isinstance(r.attributes["skin_tone"], int)  # the skin is still measured
    for r in st.records("lesion"):
        assert r.text.startswith("A ") and " mm " in r.text and "lesion with" in r.text
        assert r.attributes["diameter_mm"] > 1.5 and "lesion" not in r.attributes
