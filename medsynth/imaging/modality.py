"""What a modality allows: the one definition of the flips that cannot change a diagnosis.

Flips are safe only where an image has no orientation that carries meaning: dermoscopy and
clinical photos (XC), microscopy (SM, GM) have neither left/right nor up/down; endoscopy (ES)
has no left/right, but up/down follows gravity (fluid levels) and the scope's orientation, so it
is not flipped vertically. Radiographs, CT and MR are never flipped: a flip moves the heart to
the right and swaps left/right findings. Used by train (augmentation) and evaluate (the
downstream classifier's augmentation).
"""

from __future__ import annotations

from collections import Counter

HFLIP_OK = frozenset({"XC", "SM", "GM", "ES"})
"""Modalities whose images have no left/right meaning."""
VFLIP_OK = frozenset({"XC", "SM", "GM"})
"""Modalities whose images have no up/down meaning either."""


def allowed_flips(modality: str) -> tuple[bool, bool]:
    """(horizontal, vertical) flips that keep the diagnosis of an image of ``modality``."""
    m = str(modality).upper()
    return m in HFLIP_OK, m in VFLIP_OK


def unit_kinds(modalities: dict[str, int] | Counter[str]) -> dict[str, list[str]]:
    """The kinds of pixel values of a set's modalities: ``{"HU": ["CT"], "display values":
    ["CR"], ...}`` (more than one kind: the set mixes units)."""
    unit = {"CT": "HU", "MR": "MR scanner units", "PT": "counts/SUV", "NM": "counts/SUV"}
    out: dict[str, list[str]] = {}
    for m in sorted(modalities):
        out.setdefault(unit.get(m, "display values"), []).append(m)
    return out
