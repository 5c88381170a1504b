"""``medsynth data info``: what a source holds (classes, splits, sizes, channels, bit depth)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from medsynth.data.dataset import META_COLUMNS
from medsynth.data.sources import scan_source
from medsynth.errors import MedsynthError


@dataclasses.dataclass
class SourceInfo:
    path: str
    kind: str
    counts: dict[str, dict[str, int]]
    """class -> split -> n ('unsplit' where the source gives no split)."""
    sizes: Counter[str]
    channels: Counter[int]
    dtypes: Counter[str]
    bit_depths: Counter[int]
    modalities: Counter[str]
    bad: list[str]
    attributes: list[str]
    phantom: bool = False
    spacings: Counter[str] = dataclasses.field(default_factory=Counter)
    """Pixel/voxel spacing in mm (array axis order) -> n images, where known."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("sizes", "channels", "dtypes", "bit_depths", "modalities", "spacings"):
            d[k] = {str(a): b for a, b in getattr(self, k).items()}
        return d


def source_info(path: str | Path, *, skip_bad: bool = False, progress: object | None = None,
                classes: list[str] | None = None) -> SourceInfo:
    src = scan_source(path, classes=classes)
    info = SourceInfo(str(path), src.kind, {}, Counter(), Counter(), Counter(), Counter(), Counter(), [],
                      [c for c in src.items.columns
                       if c not in ("key", "class", "split", "image_id", *META_COLUMNS)])
    if src.kind == "dataset":
        from medsynth.data.dataset import open_dataset

        outputs = open_dataset(path).manifest.outputs
        info.phantom = bool(outputs.get("phantom", False))
    track = progress if progress is not None else (lambda it, **_: it)
    for _, item in track(list(src.items.iterrows()), description="reading"):  # type: ignore[operator]
        try:
            img = src.load(item["key"])
        except MedsynthError as e:
            if not skip_bad:
                raise
            info.bad.append(str(e))
            continue
        split = item["split"] if isinstance(item["split"], str) else "unsplit"
        per = info.counts.setdefault(str(item["class"]), {})
        per[split] = per.get(split, 0) + 1
        info.sizes["x".join(str(s) for s in img.spatial_shape)] += 1
        info.channels[img.channels] += 1
        info.dtypes[str(img.array.dtype)] += 1
        info.bit_depths[int(img.meta.get("bits_stored", img.bit_depth))] += 1
        info.modalities[img.modality] += 1
        if img.spacing:
            info.spacings[" x ".join(f"{v:.3g}" for v in img.spacing) + " mm"] += 1
    return info
