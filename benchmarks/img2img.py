"""Image prompts, class translation, twins: what real images bring to generation (issue 18).

    .venv/bin/python -m benchmarks.img2img [--modality derm,cxr] [--train-steps 1500]
        [--workdir DIR] [--strengths 0.3,0.5,0.7,0.9,1.0]

For each demo (side by side, one torch thread each), through the real CLI:

1. data demo (300 phantoms per class at 32 px: 210 train, 30 val, 60 test) -> describe (train
   split) -> train (examples/<mod>-cpu.yaml, ``--train-steps`` optimizer steps: a budget that
   fits the shared 2-core machine; the recipe's own budget is 8,000-11,000 steps).
2. Class translation (MAGIC's image-to-image synthesis): for every strength, ``generate
   --init-images DATA --init-pairing other --class all`` (each image starts from a real training
   image of another class). ``evaluate --no-benchmark`` scores the sets; its real-data
   classifier (all real training images, early stopping on val) gives the share of translated
   images it assigns to the *target* class (class fidelity), and, re-loaded here, the share
   still assigned to the *source* class, per (source, target) pair. Also FID and the near-copy
   share of each set.
3. Downstream (MAGIC's comparison): real + image-to-image synthetic against real + text-to-image
   synthetic, the same count (one synthetic image per real training image, per class), with all
   real and 10 % real (few-shot): ``evaluate`` (3 seeds), and the paired difference of the two
   from the runs' test predictions (same seeds, same test images).
4. Twins: ``generate --twin DATA`` from noise and from the image at strength 0.5: the twin's own
   near-copy check (against the real test split), and ``evaluate`` with all real: a classifier
   trained on the twin alone against one trained on the real training set.

Everything is kept in ``--workdir`` (default: a temporary folder); a rerun with the same
``--workdir`` resumes every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, record, run_cli, side_by_side

ROOT = Path(__file__).resolve().parent.parent
TWIN_STRENGTHS = (1.0, 0.5)


def _tag(s: float) -> str:
    return f"{s:g}".replace(".", "p")


def _train(mod: str, w: Path, log: Path, threads: int, steps: int, n_per_class: int
           ) -> dict[str, Any]:
    """Data, descriptions and a model (each made once per workdir)."""
    import yaml

    recipe = ROOT / "examples" / f"{mod}-cpu.yaml"
    size = int(yaml.safe_load(recipe.read_text())["size"])
    stages: dict[str, Any] = {}
    if not (w / "data" / "medsynth.json").exists():
        stages["data"] = run_cli(["data", "demo", mod, "--out", str(w / "data"), "--n-per-class",
                                  str(n_per_class), "--size", str(size), "--seed", "0"],
                                 log, threads)
    if not (w / "store" / "medsynth.json").exists():
        stages["describe"] = run_cli(["describe", str(w / "data"), "--out", str(w / "store"),
                                      "--split", "train"], log, threads)
    if not (w / "model" / "medsynth.json").exists():
        resume = ["--resume"] if (w / "model" / "checkpoints").exists() else []
        stages["train"] = run_cli(["train", str(w / "data"), "--store", str(w / "store"),
                                   "--config", str(recipe), "--out", str(w / "model"),
                                   "--max-steps", str(steps), "--checkpoint-every", "500",
                                   "--threads", str(threads), *resume], log, threads)
    return {"recipe": f"examples/{mod}-cpu.yaml", "size_px": size, "train_steps": steps,
            "stages": stages}


def _generate(w: Path, log: Path, threads: int, name: str, args: list[str], steps: int = 20
              ) -> dict[str, Any]:
    out = w / name
    if (out / "medsynth.json").exists():
        return {"reused": True}
    resume = ["--resume"] if out.exists() and any(out.iterdir()) else []
    return run_cli(["generate", str(w / "model"), "--out", str(out), "--steps", str(steps),
                    "--threads", str(threads), *args, *resume], log, threads)


def _evaluate(w: Path, log: Path, threads: int, name: str, sets: list[str], args: list[str]
              ) -> dict[str, Any]:
    out = w / name
    stage: dict[str, Any] = {"reused": True}
    if not (out / "medsynth.json").exists():
        stage = run_cli(["evaluate", "--real", str(w / "data"),
                         *[x for s in sets for x in ("--synthetic", str(w / s))],
                         "--out", str(out), "--threads", str(threads),
                         "--resume", *args], log, threads)
    return {"stage": stage, "metrics": json.loads((out / "metrics.json").read_text())}


def _pair_shares(w: Path, report: str, sets: list[str]) -> dict[str, Any]:
    """Per (source class -> target class): share predicted as target and as source."""
    import pandas as pd
    import torch

    from medsynth.evaluate.benchmark import REFERENCE_MODEL
    from medsynth.evaluate.classifier import build_classifier, predict_proba
    from medsynth.evaluate.inputs import default_size, load_synthetic, open_synthetic
    from medsynth.imaging.dataset import open_dataset

    real = open_dataset(w / "data")
    classes = real.classes
    size = default_size(real)
    net = build_classifier("small", real.channels, len(classes), size)
    net.load_state_dict(torch.load(w / report / REFERENCE_MODEL, map_location="cpu",
                                   weights_only=True))
    net.eval()
    out: dict[str, Any] = {}
    for name in sets:
        s = open_synthetic(w / name)
        images = load_synthetic(s, size, classes)
        pred = predict_proba(net, images.x).argmax(1).numpy()
        table = s.table.set_index("sample_id").loc[images.ids].reset_index()
        table["init_class"] = [("" if pd.isna(v) else str(v))  # "" = from noise
                               for v in table["init_class"]]
        pairs: dict[str, Any] = {}
        for (src, tgt), idx in table.groupby(["init_class", "class"]).groups.items():
            p = pred[list(idx)]
            key = f"{src or 'noise'}->{tgt}"
            pairs[key] = {"n": len(p), "target": float((p == classes.index(tgt)).mean()),
                          "source": float((p == classes.index(src)).mean()) if src else None}
        out[name] = pairs
    return out


def _arms(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for a in (metrics.get("benchmark") or {}).get("arms", []):
        row = {"setting": a["setting"], "real": a["fraction"], "n_real": a.get("n_real"),
               "n_synthetic": a.get("n_synthetic"),
               "balanced_accuracy": a["metrics"]["balanced_accuracy"]}
        if "gain" in a:
            row["gain_balanced_accuracy"] = a["gain"]["balanced_accuracy"]
            row["verdict"] = a.get("verdict")
        rows.append(row)
    return rows


def _bootstrap_class(path: Path | None) -> Any:
    """evaluate's paired bootstrap (``medsynth.evaluate.stats.Bootstrap``, issue 13), or the
    class of the same name in the file ``path`` (evaluate's stats.py, for a checkout that does
    not have it yet), or None."""
    try:
        from medsynth.evaluate.stats import Bootstrap
    except ImportError:
        if path is None:
            return None
        import importlib.util
        import sys

        spec = importlib.util.spec_from_file_location("evaluate_stats", path)
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["evaluate_stats"] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod.Bootstrap
    return Bootstrap


def _paired(w: Path, report: str, comparisons: dict[str, tuple[tuple[str, str], tuple[str, str]]],
            seeds: int, bootstrap: Any) -> dict[str, Any]:
    """Balanced accuracy of arm A minus arm B, paired by seed and test image, per comparison.

    ``comparisons``: label -> ((setting, fraction) of A, (setting, fraction) of B), as evaluate's
    runs.jsonl names them (``none`` is the fraction of a synthetic-only arm). The per-seed
    differences, and the paired bootstrap interval over test images and seeds when ``bootstrap``
    (evaluate's Bootstrap class) is given.
    """
    import numpy as np
    import pandas as pd

    from medsynth.evaluate.benchmark import RUNS_FILE

    runs = {(r["setting"], r["fraction"], r["seed"]): r for r in
            (json.loads(x) for x in (w / report / RUNS_FILE).read_text().splitlines() if x)}
    classes = json.loads((w / report / "metrics.json").read_text())["real"]["classes"]
    cols = [f"p_{c}" for c in classes]
    boot, cache = None, {}
    out: dict[str, Any] = {}
    for label, (arm_a, arm_b) in comparisons.items():
        recs = [[runs[(*arm, s)] for s in range(seeds)] for arm in (arm_a, arm_b)]
        diffs = [ra["balanced_accuracy"] - rb["balanced_accuracy"]
                 for ra, rb in zip(*recs, strict=True)]
        entry: dict[str, Any] = {"a": list(arm_a), "b": list(arm_b), "per_seed": diffs,
                                 "mean": float(np.mean(diffs)), "bootstrap": None}
        if bootstrap is not None:
            preds = [[pd.read_csv(w / report / "predictions" / f"{r['key']}.csv") for r in rr]
                     for rr in recs]
            if boot is None:
                y = np.array([classes.index(c) for c in preds[0][0]["true"]])
                boot = bootstrap(y, len(classes), seeds)
            runs_ab = [[cache.setdefault(r["key"], boot.run_metrics(r["key"], p[cols].to_numpy()))
                        for r, p in zip(rr, pp, strict=True)] for rr, pp in zip(recs, preds,
                                                                                strict=True)]
            entry["bootstrap"] = boot.gain(*runs_ab)["balanced_accuracy"]
        out[label] = entry
    return out


def one(mod: str, root: Path, a: argparse.Namespace, threads: int) -> dict[str, Any]:
    w, log = root / mod, root / f"{mod}.log"
    w.mkdir(parents=True, exist_ok=True)
    boot = _bootstrap_class(a.bootstrap_from)
    res = _train(mod, w, log, threads, a.train_steps, a.n_per_class)
    gen: dict[str, Any] = {}
    # 2. class translation against strength
    names = []
    for s in a.strengths:
        name = f"translate-{_tag(s)}"
        names.append(name)
        gen[name] = _generate(w, log, threads, name, [
            "--init-images", str(w / "data"), "--init-pairing", "other", "--class", "all",
            "--n", str(a.n_translate), "--strength", f"{s:g}"], a.steps)
    ev = _evaluate(w, log, threads, "report-translate", names, ["--no-benchmark"])
    fid, priv = ev["metrics"]["fidelity"], ev["metrics"]["privacy"]
    pairs = _pair_shares(w, "report-translate", names)
    curve = []
    for s, name in zip(a.strengths, names, strict=True):
        ps = pairs[name]
        curve.append({
            "strength": s,
            "target_share": fid["sets"][name]["class_fidelity"]["overall"],
            "target_share_per_class": {k: v for k, v in fid["sets"][name]["class_fidelity"].items()
                                       if k != "overall"},
            "source_share": (sum(p["source"] * p["n"] for p in ps.values() if p["source"]
                                 is not None) / max(1, sum(p["n"] for p in ps.values()
                                                           if p["source"] is not None)))
            if any(p["source"] is not None for p in ps.values()) else None,
            "pairs": ps,
            "fid": fid["sets"][name]["overall"]["fid"],
            "near_copy_share_feature": priv["sets"][name]["feature"]["near_copy_share"],
            "near_copy_share_pixel": priv["sets"][name]["pixel"]["near_copy_share"],
        })
    res["translation"] = {"n_per_class": a.n_translate, "curve": curve,
                          "real_classifier_test_accuracy":
                              fid["reference"]["class_fidelity"]["overall"],
                          "fid_real_vs_real": fid["reference"]["overall"]["fid"],
                          "evaluate": ev["stage"]}
    # 3. image-to-image vs text-to-image at the same count
    full = {c: n["train"] for c, n in json.loads((w / "data" / "medsynth.json").read_text())[
        "outputs"]["counts"].items()}
    n = max(full.values()) if a.n_synthetic is None else a.n_synthetic
    t2i = next((c for c in curve if c["strength"] == 1.0), None)
    ok = [c for c in curve if c["strength"] < 1.0 and t2i is not None
          and c["target_share"] >= 0.9 * t2i["target_share"]]
    chosen = min((c["strength"] for c in ok),
                 default=max((s for s in a.strengths if s < 1.0), default=0.7))
    gen["i2i"] = _generate(w, log, threads, "i2i", [
        "--init-images", str(w / "data"), "--init-pairing", "other", "--class", "all", "--n",
        str(n), "--strength", f"{chosen:g}", "--seed", "1"], a.steps)
    gen["t2i"] = _generate(w, log, threads, "t2i", ["--class", "all", "--n", str(n), "--seed", "1"],
                           a.steps)
    fractions = ["1.0", "0.1"]
    ev = _evaluate(w, log, threads, "report-downstream", ["i2i", "t2i"],
                   ["--seeds", str(a.seeds), "--real-fraction", ",".join(fractions),
                    "--baselines", a.baselines])
    res["downstream"] = {
        "strength": chosen,
        "strength_rule": "the smallest tested strength < 1 whose target share is at least 0.9 "
                         "of text-to-image's (strength 1); else the largest tested one < 1",
        "n_synthetic_per_class": n, "arms": _arms(ev["metrics"]),
        "paired": _paired(w, "report-downstream", {
            **{f"real+i2i - real+t2i @ {f}": (("real+i2i", f), ("real+t2i", f))
               for f in fractions},
            **{f"real+{n} - real @ {f}": ((f"real+{n}", f), ("real", f))
               for f in fractions for n in ("i2i", "t2i")}}, a.seeds, boot),
        "fid": {k: v["overall"]["fid"] for k, v in ev["metrics"]["fidelity"]["sets"].items()},
        "evaluate": ev["stage"]}
    # 4. twins
    twins = []
    for s in TWIN_STRENGTHS:
        name = f"twin-{_tag(s)}"
        twins.append(name)
        gen[name] = _generate(w, log, threads, name, ["--twin", str(w / "data"),
                                                      "--strength", f"{s:g}"], a.steps)
    ev = _evaluate(w, log, threads, "report-twin", twins,
                   ["--seeds", str(a.seeds), "--real-fraction", "1.0", "--baselines", a.baselines])
    res["twin"] = {
        "sets": {name: {"strength": s, "check": json.loads((w / name / "medsynth.json")
                                                           .read_text())["outputs"]["twin"]
                        ["privacy"]}
                 for s, name in zip(TWIN_STRENGTHS, twins, strict=True)},
        "arms": _arms(ev["metrics"]),
        "paired": _paired(w, "report-twin", {
            f"{n} only - real": ((n, "none"), ("real", "1.0")) for n in twins}, a.seeds, boot),
        "evaluate_privacy": {k: {"feature": v["feature"], "pixel": v["pixel"]}
                             for k, v in ev["metrics"]["privacy"]["sets"].items()},
        "evaluate": ev["stage"]}
    res["generate"] = gen
    return res


def _ci(d: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean [lo, hi]`` of an evaluate interval (or the plain mean of a paired entry)."""
    if not d:
        return "-"
    b = d.get("bootstrap") or d
    m = b.get("mean", d.get("mean"))
    if b.get("lo") is None:
        return f"{m:+.{digits}f}"
    return f"{m:+.{digits}f} [{b['lo']:+.{digits}f}, {b['hi']:+.{digits}f}]"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _markdown(res: dict[str, Any]) -> str:
    """The generated section of docs/benchmarks.md: one block of tables per modality."""
    load = res.get("load_average", {})
    lines = [f"Setup: {res.get('setup', '?')}; load average (1, 5, 15 min) at start "
             f"{load.get('start')}, at end {load.get('end')}.", ""]
    for mod, r in res.items():
        if not isinstance(r, dict) or "translation" not in r:
            continue
        tr = r["translation"]
        lines += [f"### {mod}" + (f" (measured {r['measured_earlier']})"
                                   if r.get("measured_earlier") else ""), "",
                  f"Model: {r['recipe']}, {r['train_steps']} steps, {r['size_px']} px. "
                  f"Class translation, {tr['n_per_class']} images per target class and strength, "
                  "each from a real training image of another class; real-data classifier's "
                  f"test accuracy {_pct(tr['real_classifier_test_accuracy'])}, FID real vs real "
                  f"{tr['fid_real_vs_real']:.1f}.", "",
                  "| strength | target class share | source class share | FID | near-copy "
                  "share (features / pixels) |", "| --- | --- | --- | --- | --- |"]
        for c in tr["curve"]:
            lines.append(f"| {c['strength']:g} | {_pct(c['target_share'])} | "
                         f"{_pct(c['source_share'])} | {c['fid']:.1f} | "
                         f"{_pct(c['near_copy_share_feature'])} / "
                         f"{_pct(c['near_copy_share_pixel'])} |")
        d = r["downstream"]
        lines += ["", f"Downstream at strength {d['strength']:g} ({d['strength_rule']}), "
                  f"{d['n_synthetic_per_class']} synthetic images per class in each arm; "
                  "balanced accuracy, 95 % paired bootstrap interval over test images and "
                  "seeds:", "", "| arm | real | balanced accuracy | gain over real |",
                  "| --- | --- | --- | --- |"]
        for a in d["arms"]:
            lines.append(f"| {a['setting']} | {a['real']} | "
                         f"{_ci(a['balanced_accuracy']).lstrip('+')} | "
                         f"{_ci(a.get('gain_balanced_accuracy'))} |")
        lines += ["", "| paired difference | balanced accuracy |", "| --- | --- |"]
        lines += [f"| {k} | {_ci(v)} |" for k, v in d["paired"].items()]
        tw = r["twin"]
        lines += ["", "Twins (one per real training image), near-copy check against the real "
                  "test split:", "", "| twin | near-copy share features / pixels (expected) | "
                  "median NN distance twin / real test (features) | same (pixels) | nearest "
                  "real is its own, features / pixels (chance) |", "| --- | --- | --- | --- | --- |"]
        for name, t in tw["sets"].items():
            c = t["check"]
            if "skipped" in c:
                lines.append(f"| {name} | skipped: {c['skipped']} | | | |")
                continue
            f, p = c["feature"], c["pixel"]
            lines.append(
                f"| {name} (strength {t['strength']:g}) | {_pct(f['near_copy_share'])} / "
                f"{_pct(p['near_copy_share'])} ({_pct(f['expected_share'])}) | "
                f"{f['synth_median_nn']:.4f} / {f['real_median_nn']:.4f} | "
                f"{p['synth_median_nn']:.4f} / {p['real_median_nn']:.4f} | "
                f"{_pct(c['nearest_is_own']['feature'])} / {_pct(c['nearest_is_own']['pixel'])} "
                f"({_pct(c['nearest_is_own']['chance'])}) |")
        lines += ["", "| classifier | balanced accuracy |", "| --- | --- |"]
        lines += [f"| {a['setting']} @ {a['real']} | {_ci(a['balanced_accuracy']).lstrip('+')} |"
                  for a in tw["arms"] if a["real"] in ("1.0", "none") and "+" not in a["setting"]]
        lines += [f"| {k} | {_ci(v)} |" for k, v in tw["paired"].items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modality", default="derm,cxr")
    ap.add_argument("--train-steps", type=int, default=1500)
    ap.add_argument("--n-per-class", type=int, default=300)
    ap.add_argument("--n-translate", type=int, default=40,
                    help="translated images per target class and strength")
    ap.add_argument("--strengths", default="0.3,0.5,0.7,0.9,1.0")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="sampler steps of every generated set")
    ap.add_argument("--n-synthetic", type=int, default=None,
                    help="synthetic images per class in each downstream arm (default: as many as "
                         "the largest class has real training images)")
    ap.add_argument("--baselines", default="augment",
                    help="evaluate's baseline arms in the downstream and twin runs (none: faster)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bootstrap-from", type=Path, default=None,
                    help="evaluate's stats.py (issue 13) for the paired bootstrap intervals, when "
                         "medsynth.evaluate.stats is not in this checkout yet")
    a = ap.parse_args(argv)
    a.strengths = sorted(float(s) for s in a.strengths.split(","))
    mods = a.modality.split(",")
    tmp = None if a.workdir else tempfile.TemporaryDirectory()
    root = a.workdir or Path(tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    try:
        res: dict[str, Any] = side_by_side(lambda m: one(m, root, a, a.threads), mods)
    finally:
        if tmp:
            tmp.cleanup()
    res["setup"] = (f"{len(mods)} modalities side by side, {a.threads} torch thread(s) each; "
                    f"{a.train_steps} training steps; {a.n_per_class} phantoms per class; "
                    f"dpmsolver++ {a.steps} steps, guidance 3; {a.seeds} classifier seeds; "
                    f"baselines {a.baselines}")
    res["load_average"] = {"start": [round(x, 2) for x in load0],
                           "end": [round(x, 2) for x in os.getloadavg()]}
    old = RESULTS / "img2img.json"
    if old.exists():  # a run of some modalities keeps the others' earlier results
        prev = json.loads(old.read_text())
        for m, r in prev.get("results", {}).items():
            if m not in res and isinstance(r, dict) and "translation" in r:
                res[m] = {**r, "measured_earlier": prev.get("date"), "commit": prev.get("commit")}
    res["markdown"] = _markdown(res)
    record("img2img", res)
    return res


if __name__ == "__main__":
    main()
