"""The 3D latent pipeline on the prostate phantoms (examples/prostate-cpu.yaml), measured.

    .venv/bin/python -m benchmarks.latent_3d --workdir benchmarks/work/latent3d [--threads 2]
    .venv/bin/python -m benchmarks.latent_3d --recipe examples/prostate-cpu-64.yaml --size 64

Through the real CLI (one subprocess per stage): ``data demo prostate`` (50 per class, 32^3 at
2 mm, or ``--size``) -> ``describe`` (train split; when describe cannot read volumes yet, a store of the
phantom's own reports) -> ``train --config examples/prostate-cpu.yaml`` (autoencoder phase,
latent cache, CCELLA latent denoiser) -> ``generate`` (``--n`` per class, DDIM 50 steps, NIfTI)
-> the measurements:

- autoencoder: reconstruction PSNR / SSIM on the validation split (target PSNR > 30 dB), the
  scaling factor and the std of the scaled latents (about 1);
- windowed decoding vs whole-volume decoding (PSNR between them, reconstruction PSNR of each);
- conditioning: a small 3D classifier (MONAI ResNet-10 on 32^3 copies) trained on the real
  training phantoms recognises the *requested* class of generated volumes (accuracy and
  balanced accuracy vs chance 1/3; the real test split's accuracy as the ceiling); the lesion
  of generated volumes grows with the requested grade (dark-blob volume inside the gland
  region, measured the same way on real volumes; rank correlation);
- 2.5D FID (three orthogonal planes, the 2D feature extractor) of generated vs real test
  volumes against the real-vs-real reference (train vs test);
- time (wall and CPU) and peak memory of each stage and phase; the load average while it ran.

Every stage is skipped when its output exists (rerun to continue after a kill).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import record, run_cli

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "prostate-cpu.yaml"


class LoadWatch:
    """Samples the 1-minute load average every 30 s in a thread (mean and max while it ran)."""

    def __init__(self) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(30):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        self._stop.set()
        return {"mean": round(float(np.mean(self.samples)), 1),
                "max": round(float(np.max(self.samples)), 1), "samples": len(self.samples)}


def store_from_reports(data: Path, store: Path) -> None:
    """A describe-stage store of the phantom's own reports (when describe cannot do volumes)."""
    from medsynth.artifacts import input_ref, now_iso, write_manifest
    from medsynth.imaging.dataset import open_dataset
    from medsynth.store import DescriptionRecord, record_writer

    ds = open_dataset(data)
    rows = ds.table[ds.table["split"] == "train"]
    for cls, grp in rows.groupby("class"):
        with record_writer(store, str(cls)) as w:
            for _, r in grp.iterrows():
                w.write(DescriptionRecord(
                    image_id=str(r["image_id"]), path=str(r["path"]), cls=str(cls),
                    split="train", attributes={}, text=str(r["report"]), backend="phantom-report",
                    model="none", template_version="1", timestamp=now_iso()).to_dict())
    write_manifest(store, "describe", config={"source": "phantom reports"},
                   inputs=[input_ref(data, "data")], outputs={"classes": ds.classes})


def _finished(folder: Path) -> bool:
    """A stage folder whose manifest says it finished (describe writes one while running)."""
    man = folder / "medsynth.json"
    return man.exists() and json.loads(man.read_text()).get("outputs", {}).get("status") != "running"


def budget_recipe(w: Path, ae_steps: int | None, max_steps: int | None,
                  recipe: Path = RECIPE) -> Path:
    """The recipe, or a copy of it with fewer autoencoder/denoiser steps."""
    if ae_steps is None and max_steps is None:
        return recipe
    import yaml

    cfg = yaml.safe_load(recipe.read_text())
    if ae_steps is not None:
        cfg["ae_max_steps"] = ae_steps
        cfg["ae_checkpoint_every"] = min(cfg["ae_checkpoint_every"], ae_steps)
        cfg["ae_warmup_steps"] = min(cfg["ae_warmup_steps"], max(1, ae_steps // 8))
    if max_steps is not None:
        cfg["max_steps"] = max_steps
        cfg["checkpoint_every"] = min(cfg["checkpoint_every"], max_steps)
        cfg["warmup_steps"] = min(cfg["warmup_steps"], max(1, max_steps // 8))
    path = w / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class _Stages(dict):  # type: ignore[type-arg]
    """Stage results, saved to stages.json as each one finishes (a killed run keeps them)."""

    def __init__(self, path: Path) -> None:
        super().__init__(json.loads(path.read_text()) if path.exists() else {})
        self.path = path

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.path.write_text(json.dumps(self, indent=2))


def stages(w: Path, a: argparse.Namespace, log: Path) -> dict[str, Any]:
    """The documented pipeline, stage by stage, through the CLI (docs/train.md, prostate)."""
    data, store, model, synth = w / "data", w / "store", w / "model", w / "synth"
    threads = a.threads
    out: dict[str, Any] = _Stages(w / "stages.json")
    if not _finished(data):
        out["data"] = run_cli(["data", "demo", "prostate", "--out", str(data), "--n-per-class",
                               str(a.n_per_class), "--size", str(a.size), "--seed", "0", "--overwrite"],
                              log, threads)
    if not _finished(store):
        again = ["--resume"] if store.exists() else []
        try:
            out["describe"] = run_cli(["describe", str(data), "--out", str(store), "--split",
                                       "train", *again], log, threads)
            out["store"] = "medsynth describe"
        except RuntimeError:
            store_from_reports(data, store)
            out["store"] = "phantom reports (describe could not read volumes)"
    if not _finished(model):
        resume = ["--resume"] if (model / "checkpoints").exists() else ["--overwrite"]
        out["train"] = run_cli(["train", str(data), "--store", str(store), "--out", str(model),
                                "--config", str(budget_recipe(w, a.ae_steps, a.max_steps, a.recipe)),
                                "--threads", str(threads), *resume], log, threads)
    if not _finished(synth):
        out["generate"] = run_cli(["generate", str(model), "--out", str(synth), "--class", "all",
                                   "--n", str(a.n_synth), "--sampler", "ddim", "--steps",
                                   str(a.sample_steps), "--format", "nifti,dicom",
                                   "--batch-size", "4", "--threads", str(threads), "--resume"],
                                  log, threads)
    return out


def model_figures(model: Path) -> dict[str, Any]:
    man = json.loads((model / "medsynth.json").read_text())["outputs"]
    lat = man["latent"]
    return {"autoencoder": lat["autoencoder"], "scaling_factor": lat["scaling_factor"],
            "latent_std_after_scaling": lat["latent_std"], "latent_shape": lat["latent_shape"],
            "denoiser_train_s": man["train_time_s"], "denoiser_steps": man["steps"],
            "denoiser_images_per_s": man["images_per_s"], "peak_rss_gib": man["peak_rss_gib"],
            "final_loss": man["final_loss"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work" / "latent3d")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--size", type=int, default=32, help="phantom side (voxels over 64 mm)")
    ap.add_argument("--n-synth", type=int, default=20, help="generated volumes per class")
    ap.add_argument("--n-per-class", type=int, default=50, help="phantom volumes per class")
    ap.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--ae-steps", type=int, default=None,
                    help="autoencoder steps (default: the recipe's)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="denoiser steps (default: the recipe's)")
    ap.add_argument("--skip-eval", action="store_true", help="stop after generate")
    ap.add_argument("--eval-seeds", type=int, default=2, help="evaluate --seeds")
    ap.add_argument("--eval-epochs", type=int, default=None, help="evaluate --epochs")
    ap.add_argument("--eval-fractions", default=None, help="evaluate --real-fraction")
    ap.add_argument("--recognition-epochs", type=int, default=40,
                    help="epochs of the class-recognition classifier")
    a = ap.parse_args(argv)
    w = a.workdir
    w.mkdir(parents=True, exist_ok=True)
    watch = LoadWatch()
    t0 = time.perf_counter()
    st = dict(stages(w, a, w / "log.txt"))
    res: dict[str, Any] = {"recipe": str(a.recipe.resolve().relative_to(ROOT)),
                           "size": a.size, "threads": a.threads,
                           "budget": {"ae_steps": a.ae_steps or "recipe",
                                      "denoiser_steps": a.max_steps or "recipe",
                                      "n_per_class": a.n_per_class, "n_synth": a.n_synth,
                                      "ddim_steps": a.sample_steps},
                           "stages": st, "model": model_figures(w / "model")}
    if not a.skip_eval:
        from benchmarks.latent_eval import evaluate_3d

        res["evaluation"] = evaluate_3d(w, threads=a.threads, seeds=a.eval_seeds,
                                        epochs=a.eval_epochs, fractions=a.eval_fractions,
                                        recognition_epochs=a.recognition_epochs)
        res["budget"].update(eval_seeds=a.eval_seeds, eval_epochs=a.eval_epochs or "default",
                             eval_fractions=a.eval_fractions or "default",
                             recognition_epochs=a.recognition_epochs)
    res["wall_s_this_run"] = round(time.perf_counter() - t0, 1)
    res["load_average"] = watch.summary()
    record("latent_3d", res)
    return res


if __name__ == "__main__":
    main()
