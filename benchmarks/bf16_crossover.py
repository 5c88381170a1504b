"""Where CPU bf16 autocast training starts to beat fp32: one training step per network width.

    .venv/bin/python -m benchmarks.bf16_crossover [--threads 1] [--pairs 5] [--batch 16]
    .venv/bin/python -m benchmarks bf16_crossover

The derm recipe's UNet (examples/derm-demo.yaml, built by the factory ``medsynth train`` uses)
with its ``block_out_channels`` scaled by 1, 2, 4 and 6 (1.15 M parameters up to tens of
millions), 32 px RGB, 16-token MiniLM-width text. A step is what the training loop does per
batch: forward under autocast (bf16) or not (fp32), MSE loss, backward, gradient clipping,
AdamW. Timed in interleaved pairs (fp32, bf16, fp32, ...) after two warm-up steps, so both see
the same load; the ratio is the median over the pairs. bf16 pays only where the CPU has bf16
units (recorded) and the convolutions are big enough that the bf16 kernels' gain outweighs the
casts autocast adds around every op. Results: benchmarks/results/bf16_crossover.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from benchmarks.common import record
from benchmarks.speedinfo import speed_context

WIDTHS = (1, 2, 4, 6)


def _net(scale: int) -> Any:
    from types import SimpleNamespace

    import torch

    from benchmarks.sample_speed import RECIPE
    from medsynth.models.denoiser import build_denoiser
    from medsynth.train.config import TrainConfig
    from medsynth.train.loop import denoiser_spec

    cfg = TrainConfig.from_yaml(RECIPE)
    cfg = cfg.replace(block_out_channels=[c * scale for c in cfg.block_out_channels])
    data = SimpleNamespace(channels=3, spatial_shape=(cfg.size, cfg.size), spatial_dims=2,
                           classes=["a", "b", "c"])
    torch.manual_seed(0)
    return build_denoiser(denoiser_spec(cfg, data, cross_attention_dim=384)).train()


def _stepper(net: Any, batch: int, bf16: bool) -> Any:
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    c = torch.randint(0, 4, (batch,), generator=g)
    h = torch.randn(batch, 16, 384, generator=g)
    m = torch.ones(batch, 16, dtype=torch.long)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x, t, c, h, m)
        loss = F.mse_loss(out.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    return step


def _timed(step: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import copy

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per timing")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)),
                    help="multiples of the recipe's block_out_channels")
    a = ap.parse_args(argv or [])
    torch.set_num_threads(a.threads)
    ctx = speed_context(a.threads)
    rows = []
    for scale in (int(w) for w in a.widths.split(",")):
        base = _net(scale)
        steps = {p: _stepper(copy.deepcopy(base), a.batch, p == "bf16") for p in ("fp32", "bf16")}
        for s in steps.values():
            s()
            s()
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(a.pairs):
            for p, s in steps.items():
                times[p].append(_timed(s, a.steps))
        ratios = [f / b for f, b in zip(times["fp32"], times["bf16"], strict=True)]
        row = {"width_scale": scale, "params_m": round(sum(p.numel() for p in base.parameters())
                                                        / 1e6, 2),
               "fp32_ms_per_step": round(statistics.median(times["fp32"]) * 1e3, 1),
               "bf16_ms_per_step": round(statistics.median(times["bf16"]) * 1e3, 1),
               "bf16_speedup": round(statistics.median(ratios), 3),
               "bf16_speedup_pairs": [round(r, 3) for r in ratios],
               "uptime_after": speed_context()["uptime"]}
        print(row, flush=True)
        rows.append(row)
    faster = [r for r in rows if r["bf16_speedup"] > 1.0]
    res = {"setup": f"derm recipe UNet scaled, 32 px RGB, batch {a.batch}, {a.threads} thread(s), "
                    "one training step (fwd, MSE, bwd, clip, AdamW)",
           **ctx, "rows": rows,
           "crossover_params_m": faster[0]["params_m"] if faster else None,
           "rerun_idle": f"python -m benchmarks.bf16_crossover --threads {a.threads}"}
    record("bf16_crossover", res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
