"""2D latent diffusion vs pixel space on derm at the same CPU budget: latent 64 px vs pixel 32/64 px.

    .venv/bin/python -m benchmarks.latent_2d --workdir benchmarks/work/latent2d [--budget-cpu-s 900]

Data: derm phantoms at 64 px (200 per class), described (train split). Three arms, trained side
by side (one torch thread each, so they share the machine's load alike) for the same *CPU time*
of training (``--budget-cpu-s``, user + system seconds of the train process):

- ``pixel32``: examples/derm-cpu.yaml (UNet 16-32-64 at 32 px; the 64 px images resized);
- ``pixel64``: the same recipe at 64 px;
- ``latent64``: examples/derm-latent-cpu.yaml (AutoencoderKL 4x, then the same UNet on 4 x 16 x
  16 latents); 40 % of the budget goes to the autoencoder phase, the rest to the denoiser.

Steps are set from timing runs (CPU seconds at two step counts: per-step cost and fixed start-up
cost). Each arm then generates 200 images per class (DPM-Solver++ 25 steps) and ``evaluate
--no-benchmark`` measures FID/KID against the real-vs-real reference and class fidelity (a
classifier trained on the real images names the requested class). Recorded per arm: steps,
CPU and wall time of every stage, peak RSS, the load average while it ran, the figures.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.common import fidelity_summary, record, run_cli, side_by_side
from benchmarks.latent_3d import LoadWatch

ROOT = Path(__file__).resolve().parent.parent
ARMS = {"pixel32": ("derm-cpu.yaml", ["--size", "32"]),
        "pixel64": ("derm-cpu.yaml", ["--size", "64"]),
        "latent64": ("derm-latent-cpu.yaml", [])}
AE_SHARE = 0.4


def _cpu(w: Path, name: str, args: list[str], log: Path) -> float:
    r = run_cli([*args, "--out", str(w / name), "--overwrite", "--checkpoint-every", "100000",
                 "--sample-every", "0"], log, 1)
    return float(r["cpu_s"])


def plan_steps(arm: str, w: Path, common: list[str], budget: float, log: Path) -> dict[str, Any]:
    """Steps that fill ``budget`` CPU seconds, from timing runs (saved in plan.json)."""
    plan_file = w / "plan.json"
    if plan_file.exists():
        return json.loads(plan_file.read_text())
    if arm.startswith("pixel"):
        c20 = _cpu(w, "t20", [*common, "--max-steps", "20"], log)
        c80 = _cpu(w, "t80", [*common, "--max-steps", "80"], log)
        per, fixed = (c80 - c20) / 60, c20 - 20 * (c80 - c20) / 60
        plan = {"max_steps": int((budget - fixed) / per), "cpu_per_step": per, "fixed_cpu": fixed}
    else:
        import yaml

        recipe = ROOT / "examples" / ARMS[arm][0]
        tmp = w / "timing.yaml"

        def with_steps(ae: int, ldm: int) -> list[str]:
            conf = yaml.safe_load(recipe.read_text())
            conf.update(ae_max_steps=ae, max_steps=ldm, ae_checkpoint_every=100000)
            p = tmp.with_name(f"timing_{ae}_{ldm}.yaml")
            p.write_text(yaml.safe_dump(conf))
            return [*common[:-1], str(p)]  # common ends with --config RECIPE

        a10 = _cpu(w, "a10", [*with_steps(10, 1)], log)
        a40 = _cpu(w, "a40", [*with_steps(40, 1)], log)
        l60 = _cpu(w, "l60", [*with_steps(10, 61)], log)
        per_ae, per_ldm = (a40 - a10) / 30, (l60 - a10) / 60
        fixed = a10 - 10 * per_ae - per_ldm
        ae = int(AE_SHARE * (budget - fixed) / per_ae)
        ldm = int((1 - AE_SHARE) * (budget - fixed) / per_ldm)
        plan = {"ae_max_steps": ae, "max_steps": ldm, "cpu_per_ae_step": per_ae,
                "cpu_per_step": per_ldm, "fixed_cpu": fixed}
    plan_file.write_text(json.dumps(plan))
    return plan


def one(arm: str, root: Path, data: Path, store: Path, budget: float, n: int) -> dict[str, Any]:
    import yaml

    w = root / arm
    w.mkdir(parents=True, exist_ok=True)
    log = w / "log.txt"
    recipe, extra = ARMS[arm]
    common = ["train", str(data), "--store", str(store), "--threads", "1", *extra, "--config",
              str(ROOT / "examples" / recipe)]
    plan = plan_steps(arm, w, common, budget, log)
    stages: dict[str, Any] = {}
    model = w / "model"
    if not (model / "medsynth.json").exists():
        args = list(common)
        if "ae_max_steps" in plan:
            conf = yaml.safe_load((ROOT / "examples" / recipe).read_text())
            conf["ae_max_steps"] = plan["ae_max_steps"]
            (w / "recipe.yaml").write_text(yaml.safe_dump(conf))
            args[-1] = str(w / "recipe.yaml")
        resume = ["--resume"] if (model / "checkpoints").exists() else ["--overwrite"]
        stages["train"] = run_cli([*args, "--out", str(model), "--max-steps",
                                   str(plan["max_steps"]), *resume], log, 1)
    synth, report = w / "synth", w / "report"
    if not (synth / "medsynth.json").exists():
        stages["generate"] = run_cli(["generate", str(model), "--out", str(synth), "--class",
                                      "all", "--n", str(n), "--steps", "25", "--threads", "1",
                                      "--resume"], log, 1)
    if not (report / "metrics.json").exists():
        stages["evaluate"] = run_cli(["evaluate", "--real", str(data), "--synthetic", str(synth),
                                      "--out", str(report), "--no-benchmark", "--threads", "1",
                                      "--resume"], log, 1)
    prev = json.loads((w / "stages.json").read_text()) if (w / "stages.json").exists() else {}
    stages = {**prev, **stages}
    (w / "stages.json").write_text(json.dumps(stages))
    metrics = json.loads((report / "metrics.json").read_text())
    fid = metrics["fidelity"]
    s = next(iter(fid["sets"].values()))
    man = json.loads((model / "medsynth.json").read_text())["outputs"]
    out = {"plan": plan, "stages": stages, **fidelity_summary(metrics),
           "class_fidelity": (s.get("class_fidelity") or {}).get("overall"),
           "class_fidelity_real": (fid["reference"].get("class_fidelity") or {}).get("overall"),
           "train_cpu_s": stages.get("train", {}).get("cpu_s")}
    if man.get("latent"):
        out["autoencoder"] = man["latent"]["autoencoder"]
        out["latent_std"] = man["latent"]["latent_std"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work" / "latent2d")
    ap.add_argument("--budget-cpu-s", type=float, default=900.0)
    ap.add_argument("--n-synth", type=int, default=200)
    ap.add_argument("--arms", default=",".join(ARMS))
    a = ap.parse_args(argv)
    root = a.workdir
    root.mkdir(parents=True, exist_ok=True)
    data, store = root / "data", root / "store"
    if not (data / "medsynth.json").exists():
        run_cli(["data", "demo", "derm", "--out", str(data), "--n-per-class", "200", "--size",
                 "64", "--seed", "0", "--overwrite"], root / "log.txt")
    if not (store / "medsynth.json").exists():
        run_cli(["describe", str(data), "--out", str(store), "--split", "train", "--overwrite"],
                root / "log.txt")
    watch = LoadWatch()
    res: dict[str, Any] = side_by_side(
        lambda arm: one(arm, root, data, store, a.budget_cpu_s, a.n_synth), a.arms.split(","))
    res["setup"] = (f"derm phantoms 64 px, 200/class; arms side by side, 1 torch thread each; "
                    f"{a.budget_cpu_s:g} CPU-s of training per arm; {os.cpu_count()} cores")
    res["load_average"] = watch.summary()
    record("latent_2d", res)
    return res


if __name__ == "__main__":
    main()
