"""The training loop (accelerate): CCELLA dual-head conditioning, joint loss, CFG dropout, EMA.

One optimizer step =
  1. a seeded batch (indices, flips, noise, timesteps and condition dropout all come from a
     generator seeded by (seed, step, micro-batch, process), so a resumed run draws exactly the
     batches the uninterrupted run would have drawn);
  2. class ids -> null class with ``p_drop_class``, texts -> null text with ``p_drop_text``
     (independently), for classifier-free guidance;
  3. the denoiser (:mod:`medsynth.models.denoiser`, any kind, 2D or 3D) predicts the noise
     (or, with ``noise_schedule: rflow``, the flow velocity ``x0 - noise``);
     loss = MSE + ``class_loss_weight`` * cross-entropy of a small head on the denoiser's pooled
     mid-block features against the true class; in CCELLA mode (``ccella: true``) the class
     input is the class predicted from the text (:mod:`medsynth.models.ccella`) and the loss
     adds ``ccella_loss_weight`` * that head's focal (or CE) loss;
  4. AdamW step (gradient accumulation, clipping, AMP via accelerate), LR schedule, EMA update.

Latent diffusion (``latent: true``): the autoencoder phase (:mod:`medsynth.train.autoencoder`)
runs first and hands over cached, scaled latents; the same loop then trains on them, and the
sample grids decode the sampled latents.

Checkpoints (``accelerator.save_state``: model, head, optimizer, LR schedule, EMA, RNG states,
plus the step and the log window so far) are written every ``checkpoint_every`` steps into a
temporary folder and renamed, so a killed run resumes from the last complete one with
``--resume`` and logs exactly what the uninterrupted run would have logged.

Everything that can be checked (recipe, data, store, network shape) is checked before the
output folder is touched; a fresh run that fails before its first checkpoint removes what it
wrote, so the next run needs no ``--overwrite``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import (
    MANIFEST_NAME,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    input_ref,
    prepare_output_dir,
    write_manifest,
)
from medsynth.checkpoints import (
    batch_indices,
    complete_checkpoints,
    read_checkpoint,
    truncate_log,
    write_checkpoint,
)
from medsynth.errors import MedsynthError
from medsynth.models.bundle import CLASS_HEAD_FILE, export_model
from medsynth.models.ccella import TEXT_CLASS_HEAD_FILE
from medsynth.models.denoiser import (
    DenoiserSpec,
    build_class_head,
    build_denoiser,
    channels_last_format,
    plan_denoiser,
)
from medsynth.models.info import (
    AutoencoderInfo,
    ConditioningInfo,
    DenoiserInfo,
    ModelInfo,
    NoiseSchedule,
    PrototypeInfo,
)
from medsynth.models.intensity import IntensityMapping
from medsynth.models.prototypes import PROTOTYPE_FILE, build_prototypes
from medsynth.models.text_encoder import TextEncoderRef
from medsynth.resume import require_same_settings
from medsynth.train.config import RESUMABLE_CHANGES, TrainConfig
from medsynth.train.data import TrainData, batch_tensors, load_train_data
from medsynth.train.prior import trainable
from medsynth.ui import console

CONFIG_NAME = "train_config.yaml"
LOG_NAME = "train_log.csv"
LOG_FIELDS = ["step", "loss", "mse", "class_ce", "lr", "images_per_s", "elapsed_s", "text_class"]


def train(dataset_path: str | Path, out: str | Path, *, cfg: TrainConfig,
          store_path: str | Path | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True, interrupt_after: int | None = None,
          interrupt_after_ae: int | None = None) -> Path:
    """Train a model on ``dataset_path`` (+ descriptions from ``store_path``) into ``out``.

    Returns the model folder; load it with :func:`medsynth.models.bundle.load_bundle`.
    ``interrupt_after`` (tests, time-boxed jobs) raises KeyboardInterrupt after that global step,
    exactly as a kill would leave the folder: checkpoints kept, no manifest;
    ``interrupt_after_ae`` does the same in the autoencoder phase.
    """
    from medsynth.data.dataset import open_dataset
    from medsynth.store import open_store

    dataset = open_dataset(dataset_path)
    store = open_store(store_path) if store_path else None
    out = Path(out)
    if resume and not (out / "checkpoints").is_dir():
        raise MedsynthError(f"{out}: nothing to resume (no checkpoints/ folder)",
                            hint="start a new run without --resume")
    from medsynth.train.prior import check_resume_init, open_prior

    if resume:
        check_resume_init(out, cfg)
    cfg, prior = open_prior(cfg)  # a pretrained prior fixes parts of the recipe (--init)
    cfg = _check_resume_config(out, cfg) if resume else cfg
    import torch
    from accelerate import PartialState

    # Under `accelerate launch` only the main process touches the folder. cpu=True without CUDA:
    # launched processes then form a gloo group (MULTI_CPU) instead of each thinking it is alone.
    state = PartialState(cpu=not torch.cuda.is_available())
    # An interrupted training run (recipe written, no manifest yet) is ours to replace with
    # --overwrite; without a complete checkpoint it is debris (nothing to resume): replaced anyway.
    interrupted = not resume and (out / CONFIG_NAME).is_file() and not (out / MANIFEST_NAME).exists()
    debris = interrupted and not _resumable(out)
    if state.is_main_process and not (debris or (interrupted and overwrite)):
        check_output_dir(out, "train", resume=resume, overwrite=overwrite)
    # Validate before the folder is touched: a bad recipe or dataset leaves it as it was.
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    data = load_train_data(dataset, cfg, store, progress=progress)
    if prior is not None:
        prior.check(data, dataset)
    if store is not None and data.n_described == 0:
        raise MedsynthError(f"{store_path}: no description matches a training image of {dataset_path}",
                            hint="describe the train split, or train class-only without --store")
    latent = None
    if cfg.latent:
        from medsynth.train.autoencoder import check_latent_recipe
        from medsynth.train.data import attach_eval_pixels

        latent = check_latent_recipe(cfg, data)
        attach_eval_pixels(dataset, cfg, data)
    if cfg.ccella and data.n_described == 0:
        raise MedsynthError(f"{dataset_path}: ccella: true predicts the class from the "
                            "descriptions, and no training image has one",
                            hint="pass --store STORE (medsynth describe), or set ccella: false")
    # shape/recipe errors now, not after setup
    denoiser_spec(cfg, data, cross_attention_dim=1, latent=latent)
    created = not out.exists()
    if state.is_main_process:
        if debris or (interrupted and overwrite):
            _clear(out)
        prepare_output_dir(out, "train", resume=resume, overwrite=overwrite)
        if not resume:
            atomic_write_text(out / CONFIG_NAME, cfg.to_yaml())
    state.wait_for_everyone()
    try:
        return run_trainer(dataset, data, cfg, out, store=store, resume=resume, progress=progress,
                           interrupt_after=interrupt_after, interrupt_after_ae=interrupt_after_ae,
                           prior=prior)
    except Exception:
        # A fresh run that failed before its first checkpoint leaves nothing to resume: remove
        # what it wrote so that the next run starts without --overwrite.
        if state.is_main_process and not resume and not _resumable(out):
            _clear(out, remove_folder=created)
        raise


def run_trainer(dataset: Any, data: TrainData, cfg: TrainConfig, out: Path, *, store: Any = None,
                resume: bool = False, progress: bool = True,
                interrupt_after: int | None = None, interrupt_after_ae: int | None = None,
                prior: Any = None) -> Path:
    """Train on already loaded ``data`` (2D or 3D) into the prepared folder ``out``.

    ``dataset`` (and ``store``) are the artifacts the data came from: the model's manifest
    records them as inputs. ``prior``: the :class:`medsynth.train.prior.Prior` to start from.
    """
    return _Trainer(dataset, store, data, cfg, out, resume=resume, progress=progress,
                    interrupt_after=interrupt_after, interrupt_after_ae=interrupt_after_ae,
                    prior=prior).run()


def denoiser_spec(cfg: TrainConfig, data: TrainData, *, cross_attention_dim: int,
                  latent: tuple[int, tuple[int, ...]] | None = None) -> DenoiserSpec:
    """The denoiser the recipe asks for on ``data`` (kind chosen from the data's dims); latent
    models denoise ``latent = (channels, spatial shape)`` instead of the pixels."""
    channels, shape = latent if latent is not None else (data.channels, data.spatial_shape)
    return DenoiserSpec(
        kind=plan_denoiser(cfg.denoiser, data.spatial_dims), channels=channels,
        shape=tuple(shape), n_classes=len(data.classes),
        cross_attention_dim=cross_attention_dim, block_out_channels=tuple(cfg.block_out_channels),
        attention_levels=tuple(cfg.attention_levels), layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups)


def _resumable(out: Path) -> bool:
    """True when ``out`` holds work a ``--resume`` can continue (any phase's checkpoint)."""
    from medsynth.train.autoencoder import ae_checkpoints, phase_done

    return bool(complete_checkpoints(out / "checkpoints") or ae_checkpoints(out)
                or phase_done(out))


def _clear(out: Path, *, remove_folder: bool = False) -> None:
    """Delete the contents of ``out`` (and ``out`` itself with ``remove_folder``)."""
    if not out.is_dir():
        return
    for child in out.iterdir():
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
    if remove_folder:
        out.rmdir()


def _check_resume_config(out: Path, cfg: TrainConfig) -> TrainConfig:
    """On resume, the recipe must match the saved one except for run-length/bookkeeping fields."""
    saved_path = out / CONFIG_NAME
    if not saved_path.is_file():
        return cfg
    saved = TrainConfig.from_yaml(saved_path)
    require_same_settings(
        saved.to_dict(), cfg.to_dict(), ignore=RESUMABLE_CHANGES,
        where=f"{saved_path}: the resumed run was trained with other settings",
        hint="resume with the same recipe (only max_steps and bookkeeping may change), "
        "or start a new --out")
    return cfg


def _mixed_precision(cfg: TrainConfig) -> str:
    import torch

    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


class _Trainer:
    def __init__(self, dataset: Any, store: Any, data: TrainData, cfg: TrainConfig, out: Path, *,
                 resume: bool, progress: bool, interrupt_after: int | None = None,
                 interrupt_after_ae: int | None = None, prior: Any = None) -> None:
        self.dataset, self.store, self.data, self.cfg, self.out = dataset, store, data, cfg, out
        self.prior = prior
        self.interrupt_after = interrupt_after
        self.interrupt_after_ae = interrupt_after_ae
        self.latents: Any = None
        self.elapsed_before = 0.0
        self.t0 = time.perf_counter()
        self.resume, self.progress = resume, progress
        self.ckdir = out / "checkpoints"

    # --- setup ------------------------------------------------------------------------------
    def _text_features(self) -> None:
        """Encode every distinct description once; cache on disk (keyed by encoder + texts)."""
        import torch
        from safetensors.torch import load_file, save

        cfg, data = self.cfg, self.data
        ref = TextEncoderRef(name=cfg.text_encoder, kind=cfg.text_encoder_kind, layer=cfg.text_layer,
                             max_tokens=cfg.max_text_tokens, long_text=cfg.long_text,
                             chunk_overlap=cfg.text_chunk_overlap,
                             max_chunks=cfg.max_text_chunks)
        uniq = [""] + sorted({t for t in data.texts if t})
        key = hashlib.sha256(json.dumps([ref.to_dict(), uniq]).encode()).hexdigest()[:16]
        cache = self.ckdir / "cache" / f"text_{key}.safetensors"
        meta_path = cache.with_suffix(".json")
        cut: dict[str, Any] | None = None  # descriptions cut at the encoder's token window
        if cache.is_file() and meta_path.is_file():
            t = load_file(str(cache))
            hidden, mask = t["hidden"], t["mask"]
            meta = json.loads(meta_path.read_text())
            ref, cut = TextEncoderRef.from_dict(meta), meta.get("text_cut")
        elif len(uniq) == 1 and ref.kind != "clip":  # (CLIP's null text is CLIP(""))
            # Class-only training: only the encoder's width is needed, not the encoder itself.
            from transformers import AutoConfig

            from medsynth.models.text_encoder import _is_decoder, null_text, resolve_text_encoder

            conf = AutoConfig.from_pretrained(resolve_text_encoder(cfg.text_encoder))
            ref.hidden_size = int(getattr(conf, "hidden_size", 0) or getattr(conf, "n_embd", 0))
            ref.model_type = str(getattr(conf, "model_type", ""))
            if ref.kind == "auto":
                ref.kind = "decoder" if _is_decoder(conf) else "encoder"
            hidden, mask = null_text(1, ref.hidden_size)
        else:
            from medsynth.models.text_encoder import TextEncoder

            console.print(f"encoding {len(uniq) - 1} distinct descriptions with {cfg.text_encoder}")
            enc = TextEncoder(ref)
            hidden, mask = enc.encode(uniq)  # warns once when descriptions are cut
            counts = dict(zip(uniq, enc.token_counts(uniq), strict=True))
            long = {u for u, n in counts.items() if n > enc.capacity}
            cut = {"texts": len(long), "images": sum(1 for t in data.texts if t in long),
                   "max_tokens": int(enc.capacity), "longest_tokens": max(counts.values()),
                   "long_text": ref.long_text}
            ref = enc.ref
            del enc
        if not cache.is_file():
            atomic_write_bytes(cache, save({"hidden": hidden.contiguous(), "mask": mask.contiguous()}))
            atomic_write_text(meta_path, json.dumps({**ref.to_dict(), "text_cut": cut}))
        self.text_cut = cut
        self.text_ref = ref
        self.text_hidden, self.text_mask = hidden, mask
        index = {t: i for i, t in enumerate(uniq)}
        self.text_idx = torch.tensor([index[t] for t in data.texts], dtype=torch.long)

    def run(self) -> Path:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        cfg, data = self.cfg, self.data
        self.mapping = IntensityMapping.for_data(data.pixels)
        if self.prior is not None:
            self.prior.start(self.out, resume=self.resume)
            self.mapping = self.prior.intensity(self.mapping, data)
        if cfg.latent:
            from medsynth.models.sampler import default_device
            from medsynth.train.autoencoder import autoencoder_phase

            self.latents = autoencoder_phase(
                data, cfg, self.out, self.mapping, resume=self.resume, progress=self.progress,
                interrupt_after=self.interrupt_after_ae, device=default_device())
            self.t0 = time.perf_counter()
        mp = _mixed_precision(cfg)
        # train() may run several times in one process (notebooks, tests): accelerate's state is
        # a singleton, so forget the previous run's precision/accumulation (the process group stays).
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state()
        GradientState._reset_state()
        acc = Accelerator(mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum,
                          cpu=not torch.cuda.is_available())
        self.acc = acc
        set_seed(cfg.seed)
        self._text_features()
        # Prototype banks from the raw training features of the described images.
        described = self.text_idx > 0
        self.prototypes = build_prototypes(
            self.text_hidden[self.text_idx[described]], self.text_mask[self.text_idx[described]],
            torch.from_numpy(data.labels)[described], len(data.classes), cfg.prototypes_per_class,
            seed=cfg.seed) if bool(described.any()) else {}

        lat = self.latents
        self.spec = denoiser_spec(cfg, data, cross_attention_dim=self.text_ref.hidden_size,
                                  latent=(lat.channels, lat.shape) if lat is not None else None)
        self.memory_format = channels_last_format(self.spec.spatial_dims)
        self.sample_shape = (self.spec.channels, *self.spec.shape)
        if self.prior is not None:  # pretrained weights (+ LoRA), classes remapped by name
            unet = self.prior.adapt(self.prior.build_denoiser(self.spec, data.classes,
                                                              self.text_ref.hidden_size))
        else:
            unet = build_denoiser(self.spec)
        if cfg.channels_last:  # before the EMA copy, so its shadow weights share the layout
            unet = unet.to(memory_format=self.memory_format)
        head = build_class_head(self.spec)
        if self.prior is not None:
            self.prior.init_head(head, data.classes)
        self.rflow = cfg.noise_schedule == "rflow"
        if self.rflow:
            from medsynth.models.rflow import RectifiedFlowScheduler, rflow_config

            self.noise_sched: Any = RectifiedFlowScheduler(rflow_config(
                cfg.num_train_timesteps, (self.spec.channels, *self.spec.shape)))
        else:
            self.noise_sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                                             beta_schedule=cfg.beta_schedule,
                                             prediction_type=cfg.prediction_type)
        if self.prior is not None:
            self.noise_sched = self.prior.noise_scheduler(self.noise_sched)
        # The EMA keeps shadow copies of the parameters only: no model class, any denoiser.
        # Only what trains (all of it, but a LoRA adapter's frozen base).
        ema = EMAModel(trainable(unet), decay=cfg.ema_decay, use_ema_warmup=True)
        params = trainable(unet) + list(head.parameters())
        text_head = None
        if cfg.ccella:
            from medsynth.models.ccella import TextClassHead

            text_head = TextClassHead(self.text_ref.hidden_size, len(data.classes))
            params += list(text_head.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        lr_sched = get_scheduler("cosine" if cfg.lr_schedule == "cosine" else "constant_with_warmup",
                                 opt, num_warmup_steps=cfg.warmup_steps * acc.num_processes,
                                 num_training_steps=cfg.max_steps * acc.num_processes)
        if text_head is not None:
            unet, head, text_head, opt, lr_sched = acc.prepare(unet, head, text_head, opt, lr_sched)
        else:
            unet, head, opt, lr_sched = acc.prepare(unet, head, opt, lr_sched)
        self.text_head = text_head
        ema.to(acc.device)
        acc.register_for_checkpointing(ema)
        self.unet, self.head, self.opt, self.lr_sched, self.ema = unet, head, opt, lr_sched, ema
        self.denoiser = acc.unwrap_model(unet)  # features and saving: the bare module
        if self.prior is not None:
            self.prior.hook_accelerator(acc, self.denoiser)

        self.window: dict[str, float] = {}
        # A latent run killed before its first denoiser checkpoint starts the denoiser afresh.
        fresh = self.latents is not None and not self._checkpoints()
        start = self._load_checkpoint() if self.resume and not fresh else 0
        if acc.is_main_process:
            # The folder is about to change: it must not look complete until the new manifest
            # is written (removed only now, so a failed resume leaves a finished model intact).
            (self.out / MANIFEST_NAME).unlink(missing_ok=True)
            atomic_write_text(self.out / CONFIG_NAME, cfg.to_yaml())
        self._open_log(start)
        try:
            step = self._loop(start)
        except Exception as e:
            oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
            if isinstance(e, oom):
                raise MedsynthError(
                    f"out of GPU memory at batch size {cfg.batch_size} and "
                    f"{'x'.join(map(str, data.spatial_shape))} px",
                    hint="lower --batch-size (raise --grad-accum to keep the effective batch), use "
                    "mixed_precision bf16/fp16 or a smaller UNet; finished checkpoints are kept, "
                    "rerun with --resume",
                ) from None
            raise
        finally:
            self._close_log()
        acc.wait_for_everyone()
        if acc.is_main_process:
            self._export(step)
        acc.wait_for_everyone()
        return self.out

    # --- checkpoints ------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        return complete_checkpoints(self.ckdir)

    def _load_checkpoint(self) -> int:
        ckpts = self._checkpoints()
        if not ckpts:
            raise MedsynthError(f"{self.ckdir}: no complete checkpoint to resume from",
                                hint="start again without --resume (use --overwrite)")
        last = ckpts[-1]
        strict = self.prior is None or self.prior.strict_checkpoints  # LoRA: trainable only
        state = read_checkpoint(ckpts, lambda f: self.acc.load_state(str(f), strict=strict))
        step = int(state["step"])
        self.elapsed_before = float(state.get("elapsed_s", _logged_elapsed(self.out / LOG_NAME, step)))
        # The log window open at the checkpoint (steps since the last log row): the next row
        # then averages the same steps as in the uninterrupted run.
        self.window = {k: float(v) for k, v in state.get("log_window", {}).items()}
        console.print(f"resumed from {last} (step {step})")
        return step

    def _save_checkpoint(self, step: int, window: dict[str, float]) -> None:
        write_checkpoint(self.ckdir, step, {
            "elapsed_s": round(self.elapsed_before + time.perf_counter() - self.t0, 1),
            "log_window": {k: window[k] for k in ("loss", "mse", "ce", "tce", "n")}},
            keep=self.cfg.keep_checkpoints, save=lambda tmp: self.acc.save_state(str(tmp)),
            acc=self.acc)

    # --- log ---------------------------------------------------------------------------------
    def _open_log(self, start: int) -> None:
        path = self.out / LOG_NAME
        if self.acc.is_main_process:
            truncate_log(path, LOG_FIELDS, lambda r: int(r["step"]) <= start)
        self._log = open(path, "a", newline="") if self.acc.is_main_process else None  # noqa: SIM115
        self._tb = None
        if self.acc.is_main_process:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=start + 1)
            except Exception:  # tensorboard not installed: the CSV is the log
                self._tb = None

    def _write_log(self, row: dict[str, Any]) -> None:
        if self._log is None:
            return
        csv.DictWriter(self._log, fieldnames=LOG_FIELDS).writerow(row)
        self._log.flush()
        if self._tb is not None:
            for k in ("loss", "mse", "class_ce", "lr"):
                self._tb.add_scalar(f"train/{k}", float(row[k]), int(row["step"]))

    def _close_log(self) -> None:
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if getattr(self, "_tb", None) is not None:
            self._tb.close()

    # --- the loop ----------------------------------------------------------------------------
    def _loop(self, start: int) -> int:
        import torch
        import torch.nn.functional as F
        from diffusers.training_utils import compute_snr
        from rich.progress import TextColumn

        from medsynth.ui import progress_bar

        cfg, data, acc = self.cfg, self.data, self.acc
        unet, head, opt, lr_sched, ema = self.unet, self.head, self.opt, self.lr_sched, self.ema
        n, b, null = len(data), cfg.batch_size, len(data.classes)
        labels = torch.from_numpy(data.labels)
        t0 = self.t0 = time.perf_counter()
        win: dict[str, float] = {"loss": 0.0, "mse": 0.0, "ce": 0.0, "tce": 0.0, "n": 0,
                                 **self.window}
        win_t, win_imgs = time.perf_counter(), 0
        step = start
        unet.train()
        head.train()
        bar = progress_bar(TextColumn("loss {task.fields[loss]}"), transient=False)
        bar.disable = bar.disable or not self.progress or not acc.is_main_process
        with bar:
            task = bar.add_task("training", total=cfg.max_steps, completed=start, rate="", loss="-")
            while step < cfg.max_steps:
                for micro in range(cfg.grad_accum):
                    k = (step * cfg.grad_accum + micro) * acc.num_processes + acc.process_index
                    g = torch.Generator().manual_seed(cfg.seed * 7_919 + k * 2 + 1)
                    idx = batch_indices(n, b, k, cfg.seed)
                    if self.latents is not None:
                        x0 = self._latent_batch(idx, g)
                    else:
                        x0 = batch_tensors(data, idx, g, self.mapping)
                    bs = x0.shape[0]
                    y = labels[idx]
                    c = y.clone()
                    c[torch.rand(bs, generator=g) < cfg.p_drop_class] = null
                    tidx = self.text_idx[idx].clone()
                    tidx[torch.rand(bs, generator=g) < cfg.p_drop_text] = 0  # 0 = null text
                    hidden, mask = self.text_hidden[tidx], self.text_mask[tidx]
                    noise = torch.randn(x0.shape, generator=g)
                    if self.rflow:  # continuous t in (0, T]: T is pure noise
                        t = (1.0 - torch.rand(bs, generator=g)) * cfg.num_train_timesteps
                    else:
                        t = torch.randint(0, cfg.num_train_timesteps, (bs,), generator=g)
                    dev = acc.device
                    x0, noise, t, y, c = x0.to(dev), noise.to(dev), t.to(dev), y.to(dev), c.to(dev)
                    hidden, mask, tidx = hidden.to(dev), mask.to(dev), tidx.to(dev)
                    xt = self.noise_sched.add_noise(x0, noise, t)
                    if cfg.channels_last:
                        xt = xt.contiguous(memory_format=self.memory_format)
                    if self.rflow:
                        target = x0 - noise
                    elif cfg.prediction_type == "epsilon":
                        target = noise
                    elif cfg.prediction_type == "v_prediction":
                        target = self.noise_sched.get_velocity(x0, noise, t)
                    else:
                        target = x0
                    models = (unet, head) if self.text_head is None else (unet, head, self.text_head)
                    with acc.accumulate(*models), acc.autocast():
                        tce = torch.zeros((), device=dev)
                        if self.text_head is not None:
                            # CCELLA: the class input is the class predicted from the text
                            # (one-hot where there is none, null where the class is dropped).
                            from medsynth.models.ccella import class_inputs, class_loss

                            has_text = tidx > 0
                            logits = self.text_head(hidden, mask)
                            probs = (logits.float() / cfg.ccella_temperature).softmax(-1)
                            c = class_inputs(probs, y, has_text, c == null, null)
                            tce = class_loss(logits, y, cfg.ccella_loss, weights=has_text)
                        pred = unet(xt, t, c, hidden, mask)
                        if cfg.snr_gamma is None:
                            mse = F.mse_loss(pred.float(), target.float())
                        else:
                            # Min-SNR-gamma: per-sample weights min(SNR, gamma) / SNR (eps),
                            # / (SNR + 1) (v), / 1 (x0), as in diffusers' training examples.
                            snr = compute_snr(self.noise_sched, t)
                            w = torch.clamp(snr, max=cfg.snr_gamma)
                            if cfg.prediction_type == "epsilon":
                                w = w / snr
                            elif cfg.prediction_type == "v_prediction":
                                w = w / (snr + 1)
                            per = F.mse_loss(pred.float(), target.float(), reduction="none")
                            mse = (per.mean(dim=tuple(range(1, per.ndim))) * w).mean()
                        if cfg.class_loss_weight > 0:
                            ce = F.cross_entropy(head(self.denoiser.pooled_features()).float(), y)
                        else:
                            ce = torch.zeros((), device=dev)
                        loss = mse + cfg.class_loss_weight * ce + cfg.ccella_loss_weight * tce
                        acc.backward(loss)
                        if acc.sync_gradients and cfg.max_grad_norm > 0:
                            acc.clip_grad_norm_([p for m in models for p in m.parameters()],
                                                cfg.max_grad_norm)
                        opt.step()
                        lr_sched.step()
                        opt.zero_grad(set_to_none=True)
                    win["loss"] += float(loss.detach()) / cfg.grad_accum
                    win["mse"] += float(mse.detach()) / cfg.grad_accum
                    win["ce"] += float(ce.detach()) / cfg.grad_accum
                    win["tce"] += float(tce.detach()) / cfg.grad_accum
                    win_imgs += bs * acc.num_processes
                if not math.isfinite(win["loss"]):
                    raise MedsynthError(
                        f"training diverged at step {step + 1} (loss is {win['loss']})",
                        hint="lower lr, raise warmup_steps, or use mixed_precision no/bf16; "
                        "rerun with --resume from the last good checkpoint")
                ema.step(trainable(acc.unwrap_model(unet)))
                step += 1
                win["n"] += 1
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    dt = time.perf_counter() - win_t
                    m = max(1, int(win["n"]))
                    row = {"step": step, "loss": f"{win['loss'] / m:.6f}",
                           "mse": f"{win['mse'] / m:.6f}", "class_ce": f"{win['ce'] / m:.6f}",
                           "lr": f"{lr_sched.get_last_lr()[0]:.3e}",
                           "images_per_s": f"{win_imgs / max(dt, 1e-9):.2f}",
                           "elapsed_s": f"{self.elapsed_before + time.perf_counter() - t0:.1f}",
                           "text_class": f"{win['tce'] / m:.6f}"}
                    self._write_log(row)
                    bar.update(task, loss=row["loss"], rate=f"{win_imgs / max(dt, 1e-9):.1f} img/s")
                    win = {"loss": 0.0, "mse": 0.0, "ce": 0.0, "tce": 0.0, "n": 0}
                    win_t, win_imgs = time.perf_counter(), 0
                bar.update(task, completed=step)
                if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                    self._save_checkpoint(step, win)
                if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.max_steps \
                        and acc.is_main_process:
                    self._grid(step)
                    unet.train()
                if self.interrupt_after is not None and step >= self.interrupt_after:
                    raise KeyboardInterrupt
        # Totals over all resumed parts of the run (checkpoints carry the elapsed time).
        self.train_time = self.elapsed_before + time.perf_counter() - t0
        self.images_seen = step * cfg.batch_size * cfg.grad_accum * acc.num_processes
        return step

    def _latent_batch(self, idx: Any, g: Any) -> Any:
        """Cached scaled latents of images ``idx``; flips drawn as for pixels (the latents of
        the flipped images, encoded in the autoencoder phase)."""
        import torch

        lat, data = self.latents, self.data
        b = len(idx)
        h = torch.rand(b, generator=g) < 0.5 if data.hflip else torch.zeros(b, dtype=torch.bool)
        v = torch.rand(b, generator=g) < 0.5 if data.vflip else torch.zeros(b, dtype=torch.bool)
        which = torch.tensor([lat.variants.index((bool(a), bool(c))) for a, c in zip(h, v,
                                                                                      strict=True)])
        return lat.latents[idx, which].clone()

    # --- samples and export -----------------------------------------------------------------
    def _grid(self, step: int) -> Path:
        """Per-class sample grid with the EMA weights (rows = classes), by the shared sampler."""
        from medsynth.models.prototypes import apply_prototypes
        from medsynth.models.sampler import denoise, make_scheduler, sampler_for
        from medsynth.models.text_encoder import null_text
        from medsynth.train.samplegrid import grid_image, save_grid

        cfg, data = self.cfg, self.data
        den = self.denoiser
        params = trainable(den)
        self.ema.store(params)
        self.ema.copy_to(params)
        den.eval()
        try:
            rng = np.random.default_rng(cfg.seed)
            cls_ids, tix = [], []
            for ci in range(len(data.classes)):
                pool = [int(self.text_idx[i]) for i in np.flatnonzero(data.labels == ci)]
                pool = [p for p in pool if p > 0] or [0]
                for _ in range(cfg.sample_per_class):
                    cls_ids.append(ci)
                    tix.append(pool[int(rng.integers(len(pool)))])
            hidden = self.text_hidden[tix]
            mask = self.text_mask[tix]
            hidden = apply_prototypes(hidden, mask, cls_ids, self.prototypes,
                                      cfg.prototype_strength, cfg.prototype_temperature)
            null_h, null_m = (null_text(1, self.text_ref.hidden_size)
                              if self.text_ref.kind != "clip" else  # CLIP(""), cached at 0
                              (self.text_hidden[:1], self.text_mask[:1]))
            classes: Any = cls_ids
            if self.text_head is not None:
                from medsynth.models.ccella import sampling_class_input

                th = self.acc.unwrap_model(self.text_head)
                th.eval()
                classes = sampling_class_input(th, cls_ids, hidden, mask, len(data.classes),
                                               cfg.ccella_temperature)
                th.train()
            sched_conf = dict(self.noise_sched.config)
            lat = self.latents
            decode = None
            if lat is not None:
                def decode(z: Any) -> Any:
                    return lat.autoencoder.decode(z)
            x = denoise(den, make_scheduler(sampler_for(sched_conf), sched_conf,
                                            latent=lat is not None),
                        class_ids=classes, text_hidden=hidden, text_mask=mask,
                        null_class=len(data.classes), null_hidden=null_h, null_mask=null_m,
                        seeds=[cfg.seed * 100_003 + i for i in range(len(cls_ids))],
                        sample_shape=tuple(self.sample_shape), steps=cfg.sample_steps,
                        guidance=cfg.sample_guidance, device=self.acc.device, decode=decode)
        finally:
            self.ema.restore(params)
        pixels = self.mapping.to_pixels(x)
        if pixels.ndim == 5:  # volumes: the middle slice
            pixels = pixels[:, :, pixels.shape[2] // 2]
        img = grid_image(pixels, data.classes, cfg.sample_per_class, low=self.mapping.low,
                         high=self.mapping.high)
        path = save_grid(img, self.out / "samples" / f"step_{step:07d}.png")
        save_grid(img, self.out / "samples" / "grid.png")
        return path

    def model_info(self, step: int) -> ModelInfo:
        """The model-info record of this run's model after ``step`` steps."""
        cfg, data = self.cfg, self.data
        return ModelInfo(
            classes=list(data.classes), channels=data.channels, spatial_dims=data.spatial_dims,
            shape=list(data.spatial_shape), dtype=data.dtype, modality=data.modality,
            intensity=self.mapping, text_encoder=self.text_ref,
            denoiser=DenoiserInfo(kind=self.spec.kind, spec=self.spec.to_dict()),
            prediction_type="v_prediction" if self.rflow else cfg.prediction_type,
            noise_schedule=NoiseSchedule(kind=cfg.noise_schedule),
            prototypes=PrototypeInfo(file=PROTOTYPE_FILE if self.prototypes else None,
                                     per_class=cfg.prototypes_per_class,
                                     strength=cfg.prototype_strength,
                                     temperature=cfg.prototype_temperature,
                                     classes_with_bank=sorted(self.prototypes)),
            conditioning=ConditioningInfo(
                class_input="probabilities" if cfg.ccella else "ids",
                p_drop_class=cfg.p_drop_class, p_drop_text=cfg.p_drop_text,
                text_class_head=TEXT_CLASS_HEAD_FILE if cfg.ccella else None,
                temperature=cfg.ccella_temperature),
            autoencoder=self._autoencoder_info(),
            # Filled in when the data carry them (real data with spacing/affine).
            spacing=_listed(getattr(data, "spacing", None)),
            affine=_listed(getattr(data, "affine", None)),
            class_head=CLASS_HEAD_FILE,
            augmentation={"hflip": data.hflip, "vflip": data.vflip},
            train_splits=list(cfg.splits), steps=step,
        )

    def _autoencoder_info(self) -> AutoencoderInfo | None:
        lat = self.latents
        if lat is None:
            return None
        from medsynth.train.autoencoder import AE_FOLDER

        return AutoencoderInfo(folder=AE_FOLDER, scaling_factor=lat.scaling_factor,
                               latent_channels=lat.channels, latent_shape=list(lat.shape),
                               latent_std=round(lat.latent_std, 6))

    def _export(self, step: int) -> None:
        cfg, data, out = self.cfg, self.data, self.out
        grid = self._grid(step)
        info = self.model_info(step)
        ema = self.ema
        if self.prior is not None:
            info, ema = self.prior.before_export(
                out, info, self.denoiser, ema,
                self.latents.autoencoder if self.latents is not None else None)
        export_model(out, info, denoiser=self.denoiser, noise_scheduler=self.noise_sched,
                     ema=ema, class_head=self.acc.unwrap_model(self.head),
                     prototypes=self.prototypes,
                     text_class_head=(self.acc.unwrap_model(self.text_head)
                                      if self.text_head is not None else None))
        final_loss = _last_loss(out / LOG_NAME)
        speed = self.images_seen / self.train_time if self.train_time > 0 else None
        outputs = {
            "classes": data.classes, "channels": data.channels, "size": data.size,
            "shape": list(data.spatial_shape), "dtype": data.dtype, "modality": data.modality,
            "spatial_dims": data.spatial_dims, "denoiser": self.spec.kind,
            "steps": step, "n_train_images": len(data), "n_described": data.n_described,
            "final_loss": final_loss, "train_time_s": round(self.train_time, 1),
            "images_per_s": round(speed, 2) if speed else None,
            "text_cut": getattr(self, "text_cut", None),
            "mixed_precision": self.acc.mixed_precision, "processes": self.acc.num_processes,
            "device": str(self.acc.device), "noise_schedule": cfg.noise_schedule,
            "class_input": info.conditioning.class_input,
            "latent": None if self.latents is None else {
                "latent_shape": list(self.latents.shape), "latent_channels": self.latents.channels,
                "scaling_factor": self.latents.scaling_factor,
                "latent_std": round(self.latents.latent_std, 4),
                "autoencoder": dict(self.latents.metrics),
                "reused": cfg.autoencoder},
            "peak_rss_gib": _peak_rss_gib(),
            "files": {"unet": info.denoiser.folder, "unet_raw": info.denoiser.raw_folder,
                      "scheduler": info.noise_schedule.folder, "model_info": "medsynth_model.json",
                      "log": LOG_NAME, "sample_grid": str(grid.relative_to(out)),
                      "card": "README.md"},
        }
        inputs = [input_ref(self.dataset.root, "data")]
        if self.store is not None:
            inputs.append(input_ref(self.store.root, "describe"))
        if self.prior is not None:
            inputs += self.prior.manifest_inputs()
            outputs["initialized_from"] = self.prior.src.record()
        config = {**cfg.to_dict(), "train_splits": list(cfg.splits),
                  "dataset_sha256": self.dataset.sha256,
                  "store_sha256": self.store.sha256 if self.store is not None else None}
        from medsynth.train.card import model_card

        atomic_write_text(out / "README.md", model_card(self.dataset, self.store, data, cfg, info,
                                                        outputs))
        write_manifest(out, "train", config=config, inputs=inputs, outputs=outputs)


def _peak_rss_gib() -> float:
    """Peak resident memory of this process so far (GiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def _listed(v: Any) -> Any:
    """Spacing/affine (tuple, array or None) as plain JSON lists."""
    if v is None:
        return None
    return np.asarray(v, dtype=np.float64).tolist()


def _logged_elapsed(path: Path, step: int) -> float:
    """Elapsed seconds of the last log row at or before ``step`` (checkpoints without the field)."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        return float(rows[-1]["elapsed_s"]) if rows else 0.0
    except (OSError, KeyError, ValueError):
        return 0.0


def _last_loss(path: Path) -> float | None:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["loss"]) if rows else None
    except (OSError, KeyError, ValueError):
        return None
