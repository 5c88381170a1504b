"""Duplicate images and split groups: what must never sit on both sides of a train/test split.

- **Exact duplicates**: the same decoded pixels (a hash of the array's dtype, shape and bytes,
  not of the file: a PNG and a re-encoded copy of it are one image).
- **Near duplicates**: the same picture up to small changes (re-compression, noise, a
  brightness or contrast change): grayscale 32 x 32 thumbnails, standardised, whose correlation
  is at least :data:`NEAR_CORRELATION`. Flat images (no structure) are never near duplicates;
  slices of one volume are not compared (neighbouring slices look alike by nature).
- **Groups** (:func:`union_groups`): images that belong together (slices of one volume, frames
  of one file, one DICOM series, study or patient, a CSV ``--group-by`` column) and duplicate
  groups are joined into split units, so that a generated split keeps each unit on one side.

The dataset records ``dup_group`` (duplicate group id, empty for unique images) and
``split_group`` (the unit's coarsest known key) in labels.csv and lists every duplicate in
``duplicates.csv`` (docs/artifacts.md).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

THUMB = 32
NEAR_CORRELATION = 0.99
"""Correlation of two thumbnails at or above which the images are near duplicates. Measured
(tests/data): a JPEG (quality 70) copy of a 64 px radiograph phantom >= 0.9995; distinct
phantoms of one class <= 0.988, MNI152 slices 5 mm apart median 0.97 (1 mm apart: 0.998, so
near duplicates are not searched between slices of one volume). On real files
(docs/intensities.md, "The near-duplicate threshold on real files"): lossy JPEG 2000, JPEG q50,
half-size and 5 % noise copies >= 0.993; distinct real images <= 0.67, neighbouring slices of
real CT/MR series <= 0.93."""
MAX_NEAR = 20_000
"""Above this many images the all-pairs near-duplicate search (O(n^2)) is skipped, with a note."""
DUPLICATES_CSV = "duplicates.csv"
GROUP_LEVELS = ("patient", "study", "series", "volume")
"""Group keys from coarse to fine; a unit is recorded by its coarsest key."""


def pixel_hash(arr: np.ndarray) -> str:
    """SHA-1 of the decoded array (dtype, shape and values)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def thumbnail(arr: np.ndarray) -> np.ndarray | None:
    """The image's perceptual fingerprint: grayscale (volumes: their depth mean), 32 x 32 box
    downsampled, zero mean and unit variance (brightness and contrast drop out), float16;
    None for a flat image."""
    from PIL import Image as PILImage

    a = np.asarray(arr, dtype=np.float32)
    while a.ndim > 2:
        a = a.mean(axis=0)
    a = np.nan_to_num(a)
    t = np.asarray(PILImage.fromarray(a, mode="F").resize((THUMB, THUMB), PILImage.BOX),
                   dtype=np.float64).reshape(-1)
    t = t - t.mean()
    sd = float(t.std())
    if sd <= 1e-6 * max(float(np.abs(a).max()), 1e-12):
        return None
    return (t / sd).astype(np.float16)


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def components(self) -> list[int]:
        return [self.find(i) for i in range(len(self.parent))]


def find_duplicates(hashes: Sequence[str], thumbs: Sequence[np.ndarray | None],
                    sources: Sequence[str | None] | None = None, *,
                    near: float = NEAR_CORRELATION
                    ) -> tuple[list[str | None], list[str | None], bool]:
    """Duplicate groups of images given their pixel hashes and thumbnails (:func:`thumbnail`).

    ``sources``: the volume each image was sliced from (None: its own file); near duplicates
    are not searched between slices of one volume. Returns ``(group, kind, near_searched)``:
    per image its group id (``d0001``, ...; None when unique) and ``exact`` (pixel-identical to
    another member) or ``near``; ``near_searched`` is False when the set was too large for the
    all-pairs near search (:data:`MAX_NEAR`; exact duplicates only).
    """
    n = len(hashes)
    u = _Union(n)
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h in first:
            u.join(first[h], i)
        else:
            first[h] = i
    searched = n <= MAX_NEAR
    if searched and near <= 1.0:
        # one representative per exact hash; flat images never match
        reps = [i for i, h in enumerate(hashes) if first[h] == i and thumbs[i] is not None]
        if len(reps) > 1:
            t = np.stack([np.asarray(thumbs[i], dtype=np.float32) for i in reps])
            t /= np.sqrt(t.shape[1])
            src = [sources[i] if sources is not None else None for i in reps]
            for s in range(0, len(reps), 512):
                c = t[s:s + 512] @ t.T
                for a, b in zip(*np.nonzero(c >= near), strict=True):
                    i, j = s + int(a), int(b)
                    if i < j and (src[i] is None or src[i] != src[j]):
                        u.join(reps[i], reps[j])
    comp = u.components()
    size = Counter(comp)
    ids: dict[int, str] = {}
    group: list[str | None] = []
    for c in comp:
        if size[c] < 2:
            group.append(None)
            continue
        ids.setdefault(c, f"d{len(ids) + 1:04d}")
        group.append(ids[c])
    copies = Counter(hashes)
    kind = [None if g is None else "exact" if copies[h] > 1 else "near"
            for g, h in zip(group, hashes, strict=True)]
    return group, kind, searched


def union_groups(keys: Sequence[Iterable[str]]) -> list[int]:
    """Split units: images sharing any key (group key or duplicate group) are one unit."""
    u = _Union(len(keys))
    first: dict[str, int] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            if k in first:
                u.join(first[k], i)
            else:
                first[k] = i
    return u.components()


def drop_shared_levels(keys: list[list[str]]) -> tuple[list[list[str]], dict[str, str]]:
    """Group keys without the levels every image shares one value of (an anonymised
    PatientID, one study): those cannot split anything. Returns the keys and ``{level:
    value}`` of the levels dropped."""
    dropped: dict[str, str] = {}
    if len(keys) < 2:
        return keys, dropped
    for level in sorted({k.split(":", 1)[0] for ks in keys for k in ks}):
        values = [[k for k in ks if k.split(":", 1)[0] == level] for ks in keys]
        if all(v for v in values) and len({k for v in values for k in v}) == 1:
            dropped[level] = values[0][0].split(":", 1)[1]
    if dropped:
        keys = [[k for k in ks if k.split(":", 1)[0] not in dropped] for ks in keys]
    return keys, dropped


def coarsest(keys: Iterable[str]) -> str | None:
    """The coarsest group key of an image (patient before study, series, volume, others)."""
    ks = list(keys)
    for level in GROUP_LEVELS:
        for k in ks:
            if k.startswith(level + ":"):
                return k
    return ks[0] if ks else None


def summarize(table: Any, group_col: str = "dup_group", kind_col: str = "dup_kind",
              examples: int = 10) -> dict[str, Any]:
    """Counts of a table with duplicate groups (columns image_id, class, split, ``group_col``):
    groups and images exact/near, groups spanning classes, splits, train and test; the first
    ``examples`` groups listed."""
    rows = table[table[group_col].notna() & (table[group_col].astype(str) != "")]
    out: dict[str, Any] = {"n_images": int(len(table)), "groups": 0, "images_in_groups": 0,
                           "exact_groups": 0, "near_groups": 0, "extra_copies": 0,
                           "across_classes": 0, "across_splits": 0, "train_test": 0,
                           "listed": []}
    for g, part in rows.groupby(group_col, sort=True):
        splits = {str(s) for s in part["split"] if isinstance(s, str)}
        exact = kind_col in part and (part[kind_col] == "exact").all()
        out["groups"] += 1
        out["images_in_groups"] += len(part)
        out["extra_copies"] += len(part) - 1
        out["exact_groups" if exact else "near_groups"] += 1
        out["across_classes"] += int(part["class"].nunique() > 1)
        out["across_splits"] += int(len(splits) > 1)
        leak = "test" in splits and bool(splits & {"train", "val"})
        out["train_test"] += int(leak)
        if len(out["listed"]) < examples:
            out["listed"].append({
                "group": str(g), "kind": "exact" if exact else "near",
                "images": [f"{r['image_id']} ({r['class']}, {r['split']})"
                           for _, r in part.head(6).iterrows()],
                "n": int(len(part))})
    return out


def leak_example(table: Any, column: str) -> tuple[int, str] | None:
    """How many values of ``column`` sit in test and in train/val, and one example pair
    ('a (train) and b (test)'); None when none does."""
    if column not in table.columns:
        return None
    rows = table[table[column].notna() & (table[column].astype(str) != "")]
    n, example = 0, None
    for _, part in rows.groupby(column, sort=True):
        test = part[part["split"] == "test"]
        seen = part[part["split"].isin(["train", "val"])]
        if test.empty or seen.empty:
            continue
        n += 1
        if example is None:
            a, b = seen.iloc[0], test.iloc[0]
            example = f"{a['image_id']} ({a['split']}) and {b['image_id']} (test)"
    return (n, str(example)) if n else None
