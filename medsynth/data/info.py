"""``medsynth data info``: what a source holds (classes, splits, sizes, channels, bit depth)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from medsynth.data.sources import scan_source
from medsynth.errors import MedsynthError
from medsynth.imaging import duplicates as dups
from medsynth.imaging.dataset import META_COLUMNS


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
    duplicates: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Exact/near duplicate groups (medsynth.imaging.duplicates.summarize)."""
    groups: dict[str, int] = dataclasses.field(default_factory=dict)
    """Split groups by level (patient, study, series, ...) -> number of groups."""
    group_leaks: dict[str, Any] | None = None
    """Groups with images in train/val and test: {n, example}; None when none."""
    notes: list[str] = dataclasses.field(default_factory=list)

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
        from medsynth.imaging.dataset import open_dataset

        outputs = open_dataset(path).manifest.outputs
        info.phantom = bool(outputs.get("phantom", False))
    info.notes = list(src.notes)
    track = progress if progress is not None else (lambda it, **_: it)
    rows: list[dict[str, Any]] = []
    hashes, thumbs, all_keys = [], [], []
    alpha = 0
    for _, item in track(list(src.items.iterrows()), description="reading"):  # type: ignore[operator]
        try:
            img = src.load(item["key"])
        except MedsynthError as e:
            if not skip_bad:
                raise
            info.bad.append(str(e))
            continue
        hashes.append(dups.pixel_hash(img.array))
        thumbs.append(dups.thumbnail(img.array))
        alpha += bool(img.meta.get("alpha"))
        group = item.get("split_group") if "split_group" in item.index else None
        keys = [f"{lv}:{img.meta[m]}" for lv, m in (("patient", "patient_id"), ("study", "study_uid"),
                                                    ("series", "series_uid")) if img.meta.get(m)]
        rows.append({"image_id": str(item.get("image_id", Path(str(item["key"])).name)),
                     "class": str(item["class"]),
                     "split": item["split"] if isinstance(item["split"], str) else "unsplit",
                     "split_group": group if isinstance(group, str) and group else None})
        all_keys.append(keys)
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
    if alpha:
        info.notes.append(f"{alpha} image(s) have an alpha channel (RGBA/LA): import drops it")
    if rows:
        import pandas as pd

        table = pd.DataFrame(rows)
        groups, kinds, searched = dups.find_duplicates(hashes, thumbs)
        table["dup_group"], table["dup_kind"] = groups, kinds
        shared, dropped = dups.drop_shared_levels(all_keys)
        table["split_group"] = [g if g else dups.coarsest(ks)
                                for g, ks in zip(table["split_group"], shared, strict=True)]
        info.notes += [f"every image has the same {lv} ({v}): groups by finer levels"
                       for lv, v in dropped.items()]
        info.duplicates = {**dups.summarize(table), "near_searched": searched}
        col = table["split_group"].dropna().astype(str)
        info.groups = dict(sorted(Counter(v.split(":", 1)[0] for v in col.unique()).items()))
        leak = dups.leak_example(table, "split_group")
        info.group_leaks = {"n": leak[0], "example": leak[1]} if leak else None
    return info
