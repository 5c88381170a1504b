"""On-policy rounds: the current model samples, the judge scores, refine trains again.

Round k >= 2 samples ``round_descriptions`` descriptions per class (drawn from the first judged
set's descriptions, seeded by (seed, k)) with ``round_candidates`` images each, using the model
of round k - 1 through the shared sampler (:func:`medsynth.models.sampler.denoise`). The images
are written as an ordinary synthetic set (``samples.csv`` via :mod:`medsynth.synthset`, PNG
files, a manifest whose input is the round k - 1 model folder), so the shared judging core reads
it like any generated set, and its lineage leads back to the model being refined.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medsynth import __version__
from medsynth.artifacts import MANIFEST_NAME, input_ref, write_manifest
from medsynth.errors import MedsynthError
from medsynth.refine.config import RefineConfig
from medsynth.synthset import SAMPLES_CSV, write_samples


def image_seed(seed: int, round_no: int, class_id: int, index: int) -> int:
    """The seed of one round image: a stable hash of where it sits in the run."""
    key = f"refine:{seed}:{round_no}:{class_id}:{index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


def round_plan(judged_table: Any, classes: list[str], cfg: RefineConfig, round_no: int
               ) -> list[dict[str, Any]]:
    """The images of a round: class, description, index and seed of each (see module doc)."""
    from medsynth.store import class_dirname

    rng = np.random.default_rng([cfg.seed, round_no])
    plan: list[dict[str, Any]] = []
    t = judged_table.copy()
    t["description"] = t["description"].fillna("").astype(str) if "description" in t else ""
    for cls in sorted(t["class"].astype(str).unique(), key=classes.index):
        descs = sorted(t.loc[t["class"].astype(str) == cls, "description"].unique())
        take = min(cfg.round_descriptions, len(descs))
        chosen = [descs[int(i)] for i in rng.choice(len(descs), size=take, replace=False)]
        cid = classes.index(cls)
        index = 0
        for desc in chosen:
            for _ in range(cfg.round_candidates):
                plan.append({"class": cls, "class_id": cid, "description": desc, "index": index,
                             "seed": image_seed(cfg.seed, round_no, cid, index),
                             "sample_id": f"{class_dirname(cls)}-{index:06d}"})
                index += 1
    return plan


def sample_round(denoiser: Any, bundle: Any, *, model_dir: Path, model_sha256: str,
                 plan: list[dict[str, Any]], generation: dict[str, Any], out: Path,
                 round_no: int, batch_size: int, device: Any, progress: bool = True) -> Path:
    """Sample ``plan`` with ``denoiser`` (the round k - 1 model) into the synthetic set ``out``.

    A set that is already complete (manifest written) is kept; an incomplete one is redone.
    """
    import shutil

    from medsynth.imaging.save import save_png
    from medsynth.imaging.storage import Rescale
    from medsynth.models.sampler import denoise
    from medsynth.refine.data import encode_conditions
    from medsynth.store import class_dirname
    from medsynth.ui import progress_bar

    if (out / MANIFEST_NAME).is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rescale = None
    if bundle.channels == 1:
        rescale = Rescale.for_values(bundle.dtype, bundle.intensity.low, bundle.intensity.high,
                                     bundle.modality)
    keys = [(p["class_id"], p["description"]) for p in plan]
    cond = encode_conditions(bundle, keys, generation.get("prototype_strength"))
    null_h, null_m = bundle.encode_text([""])
    scheduler = bundle.make_scheduler(generation["sampler"])
    rows = []
    denoiser.eval()
    with progress_bar() as bar:
        task = bar.add_task(f"round {round_no}: sampling", total=len(plan), rate="")
        bar.disable = bar.disable or not progress
        for start in range(0, len(plan), batch_size):
            batch = plan[start : start + batch_size]
            r = cond.rows([(p["class_id"], p["description"]) for p in batch])
            classes, hidden, mask = cond.of(r)  # CCELLA: the probabilities generate gives
            x = denoise(denoiser, scheduler, class_ids=classes if cond.class_probs is not None
                        else [p["class_id"] for p in batch], text_hidden=hidden, text_mask=mask,
                        null_class=bundle.null_class, null_hidden=null_h.cpu(),
                        null_mask=null_m.cpu(), seeds=[p["seed"] for p in batch],
                        sample_shape=bundle.sample_shape, steps=int(generation["steps"]),
                        guidance=float(generation["guidance"]), device=device,
                        decode=bundle.decode_hook())  # latent models: decoded to pixels
            pixels = bundle.to_pixels(x)
            for p, px in zip(batch, pixels, strict=True):
                rel = f"png/{class_dirname(p['class'])}/{p['sample_id']}.png"
                save_png(px, out / rel, rescale=rescale)
                rows.append({
                    "sample_id": p["sample_id"], "class": p["class"], "png": rel, "dicom": "",
                    "nifti": "", "report": "", "description": p["description"],
                    "seed": p["seed"], "sampler": generation["sampler"],
                    "steps": int(generation["steps"]), "guidance": float(generation["guidance"]),
                    "model_sha256": model_sha256, "medsynth_version": __version__,
                    "class_id": p["class_id"], "index": p["index"],
                    "description_source": f"refine-round-{round_no}",
                    "png_values": rescale.describe() if rescale else "", "text_cut": 0})
                bar.advance(task)
    table = write_samples(out, rows)
    counts = {str(k): int(v) for k, v in table.groupby("class").size().items()}
    write_manifest(out, "generate", config={
        "made_by": "refine", "round": round_no, "sampler": generation["sampler"],
        "steps": int(generation["steps"]), "guidance": float(generation["guidance"]),
        "prototype_strength": generation.get("prototype_strength"), "ema": True,
        "model": str(model_dir)},
        inputs=[input_ref(model_dir)],
        outputs={"n_images": len(table), "counts": counts, "classes": list(counts),
                 "formats": ["png"], "samples": SAMPLES_CSV, "model_sha256": model_sha256,
                 "channels": bundle.channels, "dtype": bundle.dtype, "modality": bundle.modality,
                 "size": bundle.size, "spatial_dims": bundle.spatial_dims, "synthetic": True})
    return out


def judge_round(synth: Path, out: Path, *, judged: Any,
                judge_factory: Callable[[Any], Any] | None = None) -> Path:
    """Judge a round's set with the shared judging core, as the first judged set was judged:
    the same criteria file (the copy in the judged folder), judge settings and pixel size.

    ``judge_factory(criteria)`` builds the judge (tests, benchmarks); default: the shared
    :func:`medsynth.judging.judges.make_judge` from the saved settings. A finished folder is kept, an
    unfinished one is resumed.
    """
    from medsynth.artifacts import read_manifest
    from medsynth.judging.criteria import load_criteria
    from medsynth.judging.judged import JudgeConfig, run_judge

    if (out / MANIFEST_NAME).is_file() and \
            read_manifest(out).outputs.get("status") == "complete":
        return out
    crit_path = judged.folder.criteria_file
    crit = load_criteria(crit_path)
    cfg = JudgeConfig(synth=str(synth), criteria=str(crit_path), out=str(out),
                      settings=judged.folder.judge_settings(),
                      mm_per_px=judged.manifest.config.get("mm_per_px"),
                      resume=out.is_dir() and any(out.iterdir()))
    summary = run_judge(cfg, judge=judge_factory(crit) if judge_factory else None)
    if summary.status != "complete":
        raise MedsynthError(f"{out}: judging round images ended {summary.status} "
                            f"({'; '.join(summary.error_messages[:2]) or 'see the folder'})",
                            hint="rerun refine with --resume to judge the rest")
    return out
