"""Throughput of `medsynth train` vs a reference loop in the style of diffusers' examples.

The reference follows ``examples/text_to_image/train_text_to_image.py`` and
``examples/unconditional_image_generation/train_unconditional.py``: a torch Dataset that opens
and decodes each PNG with PIL every time it is drawn, a DataLoader, the text encoder run on
every batch, then the same UNet (same config), batch size, resolution, loss and EMA update.
medsynth decodes the dataset once and encodes each distinct description once.

Reported: images/s of both and their ratio, and medsynth with bf16 autocast vs fp32 (on CPU
here; on a GPU the same switch is mixed_precision: bf16). Numbers are medians over logged
windows after a warm-up. ``--pairs N`` runs the reference and medsynth fp32 N times interleaved
(reference, medsynth, reference, ...) so that both see the same load, and reports the median of
the per-pair ratios: the figure to trust on a shared machine. Every result records threads,
precision, load (``uptime`` before and after) and the CPU's bf16 units.

    .venv/bin/python -m benchmarks.train_speed --threads 2 --pairs 3    # on an idle machine
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import record
from benchmarks.speedinfo import speed_context

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


def _cfg(**kw: Any) -> Any:
    from medsynth.train.config import TrainConfig

    base = TrainConfig.from_yaml(Path(__file__).resolve().parent.parent / "examples" / "derm-cpu.yaml")
    return base.replace(max_steps=STEPS, batch_size=BATCH, log_every=5, checkpoint_every=10_000,
                        sample_every=0, sample_per_class=1, sample_steps=2, **kw)


def medsynth_speed(ds: Path, store: Path, out: Path, **kw: Any) -> float:
    import csv

    from medsynth.train.loop import train

    train(ds, out, cfg=_cfg(**kw), store_path=store, progress=False)
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

    from medsynth.data.dataset import open_dataset
    from medsynth.models.denoiser import DenoiserSpec, build_denoiser
    from medsynth.models.text_encoder import default_text_encoder_path
    from medsynth.store import open_store

    cfg = _cfg()
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
    tok, enc = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    spec = DenoiserSpec(channels=3, size=SIZE, n_classes=len(classes), cross_attention_dim=384,
                        block_out_channels=tuple(cfg.block_out_channels),
                        attention_levels=tuple(cfg.attention_levels),
                        attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups)
    unet = build_denoiser(spec).net.train()  # the bare diffusers UNet
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True,
                   model_cls=UNet2DConditionModel, model_config=unet.config)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule=cfg.beta_schedule)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    step, times, t0 = 0, [], None
    while step < STEPS:
        for batch in loader:
            if step == 5:
                t0 = time.perf_counter()
            ids = tok(batch["text"], padding=True, truncation=True, max_length=64, return_tensors="pt")
            with torch.no_grad():
                h = enc(**ids).last_hidden_state
            x0 = batch["pixel_values"]
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (x0.shape[0],))
            pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=h,
                        class_labels=batch["label"], encoder_attention_mask=ids["attention_mask"]).sample
            F.mse_loss(pred, noise).backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema.step(unet.parameters())
            step += 1
            if step >= STEPS:
                break
    assert t0 is not None
    times.append((STEPS - 5) * BATCH / (time.perf_counter() - t0))
    return times[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import argparse
    import os

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads of both loops (default: all cores; run it on an idle machine)")
    ap.add_argument("--pairs", type=int, default=1,
                    help="interleaved (reference, medsynth fp32) pairs; the ratio is their median")
    a = ap.parse_args(argv or [])
    ctx = speed_context(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ds, store = _dataset(root)
        torch.set_num_threads(a.threads)
        refs, mss = [], []
        for i in range(max(1, a.pairs)):
            refs.append(reference_speed(ds, store))
            mss.append(medsynth_speed(ds, store, root / f"m_fp32_{i}", mixed_precision="no",
                                      num_threads=a.threads))
        ref, ms = statistics.median(refs), statistics.median(mss)
        bf = medsynth_speed(ds, store, root / "m_bf16", mixed_precision="bf16", num_threads=a.threads)
        # Thread scaling of the small recipe UNet: is a second thread worth it?
        other = 1 if a.threads > 1 else 2
        ms_other = medsynth_speed(ds, store, root / "m_other", mixed_precision="no", num_threads=other)
    ratios = [m / r for m, r in zip(mss, refs, strict=True)]
    res = {
        "setup": f"derm demo {SIZE}px RGB, batch {BATCH}, {STEPS} steps, UNet of examples/derm-cpu.yaml, "
                 f"CPU, {a.threads} thread(s)",
        **ctx, "precision": "fp32 (reference and medsynth); bf16 autocast for the bf16 figure",
        "reference_images_per_s": round(ref, 2),
        "medsynth_fp32_images_per_s": round(ms, 2),
        "medsynth_bf16_images_per_s": round(bf, 2),
        "speedup_vs_reference": round(statistics.median(ratios), 2),
        "speedup_vs_reference_pairs": [round(r, 2) for r in ratios],
        "bf16_vs_fp32": round(bf / ms, 2),
        f"medsynth_fp32_images_per_s_{other}_thread": round(ms_other, 2),
        "uptime_after": speed_context()["uptime"],
        "rerun_idle": f"python -m benchmarks.train_speed --threads {a.threads} --pairs 3",
    }
    record("train_speed", res)
    return res


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
