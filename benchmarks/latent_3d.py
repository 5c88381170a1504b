"""The 3D latent pipeline on the prostate phantoms (examples/prostate-cpu.yaml), measured.

    .venv/bin/python -m benchmarks.latent_3d --workdir benchmarks/work/latent3d [--threads 1]

Through the real CLI (one subprocess per stage): ``data demo prostate`` (50 per class, 64^3,
1 mm) -> ``describe`` (train split; when describe cannot read volumes yet, a store of the
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
    from medsynth.data.dataset import open_dataset
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


def stages(w: Path, threads: int, n_synth: int, log: Path) -> dict[str, Any]:
    data, store, model, synth = w / "data", w / "store", w / "model", w / "synth"
    out: dict[str, Any] = {}
    if not (data / "medsynth.json").exists():
        out["data"] = run_cli(["data", "demo", "prostate", "--out", str(data), "--n-per-class",
                               "50", "--size", "64", "--seed", "0", "--overwrite"], log, threads)
    if not (store / "medsynth.json").exists():
        try:
            out["describe"] = run_cli(["describe", str(data), "--out", str(store), "--split",
                                       "train", "--overwrite"], log, threads)
            out["store"] = "medsynth describe"
        except RuntimeError:
            store_from_reports(data, store)
            out["store"] = "phantom reports (describe could not read volumes)"
    if not (model / "medsynth.json").exists():
        resume = ["--resume"] if (model / "checkpoints").exists() else ["--overwrite"]
        out["train"] = run_cli(["train", str(data), "--store", str(store), "--out", str(model),
                                "--config", str(RECIPE), "--threads", str(threads), *resume],
                               log, threads)
    if not (synth / "medsynth.json").exists():
        out["generate"] = run_cli(["generate", str(model), "--out", str(synth), "--class", "all",
                                   "--n", str(n_synth), "--sampler", "ddim", "--steps", "50",
                                   "--format", "nifti", "--batch-size", "4", "--threads",
                                   str(threads), "--resume"], log, threads)
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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-synth", type=int, default=20, help="generated volumes per class")
    ap.add_argument("--skip-eval", action="store_true", help="stop after generate")
    a = ap.parse_args(argv)
    w = a.workdir
    w.mkdir(parents=True, exist_ok=True)
    done = w / "stages.json"
    prev = json.loads(done.read_text()) if done.exists() else {}
    watch = LoadWatch()
    t0 = time.perf_counter()
    new = stages(w, a.threads, a.n_synth, w / "log.txt")
    st = {**prev, **new}
    done.write_text(json.dumps(st, indent=2))
    res: dict[str, Any] = {"recipe": "examples/prostate-cpu.yaml", "threads": a.threads,
                           "stages": st, "model": model_figures(w / "model")}
    if not a.skip_eval:
        from benchmarks.latent_eval import evaluate_3d

        res["evaluation"] = evaluate_3d(w, threads=a.threads)
    res["wall_s_this_run"] = round(time.perf_counter() - t0, 1)
    res["load_average"] = watch.summary()
    record("latent_3d", res)
    return res


if __name__ == "__main__":
    main()
