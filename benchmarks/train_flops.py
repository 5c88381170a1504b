"""Achieved GFLOP/s of a training step against this machine's fp32 and bf16 matmul peaks.

    .venv/bin/python -m benchmarks.train_flops [--threads N] [--seconds 8]
    .venv/bin/python -m benchmarks train_flops

One optimizer step of the denoiser (forward, backward, AdamW; MSE loss on v-targets) is counted
with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls, attention: the
compute that has a peak; norms and element-wise work are not counted, as in every MFU figure),
then timed for ``--seconds`` in four variants: fp32, bf16 autocast (fp32 master weights, what
``mixed_precision: bf16`` does), and both with channels-last memory. Two networks: the CPU
recipe's (examples/derm-cpu.yaml, 32 px, batch 16) and a 7 M-parameter UNet at 32 px,
batch 32 (about the size where the fp32 reference loop was said to run near the fp32 peak).
Peaks: square matmuls of 1024 and 2048 at the same thread count, best of the two.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import matmul_peak, record


def _unet(block: tuple[int, ...], attn: tuple[bool, ...], head_dim: int, groups: int) -> Any:
    import torch

    from medsynth.models.denoiser import DenoiserSpec, build_denoiser

    torch.manual_seed(0)
    spec = DenoiserSpec(channels=3, size=32, n_classes=3, cross_attention_dim=384,
                        block_out_channels=block, attention_levels=attn,
                        attention_head_dim=head_dim, norm_num_groups=groups)
    return build_denoiser(spec).net.train()  # the bare diffusers UNet


def _step_fn(unet: Any, batch: int, bf16: bool, channels_last: bool) -> Any:
    import torch
    import torch.nn.functional as F

    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randn(batch, 3, 32, 32, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, 3, (batch,), generator=g)
    h = torch.randn(batch, 16, 384, generator=g)
    m = torch.ones(batch, 16, dtype=torch.long)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = unet(x, t, encoder_hidden_states=h, class_labels=y,
                        encoder_attention_mask=m).sample
        loss = F.mse_loss(pred.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _flops(unet: Any, batch: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    step = _step_fn(unet, batch, bf16=False, channels_last=False)
    with FlopCounterMode(display=False) as fc:
        step()
    return int(fc.get_total_flops())


def _rate(step: Any, seconds: float) -> float:
    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


NETS = {
    "recipe (derm-cpu.yaml)": dict(block=(16, 32, 64), attn=(False, False, True), head_dim=16,
                                   groups=8, batch=16),
    "7M UNet": dict(block=(40, 80, 160), attn=(False, True, True), head_dim=20, groups=8,
                      batch=32),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import os

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args(argv or [])
    torch.set_num_threads(a.threads)
    peaks = {dt: round(max(matmul_peak(dt, n=n) for n in (1024, 2048)), 1)
             for dt in ("float32", "bfloat16")}
    print("matmul peaks GFLOP/s:", peaks, flush=True)
    nets = []
    for name, c in NETS.items():
        unet = _unet(c["block"], c["attn"], c["head_dim"], c["groups"])
        params = sum(p.numel() for p in unet.parameters())
        flops = _flops(unet, c["batch"])
        row: dict[str, Any] = {"network": name, "params_m": round(params / 1e6, 2),
                               "batch": c["batch"], "gflop_per_step": round(flops / 1e9, 2),
                               "variants": {}}
        for var, (bf16, cl) in {"fp32": (False, False), "bf16": (True, False),
                                "fp32 channels-last": (False, True),
                                "bf16 channels-last": (True, True)}.items():
            unet = _unet(c["block"], c["attn"], c["head_dim"], c["groups"])
            sps = _rate(_step_fn(unet, c["batch"], bf16, cl), a.seconds)
            gf = flops * sps / 1e9
            peak = peaks["bfloat16" if bf16 else "float32"]
            row["variants"][var] = {"images_per_s": round(sps * c["batch"], 1),
                                    "gflops": round(gf, 1), "of_peak": round(gf / peak, 3)}
            print(name, var, row["variants"][var], flush=True)
        nets.append(row)
    res = {"threads": a.threads, "load_average_1min": round(os.getloadavg()[0], 2),
           "matmul_peak_gflops": peaks, "networks": nets}
    record("train_flops", res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
