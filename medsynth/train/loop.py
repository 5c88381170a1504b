"""The training loop (accelerate): CCELLA dual-head conditioning, joint loss, CFG dropout, EMA.

One optimizer step =
  1. a seeded batch (indices, flips, noise, timesteps and condition dropout all come from a
     generator seeded by (seed, step, micro-batch, process), so a resumed run draws exactly the
     batches the uninterrupted run would have drawn);
  2. class ids -> null class with ``p_drop_class``, texts -> null text with ``p_drop_text``
     (independently), for classifier-free guidance;
  3. the denoiser (:mod:`medsynth.models.denoiser`, any kind, 2D or 3D) predicts the target of
     the shared objective (:mod:`medsynth.models.objective`): the noise
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
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import (
    MANIFEST_NAME,
    atomic_write_text,
    check_output_dir,
    clear_folder,
    prepare_output_dir,
)
from medsynth.checkpoints import (
    CsvLog,
    batch_indices,
    complete_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from medsynth.errors import MedsynthError
from medsynth.models.denoiser import (
    DenoiserSpec,
    build_class_head,
    build_denoiser,
    channels_last_format,
    plan_denoiser,
)
from medsynth.models.info import ModelInfo
from medsynth.models.objective import Objective
from medsynth.models.prototypes import build_prototypes
from medsynth.resume import require_same_settings
from medsynth.train.batches import BatchStream
from medsynth.train.config import RESUMABLE_CHANGES, TrainConfig
from medsynth.train.data import TrainData, batch_tensors, load_train_data
from medsynth.train.export import LOG_NAME, export_run, model_info
from medsynth.train.prior import trainable
from medsynth.train.text_cache import text_features
from medsynth.ui import console

CONFIG_NAME = "train_config.yaml"
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
    from medsynth.imaging.dataset import open_dataset
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
    from medsynth.train.launch import process_group_kwargs

    state = PartialState(cpu=not torch.cuda.is_available(), **process_group_kwargs(cfg))
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
            clear_folder(out, best_effort=True)
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
            clear_folder(out, remove=created, best_effort=True)
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
    """The recipe's precision; ``auto``: bf16 on compute capability >= 8, fp16 below, CPU none."""
    from medsynth.precision import resolve

    return resolve(cfg.mixed_precision)


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
    def run(self) -> Path:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        cfg, data = self.cfg, self.data
        self.mapping = data.intensity_mapping()  # no pass over a disk stack
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
        from medsynth.train import launch

        launch.setup(cfg, mp)  # rank threads, TF32, a warning for an ignored --mixed_precision
        # train() may run several times in one process (notebooks, tests): accelerate's state is
        # a singleton, so forget the previous run's precision/accumulation (the process group stays).
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state()
        GradientState._reset_state()
        acc = Accelerator(mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum,
                          cpu=not torch.cuda.is_available())
        self.acc = acc
        set_seed(cfg.seed)
        with acc.main_process_first():  # main encodes and caches, the others read the cache
            self.text = text_features(cfg, list(data.texts), self.ckdir / "cache")
            self.text_ref, self.text_cut = self.text.ref, self.text.cut
            self.text_hidden, self.text_mask, self.text_idx = (self.text.hidden, self.text.mask,
                                                               self.text.idx)
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
        assert self.spec.shape is not None  # DenoiserSpec.__post_init__ fills it
        self.sample_shape = (self.spec.channels, *self.spec.shape)
        if self.prior is not None:  # pretrained weights (+ LoRA), classes remapped by name
            unet = self.prior.adapt(self.prior.build_denoiser(self.spec, data.classes,
                                                              self.text_ref.hidden_size))
        else:
            unet = build_denoiser(self.spec)
        if cfg.sdpa_attention:
            launch.use_sdpa(unet)
        if cfg.channels_last:  # before the EMA copy, so its shadow weights share the layout
            unet = unet.to(memory_format=self.memory_format)
        head = build_class_head(self.spec)
        if self.prior is not None:
            self.prior.init_head(head, data.classes)
        self.objective = Objective.for_training(
            noise_schedule=cfg.noise_schedule, num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type,
            sample_shape=self.sample_shape, snr_gamma=cfg.snr_gamma)
        if self.prior is not None:  # the source's own training schedule (its betas)
            self.objective = dataclasses.replace(
                self.objective, scheduler=self.prior.noise_scheduler(self.objective.scheduler))
        self.noise_sched = self.objective.scheduler
        # The EMA keeps shadow copies of the parameters only: no model class, any denoiser.
        # Only what trains (all of it, but a LoRA adapter's frozen base).
        ema = EMAModel(trainable(unet), decay=cfg.ema_decay, use_ema_warmup=True,
                       foreach=cfg.ema_foreach)
        params = trainable(unet) + list(head.parameters())
        text_head = None
        if cfg.ccella:
            from medsynth.models.ccella import TextClassHead

            text_head = TextClassHead(self.text_ref.hidden_size, len(data.classes))
            params += list(text_head.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                fused=True if cfg.fused_optimizer else None)  # None: torch's default
        lr_sched = get_scheduler("cosine" if cfg.lr_schedule == "cosine" else "constant_with_warmup",
                                 opt, num_warmup_steps=cfg.warmup_steps * acc.num_processes,
                                 num_training_steps=cfg.max_steps * acc.num_processes)
        if text_head is not None:
            unet, head, text_head, opt, lr_sched = acc.prepare(unet, head, text_head, opt, lr_sched)
        else:
            unet, head, opt, lr_sched = acc.prepare(unet, head, opt, lr_sched)
        self.text_head = text_head
        acc.register_for_checkpointing(ema)
        self.unet, self.head, self.opt, self.lr_sched, self.ema = unet, head, opt, lr_sched, ema
        self.denoiser = acc.unwrap_model(unet)  # features and saving: the bare module
        if self.prior is not None:
            self.prior.hook_accelerator(acc, self.denoiser)
        if cfg.compile:  # after prepare: checkpoints, the EMA and exports see the bare module
            self.unet = torch.compile(unet)

        self.window: dict[str, float] = {}
        # A latent run killed before its first denoiser checkpoint starts the denoiser afresh.
        fresh = self.latents is not None and not self._checkpoints()
        start = self._load_checkpoint() if self.resume and not fresh else 0
        # After the load: accelerate reloads the EMA's shadow params on the CPU
        # (load_custom_state(map_location="cpu")); moved before, the first ema.step on a GPU
        # would mix devices.
        ema.to(acc.device)
        if acc.is_main_process:
            # The folder is about to change: it must not look complete until the new manifest
            # is written (removed only now, so a failed resume leaves a finished model intact).
            (self.out / MANIFEST_NAME).unlink(missing_ok=True)
            atomic_write_text(self.out / CONFIG_NAME, cfg.to_yaml())
        self.batches = BatchStream(self._draw, ((s, m) for s in range(start, cfg.max_steps)
                                                for m in range(cfg.grad_accum)),
                                   acc.device, prefetch=cfg.prefetch)
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
            self.batches.close()
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

    def _save_checkpoint(self, step: int, window: _Window) -> None:
        write_checkpoint(self.ckdir, step, {
            "elapsed_s": round(self.elapsed_before + time.perf_counter() - self.t0, 1),
            "log_window": window.saved()},
            keep=self.cfg.keep_checkpoints, save=lambda tmp: self.acc.save_state(str(tmp)),
            acc=self.acc)

    # --- log ---------------------------------------------------------------------------------
    def _open_log(self, start: int) -> None:
        self._log = CsvLog(self.out / LOG_NAME, LOG_FIELDS, enabled=self.acc.is_main_process)
        self._log.start(lambda r: int(r["step"]) <= start)
        self._tb = None
        if self.acc.is_main_process:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=start + 1)
            except Exception:  # tensorboard not installed: the CSV is the log
                self._tb = None

    def _write_log(self, row: dict[str, Any]) -> None:
        self._log.write(row)
        if self._tb is not None:
            for k in ("loss", "mse", "class_ce", "lr"):
                self._tb.add_scalar(f"train/{k}", float(row[k]), int(row["step"]))

    def _close_log(self) -> None:
        tb = getattr(self, "_tb", None)
        if tb is not None:
            tb.close()

    # --- the loop ----------------------------------------------------------------------------
    def _loop(self, start: int) -> int:
        from rich.progress import TextColumn

        from medsynth.ui import progress_bar

        cfg, acc = self.cfg, self.acc
        unet, head, opt, lr_sched, ema = self.unet, self.head, self.opt, self.lr_sched, self.ema
        models = (unet, head) if self.text_head is None else (unet, head, self.text_head)
        t0 = self.t0 = time.perf_counter()
        # fp16 (CUDA): a non-finite loss is the GradScaler's to skip (it lowers the scale);
        # elsewhere (no scaler) it ends the run.
        win = _Window(acc.device, self.window,
                      skip_nonfinite=getattr(acc, "scaler", None) is not None)
        step = start
        unet.train()
        head.train()
        bar = progress_bar(TextColumn("loss {task.fields[loss]}"), transient=False)
        bar.disable = bar.disable or not self.progress or not acc.is_main_process
        with bar:
            task = bar.add_task("training", total=cfg.max_steps, completed=start, rate="", loss="-")
            while step < cfg.max_steps:
                for micro in range(cfg.grad_accum):
                    batch = self.batches.get(step, micro)                # 1. the seeded batch
                    with acc.accumulate(*models), acc.autocast():
                        losses = self._losses(batch)                     # 2. the losses
                        acc.backward(losses["loss"])                     # 3. the optimizer step
                        if acc.sync_gradients and cfg.max_grad_norm > 0:
                            acc.clip_grad_norm_([p for m in models for p in m.parameters()],
                                                cfg.max_grad_norm)
                        opt.step()
                        lr_sched.step()
                        opt.zero_grad(set_to_none=True)
                    win.add(losses, cfg.grad_accum, batch.size * acc.num_processes)
                step += 1                                                # 4. after the step:
                ema.step(trainable(acc.unwrap_model(unet)))              #    EMA
                win.n += 1
                if step % cfg.log_every == 0 or step == cfg.max_steps:   #    log row
                    row = self._log_row(step, win.means(step), t0)
                    bar.update(task, loss=row["loss"], rate=f"{win.rate():.1f} img/s")
                    win.reset()
                bar.update(task, completed=step)
                if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:  # checkpoint
                    win.check(step)
                    self._save_checkpoint(step, win)
                if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.max_steps \
                        and acc.is_main_process:                         #    sample grid
                    self._grid(step)
                    unet.train()
                if self.interrupt_after is not None and step >= self.interrupt_after:
                    raise KeyboardInterrupt
        # Totals over all resumed parts of the run (checkpoints carry the elapsed time).
        self.train_time = self.elapsed_before + time.perf_counter() - t0
        self.images_seen = step * cfg.batch_size * cfg.grad_accum * self.acc.num_processes
        return step

    def _draw(self, step: int, micro: int) -> _Batch:
        """Micro-batch ``micro`` of ``step``: images (or latents), CFG dropout, noise and
        timesteps from a generator seeded by (seed, step, micro-batch, process), on the host
        (:class:`BatchStream` moves it to the device)."""
        import torch

        cfg, data, acc = self.cfg, self.data, self.acc
        k = (step * cfg.grad_accum + micro) * acc.num_processes + acc.process_index
        g = torch.Generator().manual_seed(cfg.seed * 7_919 + k * 2 + 1)
        idx = batch_indices(len(data), cfg.batch_size, k, cfg.seed)
        if self.latents is not None:
            x0 = self._latent_batch(idx, g)
        else:
            x0 = batch_tensors(data, idx, g, self.mapping)
        bs = x0.shape[0]
        y = torch.from_numpy(data.labels)[idx]
        drop_c, drop_t = self.objective.cfg_dropout(bs, g, cfg.p_drop_class, cfg.p_drop_text)
        c = y.clone()
        c[drop_c] = len(data.classes)  # the null class
        tidx = self.text_idx[idx].clone()
        tidx[drop_t] = 0  # 0 = the null text
        noise, t = self.objective.draw(tuple(x0.shape), g)
        return _Batch(x0=x0, noise=noise, t=t, labels=y, classes=c, text_idx=tidx,
                      hidden=self.text_hidden[tidx], mask=self.text_mask[tidx], size=bs)

    def _losses(self, b: _Batch) -> dict[str, Any]:
        """loss = denoising MSE (the objective) + class-head CE + CCELLA text-class loss."""
        import torch
        import torch.nn.functional as F

        cfg, obj, dev = self.cfg, self.objective, self.acc.device
        xt = obj.noisy(b.x0, b.noise, b.t)
        if cfg.channels_last:
            xt = xt.contiguous(memory_format=self.memory_format)
        target = obj.target(b.x0, b.noise, b.t)
        c, tce = b.classes, torch.zeros((), device=dev)
        if self.text_head is not None:
            # CCELLA: the class input is the class predicted from the text (one-hot where there
            # is none, null where the class is dropped).
            from medsynth.models.ccella import class_inputs, class_loss

            null = len(self.data.classes)
            has_text = b.text_idx > 0
            logits = self.text_head(b.hidden, b.mask)
            probs = (logits.float() / cfg.ccella_temperature).softmax(-1)
            c = class_inputs(probs, b.labels, has_text, c == null, null)
            tce = class_loss(logits, b.labels, cfg.ccella_loss, weights=has_text)
        pred = self.unet(xt, b.t, c, b.hidden, b.mask)
        mse = obj.loss(pred, target, b.t)
        if cfg.class_loss_weight > 0:
            ce = F.cross_entropy(self.head(self.denoiser.pooled_features()).float(), b.labels)
        else:
            ce = torch.zeros((), device=dev)
        loss = mse + cfg.class_loss_weight * ce + cfg.ccella_loss_weight * tce
        return {"loss": loss, "mse": mse, "ce": ce, "tce": tce}

    def _log_row(self, step: int, m: dict[str, float], t0: float) -> dict[str, Any]:
        row = {"step": step, "loss": f"{m['loss']:.6f}", "mse": f"{m['mse']:.6f}",
               "class_ce": f"{m['ce']:.6f}", "lr": f"{self.lr_sched.get_last_lr()[0]:.3e}",
               "images_per_s": f"{m['rate']:.2f}",
               "elapsed_s": f"{self.elapsed_before + time.perf_counter() - t0:.1f}",
               "text_class": f"{m['tce']:.6f}"}
        self._write_log(row)
        return row

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
            from medsynth.train.samplegrid import in_chunks

            x = in_chunks(  # chunks of sample_batch_size: one image is the same in any chunk
                denoise, cfg.sample_batch_size or cfg.batch_size,
                dict(class_ids=classes, text_hidden=hidden, text_mask=mask,
                     seeds=[cfg.seed * 100_003 + i for i in range(len(cls_ids))]),
                denoiser=den, scheduler=make_scheduler(sampler_for(sched_conf), sched_conf,
                                                       latent=lat is not None),
                null_class=len(data.classes), null_hidden=null_h, null_mask=null_m,
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
        return model_info(self.cfg, self.data, spec=self.spec, text_ref=self.text_ref,
                          mapping=self.mapping, prototypes=self.prototypes, latents=self.latents,
                          prediction_type=self.objective.prediction_type, step=step)

    def _export(self, step: int) -> None:
        grid = self._grid(step)
        text_head = self.acc.unwrap_model(self.text_head) if self.text_head is not None else None
        export_run(self.out, self.model_info(step), cfg=self.cfg, data=self.data,
                   dataset=self.dataset, store=self.store, denoiser=self.denoiser,
                   noise_scheduler=self.noise_sched, ema=self.ema,
                   class_head=self.acc.unwrap_model(self.head), text_head=text_head,
                   prototypes=self.prototypes, latents=self.latents, grid=grid,
                   train_time=self.train_time, images_seen=self.images_seen,
                   text_cut=self.text_cut, acc=self.acc, prior=self.prior)


@dataclasses.dataclass
class _Batch:
    """One micro-batch (see :meth:`_Trainer._draw`)."""

    x0: Any
    noise: Any
    t: Any
    labels: Any
    """True class ids (the class loss, CCELLA)."""
    classes: Any
    """Class input: the ids with the dropped ones set to the null class."""
    text_idx: Any
    hidden: Any
    mask: Any
    size: int


class _Window:
    """The open log window's loss sums, kept on the device (float64, the arithmetic of the
    former Python floats) and read on the host only at log rows and checkpoints: no host sync
    per step. Under fp16 (``skip_nonfinite``) a non-finite loss, whose step the GradScaler
    skips, is left out of the means instead of ending the run."""

    KEYS = ("loss", "mse", "ce", "tce")

    def __init__(self, device: Any, saved: dict[str, float], *, skip_nonfinite: bool) -> None:
        self.device, self.skip = device, skip_nonfinite
        self.reset(saved)

    def reset(self, saved: dict[str, float] | None = None) -> None:
        import torch

        saved = saved or {}
        self.sums = {k: torch.tensor(float(saved.get(k, 0.0)), dtype=torch.float64,
                                     device=self.device) for k in self.KEYS}
        self.skipped = torch.tensor(float(saved.get("skipped", 0.0)), dtype=torch.float64,
                                    device=self.device)
        self.n = int(saved.get("n", 0))
        self.t, self.images = time.perf_counter(), 0

    def add(self, losses: dict[str, Any], accum: int, images: int) -> None:
        import torch

        if self.skip:
            ok = torch.isfinite(losses["loss"].detach())
            for k in self.KEYS:
                v = losses[k].detach().double()
                self.sums[k] += torch.where(ok, v, torch.zeros_like(v)) / accum
            self.skipped += (~ok).double() / accum
        else:
            for k in self.KEYS:
                self.sums[k] += losses[k].detach().double() / accum
        self.images += images

    def _read(self) -> tuple[list[float], float]:
        import torch

        *sums, skipped = torch.stack([*self.sums.values(), self.skipped]).tolist()  # one sync
        return sums, skipped

    def check(self, step: int) -> None:
        """End the run on a non-finite loss (fp32/bf16), before a checkpoint could keep it."""
        sums, _ = self._read()
        if not math.isfinite(sums[0]):
            raise MedsynthError(
                f"training diverged by step {step} (the loss of the log window is {sums[0]})",
                hint="lower lr, raise warmup_steps, or use mixed_precision no/bf16; "
                "rerun with --resume from the last good checkpoint")

    def means(self, step: int) -> dict[str, float]:
        """The window's means (and images/s) for its log row."""
        self.check(step)
        sums, skipped = self._read()
        m: float = max(1, self.n)
        if skipped:
            console.print(f"[yellow]fp16: {skipped:g} step(s) with a non-finite loss skipped by "
                          f"the GradScaler before step {step}[/]")
            m = m - skipped if m > skipped else math.nan
        out = {k: v / m for k, v in zip(self.KEYS, sums, strict=True)}
        out["rate"] = self.rate()
        return out

    def rate(self) -> float:
        return self.images / max(time.perf_counter() - self.t, 1e-9)

    def saved(self) -> dict[str, float]:
        """The window as a checkpoint records it (a resumed run continues its sums)."""
        sums, skipped = self._read()
        return {**dict(zip(self.KEYS, sums, strict=True)), "n": self.n, "skipped": skipped}


def _logged_elapsed(path: Path, step: int) -> float:
    """Elapsed seconds of the last log row at or before ``step`` (checkpoints without the field)."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        return float(rows[-1]["elapsed_s"]) if rows else 0.0
    except (OSError, KeyError, ValueError):
        return 0.0
