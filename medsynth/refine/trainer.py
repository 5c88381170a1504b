"""One round of refine training (DPO or RWR), resumable, with DPO's early stop.

One optimizer step (DPO):
  1. a seeded batch of pairs (indices, noise, timesteps come from a generator seeded by
     (seed, round, step), so a resumed run draws exactly the batches of an uninterrupted one);
  2. winner and loser noised with the same noise at the same timestep, same condition;
  3. the model (adapters on) and the reference (adapters off, or a frozen copy, no gradient)
     predict; per-sample losses of the shared objective (:mod:`medsynth.models.objective`, the
     schedule and target the model was trained with) -> :func:`medsynth.refine.losses.dpo_loss`;
  4. AdamW step on the trainable weights only (LoRA or all), gradient clipping, linear warm-up.

RWR: a seeded batch of accepted synthetic images (weighted by their reward) and real training
images (weight 1), classifier-free-guidance dropout as in training, weighted MSE.

Early stop (DPO): at every log window, the mean winner loss of the model is compared with the
reference's on the same noise; ``early_stop_patience`` windows in a row with the model's above
the reference's (after ``early_stop_min_steps``) stop the round, and the weights the last good
window started from are kept (the losses of a window are measured before each of its updates,
so its last update was never measured).

Checkpoints (``ROUND/checkpoints/step-NNNNNNN/``): the trainable weights, the kept weights, the
optimizer state and ``state.json`` (written last), in a temporary folder renamed when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from pathlib import Path
from typing import Any

from medsynth.artifacts import atomic_write_bytes
from medsynth.checkpoints import (
    CsvLog,
    batch_indices,
    complete_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from medsynth.errors import MedsynthError
from medsynth.refine.config import RefineConfig
from medsynth.refine.losses import dpo_loss, weighted_mse

LOG_NAME = "refine_log.csv"
LOG_FIELDS = ["round", "step", "loss", "implicit_acc", "model_w", "model_l", "ref_w", "ref_l",
              "mse_synth", "mse_real", "lr", "items_per_s", "elapsed_s"]
_WINDOW_KEYS = ("loss", "acc", "mw", "ml", "rw", "rl", "ms", "mr", "n")


@dataclasses.dataclass
class RoundData:
    """What one round trains on (tensors on the CPU; moved per batch)."""

    images: Any
    """(N, C, *shape) images in [-1, 1]: the judged synthetic images, then any real ones."""
    cond_rows: Any
    """(N,) row of each image's condition in ``conditions``."""
    conditions: Any
    """:class:`medsynth.refine.data.Conditions`."""
    winners: Any = None
    """DPO: (P,) image row of each pair's winner."""
    losers: Any = None
    """DPO: (P,) image row of each pair's loser."""
    synth_rows: Any = None
    """RWR: (S,) image rows of the accepted synthetic images."""
    synth_weights: Any = None
    """RWR: (S,) their weights (mean 1)."""
    real_rows: Any = None
    """RWR: (R,) image rows of the real images (may be empty)."""


@dataclasses.dataclass
class RoundResult:
    """How a round ended."""

    steps: int
    """Optimizer steps run in the round."""
    kept_step: int
    """Step whose weights were kept (= steps unless stopped early)."""
    stopped_early: bool = False
    reason: str = ""
    seconds: float = 0.0
    last: dict[str, float] = dataclasses.field(default_factory=dict)
    """Means of the round's last log window."""


class RoundTrainer:
    """Train ``denoiser`` for one round on ``data`` (see module doc)."""

    def __init__(self, *, denoiser: Any, reference: Any, cfg: RefineConfig, data: RoundData,
                 objective: Any, round_no: int, round_dir: Path,
                 log_path: Path, device: Any, null_class: int, null_text: tuple[Any, Any],
                 p_drop: tuple[float, float] = (0.0, 0.0), progress: bool = True,
                 elapsed_before: float = 0.0, interrupt_after: int | None = None,
                 amp: str = "no") -> None:
        self.den, self.ref, self.cfg, self.data = denoiser, reference, cfg, data
        self.objective = objective
        """:class:`medsynth.models.objective.Objective` of the model's kind (schedule, target)."""
        self.amp = amp
        """Autocast choice (:func:`medsynth.precision.amp_choice`): no | bf16 | fp16."""
        self.round, self.dir, self.log_path = round_no, Path(round_dir), Path(log_path)
        self.device, self.null_class, self.null_text = device, null_class, null_text
        self.p_drop, self.progress, self.interrupt_after = p_drop, progress, interrupt_after
        self.ckdir = self.dir / "checkpoints"
        self.elapsed_before = elapsed_before
        self.params = {n: p for n, p in denoiser.named_parameters() if p.requires_grad}
        if not self.params:
            raise MedsynthError("refine: nothing to train (no parameter requires a gradient)")
        import torch

        self.opt = torch.optim.AdamW(list(self.params.values()), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        # fp16 autocast needs loss scaling; the scaler skips a step whose gradients overflow.
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if amp == "fp16" else None

    # --- weights ----------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, Any]:
        return {n: p.detach().cpu().clone().contiguous() for n, p in self.params.items()}

    def load_trainable(self, state: dict[str, Any]) -> None:
        import torch

        if set(state) != set(self.params):
            raise MedsynthError(f"{self.dir}: saved weights do not fit the model being refined")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state[n].to(p))

    # --- checkpoints ------------------------------------------------------------------------
    def _save_checkpoint(self, step: int, extra: dict[str, Any]) -> None:
        import torch
        from safetensors.torch import save

        def files(tmp: Path) -> None:
            atomic_write_bytes(tmp / "trainable.safetensors", save(self.trainable_state()))
            atomic_write_bytes(tmp / "kept.safetensors", save(self.kept))
            atomic_write_bytes(tmp / "window_start.safetensors", save(self.window_start))
            buf = io.BytesIO()
            torch.save(self.opt.state_dict(), buf)
            atomic_write_bytes(tmp / "optimizer.pt", buf.getvalue())
            if self.scaler is not None:  # fp16: the loss scale resumes where it was
                buf = io.BytesIO()
                torch.save(self.scaler.state_dict(), buf)
                atomic_write_bytes(tmp / "scaler.pt", buf.getvalue())

        write_checkpoint(self.ckdir, step, extra, keep=self.cfg.keep_checkpoints, save=files)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        import torch
        from safetensors.torch import load_file

        ckpts = complete_checkpoints(self.ckdir)
        if not ckpts:
            return None

        def files(last: Path) -> None:
            self.load_trainable(load_file(str(last / "trainable.safetensors")))
            self.kept = load_file(str(last / "kept.safetensors"))
            self.window_start = load_file(str(last / "window_start.safetensors"))
            # map_location: a state saved from a GPU loads where no GPU is (load_state_dict then
            # moves it to the parameters' device).
            self.opt.load_state_dict(torch.load(io.BytesIO((last / "optimizer.pt").read_bytes()),
                                                map_location="cpu", weights_only=True))
            if self.scaler is not None and (last / "scaler.pt").is_file():
                self.scaler.load_state_dict(torch.load(io.BytesIO((last / "scaler.pt")
                                                                  .read_bytes()),
                                                       map_location="cpu", weights_only=True))

        return read_checkpoint(ckpts, files)

    # --- log ----------------------------------------------------------------------------------
    def _open_log(self, step: int) -> None:
        self._log = CsvLog(self.log_path, LOG_FIELDS)
        self._log.start(lambda r: int(r["round"]) < self.round
                        or (int(r["round"]) == self.round and int(r["step"]) <= step))

    def _write_log(self, row: dict[str, Any]) -> None:
        self._log.write(row)

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> RoundResult:
        import torch
        from rich.progress import TextColumn

        from medsynth.ui import progress_bar

        cfg = self.cfg
        self.kept = self.trainable_state()  # the round's start: kept unless a window improves
        self.window_start = self.kept
        kept_step, bad, step, start_step = 0, 0, 0, 0
        win = dict.fromkeys(_WINDOW_KEYS, 0.0)
        state = self._load_checkpoint()
        if state is not None:
            step, kept_step, bad = int(state["step"]), int(state["kept_step"]), int(state["bad"])
            start_step = int(state.get("window_start_step", step))
            win = {k: float(v) for k, v in state.get("window", win).items()}
            self.elapsed_before = float(state.get("elapsed_s", self.elapsed_before))
            if state.get("stopped"):
                self.load_trainable(self.kept)
                return RoundResult(steps=step, kept_step=kept_step, stopped_early=True,
                                   reason=str(state.get("reason", "")),
                                   seconds=self.elapsed_before, last=state.get("last", {}))
        self._open_log(step)
        stopped, reason = False, ""
        last: dict[str, float] = dict(state.get("last", {})) if state else {}
        t0 = time.perf_counter()
        win_t, win_items = time.perf_counter(), 0
        self.den.train()
        bar = progress_bar(TextColumn("{task.fields[info]}"))
        bar.disable = bar.disable or not self.progress
        with bar:
            task = bar.add_task(f"refine round {self.round} ({cfg.method})", total=cfg.steps,
                                completed=step, rate="", info="")
            while step < cfg.steps:
                lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
                for group in self.opt.param_groups:
                    group["lr"] = lr
                g = torch.Generator().manual_seed(
                    (cfg.seed * 1_000_003 + self.round) * 100_003 + step)
                logs = self._dpo_step(step, g) if cfg.method == "dpo" else self._rwr_step(step, g)
                if self.scaler is not None and not math.isfinite(logs["loss"]):
                    logs = dict.fromkeys(logs, 0.0)  # fp16: the scaler skipped this step
                if not math.isfinite(logs["loss"]):
                    raise MedsynthError(f"refine diverged at round {self.round}, step {step + 1} "
                                        f"(loss {logs['loss']})",
                                        hint="lower --lr or --beta; rerun with --resume")
                for k, v in logs.items():
                    win[k] += v
                win["n"] += 1
                win_items += cfg.batch_size
                step += 1
                bar.update(task, completed=step)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    n = max(1.0, win["n"])
                    dt = time.perf_counter() - win_t
                    last = {k: win[k] / n for k in _WINDOW_KEYS if k != "n"}
                    self._write_log(self._row(step, last, lr, win_items / max(dt, 1e-9),
                                              self.elapsed_before + time.perf_counter() - t0))
                    if cfg.method == "dpo":
                        bar.update(task, info=f"acc {last['acc']:.2f} "
                                              f"w {last['mw'] - last['rw']:+.2e}")
                        if last["mw"] > last["rw"]:  # the winners got worse than the reference
                            bad += 1
                        else:
                            bad, kept_step, self.kept = 0, start_step, self.window_start
                        if cfg.early_stop and step >= cfg.early_stop_min_steps \
                                and bad >= cfg.early_stop_patience:
                            stopped = True
                            reason = (f"the winners' loss rose above the reference's for {bad} "
                                      f"log windows in a row (steps {step - bad * cfg.log_every + 1}"
                                      f"-{step}); kept the weights of step {kept_step}")
                    else:
                        bar.update(task, info=f"loss {last['loss']:.4f}")
                    win = dict.fromkeys(_WINDOW_KEYS, 0.0)
                    if cfg.method == "dpo" and cfg.early_stop:
                        self.window_start, start_step = self.trainable_state(), step
                    win_t, win_items = time.perf_counter(), 0
                if stopped or step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self._save_checkpoint(step, {
                        "kept_step": kept_step, "bad": bad, "window": win, "stopped": stopped,
                        "window_start_step": start_step,
                        "reason": reason, "last": last,
                        "elapsed_s": round(self.elapsed_before + time.perf_counter() - t0, 2)})
                if stopped:
                    break
                if self.interrupt_after is not None and step >= self.interrupt_after:
                    raise KeyboardInterrupt
        self.den.eval()
        seconds = self.elapsed_before + time.perf_counter() - t0
        if stopped:
            self.load_trainable(self.kept)
        else:
            kept_step = step
        return RoundResult(steps=step, kept_step=kept_step, stopped_early=stopped, reason=reason,
                           seconds=seconds, last=last)

    def _row(self, step: int, m: dict[str, float], lr: float, rate: float, elapsed: float
             ) -> dict[str, Any]:
        def f(k: str) -> str:
            return f"{m[k]:.6g}"

        dpo = self.cfg.method == "dpo"
        return {"round": self.round, "step": step, "loss": f("loss"),
                "implicit_acc": f("acc") if dpo else "", "model_w": f("mw") if dpo else "",
                "model_l": f("ml") if dpo else "", "ref_w": f("rw") if dpo else "",
                "ref_l": f("rl") if dpo else "", "mse_synth": "" if dpo else f("ms"),
                "mse_real": "" if dpo else f("mr"), "lr": f"{lr:.3e}",
                "items_per_s": f"{rate:.2f}", "elapsed_s": f"{elapsed:.1f}"}

    # --- steps --------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        import torch

        from medsynth.precision import amp_dtype

        dtype = amp_dtype(self.amp)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    def _predict(self, net: Any, x0: Any, noise: Any, t: Any, classes: Any, hidden: Any,
                 mask: Any) -> tuple[Any, Any]:
        """(prediction, target) of ``net`` on ``x0`` noised with ``noise`` at ``t``."""
        dev, obj = self.device, self.objective
        x0, noise, t = x0.to(dev), noise.to(dev), t.to(dev)
        xt = obj.noisy(x0, noise, t)
        target = obj.target(x0, noise, t)
        with self._autocast():
            pred = net(xt, t, classes.to(dev), hidden.to(dev), mask.to(dev))
        return pred, target

    def _reference(self) -> Any:
        from medsynth.models.adapters import adapters_disabled

        return contextlib.nullcontext(self.ref) if self.ref is not None \
            else adapters_disabled(self.den)

    def _dpo_step(self, step: int, g: Any) -> dict[str, float]:
        import torch

        d, cfg, obj = self.data, self.cfg, self.objective
        idx = batch_indices(len(d.winners), cfg.batch_size, step, cfg.seed + 7919 * self.round)
        w_rows, l_rows = d.winners[idx], d.losers[idx]
        b = len(idx)
        noise, t = obj.draw((b, *d.images.shape[1:]), g)
        x0 = torch.cat([d.images[w_rows], d.images[l_rows]])
        rows = torch.cat([d.cond_rows[w_rows], d.cond_rows[l_rows]])
        cond = d.conditions.of(rows)
        noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])
        pred, target = self._predict(self.den, x0, noise2, t2, *cond)
        model_w, model_l = obj.per_sample_loss(pred, target).chunk(2)
        with torch.no_grad(), self._reference() as ref:
            ref_pred, _ = self._predict(ref, x0, noise2, t2, *cond)
            ref_w, ref_l = obj.per_sample_loss(ref_pred, target).chunk(2)
        loss, _, acc = dpo_loss(model_w, model_l, ref_w, ref_l, cfg.beta)
        self._step(loss)
        return {"loss": float(loss.detach()), "acc": float(acc),
                "mw": float(model_w.detach().mean()), "ml": float(model_l.detach().mean()),
                "rw": float(ref_w.mean()), "rl": float(ref_l.mean())}

    def _rwr_step(self, step: int, g: Any) -> dict[str, float]:
        import torch

        d, cfg, obj = self.data, self.cfg, self.objective
        n_real = int(round(cfg.batch_size * cfg.real_fraction)) if len(d.real_rows) else 0
        n_syn = cfg.batch_size - n_real
        s_idx = batch_indices(len(d.synth_rows), n_syn, step, cfg.seed + 7919 * self.round)
        rows_img = [d.synth_rows[s_idx]]
        weights = [d.synth_weights[s_idx]]
        if n_real:
            r_idx = batch_indices(len(d.real_rows), n_real, step, cfg.seed + 15_485_863)
            rows_img.append(d.real_rows[r_idx])
            weights.append(torch.ones(n_real))
        img_rows = torch.cat(rows_img)
        w = torch.cat(weights)
        b = len(img_rows)
        x0 = d.images[img_rows]
        classes, hidden, mask = (v.clone() for v in d.conditions.of(d.cond_rows[img_rows]))
        # classifier-free guidance dropout, as the model was trained
        drop_c, drop_t = obj.cfg_dropout(b, g, *self.p_drop)
        classes = d.conditions.drop_class(classes, drop_c, self.null_class)
        if bool(drop_t.any()):
            nh, nm = self.null_text
            hidden[drop_t] = 0.0
            mask[drop_t] = 0
            hidden[drop_t, : nh.shape[1]] = nh[0].to(hidden)
            mask[drop_t, : nm.shape[1]] = nm[0].to(mask)
        noise, t = obj.draw(tuple(x0.shape), g)
        pred, target = self._predict(self.den, x0, noise, t, classes, hidden, mask)
        per = obj.per_sample_loss(pred, target)
        loss = weighted_mse(per, w)
        self._step(loss)
        per = per.detach()
        ms = float(per[:n_syn].mean()) if n_syn else 0.0
        mr = float(per[n_syn:].mean()) if n_real else 0.0
        return {"loss": float(loss.detach()), "ms": ms, "mr": mr}

    def _step(self, loss: Any) -> None:
        import torch

        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.max_grad_norm)
        if self.scaler is None:
            self.opt.step()
        else:
            self.scaler.step(self.opt)
            self.scaler.update()
