"""``medsynth train --stage clip``: a small contrastive image–text model (MedCoDi-M's shared space).

Pairs are (image, its stored description) of the recipe's splits (``train`` by default; the
test split is refused). Validation pairs are the store's ``val`` images when it describes
some, else a seeded, per-class share (``val_fraction``) of the training pairs held out.

One optimizer step =
  1. a batch of pair indices from seeded epoch permutations (seed, epoch), augmentation from a
     generator seeded by (seed, step): a resumed run draws exactly the batches and flips of the
     uninterrupted one;
  2. image tower on the augmented images, text tower on the frozen, pooled MiniLM features
     (computed once per distinct text before training);
  3. symmetric InfoNCE with the learnable temperature, identical texts as shared positives
     (:func:`medsynth.models.clip.info_nce`); AdamW, warm-up + cosine LR.

Every ``eval_every`` steps the validation pairs are embedded and image->text / text->image
recall@1/5 logged against chance; the weights with the best mean recall are kept (``select:
best``). Checkpoints (model, optimizer, schedule, best weights, log so far) are single files
written atomically; ``--resume`` continues from the newest. A fresh run that fails before its
first checkpoint removes what it wrote.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import (
    MANIFEST_NAME,
    atomic_path,
    atomic_write_text,
    check_output_dir,
    clear_folder,
    input_ref,
    prepare_output_dir,
    write_manifest,
)
from medsynth.checkpoints import CsvLog
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.imaging.modality import allowed_flips
from medsynth.models.clip import (
    CLIP_STAGE,
    ClipInfo,
    ClipSpec,
    build_clip,
    info_nce,
    pool_text,
    resize_unit,
    retrieval_recall,
    save_clip_info,
    save_clip_weights,
    unit_pixels,
)
from medsynth.models.text_encoder import TextEncoder, TextEncoderRef
from medsynth.resume import require_same_settings
from medsynth.train.clip_config import CLIP_RESUMABLE_CHANGES, ClipConfig

CLIP_CONFIG = "clip_config.yaml"
CLIP_LOG = "train_log.csv"
LOG_FIELDS = ["step", "loss", "temperature", "lr", "pairs_per_s", "elapsed_s", "val_i2t_r1",
              "val_i2t_r5", "val_t2i_r1", "val_t2i_r5", "val_mean_recall"]
CKPT_PREFIX = "step-"
MIN_VAL_PAIRS = 4


@dataclasses.dataclass
class ClipPairs:
    """Decoded (image, text) pairs for training and validation."""

    x: Any
    """Float tensor (N, C, *spatial) in [0, 1] at the recipe's size."""
    text_ids: Any
    """Long tensor (N,): index into :attr:`texts` (identical strings share an id)."""
    texts: list[str]
    """The distinct description strings."""
    labels: list[str]
    image_ids: list[str]
    train_idx: Any
    """Pair indices used for training."""
    val_idx: Any
    """Pair indices used for validation (may be empty)."""
    val_source: str
    classes: list[str]
    modality: str
    n_undescribed: int
    """Images of the training splits without a description (not used)."""

    @property
    def spatial_dims(self) -> int:
        return int(self.x.ndim - 2)

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])


def default_size(shape: tuple[int, ...]) -> int:
    """The data's own size, at most 64 (2D) or 32 (3D) for a CPU-sized encoder."""
    return int(min(max(shape), 64 if len(shape) == 2 else 32))


def load_pairs(dataset: Any, store: Any, cfg: ClipConfig, progress: bool = True) -> ClipPairs:
    """The described images of the recipe's splits (+ validation pairs), decoded once."""
    import torch

    from medsynth.train.data import _store_texts
    from medsynth.ui import track

    all_classes = list(dataset.classes)
    classes = list(cfg.classes) if cfg.classes else all_classes
    unknown = [c for c in classes if c not in all_classes]
    if unknown:
        raise MedsynthError(f"{dataset.root}: unknown classes {unknown}",
                            hint=f"the dataset has: {', '.join(all_classes)}")
    texts_by_id = _store_texts(dataset, store, classes)
    table = dataset.table
    table = table[table["class"].isin(classes)]
    ids = table["image_id"].astype(str)
    in_train = table["split"].isin(cfg.splits)
    described = ids.isin(set(texts_by_id))
    train_rows = table[in_train & described]
    n_undescribed = int((in_train & ~described).sum())
    if len(train_rows) < 2:
        raise MedsynthError(
            f"{store.root}: {len(train_rows)} described image(s) in split(s) {cfg.splits} of "
            f"{dataset.root}; a contrastive model needs pairs",
            hint=f"describe them first: medsynth describe {dataset.root} --out STORE")
    val_rows = table[(table["split"] == "val") & described] if "val" not in cfg.splits \
        else table.iloc[:0]
    rows = [r for _, r in train_rows.iterrows()]
    n_train = len(rows)
    use_val_split = len(val_rows) >= MIN_VAL_PAIRS
    if use_val_split:
        rows += [r for _, r in val_rows.iterrows()]

    arrays: list[np.ndarray] = []
    shapes: set[tuple[int, ...]] = set()
    for r in track(rows, "decoding images") if progress else rows:
        a = dataset.load(r).array
        if a.ndim not in (3, 4):
            raise MedsynthError(f"{dataset.root / str(r['path'])}: image of shape {a.shape}; "
                                "expected (C, H, W) or (C, D, H, W)")
        shapes.add(tuple(a.shape))
        arrays.append(a)
    dims = {len(s) - 1 for s in shapes}
    chans = {s[0] for s in shapes}
    if len(dims) > 1 or len(chans) > 1:
        raise MedsynthError(f"{dataset.root}: images mix dimensionalities or channel counts "
                            f"({sorted(shapes)[:4]}); a CLIP model needs one kind")
    size = cfg.size or default_size(next(iter(shapes))[1:])
    x = torch.cat([resize_unit(torch.from_numpy(unit_pixels(a))[None], size).clamp_(0, 1)
                   for a in arrays])
    all_texts = [texts_by_id[str(r["image_id"])] for r in rows]
    uniq = list(dict.fromkeys(all_texts))
    pos = {t: i for i, t in enumerate(uniq)}
    text_ids = torch.tensor([pos[t] for t in all_texts], dtype=torch.long)
    labels = [str(r["class"]) for r in rows]

    if use_val_split:
        train_idx = torch.arange(n_train)
        val_idx = torch.arange(n_train, len(rows))
        source = "split:val"
    elif cfg.val_fraction > 0:
        rng = np.random.default_rng(cfg.seed)
        held: list[int] = []
        lab = np.array(labels[:n_train])
        for c in classes:
            idx = np.nonzero(lab == c)[0]
            k = int(round(cfg.val_fraction * len(idx)))
            if len(idx) - k >= 1:
                held += rng.permutation(idx)[:k].tolist()
        held_set = set(held)
        train_idx = torch.tensor([i for i in range(n_train) if i not in held_set])
        val_idx = torch.tensor(sorted(held), dtype=torch.long)
        source = f"held-out:{cfg.val_fraction:g}"
        if len(val_idx) < MIN_VAL_PAIRS or len(train_idx) < 2:
            train_idx, val_idx, source = torch.arange(n_train), torch.zeros(0, dtype=torch.long), ""
    else:
        train_idx, val_idx, source = torch.arange(n_train), torch.zeros(0, dtype=torch.long), ""
    return ClipPairs(x=x, text_ids=text_ids, texts=uniq, labels=labels,
                     image_ids=[str(r["image_id"]) for r in rows], train_idx=train_idx,
                     val_idx=val_idx, val_source=source, classes=classes,
                     modality=dataset.modality, n_undescribed=n_undescribed)


def pooled_text_features(texts: list[str], ref: TextEncoderRef, device: Any = None) -> Any:
    """Mean-pooled frozen token features of each text ``(len(texts), D)``, computed once."""
    enc = TextEncoder(ref, device=device)
    hidden, mask = enc.encode(texts)
    return pool_text(hidden, mask).cpu()


def _augment(x: Any, gen: Any, hflip: bool, vflip: bool, shift: float) -> Any:
    """Seeded flips (where the modality allows) and a random reflect-padded translation."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    x = x.clone()
    if hflip:
        m = torch.rand(b, generator=gen) < 0.5
        x[m] = x[m].flip(-1)
    if vflip:
        m = torch.rand(b, generator=gen) < 0.5
        x[m] = x[m].flip(-2)
    size = int(x.shape[-1])
    p = int(round(shift * size))
    if p > 0:
        nd = x.ndim - 2
        pad = F.pad(x, (p, p) * nd, mode="reflect")
        offs = torch.randint(0, 2 * p + 1, (b, nd), generator=gen)
        out = torch.empty_like(x)
        for i in range(b):
            sl = tuple(slice(int(o), int(o) + int(s)) for o, s in zip(offs[i], x.shape[2:],
                                                                    strict=True))
            out[i] = pad[(i, slice(None), *sl)]
        x = out
    return x


def _epoch_batch(n: int, b: int, step: int, seed: int) -> Any:
    """Indices (into 0..n-1) of the batch of ``step``: seeded epoch permutations."""
    import torch

    per_epoch = max(1, n // b)
    epoch, j = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[j * b:(j + 1) * b] if n >= b else perm


def _lr_factor(step: int, cfg: ClipConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))


def evaluate_pairs(model: Any, x: Any, pooled: Any, texts: list[str],
                   device: Any = None) -> dict[str, Any]:
    """Retrieval recall@1/5 of a model on paired images and pooled texts (eval mode)."""
    import torch

    was = model.training
    model.eval()
    with torch.inference_mode():
        img = torch.cat([model.encode_image(x[i:i + 128].to(device)).cpu()
                         for i in range(0, len(x), 128)])
        txt = model.encode_text(pooled.to(device)).cpu()
    model.train(was)
    return retrieval_recall(img, txt, texts)


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadUsageError("clip config: device cuda, but no CUDA device is available")
    return torch.device(name)


def _checkpoints(ckdir: Path) -> list[Path]:
    if not ckdir.is_dir():
        return []
    found = [p for p in ckdir.glob(f"{CKPT_PREFIX}*.pt")]
    return sorted(found, key=lambda p: int(p.stem[len(CKPT_PREFIX):]))




def train_clip(dataset_path: str | Path, out: str | Path, *, cfg: ClipConfig,
               store_path: str | Path | None, resume: bool = False, overwrite: bool = False,
               progress: bool = True, interrupt_after: int | None = None) -> Path:
    """Train a CLIP model on the (image, description) pairs of a dataset + store into ``out``.

    Returns the folder; load it with :func:`medsynth.models.clip.load_clip`.
    ``interrupt_after`` (tests) raises KeyboardInterrupt after that step, as a kill would.
    """
    import torch

    from medsynth.imaging.dataset import open_dataset
    from medsynth.store import open_store
    from medsynth.train.launch import world_size

    if world_size() > 1:
        # The CLIP stage is one process on one device: N launched copies would all train on
        # the same device and write the same folder.
        raise BadUsageError(f"train --stage clip runs in one process, not under accelerate launch "
                            f"with {world_size()} processes",
                            hint="run it as plain `medsynth train --stage clip ...`")
    if store_path is None:
        raise BadUsageError("train --stage clip needs --store STORE: the model learns from "
                            "(image, description) pairs",
                            hint="medsynth describe DATASET --out STORE first")
    dataset = open_dataset(dataset_path)
    store = open_store(store_path)
    out = Path(out)
    if resume and not _checkpoints(out / "checkpoints"):
        raise MedsynthError(f"{out}: nothing to resume (no CLIP checkpoint)",
                            hint="start a new run without --resume")
    if resume and (out / CLIP_CONFIG).is_file():
        saved = ClipConfig.from_yaml(out / CLIP_CONFIG)
        require_same_settings(
            saved.to_dict(), cfg.to_dict(), ignore=CLIP_RESUMABLE_CHANGES,
            where=f"{out / CLIP_CONFIG}: the resumed run was trained with other settings",
            hint="resume with the same recipe (only max_steps and bookkeeping may change), "
                 "or start a new --out")
    interrupted = not resume and (out / CLIP_CONFIG).is_file() and \
        not (out / MANIFEST_NAME).exists()
    debris = interrupted and not _checkpoints(out / "checkpoints")
    if not (debris or (interrupted and overwrite)):
        check_output_dir(out, CLIP_STAGE, resume=resume, overwrite=overwrite)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = _resolve_device(cfg.device)
    # Everything that can fail on the input fails here, before the folder is touched.
    pairs = load_pairs(dataset, store, cfg, progress=progress)
    ref = TextEncoderRef(name=cfg.text_encoder, kind=cfg.text_encoder_kind,
                         layer=cfg.text_layer, max_tokens=cfg.max_text_tokens)
    pooled = pooled_text_features(pairs.texts, ref, device=device)
    created = not out.exists()
    if debris or (interrupted and overwrite):
        clear_folder(out, best_effort=True)
    prepare_output_dir(out, CLIP_STAGE, resume=resume, overwrite=overwrite)
    if not resume:
        atomic_write_text(out / CLIP_CONFIG, cfg.to_yaml())
    try:
        return _ClipTrainer(dataset, store, pairs, pooled, ref, cfg, out, device=device,
                            resume=resume, progress=progress,
                            interrupt_after=interrupt_after).run()
    except BaseException:
        if not resume and not _checkpoints(out / "checkpoints"):
            clear_folder(out, remove=created, best_effort=True)
        raise


class _ClipTrainer:
    def __init__(self, dataset: Any, store: Any, pairs: ClipPairs, pooled: Any,
                 ref: TextEncoderRef, cfg: ClipConfig, out: Path, *, device: Any, resume: bool,
                 progress: bool, interrupt_after: int | None) -> None:
        import torch

        self.dataset, self.store, self.pairs, self.pooled = dataset, store, pairs, pooled
        self.ref, self.cfg, self.out, self.device = ref, cfg, out, device
        self.resume, self.progress, self.interrupt_after = resume, progress, interrupt_after
        self.ckdir = out / "checkpoints"
        auto_h, auto_v = allowed_flips(pairs.modality)
        self.hflip = auto_h if cfg.hflip == "auto" else cfg.hflip == "yes"
        self.vflip = auto_v if cfg.vflip == "auto" else cfg.vflip == "yes"
        self.spec = ClipSpec(spatial_dims=pairs.spatial_dims, channels=pairs.channels,
                             size=int(pairs.x.shape[-1]), encoder=cfg.encoder, widths=cfg.widths,
                             embed_dim=cfg.embed_dim, text_dim=int(pooled.shape[1]),
                             text_hidden=cfg.text_hidden, init_temperature=cfg.temperature)
        torch.manual_seed(cfg.seed)
        self.model = build_clip(self.spec).to(device)
        if not cfg.learn_temperature:
            self.model.logit_scale.requires_grad_(False)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 else no_decay).append(p)
            del name
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(s, cfg))
        self.step = 0
        self.log: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"score": -1.0, "step": 0, "state": None, "val": {}}
        self.elapsed_before = 0.0

    # --- checkpoints --------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        import torch

        self.ckdir.mkdir(parents=True, exist_ok=True)
        path = self.ckdir / f"{CKPT_PREFIX}{self.step:07d}.pt"
        state = {"step": self.step, "model": self.model.state_dict(),
                 "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                 "best": self.best, "log": self.log, "elapsed_s": self._elapsed()}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        for old in _checkpoints(self.ckdir)[:-self.cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)

    def _load_checkpoint(self) -> None:
        import torch

        path = _checkpoints(self.ckdir)[-1]
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as e:
            raise MedsynthError(f"{path}: unreadable checkpoint ({e})",
                                hint="delete it to resume from the one before") from e
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step, self.best, self.log = state["step"], state["best"], state["log"]
        self.elapsed_before = float(state.get("elapsed_s", 0.0))

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    # --- validation ---------------------------------------------------------------------------
    def _validate(self) -> dict[str, Any] | None:
        p = self.pairs
        if not len(p.val_idx):
            return None
        ids = p.text_ids[p.val_idx]
        return evaluate_pairs(self.model, p.x[p.val_idx], self.pooled[ids],
                              [p.texts[int(i)] for i in ids], device=self.device)

    def _snapshot(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> Path:
        import torch
        from rich.progress import TextColumn

        from medsynth.ui import console, progress_bar

        cfg, p = self.cfg, self.pairs
        self.t0 = time.perf_counter()
        if self.resume:
            self._load_checkpoint()
        self._log = CsvLog(self.out / CLIP_LOG, LOG_FIELDS, ignore_extra=True)
        self._log.start(lambda r: int(r["step"]) <= self.step)
        n = len(p.train_idx)
        b = min(cfg.batch_size, n)
        if self.step == 0 and self.progress:
            n_txt = len(set(p.text_ids[p.train_idx].tolist()))
            console.print(f"CLIP: {n} training pairs ({n_txt} distinct texts), "
                          f"{len(p.val_idx)} validation pairs ({p.val_source or 'none'}), "
                          f"{p.spatial_dims}D {self.spec.size} px, encoder {cfg.encoder}; "
                          f"{p.n_undescribed} undescribed images skipped", soft_wrap=True)
        self.model.train()
        window: list[float] = []
        t_win = time.perf_counter()
        bar = progress_bar(TextColumn("loss {task.fields[loss]}"))
        bar.disable = bar.disable or not self.progress
        with bar:
            task = bar.add_task("training CLIP", total=cfg.max_steps, completed=self.step,
                                rate="", loss="-")
            while self.step < cfg.max_steps:
                gen = torch.Generator().manual_seed(cfg.seed * 7_919 + self.step)
                idx = p.train_idx[_epoch_batch(n, b, self.step, cfg.seed)]
                x = _augment(p.x[idx], gen, self.hflip, self.vflip, cfg.shift).to(self.device)
                tid = p.text_ids[idx]
                img = self.model.encode_image(x)
                txt = self.model.encode_text(self.pooled[tid].to(self.device))
                loss = info_nce(img, txt, self.model.scale(), groups=tid.to(self.device))
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.sched.step()
                self.step += 1
                window.append(float(loss.detach()))
                bar.update(task, advance=1, loss=f"{window[-1]:.3f}",
                           rate=f"{bar.tasks[0].speed * b:.0f} pairs/s" if bar.tasks[0].speed
                           else "")
                row: dict[str, Any] | None = None
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    dt = max(time.perf_counter() - t_win, 1e-9)
                    row = {"step": self.step, "loss": round(float(np.mean(window)), 5),
                           "temperature": round(1.0 / float(self.model.scale().detach()), 5),
                           "lr": f"{self.sched.get_last_lr()[0]:.3g}",
                           "pairs_per_s": round(len(window) * b / dt, 1),
                           "elapsed_s": round(self._elapsed(), 1)}
                    window, t_win = [], time.perf_counter()
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    val = self._validate()
                    if val is not None:
                        row = row or {"step": self.step, "elapsed_s": round(self._elapsed(), 1)}
                        row.update({f"val_{k}": round(val[k], 4) for k in
                                    ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "mean_recall")})
                        if val["mean_recall"] > self.best["score"]:
                            self.best = {"score": val["mean_recall"], "step": self.step,
                                         "state": self._snapshot(), "val": val}
                if row is not None:
                    self.log.append(row)  # kept in the checkpoint too
                    self._log.write(row)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                    self._save_checkpoint()
                if self.interrupt_after is not None and self.step >= self.interrupt_after:
                    raise KeyboardInterrupt(f"interrupted after step {self.step}")
        return self._export()

    def _export(self) -> Path:
        cfg, p = self.cfg, self.pairs
        final_val = self._validate() or {}
        use_best = cfg.select == "best" and self.best["state"] is not None
        if use_best:
            last = self._snapshot()
            self.model.load_state_dict(self.best["state"])
            step, val = self.best["step"], self.best["val"]
        else:
            step, val = self.step, final_val
        save_clip_weights(self.out, self.model)
        if use_best:
            self.model.load_state_dict(last)
        info = ClipInfo(spec=self.spec, text_encoder=self.ref, classes=p.classes,
                        modality=p.modality, train_splits=list(cfg.splits),
                        n_train_pairs=len(p.train_idx), n_val_pairs=len(p.val_idx),
                        val_source=p.val_source, step=step, val=val)
        save_clip_info(self.out, info)
        inputs = [input_ref(self.dataset.root, "data"), input_ref(self.store.root, "describe")]
        outputs = {"weights": "clip_model.json", "step": step, "max_steps": cfg.max_steps,
                   "selected": "best" if use_best else "last", "val": val,
                   "val_last": final_val, "n_train_pairs": len(p.train_idx),
                   "n_val_pairs": len(p.val_idx), "val_source": p.val_source,
                   "n_texts": len(p.texts), "spatial_dims": p.spatial_dims,
                   "size": self.spec.size, "channels": p.channels, "classes": p.classes,
                   "train_splits": list(cfg.splits), "train_seconds": round(self._elapsed(), 1)}
        write_manifest(self.out, CLIP_STAGE, config=cfg.to_dict(), inputs=inputs,
                       outputs=outputs)
        return self.out
