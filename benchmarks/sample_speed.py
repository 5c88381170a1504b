"""Sampling speed: images/s per sampler and step count, medsynth's loop vs plain diffusers.

    .venv/bin/python -m benchmarks.sample_speed [--model MODEL] [--steps 10,25,50] [--batch 16]
        [--device auto|cpu|cuda]
    .venv/bin/python -m benchmarks sample_speed

The denoiser is the derm recipe's exact network (examples/derm-demo.yaml = derm-cpu.yaml's UNet:
32 px RGB, block_out_channels [16, 32, 64], attention at the last level, MiniLM width 384), built
through the factory ``medsynth train`` uses (``train.loop.denoiser_spec`` -> ``build_denoiser``)
and asserted to have the parameter count of a trained derm recipe model (1,150,195), with random
weights unless ``--model`` points at a trained model folder: speed does not depend on the weight
values. Both loops use the same scheduler (built ``.from_config`` from the recipe's training
schedule), steps, batch, classifier-free guidance (one UNet call on a doubled batch) and 16-token
text conditions:

- ``medsynth``: :func:`medsynth.models.sampler.denoise` (per-image generators, CFG on class
  and text, through the :class:`~medsynth.models.denoiser.Denoiser` interface), at each
  ``--precision`` (``auto`` = what ``generate`` runs by default on this machine);
- ``diffusers``: the loop of diffusers' own pipelines (``randn_tensor`` with a generator list,
  ``scale_model_input``, UNet, CFG, ``scheduler.step``), written as the docs show it (float32,
  the pipelines' CPU default).

Only the samplers the model supports are timed (a DDPM-trained model refuses ``rflow``). The
medsynth/diffusers ratio is the median of interleaved pairs (both see the same load). Every
result records threads, precision, load (``uptime``) and the CPU's bf16 units. With ``--model``
it also times the whole ``generate`` run (sampling + PNG, DICOM and NIfTI writers + journal) for
dpmsolver++ at 25 steps. ``--device`` (default auto: cuda when torch sees a GPU) runs both loops
there (the initial noise still from per-image CPU generators, as generate draws it; both loops end
with the images on the host, so the GPU's work is inside the timing); the result records the device
and the card. Results: benchmarks/results/sample_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import record
from benchmarks.speedinfo import speed_context

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "derm-demo.yaml"
RECIPE_UNET_PARAMS = 1_150_195
"""Parameters of the UNet of a trained derm recipe model (derm-demo.yaml / derm-cpu.yaml, three
classes, MiniLM text): counted on a model trained by ``make demo``."""


def recipe_denoiser(recipe: Path = RECIPE, n_classes: int = 3, text_dim: int = 384
                    ) -> tuple[Any, dict[str, Any]]:
    """The recipe's denoiser (random weights) and its training noise schedule, built the way
    ``medsynth train`` builds them."""
    from types import SimpleNamespace

    import torch

    from medsynth.models.denoiser import build_denoiser
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import denoiser_spec

    cfg = TrainConfig.from_yaml(recipe)
    data = SimpleNamespace(channels=3, spatial_shape=(cfg.size, cfg.size), spatial_dims=2,
                           classes=[f"c{k}" for k in range(n_classes)])
    torch.manual_seed(0)
    den = build_denoiser(denoiser_spec(cfg, data, cross_attention_dim=text_dim)).eval()
    schedule = {"num_train_timesteps": cfg.num_train_timesteps,
                "beta_schedule": cfg.beta_schedule, "prediction_type": cfg.prediction_type}
    return den, schedule


def diffusers_loop(unet: Any, scheduler: Any, *, class_ids: Any, hidden: Any, mask: Any,
                   null_class: int, seeds: list[int], steps: int, guidance: float) -> Any:
    """The denoising loop as diffusers' pipelines write it (reference for speed), on the UNet's
    device (the condition tensors there too); the images come back to the host."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    b = len(seeds)
    c, s = unet.config.in_channels, unet.config.sample_size
    dev = unet.device
    gens = [torch.Generator("cpu").manual_seed(x) for x in seeds]
    latents = randn_tensor((b, c, s, s), generator=gens, dtype=torch.float32, device=dev)
    scheduler.set_timesteps(steps, device=dev)
    latents = latents * scheduler.init_noise_sigma
    null_h = torch.zeros_like(hidden)
    null_m = torch.zeros_like(mask)
    null_m[:, 0] = 1
    enc = torch.cat([null_h, hidden])
    enc_mask = torch.cat([null_m, mask])
    labels = torch.cat([torch.full_like(class_ids, null_class), class_ids])
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise_pred = unet(inp, t, encoder_hidden_states=enc, class_labels=labels,
                              encoder_attention_mask=enc_mask).sample
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + guidance * (cond - uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
    return latents.clamp(-1, 1).cpu()


def pick_device(requested: str) -> Any:
    """``auto`` = cuda when torch sees a GPU, else cpu; ``cuda`` without one is an error."""
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"--device {requested!r}: choose auto, cpu or cuda")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU (torch.cuda.is_available() is False)")
    return torch.device(requested)


def _time(fn: Any, repeats: int) -> float:
    fn(steps=1)  # warm-up (allocations, kernel choice) with a single step
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _end_to_end(model: str, n: int, batch: int, steps: int, pairs: int = 2) -> dict[str, Any]:
    """Whole ``generate`` runs (PNG + DICOM + NIfTI), the writers overlapped with the next batch
    (as generate runs) and inline (each batch written before the next samples), interleaved."""
    import os
    from unittest import mock

    from medsynth.generate import run as run_mod
    from medsynth.generate.config import GenerateConfig

    def inline(self: Any, fn: Any, *args: Any) -> None:
        fn(*args)

    os.environ.setdefault("MEDSYNTH_NO_PROGRESS", "1")
    rates: dict[str, list[float]] = {"overlapped": [], "inline": []}
    walls: dict[str, list[float]] = {"overlapped": [], "inline": []}
    for _ in range(pairs):
        for mode in rates:
            with tempfile.TemporaryDirectory() as tmp, contextlib_patch(
                    mode == "inline", mock.patch.object(run_mod.BatchWriter, "submit", inline)):
                cfg = GenerateConfig(model=model, out=str(Path(tmp) / "synth"), classes=["all"],
                                     n=n, formats=["png", "dicom", "nifti"],
                                     sampler="dpmsolver++", steps=steps, batch_size=batch)
                t0 = time.perf_counter()
                res = run_mod.run_generate(cfg)
                walls[mode].append(time.perf_counter() - t0)
                rates[mode].append(res.images_per_second)
    ratios = [a / b for a, b in zip(rates["overlapped"], rates["inline"], strict=True)]
    return {"images": res.n_planned, "precision": "auto",
            "loop_images_per_s": round(statistics.median(rates["overlapped"]), 3),
            "loop_images_per_s_writers_inline": round(statistics.median(rates["inline"]), 3),
            "overlap_speedup_pairs": [round(r, 3) for r in ratios],
            "wall_s_incl_model_load": round(statistics.median(walls["overlapped"]), 2),
            "sampler": "dpmsolver++", "steps": steps, "formats": "png,dicom,nifti",
            "batch": batch, "uptime_after": speed_context()["uptime"]}


def contextlib_patch(active: bool, patch: Any) -> Any:
    """``patch`` when ``active``, else a context that does nothing."""
    import contextlib

    return patch if active else contextlib.nullcontext()


def _supported(schedule: dict[str, Any]) -> list[str]:
    """The samplers a model with this training schedule accepts (rflow xor the others)."""
    from medsynth.models.rflow import is_rflow
    from medsynth.models.sampler import RFLOW, SAMPLERS

    return [s for s in SAMPLERS if (s == RFLOW) == is_rflow(schedule)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from medsynth.models.sampler import denoise, make_scheduler, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="trained model folder (default: recipe network, random weights)")
    ap.add_argument("--steps", default="10,25,50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved medsynth/diffusers pairs")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="auto",
                    help="auto (cuda when torch sees a GPU), cpu or cuda: where both loops run")
    ap.add_argument("--precision", default="fp32,bf16",
                    help="medsynth precisions to time against the fp32 diffusers loop")
    ap.add_argument("--e2e-n", type=int, default=32, help="images per class of the end-to-end run")
    ap.add_argument("--e2e-steps", type=int, default=25, help="steps of the end-to-end run")
    ap.add_argument("--e2e-only", action="store_true", help="with --model: only the end-to-end")
    ap.add_argument("--name", default="sample_speed",
                    help="result file (benchmarks/results/NAME.json; gpu-check's dry run: its own)")
    args = ap.parse_args(argv or [])
    if args.e2e_only and args.model:
        res = {"model": args.model, **speed_context(args.threads),
               "end_to_end": _end_to_end(args.model, args.e2e_n, args.batch, args.e2e_steps)}
        record("sample_speed_e2e", res)
        return res
    if args.threads:
        torch.set_num_threads(args.threads)
    step_list = [int(s) for s in args.steps.split(",")]
    dev = pick_device(args.device)
    precisions = [resolve_precision(p.strip(), dev) for p in args.precision.split(",")]
    if args.model:
        from medsynth.models.bundle import load_bundle

        bundle = load_bundle(args.model)
        den, schedule, n_cls = bundle.denoiser, bundle.scheduler_config, len(bundle.classes)
        d = bundle.text_ref.hidden_size
    else:
        (den, schedule), n_cls, d = recipe_denoiser(), 3, 384
    den = den.to(dev)
    unet = den.net  # the bare diffusers UNet, for the reference loop
    n_params = sum(p.numel() for p in unet.parameters())
    if not args.model:
        assert n_params == RECIPE_UNET_PARAMS, f"recipe network has {n_params} parameters"
    b, g = args.batch, 3.0
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(b, 16, d, generator=gen).to(dev)
    mask = torch.ones(b, 16, dtype=torch.long, device=dev)
    class_ids = torch.arange(b, device=dev) % n_cls
    seeds = list(range(b))
    ids = class_ids.tolist()
    null_h = torch.zeros(1, 1, d, device=dev)
    null_m = torch.ones(1, 1, dtype=torch.long, device=dev)
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    samplers = _supported(schedule)
    ctx0 = speed_context()

    def ms_run(sampler: str, steps: int, precision: str) -> None:
        denoise(den, make_scheduler(sampler, schedule), class_ids=ids,
                text_hidden=hidden, text_mask=mask, null_class=n_cls,
                null_hidden=null_h, null_mask=null_m,
                seeds=seeds, sample_shape=shape, steps=steps, guidance=g, precision=precision)

    def df_run(sampler: str, steps: int) -> None:
        diffusers_loop(unet, make_scheduler(sampler, schedule), class_ids=class_ids,
                       hidden=hidden, mask=mask, null_class=n_cls, seeds=seeds, steps=steps,
                       guidance=g)

    rows = []
    for sampler in samplers:
        for steps in step_list:
            row: dict[str, Any] = {"sampler": sampler, "steps": steps, "batch": b}
            for prec in precisions:
                t = _time(lambda steps=steps, s=sampler, p=prec: ms_run(s, steps, p), args.repeats)
                row[f"medsynth_{prec}_images_per_s"] = round(b / t, 3)
            # The loop overhead does not depend on the scheduler: compare on one of them.
            if sampler == samplers[0] and (steps == 25 or len(step_list) == 1):
                # Interleaved (diffusers, medsynth fp32, medsynth bf16, ...): every loop sees
                # the same load, so the median of the per-pair ratios holds on a shared machine.
                times: dict[str, list[float]] = {"diffusers": [], **{p: [] for p in precisions}}
                for _ in range(max(1, args.pairs)):
                    times["diffusers"].append(_time(lambda steps=steps, s=sampler: df_run(
                        s, steps), 1))
                    for prec in precisions:
                        times[prec].append(_time(lambda steps=steps, s=sampler, p=prec: ms_run(
                            s, steps, p), 1))
                row["diffusers_images_per_s"] = round(b / statistics.median(times["diffusers"]), 3)
                for prec in precisions:
                    ratios = [td / tm for td, tm in zip(times["diffusers"], times[prec],
                                                        strict=True)]
                    row[f"medsynth_{prec}_vs_diffusers"] = round(statistics.median(ratios), 3)
                    row[f"medsynth_{prec}_vs_diffusers_pairs"] = [round(r, 3) for r in ratios]
                row["load_after"] = speed_context()["uptime"]
            print(row, flush=True)
            rows.append(row)
    results: dict[str, Any] = {
        "model": args.model or f"derm recipe network ({RECIPE.name}, random weights), 32 px RGB",
        "unet_params": n_params, "unet_params_m": round(n_params / 1e6, 2),
        "samplers": samplers, "guidance": g, "precisions": precisions, "device": str(dev),
        "card": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, **ctx0,
        "load_after": speed_context()["uptime"],
        "rerun_idle": "python -m benchmarks.sample_speed --threads 2 --steps 25",
        "runs": rows,
    }
    if args.model:
        results["end_to_end"] = _end_to_end(args.model, args.e2e_n, b, args.e2e_steps)
    record(args.name, results)
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
