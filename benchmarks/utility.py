"""Does synthetic data help a classifier? The few-shot utility study on the derm and cxr phantoms.

    .venv/bin/python -m benchmarks.utility [--modality derm,cxr] [--settings 10,25,50,all]
        [--steps-scale 1.0] [--seeds 5] [--n-synth 200] [--test-per-class 300]
    .venv/bin/python -m benchmarks utility

Per modality, through the real CLI (one subprocess per stage, as a user runs it):

1. ``data demo`` draws one pool of phantoms (seed 0), split once: a held-out test set of
   ``--test-per-class`` images per class, a val pool of 30 per class and a train pool of 150 per
   class; ``data demo`` with seed 1 draws the oracle's extra real images (``--n-synth`` per class,
   as many as the synthetic images).
2. For every setting (10, 25, 50 real images per class, and ``all`` = the 150-per-class pool) a
   dataset folder holds exactly that setting's real images (nested subsets; val = min(setting,
   30) per class; the same test set everywhere). The generator of a setting is trained on that
   setting's train images only (``describe`` -> ``train`` with examples/<mod>-cpu.yaml, its
   ``max_steps`` scaled by ``--steps-scale``): a few-shot user has no more real images for
   the generator than for the classifier.
3. ``generate`` ``--n-synth`` images per class (DPM-Solver++ 20 steps), then ``evaluate`` with
   ``--baselines augment,oracle --extra-real <seed-1 phantoms>``: real-only, real+synthetic,
   real+augmentation, real+extra real (oracle) and synthetic-only, ``--seeds`` seeds each, paired
   bootstrap intervals over test images and seeds.

Everything resumes: each stage is skipped when its output is complete, and ``train``,
``generate`` and ``evaluate`` continue where they were killed. ``--jobs`` (modality, setting)
pairs run side by side, one torch thread each. The load average is sampled every 30 s and recorded per stage with
the step budget, so a run on a busy machine says so. Results: benchmarks/results/utility.json,
whose table ``python -m benchmarks --report-only`` puts in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import record, run_cli

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = ROOT / "benchmarks" / "work" / "utility"
TRAIN_POOL, VAL_POOL = 150, 30
"""Per class: real training pool (the ``all`` setting) and the val pool."""
SIZE = 32
"""Image size of the CPU recipes (examples/derm-cpu.yaml, cxr-cpu.yaml)."""


class LoadSampler:
    """The 1-minute load average every ``every`` seconds in a background thread."""

    def __init__(self, every: float = 30.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        s = self.samples
        return {"load_mean": round(sum(s) / len(s), 2), "load_max": round(max(s), 2)}


def stage(log: Path, args: list[str], threads: int) -> dict[str, Any]:
    """One CLI stage with its wall time, peak RSS and the load average while it ran."""
    with LoadSampler() as load:
        res = run_cli(args, log, threads)
    return {**res, **load.summary()}


class Stages:
    """Per-setting stage records in ``stages.json``: a resumed run keeps the earlier ones."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def run(self, name: str, log: Path, args: list[str], threads: int, **extra: Any) -> None:
        res = stage(log, args, threads)
        old = self.data.get(name)
        if old and "wall_s" in old:  # a resumed stage: add the time already spent
            res["wall_s_earlier"] = round(old["wall_s"] + old.get("wall_s_earlier", 0), 1)
        self.data[name] = {**res, **extra}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_pool(mod: str, w: Path, test_per_class: int, n_extra: int, threads: int) -> None:
    """The seed-0 pool (train / val / test re-split here) and the seed-1 oracle images."""
    log = w / "log.txt"
    for d in (w / "pool", w / "extra"):  # a killed `data demo` leaves a folder without manifest
        if d.exists() and not (d / "medsynth.json").exists():
            shutil.rmtree(d)
    if not (w / "pool" / "medsynth.json").exists():
        n = TRAIN_POOL + VAL_POOL + test_per_class
        stage(log, ["data", "demo", mod, "--out", str(w / "pool"), "--n-per-class", str(n),
                    "--size", str(SIZE), "--seed", "0", "--overwrite"], threads)
    if not (w / "extra" / "medsynth.json").exists():
        stage(log, ["data", "demo", mod, "--out", str(w / "extra"), "--n-per-class",
                    str(n_extra), "--size", str(SIZE), "--seed", "1", "--overwrite"], threads)


def make_setting_data(w: Path, setting: str, test_per_class: int) -> Path:
    """Dataset folder of one setting: its train/val images and the common test set."""
    import numpy as np

    from medsynth.imaging.dataset import open_dataset

    out = w / f"k{setting}" / "data"
    if (out / "medsynth.json").exists():
        return out
    pool = open_dataset(w / "pool")
    k = TRAIN_POOL if setting == "all" else int(setting)
    n_val = min(k, VAL_POOL)
    rows = []
    rng = np.random.default_rng(0)  # the same permutation for every setting: nested subsets
    for cls in pool.classes:
        t = pool.table[pool.table["class"] == cls]
        t = t.iloc[rng.permutation(len(t))]
        parts = {"test": t.iloc[:test_per_class],
                 "val": t.iloc[test_per_class:test_per_class + n_val],
                 "train": t.iloc[test_per_class + VAL_POOL:test_per_class + VAL_POOL + k]}
        for split, part in parts.items():
            rows.append(part.assign(split=split))
    import pandas as pd

    return write_subset(pool, pd.concat(rows, ignore_index=True), out,
                        {"study": "utility", "setting": setting, "train_per_class": k,
                         "val_per_class": n_val, "test_per_class": test_per_class,
                         "pool": str(pool.root)})


def write_subset(pool: Any, table: Any, out: Path, config: dict[str, Any]) -> Path:
    """A dataset folder ``out`` of ``table``'s rows of ``pool`` (images linked, not copied),
    with the pool's manifest facts and the pool as its input."""
    from medsynth.artifacts import input_ref
    from medsynth.imaging.dataset import finish_dataset

    if out.exists():
        shutil.rmtree(out)
    for p in table["path"]:
        _link(pool.root / p, out / p)
    m = pool.manifest.outputs
    finish_dataset(out, table, config=config,
                   classes=pool.classes, channels=int(m["channels"]), dtype=str(m["dtype"]),
                   modality=str(m["modality"]), inputs=[input_ref(pool.root, "data")],
                   extra={k2: m[k2] for k2 in ("phantom", "demo", "mm_per_px", "size")
                          if k2 in m})
    return out


def recipe_steps(mod: str, scale: float) -> int:
    import yaml

    steps = int(yaml.safe_load((ROOT / "examples" / f"{mod}-cpu.yaml").read_text())["max_steps"])
    return max(50, int(round(steps * scale)))


def prepare(mod: str, w: Path, setting: str, a: argparse.Namespace, threads: int) -> None:
    """data -> describe -> train -> generate for one setting (each resumes or is skipped)."""
    sw = w / f"k{setting}"
    data = make_setting_data(w, setting, a.test_per_class)
    st = Stages(sw / "stages.json")
    log = sw / "log.txt"
    if not (sw / "store" / "medsynth.json").exists():
        st.run("describe", log, ["describe", str(data), "--out", str(sw / "store"), "--split",
                                 "train", "--resume"], threads)
    steps = recipe_steps(mod, a.steps_scale)
    if not (sw / "model" / "medsynth.json").exists() or not (sw / "model" / "unet").exists():
        ck = sw / "model" / "checkpoints"
        # Resume from a complete checkpoint; a run killed before its first one starts again.
        done = ck.is_dir() and any((c / "state.json").is_file() for c in ck.iterdir())
        resume = ["--resume"] if done else ["--overwrite"] if (sw / "model").exists() else []
        st.run("train", log, ["train", str(data), "--store", str(sw / "store"), "--out",
                              str(sw / "model"), "--config",
                              str(ROOT / "examples" / f"{mod}-cpu.yaml"), "--max-steps",
                              str(steps), "--threads", str(threads), "--checkpoint-every", "250",
                              "--sample-every", "0", *resume], threads, steps=steps,
               recipe=f"examples/{mod}-cpu.yaml", steps_scale=a.steps_scale)
    if not (sw / "synth" / "medsynth.json").exists():
        st.run("generate", log, ["generate", str(sw / "model"), "--class", "all", "--n",
                                 str(a.n_synth), "--out", str(sw / "synth"), "--steps", "20",
                                 "--format", "png", "--resume"],
               threads)


def evaluate(mod: str, w: Path, setting: str, a: argparse.Namespace, threads: int
             ) -> dict[str, Any]:
    """The evaluate stage of one setting and its headline figures."""
    sw = w / f"k{setting}"
    st = Stages(sw / "stages.json")
    if not (sw / "report" / "medsynth.json").exists():
        st.run("evaluate", sw / "log.txt",
               ["evaluate", "--real", str(sw / "data"), "--synthetic", str(sw / "synth"),
                "--out", str(sw / "report"), "--seeds", str(a.seeds), "--real-fraction", "1.0",
                "--baselines", "augment,oracle", "--extra-real", str(w / "extra"),
                "--threads", str(threads), "--resume"], threads)
    metrics = json.loads((sw / "report" / "metrics.json").read_text())
    return {"stages": st.data, "result": summarise(metrics)}


def _ci(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figures of an interval worth keeping: mean, lo, hi (and the seed sd)."""
    if not d or d.get("mean") is None:
        return None
    out = {k: None if d.get(k) is None else round(float(d[k]), 4) for k in ("mean", "lo", "hi")}
    sd = (d.get("seeds") or {}).get("sd")
    if sd is not None:
        out["seed_sd"] = round(float(sd), 4)
    return out


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per arm: balanced accuracy, gain over real-only with interval, power, verdict."""
    bench = metrics["benchmark"]
    arms = {}
    for arm in bench["arms"]:
        row: dict[str, Any] = {"n_real": arm["n_real"], "n_added": arm.get("n_added", 0),
                               "balanced_accuracy": _ci(arm["metrics"]["balanced_accuracy"]),
                               "auroc": _ci(arm["metrics"]["auroc"]),
                               "converged": arm.get("converged"),
                               "epochs": round(arm.get("epochs", 0), 1)}
        if "gain" in arm:
            row.update(gain=_ci(arm["gain"]["balanced_accuracy"]), verdict=arm["verdict"],
                       detectable_gain=round(arm["power"]["mde"], 4),
                       advice=arm["power"].get("advice"))
        if "vs_augment" in arm:
            row["vs_augment"] = _ci(arm["vs_augment"]["balanced_accuracy"])
            row["vs_augment_verdict"] = arm["vs_augment_verdict"]
        if "oracle_recovery" in arm:
            rec = arm["oracle_recovery"]
            row["oracle_recovery"] = (_ci(rec) if rec.get("mean") is not None
                                      else {"undefined": rec.get("reason")})
        arms[arm["kind"]] = row
    fid = metrics["fidelity"]
    s = next(iter(fid["sets"].values()))
    return {"arms": arms, "n_test": metrics["real"]["n_test"], "n_train": metrics["real"]["n_train"],
            "fid": round(s["overall"]["fid"], 1),
            "fid_real_vs_real": round(fid["reference"]["overall"]["fid"], 1),
            "near_copy_share": next(iter(metrics["privacy"]["sets"].values()))["feature"][
                "near_copy_share"],
            "warnings": metrics.get("warnings", [])}


def _fmt(d: dict[str, Any] | None, signed: bool = True) -> str:
    if not d or d.get("mean") is None:
        return "–"

    def f(v: float) -> str:
        return f"{v:+.3f}" if signed else f"{v:.3f}"

    if d.get("lo") is None:
        return f(d["mean"])
    return f"{f(d['mean'])} [{f(d['lo'])}, {f(d['hi'])}]"


def markdown(res: dict[str, Any]) -> str:
    """The study's table for docs/benchmarks.md, with what was run and under what load."""
    setup = res["setup"]
    budget = ", ".join(f"{m} {res[m]['train_steps']} steps ({res[m]['recipe']})"
                       for m in setup["modalities"] if m in res)
    lines = [
        f"Generators: one per setting, trained on that setting's real images only: {budget}, "
        f"= {setup['steps_scale']:g} x the 30-minute recipe's max_steps; {setup['jobs']} "
        f"trainings side by side, {setup['threads_per_job']} torch thread each. "
        f"{setup['n_synth_per_class']} synthetic "
        f"and {setup['n_synth_per_class']} oracle (extra real, seed 1) images per class; "
        f"{setup['test_per_class']} held-out test images per class; {setup['seeds']} seeds; "
        f"balanced accuracy with 95 % paired bootstrap intervals (test images and seeds). This "
        f"invocation: {setup['wall_s_this_invocation']} s wall, load average mean "
        f"{setup['load_mean']} (max {setup['load_max']}) on {os.cpu_count()} cores; per stage "
        "wall times and load in benchmarks/results/utility.json.", "",

        "| modality | real / class | real only | real + synthetic: gain | detectable | verdict "
        "| augment: gain | oracle: gain | synthetic vs augment | share of oracle gain | FID "
        "(real) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mod in setup["modalities"]:
        for setting, r in (res.get(mod, {}).get("settings") or {}).items():
            a = r["result"]["arms"]
            syn, aug, orc = a.get("synthetic", {}), a.get("augment", {}), a.get("oracle", {})
            rec = syn.get("oracle_recovery") or {}
            share = "undefined (oracle gain not > 0)"
            if rec.get("mean") is not None:
                share = (f"{100 * rec['mean']:.0f} % [{100 * rec['lo']:.0f}, "
                         f"{100 * rec['hi']:.0f}]")
            lines.append(
                f"| {mod} | {setting} | {_fmt(a['real']['balanced_accuracy'], signed=False)} "
                f"| {_fmt(syn.get('gain'))} | {100 * syn.get('detectable_gain', 0):.1f} pt "
                f"| {syn.get('verdict', '–')} | {_fmt(aug.get('gain'))} "
                f"| {_fmt(orc.get('gain'))} | {_fmt(syn.get('vs_augment'))} "
                f"({syn.get('vs_augment_verdict', '–')}) | {share} "
                f"| {r['result']['fid']} ({r['result']['fid_real_vs_real']}) |")
    met, missed = [], []
    for mod in setup["modalities"]:
        for setting, r in (res.get(mod, {}).get("settings") or {}).items():
            if setting == "all":
                continue
            g = r["result"]["arms"].get("synthetic", {}).get("gain") or {}
            ok = g.get("lo") is not None and g["lo"] > 0 and g["mean"] >= 0.05
            (met if ok else missed).append(f"{mod} {setting}/class ({_fmt(g)})")
    lines += ["", "Product target (few-shot gain >= +5 points with its interval above 0): "
              f"met for {', '.join(met) or 'none'}; not met for {', '.join(missed) or 'none'}."]
    return "\n".join(lines)


def run_jobs(jobs: list[tuple[str, str]], fn: Any, n: int) -> dict[tuple[str, str], Any]:
    """``fn(mod, setting)`` for every job, at most ``n`` at a time (threads running
    subprocesses); every error is raised at the end, after the other jobs finished."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
        futures = {job: pool.submit(fn, *job) for job in jobs}
    errors = [f"{m} {s}: {f.exception()}" for (m, s), f in futures.items() if f.exception()]
    if errors:
        raise RuntimeError("; ".join(errors))
    return {job: f.result() for job, f in futures.items()}


def study(a: argparse.Namespace) -> dict[str, Any]:
    """Pools, then every (modality, setting): prepare, then evaluate, ``--jobs`` at a time."""
    mods = a.modality.split(",")
    for mod in mods:
        (a.workdir / mod).mkdir(parents=True, exist_ok=True)
        make_pool(mod, a.workdir / mod, a.test_per_class, a.n_synth, a.threads)
    # Settings first, modalities interleaved: a cut-short run has both modalities' first ones.
    jobs = [(m, s) for s in a.settings for m in mods]

    def job(mod: str, setting: str) -> Any:
        prepare(mod, a.workdir / mod, setting, a, a.threads)
        if a.prepare_only:
            return None
        return evaluate(mod, a.workdir / mod, setting, a, a.threads)

    done = run_jobs(jobs, job, a.jobs)
    return {mod: {"recipe": f"examples/{mod}-cpu.yaml",
                  "train_steps": recipe_steps(mod, a.steps_scale),
                  "settings": {s: done[(mod, s)] for s in a.settings
                               if done[(mod, s)] is not None}} for mod in mods}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the study; ``argv`` as on the command line (None = defaults)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modality", default="derm,cxr")
    ap.add_argument("--settings", default="10,25,50,all",
                    help="real training images per class, or 'all' (150 per class)")
    ap.add_argument("--steps-scale", type=float, default=1.0,
                    help="share of the recipe's max_steps each generator trains (1.0 = the "
                         "30-minute CPU recipe)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-synth", type=int, default=200, help="synthetic images per class")
    ap.add_argument("--test-per-class", type=int, default=300)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument("--jobs", type=int, default=2,
                    help="(modality, setting) pairs trained side by side; on a machine shared "
                         "with other work, more jobs get a larger share of it")
    ap.add_argument("--prepare-only", action="store_true",
                    help="train and generate only (evaluate later)")
    a = ap.parse_args(argv or [])
    a.settings = [s.strip() for s in a.settings.split(",")]
    mods = a.modality.split(",")
    t0 = time.time()
    with LoadSampler(60) as load:
        res: dict[str, Any] = study(a)
    res["setup"] = {"modalities": mods, "settings": a.settings, "seeds": a.seeds,
                    "n_synth_per_class": a.n_synth, "test_per_class": a.test_per_class,
                    "train_pool_per_class": TRAIN_POOL, "val_pool_per_class": VAL_POOL,
                    "steps_scale": a.steps_scale, "threads_per_job": a.threads,
                    "jobs": a.jobs,
                    "size_px": SIZE, "wall_s_this_invocation": round(time.time() - t0),
                    **load.summary()}
    if not a.prepare_only:
        res["markdown"] = markdown(res)  # docs/benchmarks.md shows this table, not a flat list
        record("utility", res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
