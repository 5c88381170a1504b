"""``medsynth data ...``: look at, import and make datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medsynth.choices import InitResize, Normalize, PixelType, Voi
from medsynth.options import choice_option

data_app = typer.Typer(
    help="Inspect a source, import it into a dataset folder, or write a built-in demo dataset.",
    no_args_is_help=True,
)

SkipBad = Annotated[
    bool, typer.Option("--skip-bad", help="Skip unreadable files and list them, instead of stopping at the first.")
]
Classes = Annotated[
    str | None,
    typer.Option("--classes", help="Comma-separated class names for the integer labels of a .npz file "
                 "(known MedMNIST sets are named automatically)."),
]


def _split_classes(classes: str | None) -> list[str] | None:
    from medsynth.choices import comma_list

    return comma_list(classes) or None


def _numbers(text: str | None, option: str) -> list[float] | None:
    """'0.5,0.5,3' -> [0.5, 0.5, 3.0]; a BadUsageError naming the option otherwise."""
    from medsynth.choices import comma_list
    from medsynth.errors import BadUsageError

    if text is None:
        return None
    try:
        return [float(v) for v in comma_list(text.replace("x", ","))]
    except ValueError:
        raise BadUsageError(f"{option}: give comma-separated numbers, e.g. 0.5,0.5,3 (not "
                            f"{text!r})") from None


@data_app.command("info")
def info_cmd(
    path: Annotated[Path, typer.Argument(help="Image folder (root/<class>/*), CSV (path,label[,split]), "
                                         "MedMNIST .npz, folder of DICOM/NIfTI files, or dataset folder.")],
    skip_bad: SkipBad = False,
    classes: Classes = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")] = False,
) -> None:
    """Print classes, counts per split, image sizes, channels, bit depth and modality of a source."""
    from rich.table import Table
    from rich.text import Text

    from medsynth.data.info import source_info
    from medsynth.ui import out, track

    info = source_info(path, skip_bad=skip_bad, progress=track, classes=_split_classes(classes))
    if as_json:
        out.print_json(json.dumps(info.to_dict()))
        return
    splits = sorted({s for per in info.counts.values() for s in per},
                    key=lambda s: ["train", "val", "test", "unsplit"].index(s))
    title = f"{info.path} ({info.kind}{', PHANTOM demo data' if info.phantom else ''})"
    t = Table(title=title)
    t.add_column("class")
    for s in splits:
        t.add_column(s, justify="right")
    t.add_column("total", justify="right", style="bold")
    for k, cls in enumerate(sorted(info.counts)):
        per = info.counts[cls]
        # class names are data (a class may be called "all" or hold [brackets])
        t.add_row(Text(cls), *[str(per.get(s, 0)) for s in splits], str(sum(per.values())),
                  end_section=k == len(info.counts) - 1)
    t.add_row(Text("(all classes)", style="bold"),
              *[str(sum(p.get(s, 0) for p in info.counts.values())) for s in splits],
              str(sum(sum(p.values()) for p in info.counts.values())))
    out.print(t)
    p = Table(show_header=False, title="images")
    fmt = lambda c: ", ".join(f"{k} ({v})" for k, v in c.most_common(6))  # noqa: E731
    p.add_row("sizes (D x H x W)" if any(k.count("x") == 2 for k in info.sizes) else "sizes (H x W)",
              fmt(info.sizes))
    p.add_row("channels", fmt(info.channels))
    p.add_row("dtype", fmt(info.dtypes))
    p.add_row("bit depth", fmt(info.bit_depths))
    p.add_row("modality", fmt(info.modalities))
    if info.spacings:
        p.add_row("spacing", fmt(info.spacings))
    if info.attributes:
        p.add_row("attributes", ", ".join(info.attributes))
    out.print(p)
    _print_duplicates(out, info)
    for note in info.notes:
        out.print("[cyan]note[/] ", end="")
        out.print(note, markup=False, soft_wrap=True)
    if info.bad:
        out.print(f"[yellow]{len(info.bad)} unreadable file(s) skipped:[/]")
        for b in info.bad:
            out.print(f"  {b}", markup=False)


def _print_duplicates(out: Any, info: Any) -> None:
    """The duplicates and groups of ``data info``: counts, then the first groups."""
    from rich.table import Table
    from rich.text import Text

    d, groups, leaks = info.duplicates, info.groups, info.group_leaks
    if groups or leaks:
        line = "split groups: " + (", ".join(f"{n} {lv} group(s)" for lv, n in groups.items())
                                   or "none")
        if leaks:
            line += (f"; {leaks['n']} group(s) have images in train/val and test, e.g. "
                     f"{leaks['example']}")
        out.print(Text(line, style="yellow" if leaks else ""), soft_wrap=True)
    if not d:
        return
    if not d["groups"]:
        out.print(f"duplicates: none among {d['n_images']} images ("
                  + ("exact and near copies searched)" if d.get("near_searched") else
                     "exact copies searched; too many images for the near search)"))
        return
    t = Table(title="duplicates", show_header=False)
    t.add_row("groups", f"{d['groups']} ({d['exact_groups']} exact, {d['near_groups']} near) "
              f"holding {d['images_in_groups']} of {d['n_images']} images "
              f"({d['extra_copies']} extra copies)")
    t.add_row("within one class", str(d["groups"] - d["across_classes"]))
    t.add_row("across classes", str(d["across_classes"]))
    t.add_row("across splits", str(d["across_splits"]))
    t.add_row("train/val and test", Text(str(d["train_test"]),
                                         style="bold red" if d["train_test"] else ""))
    out.print(t)
    g = Table(title=f"duplicate groups (first {len(d['listed'])})")
    g.add_column("group")
    g.add_column("kind")
    g.add_column("n", justify="right")
    g.add_column("images (class, split)")
    for row in d["listed"]:
        g.add_row(row["group"], row["kind"], str(row["n"]), Text(
            ", ".join(row["images"]) + (" ..." if row["n"] > len(row["images"]) else "")))
    out.print(g)
    out.print("medsynth data import keeps each group in one split (of a source without "
              "one); its --dedup keeps one image of each group", soft_wrap=True)


@data_app.command("import")
def import_cmd(
    source: Annotated[Path, typer.Argument(help="Image folder, CSV, MedMNIST .npz or folder of DICOM/NIfTI files.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write (images + labels.csv + medsynth.json).")],
    size: Annotated[int | None, typer.Option(
        help="Resize images and volumes to SIZE on every axis, voxel aspect kept (see --resize); "
        "spacing and affine follow.")] = None,
    resize: Annotated[InitResize, choice_option(InitResize,
        help="How to fit the aspect ratio when resizing: pad (letterbox) or crop (centre).")] = "pad",
    seed: Annotated[int, typer.Option(help="Seed of the stratified split, when the source gives none.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of each class for validation (generated split only).")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="Share of each class for the held-out test set (generated split only).")] = 0.2,
    classes: Classes = None,
    voi: Annotated[Voi, choice_option(Voi,
        help="DICOM VOI LUT / window: auto (radiographs only), yes (every image with one: 16-bit "
        "display values), no.")] = "auto",
    dtype: Annotated[PixelType, choice_option(PixelType,
        help="Pixel type of the dataset: auto (one rule, docs/intensities.md), uint8, uint16, "
        "int16 (CT Hounsfield units) or float32; values are converted exactly, floats rounded.")] = "auto",
    modality: Annotated[str | None, typer.Option(
        help="DICOM modality code of every image (CT, MR, CR, DX, XC, ...); default: each "
        "DICOM file's own, OT where the file has none (PNG, JPEG, NIfTI).")] = None,
    slices: Annotated[bool, typer.Option(
        help="Import 3D volumes (NIfTI, multi-frame DICOM) as their 2D slices along the first axis.")] = False,
    dicom_series: Annotated[bool, typer.Option(
        "--dicom-series", help="Read each folder of single-frame DICOM slices as one volume "
        "(root/<class>/<series>/*.dcm).")] = False,
    reorient: Annotated[bool, typer.Option(
        "--reorient", help="Turn every volume to the closest RAS orientation (no interpolation; "
        "needed when volumes of a set are stored in different orientations).")] = False,
    spacing: Annotated[str | None, typer.Option(
        help="Resample to this voxel spacing in mm, x,y[,z] (in-plane first, e.g. 0.5,0.5,3); "
        "needed when volumes of a set have different spacings.")] = None,
    shape: Annotated[str | None, typer.Option(
        help="Centre-crop or pad to this size in voxels, x,y[,z] (after --spacing), e.g. "
        "128,128,32.")] = None,
    normalize: Annotated[Normalize, choice_option(Normalize,
        help="Intensity normalisation for training: none (values kept), auto (MR: percentiles "
        "to 0-1; CT: HU window), mr or ct.")] = "none",
    mr_percentiles: Annotated[str, typer.Option(
        help="MR normalisation: the low,high percentiles of each image that become 0 and 1.")] = "0.5,99.5",
    ct_window: Annotated[str, typer.Option(
        help="CT normalisation: the low,high Hounsfield window values are clipped to.")] = "-1000,1000",
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Skip unreadable files and files that cannot join the set (another "
        "dimensionality or channel count), and list them, instead of stopping.")] = False,
    dedup: Annotated[bool, typer.Option(
        "--dedup", help="Keep one image of each group of exact or near duplicates (with the "
        "source's own split: the one in the earliest split); the others are listed in "
        "duplicates.csv.")] = False,
    allow_duplicates: Annotated[bool, typer.Option(
        "--allow-duplicates", help="Import duplicates that the source's own split puts in "
        "train/val and test as they are (evaluate warns), instead of refusing.")] = False,
    group_by: Annotated[str | None, typer.Option(
        "--group-by", help="CSV column naming each image's group (patient, study, volume): "
        "the generated split keeps every group on one side. DICOM patient/study/series and "
        "--slices volumes are grouped without it.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset folder at --out.")] = False,
) -> None:
    """Import a source into a dataset folder: lossless PNG (8/16-bit) or NIfTI, labels.csv with splits.

    Duplicates (the same pixels, or nearly) are found and kept in one split; slices of one
    volume, DICOM series, studies and patients stay together in one split."""
    from medsynth.data.ingest import ImportConfig, import_dataset
    from medsynth.errors import BadUsageError
    from medsynth.ui import console, track

    pct, win = _numbers(mr_percentiles, "--mr-percentiles"), _numbers(ct_window, "--ct-window")
    if not pct or len(pct) != 2 or not 0 <= pct[0] < pct[1] <= 100:
        raise BadUsageError(f"--mr-percentiles takes low,high in 0..100, not {mr_percentiles!r}")
    if not win or len(win) != 2 or not win[0] < win[1]:
        raise BadUsageError(f"--ct-window takes low,high HU with low < high, not {ct_window!r}")
    shape_n = _numbers(shape, "--shape")
    cfg = ImportConfig(source=str(source), out=str(out_dir), size=size, resize=resize, seed=seed,
                       val_fraction=val_fraction, test_fraction=test_fraction,
                       classes=_split_classes(classes), skip_bad=skip_bad, voi=voi, dtype=dtype,
                       modality=modality, slices=slices, dicom_series=dicom_series,
                       reorient=reorient, spacing=_numbers(spacing, "--spacing"),
                       shape=[int(v) for v in shape_n] if shape_n else None, normalize=normalize,
                       mr_percentiles=(pct[0], pct[1]), ct_window=(win[0], win[1]),
                       overwrite=overwrite, dedup=dedup, allow_duplicates=allow_duplicates,
                       group_by=group_by)
    ds, bad = import_dataset(cfg, progress=track)
    o = ds.manifest.outputs
    console.print(f"[green]wrote[/] {len(ds.table)} images in {len(ds.classes)} classes to {ds.root} "
                  f"({o['spatial_dims']}D, {o['channels']} channel(s), {o['dtype']}, modality "
                  f"{o['modality']})")
    for note in o.get("notes", []):
        console.print(f"  [cyan]note[/] {note}", markup=True, soft_wrap=True)
    for b in bad:
        console.print("  [yellow]skipped[/] ", end="", soft_wrap=True)
        console.print(b, markup=False, soft_wrap=True)


from medsynth.data.demo.cli import demo_app  # noqa: E402

data_app.add_typer(demo_app, name="demo")
