"""``medsynth judge filter``: keep the best-judged images of a set as a new synthetic set.

The output is an ordinary synthetic set (``samples.csv`` through :mod:`medsynth.synthset`, the
image files and reports hard-linked, or copied across file systems) whose manifest (stage
``judge``, ``synthetic: true``, ``filtered: true``) names the judged folder first and the source
set second, so :func:`medsynth.artifacts.walk_lineage` goes filtered set -> judged folder ->
source set -> model -> dataset, and evaluate reads it like any other set.

From a script::

    from medsynth.judge.filter import FilterConfig, filter_judged
    filter_judged(FilterConfig(judged="judged", out="synth-best", per_class_n=100))
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsynth.artifacts import (
    MANIFEST_NAME,
    Manifest,
    atomic_path,
    input_ref,
    prepare_output_dir,
    read_manifest,
    write_manifest,
)
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.judging.judged import open_judged
from medsynth.judging.judges import select
from medsynth.synthset import IMAGE_COLUMNS, SAMPLES_CSV, write_samples

FILE_COLUMNS = (*IMAGE_COLUMNS, "report", "sr")
"""samples.csv columns holding files that travel with a kept image (its report's DICOM SR too)."""


@dataclasses.dataclass
class FilterConfig:
    """Options of ``medsynth judge filter``."""

    judged: str
    """Judged folder (``medsynth judge`` output)."""
    out: str
    """Folder of the filtered synthetic set."""
    min_score: float | None = None
    """Keep images with score >= this."""
    top_fraction: float | None = None
    """Keep the best ceil(F * n) images of each class (0 < F <= 1)."""
    per_class_n: int | None = None
    """Keep exactly N images per class, the best ones (with ``min_score``: the best N that pass
    it; a class with fewer is an error). With ``generate --n N --oversample K`` this gives
    exactly N per class again."""
    per_request: bool = False
    """Keep the best candidate of every requested image of a ``generate --oversample K`` set:
    exactly the requested count per class, with the requested descriptions."""
    skip_empty_requests: bool = False
    """With ``per_request``: leave out the requests none of whose candidates is eligible (a
    weak model's class) instead of refusing; the set then has fewer images of that class and
    the manifest counts the requests left out."""
    copy: bool = False
    """Copy the files instead of hard-linking them (links fall back to copies across file
    systems anyway)."""
    overwrite: bool = False
    """Replace an earlier filtered set in ``out``."""

    def __post_init__(self) -> None:
        if (self.min_score is None and self.top_fraction is None and self.per_class_n is None
                and not self.per_request):
            raise BadUsageError("give --min-score S, --top-fraction F, --per-class-n N or "
                                "--per-request")
        if sum([self.top_fraction is not None, self.per_class_n is not None,
                self.per_request]) > 1:
            raise BadUsageError("--top-fraction, --per-class-n and --per-request exclude each "
                                "other")
        if self.skip_empty_requests and not self.per_request:
            raise BadUsageError("--skip-empty-requests goes with --per-request")
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise BadUsageError(f"--top-fraction must be in (0, 1], got {self.top_fraction}")
        if self.min_score is not None and not 0 <= self.min_score <= 1:
            raise BadUsageError(f"--min-score must be in [0, 1], got {self.min_score}")
        if self.per_class_n is not None and self.per_class_n < 1:
            raise BadUsageError(f"--per-class-n must be >= 1, got {self.per_class_n}")


@dataclasses.dataclass
class FilterResult:
    out: Path
    counts: dict[str, int]
    """Kept images per class."""
    offered: dict[str, int]
    """Judged images per class."""
    manifest: Manifest
    linked: int
    """Files hard-linked (the rest were copied)."""
    empty_requests: dict[str, int] = dataclasses.field(default_factory=dict)
    """Requests left out per class (``skip_empty_requests``: no eligible candidate)."""


def _place(src: Path, dst: Path, copy: bool) -> bool:
    """Link (or copy) ``src`` to ``dst`` atomically; True when linked."""
    linked = False
    with atomic_path(dst) as tmp:
        if not copy:
            tmp.unlink()
            try:
                os.link(src, tmp)
                linked = True
            except OSError:
                pass
        if not linked:
            shutil.copyfile(src, tmp)  # into atomic_path's file: the umask's mode
    return linked


def _clean(v: Any) -> Any:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return v


def filter_judged(cfg: FilterConfig) -> FilterResult:
    """Write the filtered set ``cfg.out`` from the judged folder ``cfg.judged``."""
    j = open_judged(cfg.judged)
    if not j.complete:
        raise MedsynthError(f"{j.root}: judging is {j.status} "
                            f"({len(j.records)} image(s) judged); filtering it would drop the "
                            "rest unseen", hint="finish it first: medsynth judge ... --resume")
    s = j.source(check=True)
    out = Path(cfg.out)
    for other, what in ((j.root, "the judged folder"), (s.root, "the source set")):
        if out.resolve() == other.resolve():
            raise MedsynthError(f"{out}: --out must not be {what}")
    if (out / MANIFEST_NAME).is_file():
        m = read_manifest(out)
        if m.stage == "judge" and m.outputs.get("synthetic") is not True:
            raise MedsynthError(f"{out}: holds a judged folder; choose another --out")
    order = {sid: i for i, sid in enumerate(s.table["sample_id"].astype(str))}
    unknown = [r.sample_id for r in j.records if r.sample_id not in order]
    if unknown:
        raise MedsynthError(f"{j.root}: judged image(s) not in {s.root} (first: {unknown[0]})",
                            hint="judge the current set again")
    group = None
    if cfg.per_request:
        if "request" not in s.table.columns or s.table["request"].isna().all():
            raise MedsynthError(f"{s.root}: has no 'request' column (not made with generate "
                                "--oversample); --per-request needs it",
                                hint="use --per-class-n N or --top-fraction F")
        request = dict(zip(s.table["sample_id"].astype(str), s.table["request"], strict=True))
        group = lambda r: f"{r.cls}#{request[r.sample_id]}"  # noqa: E731
    kept = select(j.records, min_score=cfg.min_score, top_fraction=cfg.top_fraction,
                  per_class_n=cfg.per_class_n, per_group=group,
                  order=lambda r: order[r.sample_id],
                  skip_empty_groups=cfg.skip_empty_requests)
    empty: dict[str, int] = {}
    if group is not None:
        requested = {group(r): r.cls for r in j.records}
        for g in set(requested) - {group(r) for r in kept}:
            empty[requested[g]] = empty.get(requested[g], 0) + 1
    if not kept:
        raise MedsynthError(f"{j.root}: no image passes the filter (best score "
                            f"{max((r.score for r in j.records), default=0):.3g})",
                            hint=_empty_hint(cfg, j.records))
    keep_ids = {r.sample_id for r in kept}
    prepare_output_dir(out, "judge", overwrite=cfg.overwrite)
    table = s.table[s.table["sample_id"].astype(str).isin(keep_ids)]
    linked = 0
    rows = []
    for _, row in table.iterrows():
        for col in FILE_COLUMNS:
            rel = _clean(row.get(col, ""))
            if rel:
                src = s.root / str(rel)
                if not src.is_file():
                    raise MedsynthError(f"{src}: listed in {s.root / SAMPLES_CSV} but missing")
                linked += _place(src, out / str(rel), cfg.copy)
        rows.append({k: _clean(v) for k, v in row.items()})
    samples = write_samples(out, rows)
    from medsynth.loaders import write_set_loaders

    # the filtered set loads in one line too (its own metadata.csv and datalists)
    loaders = write_set_loaders(out, samples, _model_classes(s),
                                [c for c in IMAGE_COLUMNS
                                 if c in samples.columns
                                 and samples[c].fillna("").astype(str).ne("").all()])
    scores = {r.sample_id: r.score for r in kept}
    counts = {str(k): int(v) for k, v in samples.groupby("class").size().items()}
    offered: dict[str, int] = {}
    for r in j.records:
        offered[r.cls] = offered.get(r.cls, 0) + 1
    src_out = dict(s.manifest.outputs)
    outputs = {
        **src_out, "synthetic": True, "filtered": True, "samples": SAMPLES_CSV,
        "n_images": len(samples), "counts": counts,
        "classes": [c for c in src_out.get("classes", sorted(counts)) if c in counts],
        "offered": offered,
        "score": {c: _stats([scores[str(x)] for x in samples.loc[samples["class"] == c,
                                                                  "sample_id"]])
                  for c in counts},
        "criteria_sha256": j.criteria.sha256, "criteria_version": j.criteria.full_version,
        "judge_backend": j.manifest.config.get("backend"),
        "judge_model": j.manifest.config.get("judge_model"), "linked": linked,
        "loaders": loaders,
        **({"empty_requests": dict(sorted(empty.items()))} if cfg.per_request else {}),
    }
    config = {**dataclasses.asdict(cfg), "judged": str(j.root.resolve()),
              "source": str(s.root.resolve())}
    manifest = write_manifest(out, "judge", config=config,
                              inputs=[input_ref(j.root, "judge"), input_ref(s.root)],
                              outputs=outputs)
    return FilterResult(out=out, counts=counts, offered=offered, manifest=manifest,
                        linked=linked, empty_requests=empty)


def _model_classes(s: Any) -> list[str]:
    """The generating model's classes in id order (class ids stay those of the source set)."""
    m = s.model_manifest
    classes = list(m.outputs.get("classes") or []) if m is not None else []
    return classes if set(s.classes) <= set(classes) else s.classes


def _stats(v: list[float]) -> dict[str, float]:
    a = np.asarray(v, dtype=float)
    return {"min": round(float(a.min()), 4), "mean": round(float(a.mean()), 4),
            "max": round(float(a.max()), 4)}


def scores_frame(path: str | Path) -> pd.DataFrame:
    """A judged folder's scores as a table (a convenience for scripts)."""
    return open_judged(path).table()


def _empty_hint(cfg: FilterConfig, records: list) -> str:
    """What to try when nothing passed: never the option that was just given."""
    if records and not any(r.ok and r.image_valid for r in records):
        return ("every image was judged invalid; if the measure judge was not made for these "
                "images, judge them with --backend real-features")
    tries = [] if cfg.min_score is None else ["lower --min-score"]
    tries += [o for o, v in (("--top-fraction F", cfg.top_fraction),
                             ("--per-class-n N", cfg.per_class_n)) if v is None]
    return " or ".join(tries) or "judge more images"
