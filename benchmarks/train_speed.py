"""Throughput of `medsynth train` vs a reference loop in the style of diffusers' examples.

The reference follows ``examples/text_to_image/train_text_to_image.py`` and
``examples/unconditional_image_generation/train_unconditional.py``: a torch Dataset that opens
and decodes each PNG with PIL every time it is drawn, a DataLoader, the text encoder run on
every batch, then the same UNet (same config), batch size, resolution, loss and EMA update.
medsynth decodes the dataset once and encodes each distinct description once.

Reported: images/s of both and their ratio, and medsynth with bf16 autocast vs fp32 (on CPU
here; on a GPU the same switch is mixed_precision: bf16). Numbers are medians over logged
windows after a warm-up; on a shared machine they move with the other load.

On a GPU (``--device cuda``, what scripts/gpu-check.sh runs): both loops at ``--size`` (128) with
``--precision bf16`` on the same UNet (``--recipe``'s), then medsynth alone on the GPU recipe's
UNet (``--gpu-recipe``, examples/derm-gpu.yaml), each with its FLOPs per image (forward +
backward, torch's FlopCounterMode) and the share of the card's bf16 peak (a square bf16 matmul
measured on the card, and the data-sheet dense figure where the card is known). Results:
``--name`` (train_speed, or train_speed_gpu).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import record

SIZE, BATCH, STEPS, N_PER_CLASS = 32, 16, 60, 40


def _dataset(root: Path) -> tuple[Path, Path]:
    from medsynth.data.demo.common import DemoConfig, write_demo

    ds = root / "derm"
    write_demo(DemoConfig("derm", str(ds), n_per_class=N_PER_CLASS, size=SIZE, workers=1))
    store = root / "store"
    from typer.testing import CliRunner

    from medsynth.cli import app

    r = CliRunner().invoke(app, ["describe", "run", str(ds), "--out", str(store)])
    if r.exit_code != 0:
        raise RuntimeError(r.output)
    return ds, store


ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "derm-cpu.yaml"
DEVICE = "cpu"
PRECISION = "no"
# Dense bf16 tensor-core peaks of the data sheets (TFLOP/s), by a name nvidia-smi prints.
SHEET_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
                     "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def _cfg(recipe: Path | None = None, **kw: Any) -> Any:
    from medsynth.train.config import TrainConfig

    base = TrainConfig.from_yaml(recipe or RECIPE)
    return base.replace(max_steps=STEPS, batch_size=BATCH, log_every=5, checkpoint_every=10_000,
                        sample_every=0, sample_per_class=1, sample_steps=2, size=SIZE, **kw)


def medsynth_speed(ds: Path, store: Path, out: Path, recipe: Path | None = None,
                   **kw: Any) -> float:
    import csv

    from medsynth.train.loop import train

    train(ds, out, cfg=_cfg(recipe, **kw), store_path=store, progress=False)
    with open(out / "train_log.csv", newline="") as f:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(f)][1:]  # skip warm-up window
    return statistics.median(rates)


def reference_speed(ds: Path, store: Path) -> float:
    """The diffusers-example way: PIL decode per item, text encoder per batch."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    from PIL import Image
    from transformers import AutoModel, AutoTokenizer

    from medsynth.imaging.dataset import open_dataset
    from medsynth.models.denoiser import DenoiserSpec, build_denoiser
    from medsynth.models.text_encoder import default_text_encoder_path
    from medsynth.store import open_store

    cfg = _cfg()
    dev = torch.device(DEVICE)
    bf16 = PRECISION == "bf16"
    d = open_dataset(ds)
    texts = {k: r.text for k, r in open_store(store).by_image().items()}
    rows = d.split("train").reset_index(drop=True)
    classes = d.classes

    class PngDataset(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict[str, Any]:
            r = rows.iloc[i]
            im = np.asarray(Image.open(d.root / r["path"]).convert("RGB"), dtype=np.float32)
            x = torch.from_numpy(im).permute(2, 0, 1) / 127.5 - 1.0
            if torch.rand(1) < 0.5:
                x = x.flip(-1)
            return {"pixel_values": x, "label": classes.index(r["class"]),
                    "text": texts.get(r["image_id"], "")}

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(PngDataset(), batch_size=BATCH, shuffle=True, drop_last=True)
    path = str(default_text_encoder_path())
    tok, enc = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval().to(dev)
    spec = DenoiserSpec(channels=3, size=SIZE, n_classes=len(classes), cross_attention_dim=384,
                        block_out_channels=tuple(cfg.block_out_channels),
                        attention_levels=tuple(cfg.attention_levels),
                        attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups)
    unet = build_denoiser(spec).net.train().to(dev)  # the bare diffusers UNet
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True,
                   model_cls=UNet2DConditionModel, model_config=unet.config)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule=cfg.beta_schedule)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    step, times, t0 = 0, [], None
    while step < STEPS:
        for batch in loader:
            if step == 5:
                t0 = time.perf_counter()
            ids = tok(batch["text"], padding=True, truncation=True, max_length=64,
                      return_tensors="pt").to(dev)
            with torch.no_grad():
                h = enc(**ids).last_hidden_state
            x0 = batch["pixel_values"].to(dev)
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (x0.shape[0],), device=dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=h,
                            class_labels=batch["label"].to(dev),
                            encoder_attention_mask=ids["attention_mask"]).sample
            F.mse_loss(pred.float(), noise).backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema.step(unet.parameters())
            step += 1
            if step >= STEPS:
                break
    assert t0 is not None
    if dev.type == "cuda":
        torch.cuda.synchronize()
    times.append((STEPS - 5) * BATCH / (time.perf_counter() - t0))
    return times[0]


def _unet_flops_per_image(recipe: Path, batch: int = 4) -> float:
    """Forward + backward FLOPs of one image through ``recipe``'s UNet at SIZE (fp32 count)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from medsynth.models.denoiser import DenoiserSpec, build_denoiser

    cfg = _cfg(recipe)
    spec = DenoiserSpec(channels=3, size=SIZE, n_classes=3, cross_attention_dim=384,
                        block_out_channels=tuple(cfg.block_out_channels),
                        attention_levels=tuple(cfg.attention_levels),
                        layers_per_block=cfg.layers_per_block,
                        attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups)
    unet = build_denoiser(spec).net.to(DEVICE)
    x = torch.randn(batch, 3, SIZE, SIZE, device=DEVICE)
    h = torch.randn(batch, 16, 384, device=DEVICE)
    with FlopCounterMode(display=False) as fc:
        pred = unet(x, torch.zeros(batch, dtype=torch.long, device=DEVICE), encoder_hidden_states=h,
                    class_labels=torch.zeros(batch, dtype=torch.long, device=DEVICE)).sample
        F.mse_loss(pred, x).backward()
    return fc.get_total_flops() / batch


def device_bf16_peak_tflops(n: int = 8192, seconds: float = 3.0) -> float:
    """Achieved TFLOP/s of a square bf16 matmul on DEVICE (the card's practical ceiling)."""
    import torch

    dev = torch.device(DEVICE)
    if dev.type != "cuda":
        n = 1024
    a = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        count += 10
        sync()
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e12


def _card() -> tuple[str, float | None]:
    import torch

    if DEVICE != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name()
    sheet = next((v for k, v in SHEET_BF16_TFLOPS.items() if k in name), None)
    return name, sheet


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import argparse
    import os

    import torch

    global SIZE, BATCH, STEPS, N_PER_CLASS, RECIPE, DEVICE, PRECISION
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads of both loops (default: all cores; run it on an idle machine)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (the GPU comparison)")
    ap.add_argument("--size", type=int, default=SIZE)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--n-per-class", type=int, default=N_PER_CLASS)
    ap.add_argument("--precision", default="bf16", help="GPU runs: bf16, fp16 or no")
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="UNet of the comparison")
    ap.add_argument("--gpu-recipe", type=Path, default=ROOT / "examples" / "derm-gpu.yaml",
                    help="GPU runs: the recipe UNet timed alone (its share of the bf16 peak)")
    ap.add_argument("--name", default=None, help="result file name (benchmarks/results/NAME.json)")
    a = ap.parse_args(argv or [])
    SIZE, BATCH, STEPS, N_PER_CLASS = a.size, a.batch, a.steps, a.n_per_class
    RECIPE, DEVICE = a.recipe, a.device
    if a.device != "cpu":
        return _gpu_main(a)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ds, store = _dataset(root)
        torch.set_num_threads(a.threads)
        ref = reference_speed(ds, store)
        ms = medsynth_speed(ds, store, root / "m_fp32", mixed_precision="no", num_threads=a.threads)
        bf = medsynth_speed(ds, store, root / "m_bf16", mixed_precision="bf16", num_threads=a.threads)
        # Thread scaling of the small recipe UNet: is a second thread worth it?
        other = 1 if a.threads > 1 else 2
        ms_other = medsynth_speed(ds, store, root / "m_other", mixed_precision="no", num_threads=other)
    res = {
        "setup": f"derm demo {SIZE}px RGB, batch {BATCH}, {STEPS} steps, UNet of examples/derm-cpu.yaml, "
                 f"CPU, {a.threads} thread(s)",
        "load_average_1min_before": round(load0, 2),
        "reference_images_per_s": round(ref, 2),
        "medsynth_fp32_images_per_s": round(ms, 2),
        "medsynth_bf16_images_per_s": round(bf, 2),
        "speedup_vs_reference": round(ms / ref, 2),
        "bf16_vs_fp32": round(bf / ms, 2),
        f"medsynth_fp32_images_per_s_{other}_thread": round(ms_other, 2),
    }
    record("train_speed", res)
    return res


def _gpu_main(a: Any) -> dict[str, Any]:
    """The GPU comparison (module doc); on the CPU with --device cpu-dry (toy sizes, gpu-check
    --dry-run) the same steps run without the GPU."""
    import os

    global DEVICE, PRECISION
    DEVICE = "cuda" if a.device == "cuda" else "cpu"
    PRECISION = a.precision
    name, sheet = _card()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ds, store = _dataset(root)
        ref = reference_speed(ds, store)
        ms = medsynth_speed(ds, store, root / "m", mixed_precision=a.precision)
        gpu_recipe = medsynth_speed(ds, store, root / "g", recipe=a.gpu_recipe,
                                    mixed_precision=a.precision)
    flops_cmp = _unet_flops_per_image(a.recipe)
    flops_gpu = _unet_flops_per_image(a.gpu_recipe)
    peak = device_bf16_peak_tflops()

    def share(rate: float, flops: float) -> dict[str, Any]:
        tf = rate * flops / 1e12
        return {"tflops": round(tf, 2), "of_measured_bf16_matmul_peak": round(tf / peak, 3),
                "of_sheet_dense_bf16_peak": round(tf / sheet, 3) if sheet else None}

    res = {
        "setup": f"derm demo {SIZE}px RGB, batch {BATCH}, {STEPS} steps, {a.precision}, "
                 f"comparison UNet of {a.recipe.name}, recipe UNet of {a.gpu_recipe.name}",
        "card": name, "device": DEVICE, "load_average_1min_before": round(load0, 2),
        "measured_bf16_matmul_peak_tflops": round(peak, 1), "sheet_dense_bf16_tflops": sheet,
        "reference_images_per_s": round(ref, 2), "medsynth_images_per_s": round(ms, 2),
        "speedup_vs_reference": round(ms / ref, 2), "target_speedup": 1.5,
        "comparison_unet": {"gflop_per_image": round(flops_cmp / 1e9, 3), **share(ms, flops_cmp)},
        "recipe_unet": {"images_per_s": round(gpu_recipe, 2),
                        "gflop_per_image": round(flops_gpu / 1e9, 3), **share(gpu_recipe, flops_gpu),
                        "target_of_peak": 0.40},
    }
    record(a.name or ("train_speed_gpu" if DEVICE == "cuda" else "train_speed_gpu_dry_run"), res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
