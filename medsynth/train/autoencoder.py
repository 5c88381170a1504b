"""The autoencoder phase of latent diffusion: train (or reuse) an AutoencoderKL, cache latents.

``medsynth train`` with ``latent: true`` runs, before the denoiser:

1. **train** a MONAI ``AutoencoderKL`` (:mod:`medsynth.models.autoencoder`) on random patches
   (``ae_patch_size``; whole images without it) of the training images in [-1, 1]:
   ``L1(recon, x) + ae_kl_weight * KL`` (+ ``ae_adv_weight`` x a least-squares PatchGAN loss
   from step ``ae_adv_start``, + ``ae_perceptual_weight`` x MONAI's PerceptualLoss when its
   ResNet-50 weights are given locally). One step's patches, crops, flips and posterior noise
   come from a generator seeded by (seed, step), so a resumed run repeats the uninterrupted
   one. Checkpoints (``accelerator.save_state``: autoencoder, discriminator, both optimizers,
   LR schedules, RNG) every ``ae_checkpoint_every`` steps under ``checkpoints/autoencoder/``;
   ``autoencoder_log.csv`` has a row every ``ae_log_every`` steps;
2. **measure** the reconstruction of whole images (the encoder's mean, decoded) on the
   validation split: PSNR and SSIM (data range 2 on [-1, 1]); training images when the dataset
   has no validation split (said so in the record);
3. **cache** the latent means (never samples) of every training image, and of its flipped
   copies where the modality allows flips (the denoiser's flip augmentation then flips images,
   not latents), in ``checkpoints/cache/latents_<key>.safetensors``; the scaling factor is
   1 / std of those latents;
4. **save** ``MODEL/autoencoder/`` (written last: a model folder with it has finished the
   phase, and a resumed run goes straight to the denoiser).

``--autoencoder PATH`` (recipe ``autoencoder:``) skips 1-2: the folder is checked against the
data (channels, 2D/3D, divisible shape), copied to ``MODEL/autoencoder/``, and the latents and
scaling factor are computed on this data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from medsynth.artifacts import atomic_write_bytes, sha256_file
from medsynth.checkpoints import (
    CsvLog,
    complete_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from medsynth.errors import MedsynthError
from medsynth.models.autoencoder import (
    WEIGHTS_FILE,
    Autoencoder,
    AutoencoderRecord,
    AutoencoderSpec,
    build_autoencoder,
    find_autoencoder,
    latent_stats,
    load_autoencoder,
    reconstruction_metrics,
    save_autoencoder,
)
from medsynth.models.intensity import IntensityMapping
from medsynth.train.config import TrainConfig
from medsynth.train.data import TrainData, release, to_unit
from medsynth.ui import console

AE_FOLDER = "autoencoder"
AE_LOG = "autoencoder_log.csv"
AE_LOG_FIELDS = ["step", "loss", "l1", "kl", "adv_g", "adv_d", "perceptual", "lr",
                 "patches_per_s", "elapsed_s"]
AE_CKPT_DIR = "autoencoder"
PRETRAINED_PSNR_WARN = 25.0
"""Below this reconstruction PSNR (dB) a pretrained autoencoder is warned about."""
EVAL_MAX_IMAGES = 32
"""Images used for the reconstruction metrics (the first of the validation split)."""
ENCODE_BATCH = 8
"""Images per encoder call when the latents are cached and the reconstruction measured."""


@dataclasses.dataclass
class LatentSet:
    """The cached, scaled latents the denoiser trains on."""

    latents: Any
    """float32 ``(N, V, C_lat, *latent_shape)``: scaled latent means of every training image
    (axis 1: flip variants, see :attr:`variants`)."""
    variants: list[tuple[bool, bool]]
    """(horizontal, vertical) flip of each variant; variant 0 is the image as it is."""
    autoencoder: Autoencoder
    """The autoencoder (with the scaling factor of this data)."""
    folder: Path
    """``MODEL/autoencoder``."""
    latent_std: float
    """Std of the scaled latents (about 1)."""
    metrics: dict[str, Any]
    """Reconstruction PSNR/SSIM and where they were measured; phase times."""

    @property
    def channels(self) -> int:
        return int(self.latents.shape[2])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.latents.shape[3:])

    @property
    def scaling_factor(self) -> float:
        return self.autoencoder.scaling_factor


def ae_spec(cfg: TrainConfig, data: TrainData) -> AutoencoderSpec:
    """The autoencoder the recipe asks for on ``data`` (errors before anything is written)."""
    return AutoencoderSpec(
        spatial_dims=data.spatial_dims, channels=data.channels,
        latent_channels=cfg.ae_latent_channels, block_out_channels=tuple(cfg.ae_block_out_channels),
        layers_per_block=cfg.ae_layers_per_block, norm_num_groups=cfg.ae_norm_num_groups,
        attention=cfg.ae_attention)


def patch_shape(cfg: TrainConfig, data: TrainData, spec: AutoencoderSpec) -> tuple[int, ...]:
    """The training patch (the whole image without ``ae_patch_size``), checked to fit."""
    full = data.spatial_shape
    if cfg.ae_patch_size is None:
        return full
    p = list(cfg.ae_patch_size)
    if len(p) == 1:
        p = p * len(full)
    if len(p) != len(full):
        raise MedsynthError(f"ae_patch_size {cfg.ae_patch_size} has {len(p)} axes, the data "
                            f"{len(full)}")
    p = [min(int(a), int(b)) for a, b in zip(p, full, strict=True)]
    if any(a % spec.factor for a in p):
        raise MedsynthError(f"ae_patch_size {p} must be divisible by {spec.factor} on every axis "
                            f"({len(spec.block_out_channels)} autoencoder levels)")
    return tuple(p)


def check_latent_recipe(cfg: TrainConfig, data: TrainData) -> tuple[int, tuple[int, ...]]:
    """(latent channels, latent shape) for ``data``; clear errors for a bad recipe or a reused
    autoencoder that does not fit (channels, dimensionality, shape)."""
    if cfg.autoencoder:
        ae = load_autoencoder(cfg.autoencoder)
        ae.check_data(data.channels, data.spatial_dims, where=str(cfg.autoencoder))
        return ae.spec.latent_channels, ae.spec.latent_shape(data.spatial_shape)
    spec = ae_spec(cfg, data)
    patch_shape(cfg, data, spec)
    return spec.latent_channels, spec.latent_shape(data.spatial_shape)


def flip_variants(data: TrainData) -> list[tuple[bool, bool]]:
    """The flip combinations the denoiser's augmentation draws (variant 0 = none)."""
    out = [(False, False)]
    if data.hflip:
        out.append((True, False))
    if data.vflip:
        out.append((False, True))
    if data.hflip and data.vflip:
        out.append((True, True))
    return out


def _flip(x: Any, h: bool, v: bool) -> Any:
    if h:
        x = x.flip(-1)
    if v:
        x = x.flip(-2)
    return x


def ae_checkpoints(out: Path) -> list[Path]:
    """Complete autoencoder checkpoints (``state.json`` written last), oldest first."""
    return complete_checkpoints(Path(out) / "checkpoints" / AE_CKPT_DIR)


def phase_done(out: Path) -> bool:
    """True when ``MODEL/autoencoder`` is complete (the phase finished)."""
    try:
        find_autoencoder(Path(out) / AE_FOLDER)
        return True
    except MedsynthError:
        return False


def autoencoder_phase(data: TrainData, cfg: TrainConfig, out: Path, mapping: IntensityMapping, *,
                      resume: bool, progress: bool = True, interrupt_after: int | None = None,
                      device: Any = None) -> LatentSet:
    """Train or reuse the autoencoder, then cache the latents (module doc). Returns them.

    Under ``accelerate launch`` every process trains (DDP), but only the main one copies, measures,
    encodes and writes; the others wait at a barrier and read what it wrote (the folders are
    written through one fixed ``.part`` name, and the encoding would otherwise run N times).
    """
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # as train() made it
    main = state.is_main_process
    out = Path(out)
    folder = out / AE_FOLDER
    t0 = time.perf_counter()
    times: dict[str, float] = {}
    reuse = bool(cfg.autoencoder) and not phase_done(out)
    state.wait_for_everyone()  # every rank has looked before the main one writes the folder
    if reuse and main:
        src = find_autoencoder(cfg.autoencoder)
        from medsynth.artifacts import atomic_folder

        atomic_folder(folder, lambda tmp: shutil.copytree(src, tmp))
        console.print(f"autoencoder: reusing {src}")
    state.wait_for_everyone()
    if phase_done(out):
        ae = load_autoencoder(folder, device=device)
        ae.check_data(data.channels, data.spatial_dims, where=str(folder))
        metrics = dict(ae.record.metrics)
        if ae.record.fixed_scaling and "psnr_db" not in metrics:  # a pretrained VAE (--init)
            metrics = evaluate_reconstruction(ae, data.pixels, mapping, split="train")
            if metrics["psnr_db"] < PRETRAINED_PSNR_WARN:
                console.print(f"[yellow]warning:[/] the pretrained autoencoder reconstructs "
                              f"these images at {metrics['psnr_db']:.1f} dB PSNR (below "
                              f"{PRETRAINED_PSNR_WARN} dB): fine detail will be lost")
        trained_here = False
    else:
        trainer = _AETrainer(data, cfg, out, mapping, resume=resume, progress=progress,
                             interrupt_after=interrupt_after)
        net = trainer.run()
        times["train_s"] = round(trainer.train_time, 1)
        times["peak_rss_gib"] = _peak_rss_gib()
        ae = Autoencoder(net.eval().requires_grad_(False), AutoencoderRecord(
            spec=trainer.spec, image_shape=list(data.spatial_shape),
            patch_shape=list(trainer.patch) if cfg.ae_patch_size else None,
            intensity=mapping.to_dict(), steps=cfg.ae_max_steps, modality=data.modality))
        if device is not None:
            ae.to(device)
        t1 = time.perf_counter()
        metrics: dict[str, Any] = {}
        if main:  # the metrics go into the folder and the manifest, which only main writes
            metrics = evaluate_reconstruction(ae, trainer.eval_pixels, mapping,
                                              split=trainer.eval_split)
        times["eval_s"] = round(time.perf_counter() - t1, 1)
        trained_here = True
    # 3. Latent means of every training image (and its allowed flips), cached: main encodes and
    # writes the cache, the others then read it.
    t2 = time.perf_counter()
    variants = flip_variants(data)
    with state.main_process_first():
        mu = _cached_latents(ae, data, mapping, variants, out, progress=progress and main)
    times["cache_s"] = round(time.perf_counter() - t2, 1)
    mean, std = latent_stats(mu)
    if not std > 0:
        raise MedsynthError(f"{out}: the autoencoder's latents are constant (std {std})",
                            hint="train the autoencoder longer or with another ae_lr")
    # A pretrained VAE keeps its own factor (a pretrained UNet expects exactly that scale).
    factor = ae.scaling_factor if ae.record.fixed_scaling else 1.0 / std
    ae.record = dataclasses.replace(ae.record, scaling_factor=factor, latent_mean=mean)
    scaled = (mu * factor).float()
    latent_std = float(scaled.std())
    if trained_here and main:
        ae.record = dataclasses.replace(ae.record, metrics={**metrics, **times})
        # 4. The folder last: its presence marks the phase as finished.
        save_autoencoder(folder, ae.net, ae.record)
    state.wait_for_everyone()
    times["phase_s"] = round(time.perf_counter() - t0, 1)
    msg = (f"autoencoder: latent {'x'.join(map(str, scaled.shape[3:]))} x {scaled.shape[2]}, "
           f"scaling factor {factor:.4g} (scaled std {latent_std:.3f})")
    if "psnr_db" in metrics:
        msg += f", reconstruction PSNR {metrics['psnr_db']:.2f} dB, SSIM {metrics['ssim']:.3f} " \
               f"({metrics.get('split', '?')})"
    if main:
        console.print(msg)
    return LatentSet(latents=scaled, variants=variants, autoencoder=ae, folder=folder,
                     latent_std=latent_std, metrics={**metrics, **times})


def _peak_rss_gib() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def evaluate_reconstruction(ae: Autoencoder, pixels: np.ndarray, mapping: IntensityMapping, *,
                            split: str) -> dict[str, Any]:
    """PSNR/SSIM of whole-image reconstructions (through the latent means), in batches."""
    import torch

    xs, rs = [], []
    pixels = pixels[:EVAL_MAX_IMAGES]
    for i in range(0, len(pixels), ENCODE_BATCH):
        x = to_unit(np.array(pixels[i:i + ENCODE_BATCH]), mapping)
        release(pixels)
        # scaled = unscaled here: the factor is still 1 (it comes from the latents afterwards)
        rs.append(ae.decode(ae.encode(x)).cpu())
        xs.append(x)
    m = reconstruction_metrics(torch.cat(xs), torch.cat(rs))
    return {**{k: round(v, 4) for k, v in m.items()}, "split": split,
            "n_images": sum(len(x) for x in xs)}


def _cached_latents(ae: Autoencoder, data: TrainData, mapping: IntensityMapping,
                    variants: list[tuple[bool, bool]], out: Path, *, progress: bool) -> Any:
    """Unscaled latent means ``(N, V, C, *s)``, from the cache when the same AE and data made it."""
    import torch
    from safetensors.torch import load_file, save

    from medsynth.ui import track

    folder = Path(out) / AE_FOLDER
    weights = folder / WEIGHTS_FILE
    ae_id = sha256_file(weights) if weights.is_file() else _state_sha(ae.net)
    key = hashlib.sha256(json.dumps(
        [ae_id, data.image_ids, list(data.pixels.shape), variants, mapping.to_dict()]
    ).encode()).hexdigest()[:16]
    cache = Path(out) / "checkpoints" / "cache" / f"latents_{key}.safetensors"
    if cache.is_file():
        return load_file(str(cache))["mu"]
    rows = []
    starts = range(0, len(data), ENCODE_BATCH)
    console.print(f"encoding the latents of {len(data)} training images")
    for i in (track(starts, "encoding latents") if progress else starts):
        x = to_unit(np.array(data.pixels[i:i + ENCODE_BATCH]), mapping)
        release(data.pixels)
        # (B, V, C, *s): the variants of each image side by side
        rows.append(torch.stack([ae.encode_mean(_flip(x, h, v)).cpu() for h, v in variants], 1))
    mu = torch.cat(rows).contiguous()
    atomic_write_bytes(cache, save({"mu": mu}))
    return mu


def _state_sha(net: Any) -> str:
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


class _AETrainer:
    """The autoencoder training loop (accelerate; resumable, seeded per step)."""

    def __init__(self, data: TrainData, cfg: TrainConfig, out: Path, mapping: IntensityMapping, *,
                 resume: bool, progress: bool, interrupt_after: int | None) -> None:
        self.data, self.cfg, self.out, self.mapping = data, cfg, Path(out), mapping
        self.resume, self.progress, self.interrupt_after = resume, progress, interrupt_after
        self.ckdir = self.out / "checkpoints" / AE_CKPT_DIR
        self.spec = ae_spec(cfg, data)
        self.patch = patch_shape(cfg, data, self.spec)
        self.eval_pixels, self.eval_split = data.eval_pixels, data.eval_split
        self.elapsed_before = 0.0
        self.train_time = 0.0

    def run(self) -> Any:
        import torch
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from diffusers.optimization import get_scheduler

        from medsynth.train.loop import _mixed_precision

        cfg = self.cfg
        AcceleratorState._reset_state()
        GradientState._reset_state()
        acc = Accelerator(mixed_precision=_mixed_precision(cfg), cpu=not torch.cuda.is_available())
        self.acc = acc
        torch.manual_seed(cfg.seed)
        net = _Posterior(build_autoencoder(self.spec))
        disc = None
        self.adv = cfg.ae_adv_weight > 0
        if self.adv:
            from monai.losses import PatchAdversarialLoss
            from monai.networks.nets import PatchDiscriminator

            # 3 layers (MONAI tutorials) need patches of 64+; fewer on small patches
            layers = max(1, min(3, int(np.log2(min(self.patch))) - 3))
            disc = PatchDiscriminator(spatial_dims=self.spec.spatial_dims, num_layers_d=layers,
                                      channels=int(self.spec.block_out_channels[0]),
                                      in_channels=self.spec.channels, out_channels=1)
            self.adv_loss = PatchAdversarialLoss(criterion="least_squares")
        self.perceptual = None
        if cfg.ae_perceptual_weight > 0:
            self.perceptual = _perceptual_loss(cfg, self.spec.spatial_dims)
        opt_g = torch.optim.Adam(net.parameters(), lr=cfg.ae_lr)
        kind = "cosine" if cfg.ae_lr_schedule == "cosine" else "constant_with_warmup"
        n = acc.num_processes
        sched_g = get_scheduler(kind, opt_g, num_warmup_steps=cfg.ae_warmup_steps * n,
                                num_training_steps=cfg.ae_max_steps * n)
        objs = [net, opt_g, sched_g]
        if disc is not None:
            opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.ae_lr)
            sched_d = get_scheduler(kind, opt_d, num_warmup_steps=cfg.ae_warmup_steps * n,
                                    num_training_steps=cfg.ae_max_steps * n)
            objs += [disc, opt_d, sched_d]
        prepared = acc.prepare(*objs)
        self.net, self.opt_g, self.sched_g = prepared[:3]
        self.disc = self.opt_d = self.sched_d = None
        self.scaler_d = None
        if disc is not None:
            self.disc, self.opt_d, self.sched_d = prepared[3:]
            if acc.scaler is not None:
                # fp16: accelerate steps every optimizer through one GradScaler, updated at each
                # step() (twice a step here); the discriminator gets its own, checkpointed too.
                import copy

                self.scaler_d = copy.deepcopy(acc.scaler)
                self.opt_d.scaler = self.scaler_d
                acc.register_for_checkpointing(self.scaler_d)
        self.window: dict[str, float] = {}
        start = self._load_checkpoint() if self.resume else 0
        self._open_log(start)
        step = self._loop(start)
        acc.wait_for_everyone()
        self.steps = step
        return acc.unwrap_model(self.net).ae

    # --- batches ------------------------------------------------------------------------------
    def _batch(self, k: int, g: Any) -> Any:
        """Patches of global micro-batch ``k`` in [-1, 1], random crops and allowed flips."""
        import torch

        from medsynth.checkpoints import batch_indices

        data = self.data
        idx = batch_indices(len(data), self.cfg.ae_batch_size, k, self.cfg.seed + 17)
        full = data.spatial_shape
        out = []
        for i in idx.tolist():
            starts = [int(torch.randint(0, f - p + 1, (1,), generator=g)) for f, p in
                      zip(full, self.patch, strict=True)]
            sl = tuple(slice(s, s + p) for s, p in zip(starts, self.patch, strict=True))
            x = to_unit(np.array(data.pixels[(i, slice(None), *sl)]), self.mapping)
            h = data.hflip and bool(torch.rand(1, generator=g) < 0.5)
            v = data.vflip and bool(torch.rand(1, generator=g) < 0.5)
            out.append(_flip(x, h, v))
        release(data.pixels)
        return torch.stack(out)

    # --- the loop -----------------------------------------------------------------------------
    def _loop(self, start: int) -> int:
        import torch
        from rich.progress import TextColumn

        from medsynth.ui import progress_bar

        cfg, acc, net = self.cfg, self.acc, self.net
        t0 = self.t0 = time.perf_counter()
        win: dict[str, float] = {"loss": 0.0, "l1": 0.0, "kl": 0.0, "adv_g": 0.0, "adv_d": 0.0,
                                 "perceptual": 0.0, "n": 0, **self.window}
        win_t, win_n = time.perf_counter(), 0
        step = start
        net.train()
        bar = progress_bar(TextColumn("l1 {task.fields[loss]}"), transient=False)
        bar.disable = bar.disable or not self.progress or not acc.is_main_process
        with bar:
            task = bar.add_task("autoencoder", total=cfg.ae_max_steps, completed=start, rate="",
                                loss="-")
            while step < cfg.ae_max_steps:
                k = step * acc.num_processes + acc.process_index
                g = torch.Generator().manual_seed(cfg.seed * 7_907 + k * 2 + 1)
                x = self._batch(k, g).to(acc.device)
                lat = (x.shape[0], self.spec.latent_channels, *self.spec.latent_shape(self.patch))
                eps = torch.randn(lat, generator=g).to(acc.device)
                with acc.autocast():
                    recon, mu, sigma = net(x, eps)
                    l1 = (recon.float() - x).abs().mean()
                    dims = tuple(range(1, mu.ndim))
                    kl = 0.5 * (mu.float() ** 2 + sigma.float() ** 2
                                - torch.log(sigma.float() ** 2 + 1e-12) - 1).sum(dims).mean()
                    loss = l1 + cfg.ae_kl_weight * kl
                    adv_on = self.adv and step >= cfg.ae_adv_start
                    adv_g = torch.zeros((), device=x.device)
                    if adv_on:
                        # The generator's adversarial term through a frozen discriminator (its
                        # bare module: no DDP reduction): its loss must not reach the
                        # discriminator's gradients, which come from its own loss only.
                        d = acc.unwrap_model(self.disc).requires_grad_(False)
                        adv_g = self.adv_loss(d(recon.float())[-1], target_is_real=True,
                                              for_discriminator=False)
                        d.requires_grad_(True)
                        loss = loss + cfg.ae_adv_weight * adv_g
                    perc = torch.zeros((), device=x.device)
                    if self.perceptual is not None:
                        perc = self.perceptual(recon.float(), x)
                        loss = loss + cfg.ae_perceptual_weight * perc
                acc.backward(loss)
                # Unscale (fp16) the generator's gradients only: accelerate's clip_grad_norm_
                # would unscale every prepared optimizer, the discriminator's included.
                acc.unscale_gradients(self.opt_g)
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                self.opt_g.step()
                self.sched_g.step()
                self.opt_g.zero_grad(set_to_none=True)
                adv_d = torch.zeros(())
                if adv_on:
                    self.opt_d.zero_grad(set_to_none=True)
                    with acc.autocast():
                        fake = self.adv_loss(self.disc(recon.detach().float())[-1],
                                             target_is_real=False, for_discriminator=True)
                        real = self.adv_loss(self.disc(x)[-1], target_is_real=True,
                                             for_discriminator=True)
                        adv_d = 0.5 * (fake + real)
                    if self.scaler_d is not None:  # fp16: its own scaler, updated once a step
                        self.scaler_d.scale(adv_d).backward()
                    else:
                        acc.backward(adv_d)
                    self.opt_d.step()
                    self.sched_d.step()
                    self.opt_d.zero_grad(set_to_none=True)
                for name, v in (("loss", loss), ("l1", l1), ("kl", kl), ("adv_g", adv_g),
                                ("adv_d", adv_d), ("perceptual", perc)):
                    win[name] += float(v.detach())
                win_n += x.shape[0] * acc.num_processes
                if not np.isfinite(win["loss"]):
                    raise MedsynthError(f"autoencoder training diverged at step {step + 1}",
                                        hint="lower ae_lr or ae_adv_weight; rerun with --resume "
                                        "from the last good checkpoint")
                step += 1
                win["n"] += 1
                if step % cfg.ae_log_every == 0 or step == cfg.ae_max_steps:
                    dt = time.perf_counter() - win_t
                    m = max(1, int(win["n"]))
                    row = {"step": step, **{f: f"{win[f] / m:.6f}" for f in
                                            ("loss", "l1", "kl", "adv_g", "adv_d", "perceptual")},
                           "lr": f"{self.sched_g.get_last_lr()[0]:.3e}",
                           "patches_per_s": f"{win_n / max(dt, 1e-9):.2f}",
                           "elapsed_s": f"{self.elapsed_before + time.perf_counter() - t0:.1f}"}
                    self._write_log(row)
                    bar.update(task, loss=row["l1"], rate=f"{win_n / max(dt, 1e-9):.1f} patch/s")
                    win = {"loss": 0.0, "l1": 0.0, "kl": 0.0, "adv_g": 0.0, "adv_d": 0.0,
                           "perceptual": 0.0, "n": 0}
                    win_t, win_n = time.perf_counter(), 0
                bar.update(task, completed=step)
                if step % cfg.ae_checkpoint_every == 0 or step == cfg.ae_max_steps:
                    self._save_checkpoint(step, win)
                if self.interrupt_after is not None and step >= self.interrupt_after:
                    raise KeyboardInterrupt
        self.train_time = self.elapsed_before + time.perf_counter() - t0
        return step

    # --- checkpoints and log ------------------------------------------------------------------
    def _load_checkpoint(self) -> int:
        ckpts = ae_checkpoints(self.out)
        if not ckpts:
            return 0
        last = ckpts[-1]
        state = read_checkpoint(ckpts, lambda f: self.acc.load_state(str(f)),
                                what="autoencoder checkpoint")
        step = int(state["step"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.window = {k: float(v) for k, v in state.get("log_window", {}).items()}
        console.print(f"autoencoder: resumed from {last} (step {step})")
        return step

    def _save_checkpoint(self, step: int, window: dict[str, float]) -> None:
        write_checkpoint(self.ckdir, step, {
            "elapsed_s": round(self.elapsed_before + time.perf_counter() - self.t0, 1),
            "log_window": dict(window)}, keep=self.cfg.keep_checkpoints,
            save=lambda tmp: self.acc.save_state(str(tmp)), acc=self.acc)

    def _open_log(self, start: int) -> None:
        self._log = CsvLog(self.out / AE_LOG, AE_LOG_FIELDS, enabled=self.acc.is_main_process)
        self._log.start(lambda r: int(r["step"]) <= start)

    def _write_log(self, row: dict[str, Any]) -> None:
        self._log.write(row)


class _Posterior(nn.Module):
    """AutoencoderKL forward with the posterior noise given (seeded by the caller)."""

    def __init__(self, ae: Any) -> None:
        super().__init__()
        self.ae = ae

    def forward(self, x: Any, eps: Any) -> tuple[Any, Any, Any]:
        mu, sigma = self.ae.encode(x)
        return self.ae.decode(mu + sigma * eps.to(mu.dtype)), mu, sigma


def _perceptual_loss(cfg: TrainConfig, spatial_dims: int) -> Any:
    """MONAI's PerceptualLoss on a local ResNet-50 (no download), or a clear error."""
    path = Path(str(cfg.ae_perceptual_weights))
    if not path.is_file():
        raise MedsynthError(f"ae_perceptual_weights: {path} is not a file",
                            hint="give a local ResNet-50 state dict, or set ae_perceptual_weight: 0")
    try:
        import torchvision  # noqa: F401  (MONAI's resnet50 perceptual network needs it)
        from monai.losses import PerceptualLoss
    except ImportError as e:
        raise MedsynthError(f"the perceptual loss needs {e.name} (pip install {e.name})",
                            hint="or set ae_perceptual_weight: 0") from e
    return PerceptualLoss(spatial_dims=spatial_dims, network_type="resnet50", is_fake_3d=True,
                          fake_3d_ratio=0.25, pretrained=True, pretrained_path=str(path))
