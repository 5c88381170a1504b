"""``medsynth data demo derm|cxr|prostate``: write a built-in PHANTOM dataset with ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

demo_app = typer.Typer(
    help="Write a built-in demo dataset of procedural PHANTOM images with ground-truth attributes.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write (images/<class>/*.png, labels.csv, medsynth.json).")]
NPerClass = Annotated[int, typer.Option("--n-per-class", help="Images per class (balanced classes).")]
Seed = Annotated[int, typer.Option(help="Seed of everything; the same seed writes byte-identical images and labels.")]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing dataset folder at --out.")]
Workers = Annotated[int, typer.Option(help="Worker processes (0 = automatic, up to 2); the output does not depend on it.")]
ValFraction = Annotated[float, typer.Option("--val-fraction", help="Share of each class in the validation split.")]
Site = Annotated[str, typer.Option(help="Acquisition site: a = the reference phantoms; b, c = other sites (colour calibration, illumination, contrast curve, noise, skin-tone mix, film exposure; docs/demo-data.md), e.g. a public set from another hospital.")]
TestFraction = Annotated[float, typer.Option("--test-fraction", help="Share of each class in the held-out test split (evaluate's test set; a bigger one gives tighter intervals).")]


def _run(demo: str, out: Path, n_per_class: int, size: int, seed: int, overwrite: bool,
         workers: int, val_fraction: float, test_fraction: float, site: str = "a") -> None:
    import time

    from medsynth.data.demo.common import DemoConfig, write_demo
    from medsynth.ui import console

    cfg = DemoConfig(demo=demo, out=str(out), n_per_class=n_per_class, size=size, seed=seed,
                     overwrite=overwrite, workers=workers, val_fraction=val_fraction,
                     test_fraction=test_fraction, site=site)
    t0 = time.perf_counter()
    ds = write_demo(cfg)
    what = "volumes" if ds.manifest.outputs.get("spatial_dims") == 3 else "images"
    unit = "voxels" if what == "volumes" else "px"
    console.print(f"[green]wrote[/] {len(ds.table)} {demo} PHANTOM {what} ({len(ds.classes)} "
                  f"classes, {cfg.size} {unit}) to {ds.root} in {time.perf_counter() - t0:.1f} s")


@demo_app.command("derm")
def derm_cmd(
    out: Out,
    n_per_class: NPerClass = 200,
    size: Annotated[int, typer.Option(help="Image side in pixels (the field of view is always 20 mm).")] = 64,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    workers: Workers = 0,
    val_fraction: ValFraction = 0.1,
    test_fraction: TestFraction = 0.2,
    site: Site = "a",
) -> None:
    """Dermoscopy-like RGB phantoms: melanoma, nevus, seborrheic_keratosis (ABCD-rule attributes)."""
    _run("derm", out, n_per_class, size, seed, overwrite, workers, val_fraction, test_fraction,
         site)


@demo_app.command("cxr")
def cxr_cmd(
    out: Out,
    n_per_class: NPerClass = 200,
    size: Annotated[int, typer.Option(help="Image side in pixels (the field of view is always 430 mm).")] = 128,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    workers: Workers = 0,
    val_fraction: ValFraction = 0.1,
    test_fraction: TestFraction = 0.2,
    site: Site = "a",
) -> None:
    """16-bit PA chest radiograph-like phantoms: normal, pneumonia, pleural_effusion, cardiomegaly."""
    _run("cxr", out, n_per_class, size, seed, overwrite, workers, val_fraction, test_fraction,
         site)


@demo_app.command("prostate")
def prostate_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write (images/<class>/*.nii.gz, labels.csv with a report per volume, medsynth.json).")],
    n_per_class: NPerClass = 100,
    size: Annotated[int, typer.Option(help="Volume side in voxels, 16-192 (the field of view is always 64 mm: 1 mm voxels at 64).")] = 64,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    workers: Workers = 0,
    val_fraction: ValFraction = 0.1,
    test_fraction: TestFraction = 0.2,
) -> None:
    """3D T2-weighted prostate MRI-like phantoms (NIfTI, RAS): no_lesion, pirads_3, pirads_4_5."""
    _run("prostate", out, n_per_class, size, seed, overwrite, workers, val_fraction,
         test_fraction)
