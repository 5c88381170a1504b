"""The describe stage: templates in, records out, through the shared MLLM engine.

The engine (:mod:`medsynth.mllm`) asks, validates, re-asks and runs requests concurrently for
every backend alike; this module builds each image's request from its template, checks answers
against the template's schema, and writes the store. Guarantees:

* every finished image is one JSON line, appended and fsync'ed before the next is written, so a
  killed run loses nothing already described; ``--resume`` skips images that already have a
  record of the same backend, model and template version (name@version+content hash; ok or
  failed), so a kill-and-resume ends with exactly one record per image, and a changed template
  re-describes every image instead of skipping it;
* an invalid or incomplete answer is re-asked at most ``max_reasks`` times, then recorded as
  ``failed`` with every raw answer kept; never dropped silently;
* an image whose request could not be completed at all (server down after all retries) gets no
  record and is counted as an error: the next ``--resume`` tries it again; a server that fails
  many requests in a row stops the run (``BackendUnavailable``), keeping what finished;
* records of other backends, models or template versions in the same store are kept.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsynth.artifacts import (
    MANIFEST_NAME,
    atomic_write_json,
    input_ref,
    now_iso,
    prepare_output_dir,
    read_jsonl,
    read_manifest,
    write_manifest,
)
from medsynth.describe.config import DescribeConfig
from medsynth.describe.prompts import Template, load_template, template_for_modality
from medsynth.errors import MedsynthError
from medsynth.imaging.dataset import Dataset, open_dataset
from medsynth.mllm import (
    REASK_SEPARATOR,
    Backend,
    Checked,
    Engine,
    Outcome,
    Request,
    RunKey,
    extract_json,
    finished,
    make_backend,
    measure_backend,
)
from medsynth.store import (
    RECORDS_NAME,
    SUMMARY_NAME,
    DescriptionRecord,
    record_writer,
    summarize_records,
)

__all__ = ["REASK_SEPARATOR", "DescribeSummary", "existing_keys", "make_describe_backend",
           "run_describe", "run_key"]


@dataclasses.dataclass
class DescribeSummary:
    """What one run did."""

    described: int = 0
    """Images with a new 'ok' record."""
    failed: int = 0
    """Images recorded as failed (invalid answers after all re-asks; raw answers kept)."""
    skipped: int = 0
    """Images already described by this backend, model and template version (resume)."""
    errors: int = 0
    """Images whose requests failed for good; not recorded, retried by --resume."""
    seconds: float = 0.0
    """Wall time of the describing loop."""
    backend: str = ""
    model: str = ""
    template_version: str = ""
    split: str = ""
    """The split described (``all`` for every image)."""
    error_messages: list[str] = dataclasses.field(default_factory=list)
    notices: list[str] = dataclasses.field(default_factory=list)
    """One-line notes from the backend (e.g. the server refused the JSON schema)."""

    @property
    def rate(self) -> float:
        n = self.described + self.failed
        return n / self.seconds if self.seconds > 0 else 0.0

    @property
    def nothing_described(self) -> bool:
        """Images were tried and not one got a valid description (a failed run)."""
        return self.described == 0 and self.failed + self.errors > 0


def run_key(d: dict[str, Any]) -> RunKey:
    """What makes two descriptions of one image the same work: backend, model, template version."""
    return RunKey.of(d, "template_version")


def existing_keys(root: Path, backend: str, model: str, template_version: str) -> set[str]:
    """image_ids that already have a record (ok or failed) of this backend, model and template
    version (``name@version+hash``: an edited template file is a different version)."""
    key = RunKey(backend, model, template_version)
    return set().union(*(finished(read_jsonl(f), key) for f in root.glob(f"*/{RECORDS_NAME}")))


def resolve_split(split: str | None, ds: Dataset) -> str:
    """The split to describe: as asked, or by default ``train`` when the dataset has training
    images (generate conditions on the training images' descriptions), else ``all``."""
    if split is not None:
        return split
    return "train" if (ds.table["split"].astype(str) == "train").any() else "all"


def _mm_per_px(ds: Dataset) -> float | None:
    v = ds.manifest.outputs.get("mm_per_px")
    return float(v) if v is not None else None


def make_describe_backend(cfg: DescribeConfig, template: Template, n_images: int) -> Backend:
    """The engine backend for ``cfg.backend``: the offline measurer of the template's family
    (worker processes for larger sets), or a model backend."""
    if cfg.backend == "attributes":
        from medsynth.describe.measured import TemplateMeasurer

        measurer = TemplateMeasurer(template.name)
        processes = min(cfg.concurrency, os.cpu_count() or 1, max(n_images // 32, 1))
        return measure_backend(measurer, name="attributes", processes=processes)
    return make_backend(cfg.backend_config())


def _request(template: Template, ds: Dataset, row: pd.Series, mm_per_px: float | None,
             structured: bool) -> Request:
    """One image's request; the field of view (mm) is given when the pixel size is known."""
    img = ds.load(row)
    mm = mm_per_px or (float(img.spacing[-1]) if img.spacing else None)
    fov = f"{float(mm) * img.array.shape[-1]:g}" if mm else "unknown"
    req = template.conversation(img.array, str(row["class"]), fov_mm=fov)
    req.context["mm_per_px"] = mm
    if img.array.ndim == 4:
        # A volume: models see its orthogonal slices in display orientation; measurers get
        # the voxels and the affine (the context is never sent to a model).
        from medsynth.imaging.views import orthogonal_strip

        req.images = [orthogonal_strip(img.array, img.affine, tile=224)[None]]
        req.context["volume"] = img.array
        req.context["affine"] = img.affine
    if not structured:
        req.schema = None
    return req


def _check(template: Template, require_summary: bool) -> Callable[[str, pd.Series], Checked]:
    """The template's validator as an engine check (the class label must not be parroted)."""

    def check(raw: str, row: pd.Series) -> Checked:
        obj = extract_json(raw)
        if obj is None:
            return Checked(problems=["the answer contains no JSON object"])
        attrs, summary, problems = template.schema.validate(obj, str(row["class"]),
                                                            require_summary=require_summary)
        return Checked(value=(attrs, summary), problems=problems)

    return check


def _record(outcome: Outcome[pd.Series], backend: Backend, template: Template
            ) -> DescriptionRecord:
    """The store record of an ok or failed outcome: the template sentence filled from the
    validated attributes, then the model's own summary; or the problems and every raw answer."""
    row = outcome.item
    if outcome.status == "ok":
        attrs, summary = outcome.value
        text, status, raw = f"{template.render_text(attrs)} {summary}".strip(), "ok", None
    else:
        attrs, status, raw = {}, "failed", outcome.raw
        text = "invalid answer: " + "; ".join(outcome.problems)
    return DescriptionRecord(
        image_id=str(row["image_id"]), path=str(row["path"]), cls=str(row["class"]),
        split=str(row.get("split", "")), attributes=attrs, text=text, backend=backend.name,
        model=backend.model, template_version=template.full_version, timestamp=now_iso(),
        status=status, raw=raw)


def numeric_stats(records: list[DescriptionRecord]) -> dict[str, dict[str, float]]:
    """mean, sd, min, median, max of the continuous attributes of the 'ok' records (numbers with
    more than 12 distinct values; small integer scales such as asymmetry stay categorical)."""
    values: dict[str, list[float]] = {}
    for r in records:
        if r.status != "ok":
            continue
        for k, v in r.attributes.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values.setdefault(k, []).append(float(v))
    out = {}
    for k, vs in sorted(values.items()):
        if len(set(vs)) > 12:
            a = np.asarray(vs)
            out[k] = {"n": len(vs), "mean": round(float(a.mean()), 4), "sd": round(float(a.std()), 4),
                      "min": round(float(a.min()), 4), "median": round(float(np.median(a)), 4),
                      "max": round(float(a.max()), 4)}
    return out


def split_numeric(summary: dict[str, Any], records: list[DescriptionRecord]) -> dict[str, Any]:
    """Move continuous attributes out of the value frequencies into ``numeric`` statistics."""
    stats = numeric_stats(records)
    summary["attributes"] = {k: v for k, v in summary["attributes"].items() if k not in stats}
    summary["numeric"] = stats
    return summary


def write_summaries(root: Path) -> dict[str, dict[str, int]]:
    """Rewrite every class's summary.json from its records; return counts {class: {ok, failed}}."""
    counts: dict[str, dict[str, int]] = {}
    for f in sorted(root.glob(f"*/{RECORDS_NAME}")):
        recs = [DescriptionRecord.from_dict(d) for d in read_jsonl(f)]
        if not recs:
            continue
        cls = recs[0].cls
        summary = split_numeric(summarize_records(recs), recs)
        summary["class"] = cls
        summary["by_backend"] = {
            f"{b}:{m}": split_numeric(summarize_records(sel := [r for r in recs if (r.backend, r.model) == (b, m)]), sel)
            for b, m in sorted({(r.backend, r.model) for r in recs})}
        summary["by_run"] = {
            f"{b}:{m}:{t}": {"n_ok": sum(r.status == "ok" for r in sel), "n_failed": sum(r.status != "ok" for r in sel)}
            for b, m, t in sorted({(r.backend, r.model, r.template_version) for r in recs})
            for sel in [[r for r in recs if (r.backend, r.model, r.template_version) == (b, m, t)]]}
        atomic_write_json(f.parent / SUMMARY_NAME, summary)
        counts[cls] = {"ok": summary["n_ok"], "failed": summary["n_failed"]}
    return counts


def _outputs(prev: dict[str, Any], run: dict[str, Any], counts: dict[str, Any], status: str,
             classes: list[str]) -> dict[str, Any]:
    runs = [r for r in prev.get("runs", []) if run_key(r) != run_key(run)] + [run]
    return {"status": status, "classes": classes, "counts": counts, "runs": runs,
            "backends": sorted({r["backend"] for r in runs}),
            "template_versions": sorted({r["template_version"] for r in runs}),
            "records": RECORDS_NAME, "summary": SUMMARY_NAME}


def run_describe(cfg: DescribeConfig, *, backend: Backend | None = None,
                 progress: bool = True) -> DescribeSummary:
    """Describe the dataset's images into the store ``cfg.out``; see the module docstring.

    Args:
        cfg: the resolved options.
        backend: an already built engine backend (tests and library use); built from ``cfg``
            otherwise.
        progress: show the progress bar.

    Raises:
        BackendUnavailable: the server failed every request for a while (records so far kept).
    """
    import time

    from medsynth.ui import progress_bar

    ds = open_dataset(cfg.dataset)
    template = load_template(cfg.template or template_for_modality(
        cfg.modality, ds.modality, int(ds.manifest.outputs.get("spatial_dims", 2)), ds.classes))
    out = Path(cfg.out)
    prev: dict[str, Any] = {}
    if (out / MANIFEST_NAME).is_file():
        prev_manifest = read_manifest(out, "describe")
        prev = prev_manifest.outputs
        before = {i.get("sha256") for i in prev_manifest.inputs if i.get("stage") == "data"}
        if before and ds.sha256 not in before and not cfg.overwrite:
            from medsynth.ui import console

            console.print(f"[yellow]warning[/]: {out} was made from another version of the dataset "
                          f"(or another dataset) than {ds.root}; records are matched by image_id")
    if out.resolve() == ds.root.resolve():
        raise MedsynthError(f"{out}: --out must not be the dataset folder")
    if cfg.backend == "attributes" and template.name == "derm" and _mm_per_px(ds) is None:
        from medsynth.ui import console

        console.print(f"[yellow]warning[/]: {ds.root}: the pixel size is unknown (no mm_per_px in "
                      "the dataset manifest); diameters assume a 20 mm field of view unless the "
                      "images carry their own spacing")
    split = resolve_split(cfg.split, ds)
    rows = ds.split(None if split == "all" else split)
    if backend is None:
        n = len(rows) if cfg.limit is None else min(len(rows), cfg.limit)
        backend = make_describe_backend(cfg, template, n)
    # A store already holding another backend's, model's or template version's work is added
    # to, not refused.
    this_run = RunKey(backend.name, backend.model, template.full_version)
    other_run = bool(prev) and not any(run_key(r) == this_run for r in prev.get("runs", []))
    prepare_output_dir(out, "describe", resume=cfg.resume or other_run, overwrite=cfg.overwrite)
    if cfg.overwrite:
        prev = {}
    done = existing_keys(out, this_run.backend, this_run.model, this_run.version)
    todo = rows[~rows["image_id"].astype(str).isin(done)]
    summary = DescribeSummary(skipped=len(rows) - len(todo), backend=backend.name,
                              model=backend.model, template_version=template.full_version,
                              split=split)
    if cfg.limit is not None:
        todo = todo.iloc[:cfg.limit]
    run_info: dict[str, Any] = {"backend": backend.name, "model": backend.model,
                                "template_version": template.full_version,
                                "template": template.source, "started": now_iso()}
    inputs = [input_ref(ds.root, "data")]
    config = {**dataclasses.asdict(cfg), "split": split, "template_version": template.full_version}
    # Manifest first (status running): open_store works on a partial store and resume finds it.
    write_manifest(out, "describe", config=config, inputs=inputs,
                   outputs=_outputs(prev, run_info, prev.get("counts", {}), "running", ds.classes))
    engine = Engine(backend, max_reasks=cfg.max_reasks)
    mm_per_px, structured = _mm_per_px(ds), cfg.structured_output != "off"
    stream = engine.run((r for _, r in todo.iterrows()),
                        lambda row: _request(template, ds, row, mm_per_px, structured),
                        _check(template, require_summary=backend.writes_text))
    writers: dict[str, Any] = {}
    status = "interrupted"
    t0 = time.perf_counter()
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"describe ({backend.name})", total=len(todo), rate="")
            for outcome in stream:
                if outcome.status == "error":
                    summary.errors += 1
                    if len(summary.error_messages) < 20:
                        summary.error_messages.append(f"{outcome.item['image_id']}: {outcome.error}")
                else:
                    item = _record(outcome, backend, template)
                    w = writers.get(item.cls)
                    if w is None:
                        # Answers a model wrote are costly to redo: each is synced on its own.
                        # Measurements are cheap to redo: their syncs are grouped.
                        w = writers[item.cls] = record_writer(
                            out, item.cls, sync_interval=0.0 if backend.writes_text else 1.0)
                    w.write(item.to_dict())
                    if item.status == "ok":
                        summary.described += 1
                    else:
                        summary.failed += 1
                bar.advance(task)
                speed = bar.tasks[0].speed
                if speed:
                    bar.update(task, rate=f"{speed:.1f} img/s")
        status = "complete" if summary.errors == 0 else "incomplete"
    finally:
        stream.close()
        summary.seconds = time.perf_counter() - t0
        for w in writers.values():
            w.close()
        summary.notices = list(getattr(backend, "notices", []))
        run_info["backend_info"] = backend.info()
        backend.close()
        counts = write_summaries(out)
        run_info.update(finished=now_iso(), described=summary.described, failed=summary.failed,
                        skipped=summary.skipped, errors=summary.errors)
        write_manifest(out, "describe", config=config, inputs=inputs,
                       outputs=_outputs(prev, run_info, counts, status, ds.classes))
    return summary
