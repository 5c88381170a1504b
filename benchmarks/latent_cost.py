"""CPU cost of each phase of examples/prostate-cpu-64.yaml, per step, in one process (1 thread).

    .venv/bin/python -m benchmarks.latent_cost [--steps 3]

On a shared machine the wall time of a run says more about the other jobs than about the
recipe; the *CPU time* of one step does not. This measures, with the recipe's own networks
(random weights, the cost does not depend on them) and ``time.process_time``:

- an autoencoder training step (batch of ``ae_batch_size`` patches, L1 + KL, backward, Adam);
- encoding and decoding one whole 64^3 volume (latent cache, reconstruction PSNR, generate);
- a latent denoiser training step (batch of ``batch_size`` latents, text cross-attention,
  backward, AdamW);
- one sampling step of one volume (two UNet passes: classifier-free guidance);

then extrapolates the recipe (its step counts, 105 training and 15 validation volumes, 20
generated volumes per class at 50 DDIM steps) to CPU minutes, i.e. the wall time on an idle
machine with one thread (two threads shorten the convolutions' share by up to half).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import record

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "prostate-cpu-64.yaml"


def _cpu(fn: Any, n: int) -> float:
    fn()  # warm-up (allocations, MKL/oneDNN kernels)
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


def data_costs(n: int = 3) -> dict[str, float]:
    """CPU seconds per volume of the two stages before train: rendering a 64^3 phantom
    (``data demo prostate``, NIfTI writing excluded) and the offline prostate measurer
    (``describe``, attributes backend)."""
    from medsynth.data.demo import prostate
    from medsynth.pixel_attributes.prostate import measure_prostate

    t0 = time.process_time()
    vols = [prostate.render(prostate.CLASSES[i % 3], i, 64, 0)[0] for i in range(n)]
    render = (time.process_time() - t0) / len(vols)
    t0 = time.process_time()
    for v in vols:
        measure_prostate(v, prostate.affine(64))
    return {"render_64^3": round(render, 2),
            "measure_64^3": round((time.process_time() - t0) / len(vols), 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from medsynth.models.autoencoder import AutoencoderSpec, build_autoencoder
    from medsynth.models.denoiser import DenoiserSpec, build_denoiser

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data-only", action="store_true",
                    help="only the data/describe costs, added to an existing results file")
    a = ap.parse_args(argv)
    if a.data_only:
        import json

        from benchmarks.common import RESULTS

        prev = json.loads((RESULTS / "latent_cost.json").read_text())["results"]
        d = data_costs()
        prev["cpu_s_per"].update(d)
        prev["recipe_cpu_min"]["data demo prostate (150 volumes)"] = round(
            150 * d["render_64^3"] / 60, 1)
        prev["recipe_cpu_min"]["describe (105 train volumes)"] = round(
            105 * d["measure_64^3"] / 60, 1)
        prev["recipe_cpu_min_total"] = round(sum(prev["recipe_cpu_min"].values()), 1)
        record("latent_cost", prev)
        return prev
    torch.set_num_threads(1)
    torch.manual_seed(0)
    r = yaml.safe_load(RECIPE.read_text())
    size = 64
    patch = int(r["ae_patch_size"][0])
    spec = AutoencoderSpec(spatial_dims=3, channels=1, latent_channels=r["ae_latent_channels"],
                           block_out_channels=tuple(r["ae_block_out_channels"]),
                           layers_per_block=r["ae_layers_per_block"],
                           norm_num_groups=r["ae_norm_num_groups"])
    ae = build_autoencoder(spec)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-4)
    xb = torch.rand(r["ae_batch_size"], 1, patch, patch, patch) * 2 - 1

    def ae_step() -> None:
        recon, mu, sigma = ae(xb)
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1).mean()
        loss = (recon - xb).abs().mean() + r["ae_kl_weight"] * kl
        opt.zero_grad()
        loss.backward()
        opt.step()

    vol = torch.rand(1, 1, size, size, size) * 2 - 1
    ae.eval()
    with torch.no_grad():
        z = ae.encode_stage_2_inputs(vol)
        enc = _cpu(lambda: ae.encode_stage_2_inputs(vol), a.steps)
        dec = _cpu(lambda: ae.decode_stage_2_outputs(z), a.steps)
    ae.train()
    ae_cost = _cpu(ae_step, a.steps)
    latent = tuple(z.shape[1:])

    dspec = DenoiserSpec(channels=latent[0], n_classes=3, cross_attention_dim=384,
                         shape=latent[1:], spatial_dims=3, kind="monai",
                         block_out_channels=tuple(r["block_out_channels"]),
                         attention_levels=tuple(r["attention_levels"]),
                         layers_per_block=r["layers_per_block"],
                         attention_head_dim=r["attention_head_dim"],
                         norm_num_groups=r["norm_num_groups"])
    den = build_denoiser(dspec)
    dopt = torch.optim.AdamW(den.parameters(), lr=1e-4)
    bs = int(r["batch_size"])
    zb = torch.randn(bs, *latent)
    t = torch.randint(0, 1000, (bs,))
    cls = torch.randint(0, 3, (bs,))
    text = torch.randn(bs, 32, 384)
    mask = torch.ones(bs, 32, dtype=torch.bool)

    def den_step() -> None:
        loss = (den(zb, t, cls, text, mask) - zb).pow(2).mean()
        dopt.zero_grad()
        loss.backward()
        dopt.step()

    den_cost = _cpu(den_step, a.steps)
    den.eval()
    with torch.no_grad():
        z2 = torch.randn(2, *latent)
        sample = _cpu(lambda: den(z2, t[:2], cls[:2], text[:2], mask[:2]), a.steps)

    n_train, n_val, n_gen, ddim = 105, 15, 60, 50
    phases = {
        "autoencoder_training": r["ae_max_steps"] * ae_cost,
        "reconstruction_psnr (val volumes)": n_val * (enc + dec),
        "latent_cache (train volumes)": n_train * enc,
        "denoiser_training": r["max_steps"] * den_cost,
        "generate (60 volumes, DDIM 50, CFG)": n_gen * (ddim * sample / 1 + dec),
    }
    res = {
        "recipe": "examples/prostate-cpu-64.yaml", "threads": 1, "steps_timed": a.steps,
        "latent_shape": list(latent),
        "cpu_s_per": {"ae_step": round(ae_cost, 2), "encode_64^3": round(enc, 2),
                      "decode_64^3": round(dec, 2), "denoiser_step": round(den_cost, 3),
                      "sampling_step_cfg_pair": round(sample, 3)},
        "recipe_cpu_min": {k: round(v / 60, 1) for k, v in phases.items()},
    }
    res["recipe_cpu_min_total"] = round(sum(phases.values()) / 60, 1)
    record("latent_cost", res)
    return res


if __name__ == "__main__":
    print(main())
