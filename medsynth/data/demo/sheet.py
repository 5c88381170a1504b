"""Contact sheets and attribute tables of the demo phantoms, as docs/demo-data.md shows them.

    python -m medsynth.data.demo.sheet docs/images            # demo_derm/cxr/prostate.png
    python -m medsynth.data.demo.sheet --summary DATASET      # per-class attribute table (Markdown)
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


def volume_sheet(per_class: int = 3, size: int = 64, seed: int = 0, tile: int = 160) -> np.ndarray:
    """(H, W) uint8 grid of the prostate phantom: a row per class, ``per_class`` volumes each
    shown as axial | coronal | sagittal slices through the lesion (the gland's centre without
    one), in radiological display orientation (:mod:`medsynth.imaging.views`). The window runs
    from 0 to the 99th percentile of the central half of the volume (urine saturates, as on a
    T2 reading window)."""
    from medsynth.data.demo import prostate
    from medsynth.imaging.views import grid, orthogonal_strip

    rows = []
    q = size // 4
    for cls in prostate.CLASSES:
        strips = []
        for i in range(per_class):
            a, row = prostate.render(cls, i, size, seed)
            point = None
            if row["zone"] != "none":
                point = (row["center_x_mm"], row["center_y_mm"], row["center_z_mm"])
            high = float(np.percentile(a[0, q:-q, q:-q, q:-q], 99))
            strips.append(orthogonal_strip(a, prostate.affine(size), point, tile=tile,
                                           window=(0.0, high)))
        rows.append(strips)
    return grid(rows, gap=6)


def _pct(x: object) -> str:
    return f"{100 * float(x):.0f}%"  # type: ignore[arg-type]


def summary_markdown(path: str | Path) -> str:
    """Per-class ground-truth distributions of a demo dataset as a Markdown table."""
    from medsynth.imaging.dataset import open_dataset

    ds = open_dataset(path)
    t = ds.table
    demo = ds.manifest.outputs.get("demo")
    stats: dict[str, dict[str, str]] = {}
    for cls in ds.classes:
        c = t[t["class"] == cls]
        r: dict[str, str] = {"images": str(len(c))}
        if demo == "derm":
            from medsynth.data.demo.derm import COLOR_VOCAB, STRUCTURE_VOCAB

            r["diameter_mm mean ± sd (min-max)"] = (f"{c.diameter_mm.mean():.1f} ± {c.diameter_mm.std():.1f} "
                                                  f"({c.diameter_mm.min():.1f}-{c.diameter_mm.max():.1f})")
            r["asymmetry 0 / 1 / 2 axes"] = " / ".join(_pct((c.asymmetry == k).mean()) for k in range(3))
            r["border_irregularity mean"] = f"{c.border_irregularity.mean():.2f}"
            r["border irregular"] = _pct((c.border == "irregular").mean())
            r["n_colors mean"] = f"{c.n_colors.mean():.2f}"
            for col in COLOR_VOCAB:
                r[f"colour {col}"] = _pct(c.colors.str.split(";").map(lambda v, k=col: k in v).mean())
            for st in STRUCTURE_VOCAB:
                r[f"structure {st}"] = _pct(c.structures.str.split(";").map(lambda v, k=st: k in v).mean())
            r["no structure"] = _pct((c.structures == "none").mean())
            r["skin_tone mean"] = f"{c.skin_tone.mean():.2f}"
            r["hair: images with hair / mean count"] = f"{_pct((c.hair > 0).mean())} / {c.hair.mean():.1f}"
        elif demo == "prostate":
            for z in ("peripheral", "transition", "none"):
                r[f"zone {z}"] = _pct((c.zone == z).mean())
            for side in ("left", "right"):
                r[f"side {side}"] = _pct((c.side == side).mean())
            for lv in ("base", "mid", "apex"):
                r[f"level {lv}"] = _pct((c.level == lv).mean())
            les = c[c.zone != "none"]
            if len(les):
                r["diameter_mm mean ± sd (min-max)"] = (
                    f"{les.diameter_mm.mean():.1f} ± {les.diameter_mm.std():.1f} "
                    f"({les.diameter_mm.min():.1f}-{les.diameter_mm.max():.1f})")
                r["t2_hypointensity mean (min-max)"] = (
                    f"{les.t2_hypointensity.mean():.2f} ({les.t2_hypointensity.min():.2f}-"
                    f"{les.t2_hypointensity.max():.2f})")
            else:
                r["diameter_mm mean ± sd (min-max)"] = "-"
                r["t2_hypointensity mean (min-max)"] = "-"
            r["margin circumscribed / ill_defined"] = (
                f"{_pct((c.margin == 'circumscribed').mean())} / "
                f"{_pct((c.margin == 'ill_defined').mean())}")
            r["extraprostatic extension"] = _pct((c.extraprostatic_extension == "yes").mean())
            r["PI-RADS 1 / 2 / 3 / 4 / 5"] = " / ".join(_pct((c.pirads == k).mean())
                                                        for k in range(1, 6))
            r["gland_volume_ml mean ± sd"] = (f"{c.gland_volume_ml.mean():.1f} ± "
                                              f"{c.gland_volume_ml.std():.1f}")
        else:
            for side in ("right", "left", "bilateral", "none"):
                r[f"side {side}"] = _pct((c.side == side).mean())
            for zone in ("upper", "middle", "lower", "none"):
                r[f"zone {zone}"] = _pct((c.zone == zone).mean())
            r["opacity_extent mean ± sd"] = f"{c.opacity_extent.mean():.2f} ± {c.opacity_extent.std():.2f}"
            r["ctr mean ± sd (min-max)"] = f"{c.ctr.mean():.3f} ± {c.ctr.std():.3f} ({c.ctr.min():.2f}-{c.ctr.max():.2f})"
            r["thorax_width_px mean"] = f"{c.thorax_width_px.mean():.1f}"
        stats[cls] = r
    keys = list(next(iter(stats.values())))
    lines = ["| attribute | " + " | ".join(ds.classes) + " |",
             "| --- | " + " | ".join("---:" for _ in ds.classes) + " |"]
    lines += [f"| {k} | " + " | ".join(stats[c][k] for c in ds.classes) + " |" for k in keys]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--summary":
        print(summary_markdown(argv[1]))
        return
    from PIL import Image

    folder = Path(argv[0] if argv else "docs/images")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet("derm", 8, 128)).save(folder / "demo_derm.png", optimize=True)
    Image.fromarray(contact_sheet("cxr", 6, 192)).save(folder / "demo_cxr.png", optimize=True)
    Image.fromarray(volume_sheet(3, 64)).save(folder / "demo_prostate.png", optimize=True)
    print(f"wrote {folder / 'demo_derm.png'}, {folder / 'demo_cxr.png'} and "
          f"{folder / 'demo_prostate.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
