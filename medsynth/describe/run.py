"""The describe loop: resume, bounded concurrency, validation and re-asking, store writing, summary.

Guarantees:

* every finished image is one JSON line, appended and fsync'ed before the next is written, so a
  killed run loses nothing already described; ``--resume`` skips images that already have a
  record of the same backend, model and template version (name@version+content hash; ok or
  failed), so a kill-and-resume ends with exactly one record per image, and a changed template
  re-describes every image instead of skipping it;
* an invalid or incomplete answer is re-asked at most ``max_reasks`` times, then recorded as
  ``failed`` with every raw answer kept; never dropped silently;
* an image whose request could not be completed at all (server down after all retries) gets no
  record and is counted as an error: the next ``--resume`` tries it again;
* records of other backends, models or template versions in the same store are kept.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
from collections.abc import Iterator
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
from medsynth.data.dataset import Dataset, open_dataset
from medsynth.describe.backends import RequestError, make_backend
from medsynth.describe.config import DescribeConfig
from medsynth.describe.prompts import Template, load_template, template_for_modality
from medsynth.describe.schema import extract_json
from medsynth.errors import MedsynthError
from medsynth.store import (
    RECORDS_NAME,
    SUMMARY_NAME,
    DescriptionRecord,
    record_writer,
    summarize_records,
)

REASK_SEPARATOR = "\n\n--- re-asked ---\n\n"


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

    @property
    def rate(self) -> float:
        n = self.described + self.failed
        return n / self.seconds if self.seconds > 0 else 0.0


def run_key(d: dict[str, Any]) -> tuple[str, str, str]:
    """What makes two descriptions of one image the same work: backend, model, template version."""
    return (str(d.get("backend")), str(d.get("model")), str(d.get("template_version")))


def existing_keys(root: Path, backend: str, model: str, template_version: str) -> set[str]:
    """image_ids that already have a record (ok or failed) of this backend, model and template
    version (``name@version+hash``: an edited template file is a different version)."""
    want = (backend, model, template_version)
    keys: set[str] = set()
    for f in root.glob(f"*/{RECORDS_NAME}"):
        for d in read_jsonl(f):
            if run_key(d) == want:
                keys.add(str(d.get("image_id")))
    return keys


def resolve_split(split: str | None, ds: Dataset) -> str:
    """The split to describe: as asked, or by default ``train`` when the dataset has training
    images (generate conditions on the training images' descriptions), else ``all``."""
    if split is not None:
        return split
    return "train" if (ds.table["split"].astype(str) == "train").any() else "all"


def _mm_per_px(ds: Dataset) -> float | None:
    v = ds.manifest.outputs.get("mm_per_px")
    return float(v) if v is not None else None


def _record(row: pd.Series, *, attrs: dict[str, Any], text: str, backend: str, model: str,
            template: Template, status: str, raw: str | None = None) -> DescriptionRecord:
    return DescriptionRecord(
        image_id=str(row["image_id"]), path=str(row["path"]), cls=str(row["class"]),
        split=str(row.get("split", "")), attributes=attrs, text=text, backend=backend,
        model=model, template_version=template.full_version, timestamp=now_iso(),
        status=status, raw=raw)


def _validate_chat(template: Template, raw: str, label: str) -> tuple[dict[str, Any], str, list[str]]:
    obj = extract_json(raw)
    if obj is None:
        return {}, "", ["the answer contains no JSON object"]
    return template.schema.validate(obj, label)


def _ok_text(template: Template, attrs: dict[str, Any], summary: str) -> str:
    """Template sentence from the validated attributes, then the model's own summary."""
    return f"{template.render_text(attrs)} {summary}".strip()


def _conversation(template: Template, ds: Dataset, row: pd.Series, context: dict[str, Any]) -> Any:
    """The first turn for one image; the field of view (mm) is given when the pixel size is known."""
    img = ds.load(row)
    mm = context.get("mm_per_px") or (img.spacing[-1] if img.spacing else None)
    fov = f"{float(mm) * img.array.shape[-1]:g}" if mm else "unknown"
    return template.conversation(img.array, str(row["class"]), fov_mm=fov)


def _converse_one(backend: Any, template: Template, row: pd.Series, ds: Dataset,
                  max_reasks: int, context: dict[str, Any]) -> DescriptionRecord:
    """One image through a non-batched chat backend: ask, validate, re-ask, decide."""
    label = str(row["class"])
    conv = _conversation(template, ds, row, context)
    answers: list[str] = []
    problems: list[str] = []
    for _ in range(max_reasks + 1):
        raw = backend.chat_one(conv)
        attrs, summary, problems = _validate_chat(template, raw, label)
        if not problems:
            return _record(row, attrs=attrs, text=_ok_text(template, attrs, summary),
                           backend=backend.name, model=backend.model, template=template, status="ok")
        answers.append(raw)
        conv.reask(raw, problems)
    return _record(row, attrs={}, text="invalid answer: " + "; ".join(problems),
                   backend=backend.name, model=backend.model, template=template, status="failed",
                   raw=REASK_SEPARATOR.join(answers))


def _iter_threaded(backend: Any, template: Template, rows: pd.DataFrame, ds: Dataset,
                   cfg: DescribeConfig, context: dict[str, Any]
                   ) -> Iterator[DescriptionRecord | RequestError]:
    """At most ``cfg.concurrency`` images in flight; results in completion order."""
    it = (r for _, r in rows.iterrows())
    with cf.ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
        pending: dict[cf.Future[DescriptionRecord], str] = {}
        try:
            while True:
                while len(pending) < cfg.concurrency:
                    row = next(it, None)
                    if row is None:
                        break
                    fut = pool.submit(_converse_one, backend, template, row, ds, cfg.max_reasks,
                                      context)
                    pending[fut] = str(row["image_id"])
                if not pending:
                    return
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    image_id = pending.pop(fut)
                    try:
                        yield fut.result()
                    except RequestError as e:
                        yield RequestError(f"{image_id}: {e}")
        finally:
            for fut in pending:
                fut.cancel()


def _iter_batched(backend: Any, template: Template, rows: pd.DataFrame, ds: Dataset,
                  cfg: DescribeConfig, context: dict[str, Any]
                  ) -> Iterator[DescriptionRecord | RequestError]:
    """Batches of ``cfg.concurrency`` images; invalid answers re-asked together in rounds."""
    for start in range(0, len(rows), cfg.concurrency):
        chunk = [r for _, r in rows.iloc[start:start + cfg.concurrency].iterrows()]
        convs = [_conversation(template, ds, r, context) for r in chunk]
        answers: list[list[str]] = [[] for _ in chunk]
        problems: list[list[str]] = [[] for _ in chunk]
        open_idx = list(range(len(chunk)))
        for _ in range(cfg.max_reasks + 1):
            raws = backend.chat([convs[i] for i in open_idx])
            still = []
            for i, raw in zip(open_idx, raws, strict=True):
                attrs, summary, probs = _validate_chat(template, raw, str(chunk[i]["class"]))
                if not probs:
                    yield _record(chunk[i], attrs=attrs, text=_ok_text(template, attrs, summary),
                                  backend=backend.name, model=backend.model, template=template,
                                  status="ok")
                    continue
                answers[i].append(raw)
                problems[i] = probs
                convs[i].reask(raw, probs)
                still.append(i)
            open_idx = still
            if not open_idx:
                break
        for i in open_idx:
            yield _record(chunk[i], attrs={}, text="invalid answer: " + "; ".join(problems[i]),
                          backend=backend.name, model=backend.model, template=template,
                          status="failed", raw=REASK_SEPARATOR.join(answers[i]))


def _iter_measured(backend: Any, template: Template, rows: pd.DataFrame, ds: Dataset,
                   cfg: DescribeConfig) -> Iterator[DescriptionRecord | RequestError]:
    """The attributes backend: measurements in a process pool (or inline for one worker)."""
    from medsynth.describe.backends.attributes import measure_file

    jobs = [backend.job(str(ds.path_of(r))) for _, r in rows.iterrows()]
    workers = min(cfg.concurrency, os.cpu_count() or 1, max(len(jobs) // 32, 1))
    if workers > 1:
        pool: cf.ProcessPoolExecutor | None = cf.ProcessPoolExecutor(max_workers=workers)
        results: Iterator[dict[str, Any]] = pool.map(measure_file, jobs, chunksize=16)
    else:
        pool = None
        results = map(measure_file, jobs)
    try:
        for (_, row), measured in zip(rows.iterrows(), results, strict=True):
            attrs, text, problems = backend.finish(measured, str(row["class"]))
            if problems:
                yield _record(row, attrs={}, text="measurement outside the schema: " + "; ".join(problems),
                              backend=backend.name, model=backend.model, template=template,
                              status="failed", raw=json.dumps(measured))
            else:
                yield _record(row, attrs=attrs, text=text, backend=backend.name, model=backend.model,
                              template=template, status="ok")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


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


def run_describe(cfg: DescribeConfig, *, backend: Any = None, progress: bool = True) -> DescribeSummary:
    """Describe the dataset's images into the store ``cfg.out``; see the module docstring.

    Args:
        cfg: the resolved options.
        backend: an already built backend (tests and library use); built from ``cfg`` otherwise.
        progress: show the progress bar.
    """
    import time

    from medsynth.ui import progress_bar

    ds = open_dataset(cfg.dataset)
    template = load_template(cfg.template or template_for_modality(cfg.modality, ds.modality))
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
    if backend is None:
        backend = make_backend(cfg, template, **({"mm_per_px": _mm_per_px(ds)}
                                                 if cfg.backend == "attributes" else {}))
    # A store already holding another backend's, model's or template version's work is added
    # to, not refused.
    this_run = (backend.name, backend.model, template.full_version)
    other_run = bool(prev) and not any(run_key(r) == this_run for r in prev.get("runs", []))
    prepare_output_dir(out, "describe", resume=cfg.resume or other_run, overwrite=cfg.overwrite)
    if cfg.overwrite:
        prev = {}
    split = resolve_split(cfg.split, ds)
    rows = ds.split(None if split == "all" else split)
    done = existing_keys(out, *this_run)
    todo = rows[~rows["image_id"].astype(str).isin(done)]
    summary = DescribeSummary(skipped=len(rows) - len(todo), backend=backend.name,
                              model=backend.model, template_version=template.full_version,
                              split=split)
    if cfg.limit is not None:
        todo = todo.iloc[:cfg.limit]
    run_info = {"backend": backend.name, "model": backend.model,
                "template_version": template.full_version, "template": template.source,
                "started": now_iso()}
    inputs = [input_ref(ds.root, "data")]
    config = {**dataclasses.asdict(cfg), "split": split, "template_version": template.full_version}
    # Manifest first (status running): open_store works on a partial store and resume finds it.
    write_manifest(out, "describe", config=config, inputs=inputs,
                   outputs=_outputs(prev, run_info, prev.get("counts", {}), "running", ds.classes))
    context: dict[str, Any] = {"mm_per_px": _mm_per_px(ds)}
    if backend.name == "attributes":
        stream = _iter_measured(backend, template, todo, ds, cfg)
    elif getattr(backend, "batched", False):
        stream = _iter_batched(backend, template, todo, ds, cfg, context)
    else:
        stream = _iter_threaded(backend, template, todo, ds, cfg, context)
    writers: dict[str, Any] = {}
    status = "interrupted"
    t0 = time.perf_counter()
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"describe ({backend.name})", total=len(todo), rate="")
            for item in stream:
                if isinstance(item, RequestError):
                    summary.errors += 1
                    if len(summary.error_messages) < 20:
                        summary.error_messages.append(str(item))
                else:
                    w = writers.get(item.cls)
                    if w is None:
                        # Fast measuring backends group their fsyncs; model answers are each
                        # worth a sync of their own.
                        w = writers[item.cls] = record_writer(
                            out, item.cls, sync_interval=1.0 if backend.name == "attributes" else 0.0)
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
        summary.seconds = time.perf_counter() - t0
        for w in writers.values():
            w.close()
        backend.close()
        counts = write_summaries(out)
        run_info.update(finished=now_iso(), described=summary.described, failed=summary.failed,
                        skipped=summary.skipped, errors=summary.errors)
        write_manifest(out, "describe", config=config, inputs=inputs,
                       outputs=_outputs(prev, run_info, counts, status, ds.classes))
    return summary
