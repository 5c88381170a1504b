"""Contact sheets of the demo phantoms: one row per class, as the docs show them.

    python -m medsynth.data.demo.sheet docs/images        # demo_derm.png and demo_cxr.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def contact_sheet(demo: str, per_class: int = 8, size: int | None = None, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 grid: a row per class of ``per_class`` images rendered at ``size``."""
    from medsynth.data.demo.common import DEFAULT_SIZE, _module

    mod = _module(demo)
    size = size or DEFAULT_SIZE[demo]
    rows = []
    for cls in mod.CLASSES:
        tiles = []
        for i in range(per_class):
            a = mod.render(cls, i, size, seed)[0]
            if a.dtype == np.uint16:  # 16-bit for display: 8 bits, full range
                a = (a.astype(np.float64) / 257).round().astype(np.uint8)
            if a.shape[0] == 1:
                a = np.repeat(a, 3, 0)
            tiles.append(np.pad(np.moveaxis(a, 0, -1), ((2, 2), (2, 2), (0, 0)), constant_values=255))
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def main(argv: list[str]) -> None:
    from PIL import Image

    folder = Path(argv[0] if argv else "docs/images")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet("derm", 8, 128)).save(folder / "demo_derm.png", optimize=True)
    Image.fromarray(contact_sheet("cxr", 6, 192)).save(folder / "demo_cxr.png", optimize=True)
    print(f"wrote {folder / 'demo_derm.png'} and {folder / 'demo_cxr.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
