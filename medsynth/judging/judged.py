"""Judged folders: a synthetic set judged against a criteria file, written and read back.

::

    JUDGED/
      medsynth.json    stage "judge"; inputs: the synthetic set; config: criteria_sha256,
                       backend, model, ...; outputs: status, counts, score stats per class
      criteria.yaml    the criteria file used, verbatim (its sha256 = criteria_sha256)
      verdicts.jsonl   one record per image (medsynth.judging.judges.JudgedRecord), flushed per image
      scores.csv       sample_id, class, score, image_valid, n_met, n_not_met, n_unsure, status,
                       then one column per criterion id (1 met, 0 not met, empty unsure)

:func:`run_judge` writes one (resumable: ``--resume`` judges exactly the images without a
record; a killed run or a server that fails mid-run loses nothing already judged);
:func:`open_judged` reads one (``judge show``, ``judge filter``, ``refine``) and
:meth:`JudgedFolder.source` opens the set it judged, refusing a set that changed since.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsynth.artifacts import (
    MANIFEST_NAME,
    JsonlAppender,
    Manifest,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    input_ref,
    now_iso,
    prepare_output_dir,
    read_jsonl,
    read_manifest,
    resolve_input,
    write_manifest,
)
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.judging.criteria import CriteriaFile, load_criteria, parse_criteria
from medsynth.judging.judges import (
    CRITERIA_NAME,
    SCORES_NAME,
    VERDICTS_NAME,
    JudgedRecord,
    JudgeItem,
    JudgeSettings,
    make_judge,
)
from medsynth.synthset import SyntheticSet, open_synthetic


@dataclasses.dataclass
class JudgeConfig:
    """Options of one ``medsynth judge`` run (saved in the judged folder's manifest)."""

    synth: str
    """Synthetic set to judge (``medsynth generate`` or ``judge filter`` output)."""
    criteria: str | None
    """Criteria YAML file, or a shipped name (``derm``, ``cxr``); None with the
    ``real-features`` judge (its criteria come from the real dataset's classes)."""
    out: str
    """Judged folder to write (or to continue with ``resume``)."""
    settings: JudgeSettings = dataclasses.field(default_factory=JudgeSettings)
    """Which judge and how it talks to its model."""
    mm_per_px: float | None = None
    """Pixel size of the synthetic images (mm); None = the images' own spacing, else the
    field of view of the dataset the model trained on, else the criteria file's."""
    limit: int | None = None
    """Judge at most this many images (after resume skipping), for trials."""
    resume: bool = False
    """Continue a judged folder: judge only the images without a record."""
    overwrite: bool = False
    """Delete an existing judged folder first."""

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise BadUsageError("--resume and --overwrite contradict each other; choose one")
        if self.limit is not None and self.limit < 0:
            raise BadUsageError(f"--limit must be >= 0, got {self.limit}")
        if self.mm_per_px is not None and self.mm_per_px <= 0:
            raise BadUsageError(f"--mm-per-px must be > 0, got {self.mm_per_px}")
        if not self.criteria and self.settings.backend != "real-features":
            raise BadUsageError(f"the {self.settings.backend} judge needs --criteria FILE (or a "
                                "shipped name: derm, cxr)",
                                hint="or judge against your real training images: "
                                     "--backend real-features")


@dataclasses.dataclass
class JudgeSummary:
    """What one run did."""

    judged: int = 0
    """Images with a new ok record."""
    failed: int = 0
    """Images recorded as failed (no valid answer after the re-asks; raw answers kept)."""
    skipped: int = 0
    """Images that already had a record (resume)."""
    errors: int = 0
    """Images whose requests failed for good: no record, judged again by --resume."""
    seconds: float = 0.0
    backend: str = ""
    model: str = ""
    criteria_version: str = ""
    status: str = ""
    """complete | incomplete | interrupted."""
    per_class: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    error_messages: list[str] = dataclasses.field(default_factory=list)
    notices: list[str] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        n = self.judged + self.failed
        return n / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# reading


@dataclasses.dataclass
class JudgedFolder:
    """A judged folder: its manifest, criteria and one record per judged image."""

    root: Path
    manifest: Manifest
    criteria: CriteriaFile
    records: list[JudgedRecord]
    """One per judged image (the last one when a file holds several), in file order."""

    @property
    def status(self) -> str:
        return str(self.manifest.outputs.get("status", "?"))

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def criteria_file(self) -> Path:
        """The criteria file the judge used (copied verbatim into the folder)."""
        return self.root / CRITERIA_NAME

    @property
    def backend(self) -> str:
        return str(self.manifest.config.get("backend", "measure"))

    @property
    def criteria_sha256(self) -> str | None:
        v = self.manifest.config.get("criteria_sha256")
        return str(v) if v else None

    def judge_settings(self) -> JudgeSettings:
        """The :class:`~medsynth.judging.judges.JudgeSettings` this folder was judged with
        (refine judges its on-policy rounds the same way)."""
        saved = dict(self.manifest.config.get("settings") or {"backend": self.backend})
        names = {f.name for f in dataclasses.fields(JudgeSettings)}
        return JudgeSettings(**{k: v for k, v in saved.items() if k in names})

    @property
    def set_ref(self) -> dict[str, Any]:
        """The input reference of the judged synthetic set."""
        ref = next((r for r in self.manifest.inputs if r.get("stage") in ("generate", "judge")),
                   None)
        if ref is None:
            raise MedsynthError(f"{self.root}: its manifest names no synthetic set")
        return ref

    def source(self, *, check: bool = True) -> SyntheticSet:
        """The synthetic set that was judged; with ``check``, refuse one whose manifest changed
        since (another set written into the same folder: the verdicts are not about it)."""
        path = resolve_input(self.manifest, self.set_ref)
        if not (path / MANIFEST_NAME).is_file():
            raise MedsynthError(f"{self.root}: the synthetic set it judged ({path}) is gone",
                                hint="judge the set again, or restore it")
        s = open_synthetic(path)
        if check and self.set_ref.get("sha256") and s.manifest.sha256 != self.set_ref["sha256"]:
            raise MedsynthError(f"{self.root}: was judged on another synthetic set than the one "
                                f"now in {path} (manifest sha256 differs)",
                                hint="judge the current set again (medsynth judge ... "
                                     "--overwrite)")
        return s

    def check_made_by(self, model: str | Path) -> SyntheticSet:
        """The judged set, after checking that ``model`` generated it (refine: verdicts about
        another model's images are no feedback for this one); one line naming both otherwise."""
        s = self.source(check=True)
        want = read_manifest(model)
        gen = s.lineage.generator
        if gen is None or gen.sha256 != want.sha256:
            made = gen.folder if gen is not None else "an unreadable model"
            raise MedsynthError(f"{self.root}: judges images made by {made}, not by {model}",
                                hint="judge a set generated by this model")
        return s

    def table(self) -> pd.DataFrame:
        """scores.csv as a table (rebuilt from the records)."""
        return scores_table(self.records, self.criteria)

    def by_id(self) -> dict[str, JudgedRecord]:
        return {r.sample_id: r for r in self.records}


def dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per sample id (the last), in order of first appearance."""
    last: dict[str, dict[str, Any]] = {}
    for r in records:
        last[str(r.get("sample_id"))] = r
    return list(last.values())


def open_judged(path: str | Path) -> JudgedFolder:
    """Read a judged folder (refuses a filtered set, or a criteria.yaml edited since)."""
    root = Path(path)
    m = read_manifest(root, "judge")
    if m.outputs.get("synthetic") is True:
        raise MedsynthError(f"{root}: is a filtered synthetic set, not a judged folder",
                            hint="judge it first: medsynth judge SET --criteria FILE --out DIR")
    cpath = root / CRITERIA_NAME
    if not cpath.is_file():
        raise MedsynthError(f"{root}: no {CRITERIA_NAME} (incomplete judged folder?)")
    crit = parse_criteria(cpath.read_bytes(), cpath)
    want = m.config.get("criteria_sha256")
    if want and crit.sha256 != want:
        raise MedsynthError(f"{cpath}: was edited after judging (sha256 differs from the "
                            "manifest's criteria_sha256)", hint="judge the set again")
    records = [JudgedRecord.from_dict(d) for d in dedupe(read_jsonl(root / VERDICTS_NAME))]
    return JudgedFolder(root=root, manifest=m, criteria=crit, records=records)


# ---------------------------------------------------------------------------------------------
# scores


def scores_table(records: list[JudgedRecord], crit: CriteriaFile,
                 order: list[str] | None = None) -> pd.DataFrame:
    """The scores.csv table (``order``: sample ids in the set's order)."""
    ids = crit.all_ids()
    rows = []
    for r in records:
        c = r.counts()
        row: dict[str, Any] = {"sample_id": r.sample_id, "class": r.cls, "score": r.score,
                               "image_valid": int(r.image_valid), "n_met": c["met"],
                               "n_not_met": c["not_met"], "n_unsure": c["unsure"],
                               "status": r.status}
        vm = r.verdict_map()
        for cid in ids:
            v = vm.get(cid)
            row[cid] = 1 if v == "met" else 0 if v == "not_met" else None
        rows.append(row)
    cols = ["sample_id", "class", "score", "image_valid", "n_met", "n_not_met", "n_unsure",
            "status", *ids]
    table = pd.DataFrame(rows, columns=cols)
    for cid in ids:
        table[cid] = table[cid].astype("Int64")
    if order is not None and len(table):
        rank = {sid: i for i, sid in enumerate(order)}
        table = table.iloc[np.argsort([rank.get(s, len(rank)) for s in table["sample_id"]],
                                      kind="stable")]
    return table.reset_index(drop=True)


def class_summary(records: list[JudgedRecord], crit: CriteriaFile) -> dict[str, dict[str, Any]]:
    """Per class: n, failed, valid share, score mean/quantiles, and each criterion's met rate
    (met / decided, with the share unsure)."""
    out: dict[str, dict[str, Any]] = {}
    for cls in [c for c in crit.classes if any(r.cls == c for r in records)]:
        rs = [r for r in records if r.cls == cls]
        ok = [r for r in rs if r.ok]
        scores = np.array([r.score for r in ok]) if ok else np.zeros(0)
        crits = {}
        for c in crit.for_class(cls).criteria:
            vals = [r.verdict_map().get(c.id) for r in ok]
            met, notm = vals.count("met"), vals.count("not_met")
            crits[c.id] = {"met_rate": round(met / (met + notm), 4) if met + notm else None,
                           "unsure": round(vals.count("unsure") / len(vals), 4) if vals else None}
        out[cls] = {
            "n": len(rs), "failed": len(rs) - len(ok),
            "valid": round(float(np.mean([r.image_valid for r in ok])), 4) if ok else None,
            "score_mean": round(float(scores.mean()), 4) if len(scores) else None,
            "score_quantiles": ([round(float(q), 4) for q in
                                 np.quantile(scores, [0, 0.25, 0.5, 0.75, 1])]
                                if len(scores) else None),
            "criteria": crits}
    return out


# ---------------------------------------------------------------------------------------------
# writing


def _model_classes(s: SyntheticSet) -> tuple[list[str], str]:
    """The classes criteria may name: the generating model's, else the set's."""
    m = s.model_manifest
    if m is not None and m.outputs.get("classes"):
        return [str(c) for c in m.outputs["classes"]], f"the model {m.folder}"
    return s.classes, f"the synthetic set {s.root}"


def dataset_fov_mm(s: SyntheticSet) -> float | None:
    """Field of view (mm across) of the dataset the set's model trained on, when recorded."""
    for model, ref in s.lineage.data:
        try:
            d = read_manifest(resolve_input(model, ref))
        except MedsynthError:
            continue
        mm, size = d.outputs.get("mm_per_px"), d.outputs.get("size")
        if mm and size:
            return float(mm) * float(size)
    return None


def _pixel_size(cfg: JudgeConfig, s: SyntheticSet, crit: CriteriaFile) -> float | None:
    """mm per pixel for every image of the set (None: each image's own spacing, then the
    criteria file's field of view)."""
    if cfg.mm_per_px is not None:
        return cfg.mm_per_px
    size = s.manifest.outputs.get("size")
    fov = dataset_fov_mm(s)
    if fov and size:
        return fov / float(size)
    spacing = s.manifest.outputs.get("spacing")
    if spacing:
        return float(spacing[-1])
    return None


def _check_resume(out: Path, cfg: JudgeConfig, s: SyntheticSet, crit: CriteriaFile) -> None:
    """A resumed folder must continue the same set, criteria, backend and model."""
    if (out / CRITERIA_NAME).is_file():
        old = parse_criteria((out / CRITERIA_NAME).read_bytes(), out / CRITERIA_NAME)
        if old.sha256 != crit.sha256:
            raise MedsynthError(f"{out}: was judged with another criteria file "
                                f"({old.full_version}, not {crit.full_version})",
                                hint="use another --out, or --overwrite to judge again")
    if (out / MANIFEST_NAME).is_file():
        m = read_manifest(out, "judge")
        if m.outputs.get("synthetic") is True:
            raise MedsynthError(f"{out}: holds a filtered synthetic set; choose another --out")
        ref = next((r for r in m.inputs if r.get("stage") in ("generate", "judge")), {})
        if ref.get("sha256") and ref["sha256"] != s.manifest.sha256:
            raise MedsynthError(f"{out}: judges another synthetic set than {s.root} (its "
                                "manifest's sha256 differs)",
                                hint="use another --out, or --overwrite to judge this set")
        for k in ("backend", "model"):
            was, now = m.config.get(k), getattr(cfg.settings, k)
            if k == "model" and cfg.settings.backend in ("measure", "real-features"):
                continue
            if was is not None and was != now:
                raise MedsynthError(f"{out}: was judged with {k} {was!r}, not {now!r}",
                                    hint="use another --out for another judge")
    elif any(out.iterdir()) and not (out / VERDICTS_NAME).is_file():
        raise MedsynthError(f"{out}: is not empty and is not a judged folder",
                            hint="choose an empty or new --out folder")


def real_dataset(s: SyntheticSet) -> Path | None:
    """The dataset the set's model trained on (the real-features judge's default)."""
    for model, ref in s.lineage.data:
        try:
            return resolve_input(model, ref)
        except MedsynthError:
            continue
    return None


def _criteria_for(cfg: JudgeConfig, s: SyntheticSet, names: list[str]) -> CriteriaFile:
    """The criteria file; for the real-features judge, its generated one (and the real dataset
    it is fitted on, resolved into ``cfg.settings.real``)."""
    if cfg.settings.backend != "real-features":
        return load_criteria(str(cfg.criteria))
    from medsynth.judging.realjudge import NAME, real_criteria

    if not cfg.settings.real:
        found = real_dataset(s)
        if found is None:
            raise MedsynthError(f"{s.root}: the dataset its model trained on is not found: the "
                                "real-features judge needs real training images",
                                hint="name them: --real DATASET")
        cfg.settings.real = str(Path(found).resolve())
    if cfg.criteria:
        crit = load_criteria(cfg.criteria)
        if crit.name != NAME:
            raise BadUsageError(f"{crit.path}: the real-features judge judges against the real "
                                "training images, not a checklist",
                                hint="leave out --criteria (it is made from the classes)")
        return crit
    return real_criteria(names)


def invalid_notice(crit: CriteriaFile, backend: str, n_invalid: int, n: int) -> str | None:
    """A warning when the measure judge calls far more images invalid than real images of its
    modality give: its measurers were not made for these images."""
    if backend != "measure" or n < 5:
        return None
    share, ref = n_invalid / n, crit.real_invalid_share
    base = 0.05 if ref is None else ref
    if share < max(0.3, 5 * base):
        return None
    seen = f"{100 * ref:.0f} %" if ref is not None else "a few %"
    return (f"{100 * share:.0f} % of the images were judged invalid; on real images of its "
            f"modality the {crit.measurer} measurer finds {seen}: the measure judge was made "
            "for medsynth's demo phantoms and is probably not made for these images. Judge "
            "against your own real training images instead: --backend real-features (check it "
            "first with: medsynth judge validate DATASET)")


def run_judge(cfg: JudgeConfig, *, judge: Any = None) -> JudgeSummary:
    """Judge every image of ``cfg.synth`` into the judged folder ``cfg.out``.

    Every finished image is one JSON line, flushed before the next; ``--resume`` judges exactly
    the images without a record of this backend, model and criteria (no duplicates, nothing
    lost). A request that fails for good records nothing (the next resume asks again); a server
    that fails many requests in a row stops the run with
    :class:`~medsynth.mllm.BackendUnavailable`, after scores.csv and the manifest (status
    incomplete) are written for what finished.

    Args:
        cfg: the resolved options.
        judge: an already built judge (tests, benchmarks); built from ``cfg.settings`` otherwise.
    """
    from medsynth.ui import progress_bar

    s = open_synthetic(cfg.synth)
    names, what = _model_classes(s)
    crit = _criteria_for(cfg, s, names)
    crit.check_classes(names, what, require_all=False)
    missing = [c for c in s.classes if c not in crit.classes]
    if missing:
        raise MedsynthError(f"{crit.path}: no criteria for class(es) "
                            f"{', '.join(map(repr, missing))} of the synthetic set {s.root}",
                            hint="add a checklist for every class the set holds")
    out = Path(cfg.out)
    if out.resolve() == s.root.resolve():
        raise MedsynthError(f"{out}: --out must not be the synthetic set's folder")
    check_output_dir(out, "judge", resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.resume and out.is_dir():
        _check_resume(out, cfg, s, crit)
    mm = _pixel_size(cfg, s, crit)
    table = s.table
    order = table["sample_id"].astype(str).tolist()
    previous = dedupe(read_jsonl(out / VERDICTS_NAME)) if cfg.resume else []
    done = {str(r["sample_id"]) for r in previous
            if r.get("criteria_sha256") == crit.sha256}
    todo = table[~table["sample_id"].astype(str).isin(done)]
    if cfg.limit is not None:
        todo = todo.iloc[:cfg.limit]
    if judge is None:  # before anything is written: a judge that cannot start leaves no debris
        judge = make_judge(crit, cfg.settings, n_images=len(todo))
    prepare_output_dir(out, "judge", resume=cfg.resume, overwrite=cfg.overwrite)
    if not (out / CRITERIA_NAME).is_file():
        atomic_write_bytes(out / CRITERIA_NAME, crit.text.encode("utf-8"))
    summary = JudgeSummary(skipped=len(table) - len(table[~table["sample_id"].astype(str)
                                                            .isin(done)]),
                           backend=judge.name, model=judge.model,
                           criteria_version=crit.full_version)
    inputs = [input_ref(s.root)]
    config = {"synth": str(s.root.resolve()), "criteria": str(crit.path),
              "criteria_sha256": crit.sha256, "criteria_version": crit.full_version,
              "backend": judge.name, "model": judge.model if judge.name != "measure" else None,
              "judge_model": judge.model, "mm_per_px": mm,
              "settings": dataclasses.asdict(cfg.settings)}
    started = now_iso()
    write_manifest(out, "judge", config=config, inputs=inputs,
                   outputs={"status": "running", "started": started})
    items = (JudgeItem(str(r["sample_id"]), str(r["class"]), path=s.path_of(r), mm_per_px=mm)
             for _, r in todo.iterrows())
    status = "interrupted"
    t0 = time.perf_counter()
    stream = judge.judge(items)
    try:
        with JsonlAppender(out / VERDICTS_NAME) as w, progress_bar() as bar:
            task = bar.add_task(f"judge ({judge.name})", total=len(todo), rate="")
            for o in stream:
                if o.record is None:
                    summary.errors += 1
                    if len(summary.error_messages) < 20:
                        summary.error_messages.append(f"{o.item.sample_id}: {o.error}")
                else:
                    w.write(o.record.to_dict())
                    if o.record.ok:
                        summary.judged += 1
                    else:
                        summary.failed += 1
                bar.advance(task)
                speed = bar.tasks[0].speed
                if speed:
                    bar.update(task, rate=f"{speed:.1f} img/s")
        status = "complete"
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        summary.seconds = time.perf_counter() - t0
        summary.notices = list(judge.notices)
        info = judge.info()
        judge.close()
        records = [JudgedRecord.from_dict(d) for d in dedupe(read_jsonl(out / VERDICTS_NAME))
                   if d.get("criteria_sha256") == crit.sha256]
        have = {r.sample_id for r in records}
        if status == "complete" and not set(order) <= have:
            status = "incomplete"
        summary.status = status
        tab = scores_table(records, crit, order)
        import io

        buf = io.StringIO()
        tab.to_csv(buf, index=False)
        atomic_write_text(out / SCORES_NAME, buf.getvalue())
        summary.per_class = class_summary(records, crit)
        n_invalid = sum(r.ok and not r.image_valid for r in records)
        note = invalid_notice(crit, judge.name, n_invalid, sum(r.ok for r in records))
        if note:
            summary.notices.append(note)
        outputs = {
            "status": status, "started": started, "finished": now_iso(),
            "n_images": len(order), "n_judged": len(records),
            "n_failed": sum(not r.ok for r in records),
            "n_invalid": n_invalid, "notices": summary.notices,
            "missing": len(set(order) - have), "classes": list(summary.per_class),
            "per_class": summary.per_class, "backend_info": info,
            "verdicts": VERDICTS_NAME, "scores": SCORES_NAME, "criteria": CRITERIA_NAME,
            "seconds": round(summary.seconds, 2)}
        write_manifest(out, "judge", config=config, inputs=inputs, outputs=outputs)
    return summary
