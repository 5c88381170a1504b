"""Sampling speed: images/s per sampler and step count, medsynth's loop vs plain diffusers.

    .venv/bin/python -m benchmarks.sample_speed [--model MODEL] [--steps 10,25,50] [--batch 16]
    .venv/bin/python -m benchmarks sample_speed

The denoiser is the CPU derm recipe's network (examples/derm-cpu.yaml: 32 px RGB,
block_out_channels [32, 64, 64], MiniLM width 384), with random weights unless ``--model`` points
at a trained model folder: speed does not depend on the weight values. Both loops use the same
scheduler (built ``.from_config`` from the same training schedule), steps, batch, classifier-free
guidance (one UNet call on a doubled batch) and 16-token text conditions:

- ``medsynth``: :func:`medsynth.models.sampler.denoise` (per-image generators, CFG on class
  and text, through the :class:`~medsynth.models.denoiser.Denoiser` interface);
- ``diffusers``: the loop of diffusers' own pipelines (``randn_tensor`` with a generator list,
  ``scale_model_input``, UNet, CFG, ``scheduler.step``), written as the docs show it.

With ``--model`` it also times the whole ``generate`` run (sampling + PNG, DICOM and NIfTI
writers + journal) for dpmsolver++ at 25 steps. Results: benchmarks/results/sample_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import record

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
            "prediction_type": "epsilon"}


def _recipe_unet() -> Any:
    import torch

    from medsynth.models.denoiser import DenoiserSpec, build_denoiser

    torch.manual_seed(0)
    spec = DenoiserSpec(channels=3, size=32, n_classes=3, cross_attention_dim=384,
                        block_out_channels=(32, 64, 64), attention_levels=(False, True, True))
    return build_denoiser(spec).eval()


def diffusers_loop(unet: Any, scheduler: Any, *, class_ids: Any, hidden: Any, mask: Any,
                   null_class: int, seeds: list[int], steps: int, guidance: float) -> Any:
    """The denoising loop as diffusers' pipelines write it (reference for speed)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    b = len(seeds)
    c, s = unet.config.in_channels, unet.config.sample_size
    gens = [torch.Generator("cpu").manual_seed(x) for x in seeds]
    latents = randn_tensor((b, c, s, s), generator=gens, dtype=torch.float32)
    scheduler.set_timesteps(steps)
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
    return latents.clamp(-1, 1)


def _time(fn: Any, repeats: int) -> float:
    fn(steps=1)  # warm-up (allocations, kernel choice) with a single step
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _end_to_end(model: str, n: int, batch: int, steps: int) -> dict[str, Any]:
    import os

    from medsynth.generate.config import GenerateConfig
    from medsynth.generate.run import run_generate

    os.environ.setdefault("MEDSYNTH_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenerateConfig(model=model, out=str(Path(tmp) / "synth"), classes=["all"], n=n,
                             formats=["png", "dicom", "nifti"], sampler="dpmsolver++", steps=steps,
                             batch_size=batch)
        t0 = time.perf_counter()
        res = run_generate(cfg)
        wall = time.perf_counter() - t0
    return {"images": res.n_planned, "loop_images_per_s": round(res.images_per_second, 3),
            "wall_s_incl_model_load": round(wall, 2), "sampler": "dpmsolver++", "steps": steps,
            "formats": "png,dicom,nifti", "batch": batch}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from medsynth.models.sampler import SAMPLERS, denoise, make_scheduler

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="trained model folder (default: recipe network, random weights)")
    ap.add_argument("--steps", default="10,25,50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--e2e-n", type=int, default=32, help="images per class of the end-to-end run")
    ap.add_argument("--e2e-steps", type=int, default=25, help="steps of the end-to-end run")
    args = ap.parse_args(argv or [])
    step_list = [int(s) for s in args.steps.split(",")]
    if args.model:
        from medsynth.models.bundle import load_bundle

        bundle = load_bundle(args.model)
        den, schedule, n_cls = bundle.denoiser, bundle.scheduler_config, len(bundle.classes)
        d = bundle.text_ref.hidden_size
    else:
        den, schedule, n_cls, d = _recipe_unet(), SCHEDULE, 3, 384
    unet = den.net  # the bare diffusers UNet, for the reference loop
    b, g = args.batch, 3.0
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(b, 16, d, generator=gen)
    mask = torch.ones(b, 16, dtype=torch.long)
    class_ids = torch.arange(b) % n_cls
    seeds = list(range(b))
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    rows = []
    for sampler in SAMPLERS:
        for steps in step_list:
            sched = make_scheduler(sampler, schedule)
            t_ms = _time(lambda sched=sched, steps=steps: denoise(
                den, sched, class_ids=class_ids.tolist(), text_hidden=hidden, text_mask=mask,
                null_class=n_cls, null_hidden=torch.zeros(1, 1, d),
                null_mask=torch.ones(1, 1, dtype=torch.long), seeds=seeds, sample_shape=shape,
                steps=steps, guidance=g), args.repeats)
            row = {"sampler": sampler, "steps": steps, "batch": b,
                   "medsynth_images_per_s": round(b / t_ms, 3)}
            # The loop overhead does not depend on the scheduler: compare on one of them.
            if sampler == "dpmsolver++" and (steps == 25 or len(step_list) == 1):
                # Interleaved pairs (medsynth, diffusers, medsynth, ...): both loops see the same
                # load, so the median of the per-pair ratios is robust on a shared machine.
                def ms_run(steps: int = steps) -> None:
                    denoise(den, make_scheduler("dpmsolver++", schedule), class_ids=class_ids.tolist(),
                            text_hidden=hidden, text_mask=mask, null_class=n_cls,
                            null_hidden=torch.zeros(1, 1, d),
                            null_mask=torch.ones(1, 1, dtype=torch.long), seeds=seeds,
                            sample_shape=shape, steps=steps, guidance=g)

                def df_run(steps: int = steps) -> None:
                    diffusers_loop(unet, make_scheduler("dpmsolver++", schedule), class_ids=class_ids,
                                   hidden=hidden, mask=mask, null_class=n_cls, seeds=seeds,
                                   steps=steps, guidance=g)

                ratios, t_df_all = [], []
                for _ in range(max(5, args.repeats)):
                    t_m = _time(ms_run, 1)
                    t_d = _time(df_run, 1)
                    ratios.append(t_d / t_m)
                    t_df_all.append(t_d)
                row["diffusers_images_per_s"] = round(b / statistics.median(t_df_all), 3)
                row["medsynth_vs_diffusers"] = round(statistics.median(ratios), 3)
                row["medsynth_vs_diffusers_pairs"] = [round(r, 3) for r in ratios]
            print(row, flush=True)
            rows.append(row)
    results: dict[str, Any] = {
        "model": args.model or "derm-cpu recipe network (random weights), 32 px RGB",
        "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 2),
        "guidance": g, "threads": torch.get_num_threads(),
        # The machine is shared: the load average says how contended these numbers are.
        "load_average_1min": round(__import__("os").getloadavg()[0], 2), "runs": rows,
    }
    if args.model:
        results["end_to_end"] = _end_to_end(args.model, args.e2e_n, b, args.e2e_steps)
    record("sample_speed", results)
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
