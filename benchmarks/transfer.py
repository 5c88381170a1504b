"""Does a pretrained prior make the few-shot case work? The transfer study (issue 24).

    .venv/bin/python -m benchmarks.transfer [--modality derm,cxr] [--settings 10,rare]
        [--public-per-class 300] [--seeds 5] [--n-synth 200] [--test-per-class 300]
    .venv/bin/python -m benchmarks.transfer --quick        # a minutes-long toy run (smoke test)

The prior must come from data the classifier could not simply use instead (DESIGN.md), so the
public set P comes from another acquisition site (``data demo MOD --site b``, seed 2: other
patients, another device) and the user's set U from the target site (``--site a``, seed 0).
Per modality, through the real CLI:

1. P: ``--public-per-class`` images per class (all classes) at site b; U's pool at site a,
   re-split into a common test set, a val pool and the setting's train images; the oracle's
   extra target-site images (site a, seed 1).
2. Settings: ``10`` (10 real images per class) and ``rare`` (200 per class, 10 of the last
   class; the synthetic images are all of that class).
3. Generators (class-only, the modality's CPU recipe): ``U-only`` trained on U alone; a
   P-pretrained generator (``train P``, once per modality) adapted to U with ``train U --init
   P-model`` (``--adapter full`` and ``--adapter lora``), each for ``--adapt-scale`` x the
   recipe's steps.
4. ``evaluate`` run A: real only, real + augmentation, real + synthetic from each generator,
   oracle (real + extra target-site images), paired bootstrap over test images and seeds;
   run B: the same real-only arm and seeds with the oracle arm fed P's real images instead
   ("real + P real"). Both with ``--independent-model`` (P and U share no image).

Results: benchmarks/results/transfer.json (with machine, load, date and commit) and a table
for docs/benchmarks.md. A full run trains 2 x (1 + 3 per setting) generators per modality: far
beyond a loaded 2-core machine in one session (see docs/priors.md for the estimate).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import record
from benchmarks.utility import LoadSampler, Stages, _ci, _fmt, stage, write_subset

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = ROOT / "benchmarks" / "work" / "transfer"
VAL_POOL = 30
TINY = {"size": 16, "block_out_channels": [8, 16], "attention_levels": [False, True],
        "norm_num_groups": 4, "attention_head_dim": 8, "batch_size": 8, "warmup_steps": 0,
        "checkpoint_every": 1000, "sample_every": 0, "sample_steps": 2, "log_every": 5}
"""The --quick recipe (a toy: seconds per generator)."""


def _demo(w: Path, name: str, mod: str, n: int, size: int, seed: int, site: str,
          threads: int) -> Path:
    out = w / name
    if out.exists() and not (out / "medsynth.json").exists():
        shutil.rmtree(out)
    if not (out / "medsynth.json").exists():
        stage(w / "log.txt", ["data", "demo", mod, "--out", str(out), "--n-per-class", str(n),
                              "--size", str(size), "--seed", str(seed), "--site", site,
                              "--val-fraction", "0.1", "--test-fraction", "0.1"], threads)
    return out


def setting_data(w: Path, setting: str, k: int, test_per_class: int) -> Path:
    """U of one setting: its train/val images (``rare``: the last class has ``k`` train images,
    the others 200) and the common test set, from the target-site pool."""
    import numpy as np
    import pandas as pd

    from medsynth.imaging.dataset import open_dataset

    out = w / f"s{setting}" / "data"
    if (out / "medsynth.json").exists():
        return out
    pool = open_dataset(w / "pool")
    rng = np.random.default_rng(0)
    rows = []
    for ci, cls in enumerate(pool.classes):
        t = pool.table[pool.table["class"] == cls]
        t = t.iloc[rng.permutation(len(t))]
        n = k if setting != "rare" or ci == len(pool.classes) - 1 else len(t)
        n_val = min(n, VAL_POOL)
        parts = {"test": t.iloc[:test_per_class],
                 "val": t.iloc[test_per_class:test_per_class + n_val],
                 "train": t.iloc[test_per_class + VAL_POOL:]}
        parts["train"] = parts["train"].iloc[:n] if setting != "rare" or \
            ci == len(pool.classes) - 1 else parts["train"].iloc[:200]
        rows += [p.assign(split=s) for s, p in parts.items()]
    return write_subset(pool, pd.concat(rows, ignore_index=True), out,
                        {"study": "transfer", "setting": setting, "k": k})


def _train(st: Stages, log: Path, name: str, data: Path, out: Path, recipe: Path, steps: int,
           threads: int, *extra: str) -> None:
    if (out / "medsynth.json").exists() and (out / "unet").exists():
        return
    ck = out / "checkpoints"
    done = ck.is_dir() and any((c / "state.json").is_file() for c in ck.iterdir())
    resume = ["--resume"] if done else ["--overwrite"] if out.exists() else []
    st.run(name, log, ["train", str(data), "--out", str(out), "--config", str(recipe),
                       "--max-steps", str(steps), "--threads", str(threads), "--sample-every",
                       "0", *extra, *resume], threads, steps=steps)


def _generate(st: Stages, log: Path, name: str, model: Path, out: Path, n: int,
              classes: list[str], steps: int, threads: int) -> None:
    if not (out / "medsynth.json").exists():
        st.run(name, log, ["generate", str(model), "--class", ",".join(classes), "--n", str(n),
                           "--out", str(out), "--steps", str(steps), "--format", "png",
                           "--resume"], threads)


def run_modality(mod: str, a: argparse.Namespace) -> dict[str, Any]:
    import yaml

    w = a.workdir / mod
    w.mkdir(parents=True, exist_ok=True)
    if a.quick:
        base = {**TINY, "max_steps": a.steps}
    else:
        base = yaml.safe_load((ROOT / "examples" / f"{mod}-cpu.yaml").read_text())
    size = int(base.get("size") or 32)
    recipe = w / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(base))
    steps = a.steps or int(base["max_steps"])
    adapt = max(10, int(steps * a.adapt_scale))
    k_max = max(200 if "rare" in a.settings else 0, max(int(s) for s in a.settings
                                                         if s != "rare") if any(
        s != "rare" for s in a.settings) else 0)
    if a.quick:
        k_max = a.k
    pool_n = a.test_per_class + VAL_POOL + k_max
    threads = a.threads
    _demo(w, "pool", mod, pool_n, size, 0, "a", threads)
    _demo(w, "extra", mod, a.n_synth, size, 1, "a", threads)
    public = _demo(w, "public", mod, a.public_per_class, size, 2, "b", threads)
    st = Stages(w / "stages.json")
    log = w / "log.txt"
    # The prior: pretrained once on P (all its splits but test: P is public, not evaluated on).
    _train(st, log, "pretrain_P", public, w / "prior", recipe, steps, threads,
           "--splits", "train,val")
    out: dict[str, Any] = {"recipe": "tiny (--quick)" if a.quick else f"examples/{mod}-cpu.yaml",
                           "steps": steps, "adapt_steps": adapt, "settings": {}}
    for setting in a.settings:
        k = a.k if a.quick else (10 if setting == "rare" else int(setting))
        data = setting_data(w, setting, k, a.test_per_class)
        from medsynth.imaging.dataset import open_dataset

        classes = open_dataset(data).classes
        gen_classes = classes[-1:] if setting == "rare" else classes
        sw = w / f"s{setting}"
        sst = Stages(sw / "stages.json")
        slog = sw / "log.txt"
        _train(sst, slog, "train_U", data, sw / "g_u", recipe, steps, threads)
        _train(sst, slog, "adapt_full", data, sw / "g_full", recipe, adapt, threads,
               "--init", str(w / "prior"), "--adapter", "full")
        _train(sst, slog, "adapt_lora", data, sw / "g_lora", recipe, adapt, threads,
               "--init", str(w / "prior"), "--adapter", "lora", "--lora-rank", str(a.lora_rank))
        for g in ("g_u", "g_full", "g_lora"):
            _generate(sst, slog, f"generate_{g}", sw / g, sw / f"synth_{g}", a.n_synth,
                      gen_classes, a.sample_steps, threads)
        common = ["--real", str(data), "--seeds", str(a.seeds), "--real-fraction", "1.0",
                  "--threads", str(threads), "--independent-model", "--resume",
                  "--bootstrap", str(a.bootstrap)]
        if a.quick:
            common += ["--epochs", "3", "--feature-size", "32"]
        synth = [x for g in ("g_u", "g_full", "g_lora") for x in ("--synthetic",
                                                                    str(sw / f"synth_{g}"))]
        if not (sw / "report_a" / "medsynth.json").exists():
            sst.run("evaluate_a", slog, ["evaluate", *synth, "--out", str(sw / "report_a"),
                                         "--baselines", "augment,oracle", "--extra-real",
                                         str(w / "extra"), *common], threads)
        if not (sw / "report_b" / "medsynth.json").exists():
            sst.run("evaluate_b", slog, ["evaluate", "--synthetic", str(sw / "synth_g_u"),
                                         "--out", str(sw / "report_b"), "--baselines", "oracle",
                                         "--extra-real", str(public), "--no-fidelity"
                                         if False else "--benchmark", *common], threads)
        out["settings"][setting] = {"stages": {**st.data, **sst.data},
                                    "result": arms(sw, classes[-1])}
    return out


def arms(sw: Path, rare: str) -> dict[str, Any]:
    """Per arm: balanced accuracy, gain over real-only (paired), rare-class recall."""
    res: dict[str, Any] = {}
    for rep in ("report_a", "report_b"):
        metrics = json.loads((sw / rep / "metrics.json").read_text())
        for arm in metrics["benchmark"]["arms"]:
            name = arm["kind"]
            if name == "synthetic":
                name = "synthetic:" + Path(str(arm.get("synthetic"))).name.removeprefix("synth_")
            if rep == "report_b":  # only its oracle arm is new: real + P's real images
                if name != "oracle":
                    continue
                name = "real+P"
            row: dict[str, Any] = {"balanced_accuracy": _ci(arm["metrics"]["balanced_accuracy"])}
            if "gain" in arm:
                row["gain"] = _ci(arm["gain"]["balanced_accuracy"])
                row["verdict"] = arm.get("verdict")
            pc = arm.get("per_class", {}).get(rare, {})
            rec = pc.get("recall") if isinstance(pc, dict) else None
            row["rare_recall"] = rec.get("mean") if isinstance(rec, dict) else rec
            res[name] = row
    return res


def markdown(res: dict[str, Any]) -> str:
    setup = res["setup"]
    lines = [f"Transfer study ({'--quick toy run' if setup['quick'] else 'full'}): P = "
             f"{setup['public_per_class']} other-site (site b) images per class; U = target "
             f"site; {setup['seeds']} seeds, {setup['test_per_class']} test images per class, "
             f"{setup['n_synth']} synthetic per class; wall {setup['wall_s']} s, load mean "
             f"{setup['load_mean']} (max {setup['load_max']}).", "",
             "| modality | setting | arm | balanced accuracy | gain vs real only | verdict | "
             "rare-class recall |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for mod in setup["modalities"]:
        for setting, r in res[mod]["settings"].items():
            for arm, row in r["result"].items():
                rr = row.get("rare_recall")
                lines.append(f"| {mod} | {setting} | {arm} | "
                             f"{_fmt(row['balanced_accuracy'], signed=False)} | "
                             f"{_fmt(row.get('gain'))} | {row.get('verdict', '–')} | "
                             f"{'–' if rr is None else f'{rr:.3f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modality", default="derm,cxr")
    ap.add_argument("--settings", default="10,rare")
    ap.add_argument("--public-per-class", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-synth", type=int, default=200)
    ap.add_argument("--test-per-class", type=int, default=300)
    ap.add_argument("--steps", type=int, default=0, help="generator steps (0 = the recipe's)")
    ap.add_argument("--adapt-scale", type=float, default=0.3,
                    help="adaptation steps as a share of the generator's")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--quick", action="store_true",
                    help="toy sizes (16 px, tiny UNet, a few images and steps): a smoke test")
    a = ap.parse_args(argv or [])
    a.k = 4
    if a.quick:
        a.public_per_class, a.seeds, a.n_synth = 12, 2, 6
        a.test_per_class, a.steps, a.sample_steps, a.bootstrap = 6, a.steps or 20, 2, 200
        a.workdir = a.workdir.with_name("transfer-quick")
    a.settings = [s.strip() for s in a.settings.split(",")]
    mods = a.modality.split(",")
    t0 = time.time()
    with LoadSampler(30) as load:
        res: dict[str, Any] = {m: run_modality(m, a) for m in mods}
    res["setup"] = {"modalities": mods, "settings": a.settings, "seeds": a.seeds,
                    "public_per_class": a.public_per_class, "n_synth": a.n_synth,
                    "test_per_class": a.test_per_class, "quick": a.quick,
                    "wall_s": round(time.time() - t0), **load.summary()}
    res["markdown"] = markdown(res)
    record("transfer-quick" if a.quick else "transfer", res)
    print(res["markdown"])
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
