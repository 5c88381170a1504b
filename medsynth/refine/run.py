"""The refine run: check the inputs, build pairs, train round by round, export a model folder.

Layout written (docs/refine.md)::

    MODEL2/
      medsynth.json            stage "refine" (written last); inputs: the refined model first,
                               the judged folder, the dataset/store the model trained with
      unet/ scheduler/ medsynth_model.json prototypes.safetensors class_head.safetensors
                               a model folder exactly like train's (LoRA merged into the
                               weights), ModelInfo.refined_from = the parent model
      refine_config.yaml       the recipe (a --resume must match it)
      run.json                 the run's identity: the model's and the judged folder's sha256
      refine_log.csv           one row per log window of every round
      README.md                model card
      rounds/<k>/              pairs.csv (dpo) or accepted.csv (rwr), checkpoints/,
                               trainable.safetensors + round.json (the round is done);
                               rounds >= 2 also synth/ (the round's samples) and judged/;
                               model/ (round k's model, when round k + 1 sampled from it)

Everything that can be checked (model, judged folder, lineage, pairs) is checked before the
output folder is touched: a run with no informative pairs writes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import (
    MANIFEST_NAME,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    clear_folder,
    input_ref,
    prepare_output_dir,
    read_manifest,
    write_manifest,
)
from medsynth.errors import MedsynthError
from medsynth.refine.config import RESUMABLE_CHANGES, RefineConfig
from medsynth.refine.judged import JudgedSet, read_feedback
from medsynth.refine.pairs import PairRules, PairStats, build_pairs, pairs_table
from medsynth.refine.trainer import LOG_NAME, RoundData, RoundResult, RoundTrainer
from medsynth.resume import require_same_settings
from medsynth.ui import console

CONFIG_NAME = "refine_config.yaml"
RUN_FILE = "run.json"
ROUND_DONE = "round.json"
TRAINABLE = "trainable.safetensors"


@dataclasses.dataclass
class Prepared:
    """A round's training data and what it was built from."""

    data: RoundData
    stats: dict[str, Any]
    table: Any
    """pairs.csv (dpo) or accepted.csv (rwr) of the round."""


def rules_of(cfg: RefineConfig, round_no: int = 1) -> PairRules:
    return PairRules(bad_score=cfg.bad_score, tie_margin=cfg.tie_margin, pairing=cfg.pairing,
                     max_pairs=cfg.max_pairs, seed=cfg.seed * 1009 + round_no)


def no_pairs_error(judged: JudgedSet, stats: PairStats) -> MedsynthError:
    return MedsynthError(
        f"{judged.root}: no informative pairs ({stats.summary()}); nothing to learn from, "
        "no model written",
        hint="pairs need two or more images of one class and description with different "
             "scores: generate more candidates per description (generate --oversample K) and "
             "judge them, or lower --bad-score")


def prepare_dpo(judged: JudgedSet, bundle: Any, cfg: RefineConfig, round_no: int, *,
                strength: float | None, progress: bool, read: bool = True) -> Prepared:
    """Pairs of a judged set and the tensors they need (``read=False``: pairs only)."""
    import torch

    from medsynth.refine.data import encode_conditions, read_synthetic, to_model_space

    _check_classes(judged, bundle)
    pairs, stats = build_pairs(judged.table, rules_of(cfg, round_no))
    table = pairs_table(pairs)
    if not pairs or not read:
        return Prepared(data=None, stats=stats.to_dict(), table=table)  # type: ignore[arg-type]
    ids = list(dict.fromkeys([p.winner for p in pairs] + [p.loser for p in pairs]))
    images, row = read_synthetic(judged.synth, ids, bundle, progress=progress)
    images = to_model_space(bundle, images)
    by_id = judged.table.set_index(judged.table["sample_id"].astype(str))
    keys = [(bundle.class_id(str(by_id.loc[s, "class"])), _desc(by_id.loc[s])) for s in ids]
    cond = encode_conditions(bundle, keys, strength)
    data = RoundData(images=images, cond_rows=cond.rows(keys), conditions=cond,
                     winners=torch.tensor([row[p.winner] for p in pairs]),
                     losers=torch.tensor([row[p.loser] for p in pairs]))
    return Prepared(data=data, stats=stats.to_dict(), table=table)


def prepare_rwr(judged: JudgedSet, bundle: Any, cfg: RefineConfig, *, strength: float | None,
                progress: bool, read: bool = True) -> Prepared:
    """Accepted synthetic images with their reward weights, plus the real training images."""
    import torch

    from medsynth.refine.data import encode_conditions, load_real, read_synthetic, to_model_space

    _check_classes(judged, bundle)
    t = judged.table
    ok = t[t["image_valid"].astype(bool) & (t["score"].astype(float) >= cfg.accept_score - 1e-9)]
    w = np.exp((ok["score"].to_numpy(dtype=np.float64) - 1.0) / cfg.reward_temperature)
    w = w / w.mean() if len(w) else w
    table = ok[["sample_id", "class", "score"]].assign(weight=w)
    stats = {"images": len(t), "accepted": len(ok), "accept_score": cfg.accept_score,
             "per_class": {str(k): int(v) for k, v in ok.groupby("class").size().items()}}
    if ok.empty or not read:
        return Prepared(data=None, stats=stats, table=table)  # type: ignore[arg-type]
    ids = ok["sample_id"].astype(str).tolist()
    images, _ = read_synthetic(judged.synth, ids, bundle, progress=progress)
    keys = [(bundle.class_id(str(r["class"])), _desc(r)) for _, r in ok.iterrows()]
    n_real = 0
    if cfg.real_fraction > 0:
        real = load_real(bundle, progress=progress)
        images = torch.cat([images, real.images])
        keys += list(zip(real.class_ids, real.texts, strict=True))
        n_real = len(real.class_ids)
        stats.update(real_images=n_real, real_dataset=str(real.dataset), real_splits=real.splits)
    images = to_model_space(bundle, images)
    cond = encode_conditions(bundle, keys, strength)
    n = len(ids)
    data = RoundData(images=images, cond_rows=cond.rows(keys), conditions=cond,
                     synth_rows=torch.arange(n), synth_weights=torch.tensor(w, dtype=torch.float32),
                     real_rows=torch.arange(n, n + n_real))
    return Prepared(data=data, stats=stats, table=table)


def _desc(row: Any) -> str:
    v = row.get("description", "") if hasattr(row, "get") else ""
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def _check_classes(judged: JudgedSet, bundle: Any) -> None:
    unknown = sorted(set(judged.table["class"].astype(str)) - set(bundle.classes))
    if unknown:
        raise MedsynthError(f"{judged.root}: class(es) {unknown} are not classes of the model "
                            f"{bundle.folder} ({', '.join(bundle.classes)})")


def model_objective(folder: Path, info: Any, scheduler_config: dict[str, Any]) -> Any:
    """The objective refine trains the model with, or the one-line refusal of its kind.

    Every kind train writes goes through here, before anything is written: pixel and latent 2D
    models, DDPM (epsilon, v, x0) or rectified flow, class-id or CCELLA conditioning. 3D models
    are refused: the round images are PNG files and the real-image reader is 2D.
    """
    from medsynth.models.objective import Objective

    if info.spatial_dims != 2:
        raise MedsynthError(f"{folder}: refine supports 2D models (pixel or latent); this is a "
                            f"{info.spatial_dims}D model")
    return Objective.from_config(scheduler_config, info.prediction_type, where=str(folder))


def check_model_kind(folder: Path) -> None:
    """Refuse a model refine cannot train (see :func:`model_objective`) from its files alone."""
    from medsynth.models.info import load_model_info

    info = load_model_info(folder)
    path = folder / info.noise_schedule.folder / "scheduler_config.json"
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MedsynthError(f"{path}: missing or unreadable scheduler ({e})") from e
    model_objective(folder, info, config)


def _single_process() -> None:
    """refine does not shard: under ``accelerate launch`` every rank would train a full copy."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        raise MedsynthError(f"refine runs in one process and does not shard; it was started "
                            f"in {world} processes", hint="run medsynth refine without "
                            "accelerate launch (it uses one GPU)")


def _prepare(judged: JudgedSet, bundle: Any, cfg: RefineConfig, round_no: int, *,
             strength: float | None, progress: bool, read: bool = True) -> Prepared:
    if cfg.method == "dpo":
        return prepare_dpo(judged, bundle, cfg, round_no, strength=strength, progress=progress,
                           read=read)
    return prepare_rwr(judged, bundle, cfg, strength=strength, progress=progress, read=read)


def _empty(cfg: RefineConfig, prep: Prepared) -> bool:
    return (prep.stats.get("kept", 0) if cfg.method == "dpo" else prep.stats["accepted"]) == 0


# ---------------------------------------------------------------------------------------------


def refine(model: str | Path, judged_path: str | Path, out: str | Path, *, cfg: RefineConfig,
           resume: bool = False, overwrite: bool = False, progress: bool = True,
           judge_factory: Any = None,
           interrupt_after: tuple[int, int | None] | None = None) -> Path:
    """Refine ``model`` with the verdicts of ``judged_path`` into the model folder ``out``.

    ``judge_factory(criteria)`` builds the judge of rounds >= 2 (tests, benchmarks; default: the
    judge the first judged folder was made with). ``interrupt_after=(round, step)`` (tests)
    raises KeyboardInterrupt after that step of that round, ``(round, None)`` after that round
    is saved: exactly what a kill leaves behind.
    """
    from medsynth.threads import torch_threads

    model, out = Path(model), Path(out)
    _single_process()
    if resume and overwrite:
        raise MedsynthError("--resume and --overwrite contradict each other; pick one")
    if out.resolve() == model.resolve():
        raise MedsynthError(f"{out}: is the model being refined; choose another --out")
    parent = read_manifest(model)
    if parent.stage not in ("train", "refine"):
        raise MedsynthError(f"{model}: is a '{parent.stage}' artifact, expected a model "
                            "(stage train or refine)")
    check_model_kind(model)
    judged = read_feedback(judged_path, model=model)
    with torch_threads(cfg.num_threads):
        return _Run(model, judged, out, cfg, resume=resume, overwrite=overwrite,
                    progress=progress, judge_factory=judge_factory,
                    interrupt_after=interrupt_after).run()


class _Run:
    def __init__(self, model: Path, judged: JudgedSet, out: Path, cfg: RefineConfig, *,
                 resume: bool, overwrite: bool, progress: bool, judge_factory: Any,
                 interrupt_after: tuple[int, int | None] | None) -> None:
        self.model, self.judged, self.out, self.cfg = model, judged, out, cfg
        self.resume, self.overwrite, self.progress = resume, overwrite, progress
        self.interrupt_after, self.judge_factory = interrupt_after, judge_factory
        self.generation = judged.generation()

    # --- set-up -------------------------------------------------------------------------------
    def _check_out(self) -> None:
        out = self.out
        interrupted = (out / CONFIG_NAME).is_file() and not (out / MANIFEST_NAME).exists()
        if self.resume:
            if not interrupted:
                what = "it is complete" if (out / MANIFEST_NAME).exists() else "no refine run"
                raise MedsynthError(f"{out}: nothing to resume ({what})",
                                    hint="start a new run without --resume (or use --overwrite)")
            saved = RefineConfig.from_yaml(out / CONFIG_NAME)
            require_same_settings(saved.to_dict(), self.cfg.to_dict(), ignore=RESUMABLE_CHANGES,
                                  where=f"{out / CONFIG_NAME}: the resumed run used other settings",
                                  hint="resume with the same recipe (only steps, rounds and "
                                       "bookkeeping may change), or start a new --out")
            ident = json.loads((out / RUN_FILE).read_text("utf-8"))
            if ident.get("model_sha256") != self.bundle.sha256 or \
                    ident.get("judged_sha256") != self.judged.manifest.sha256:
                raise MedsynthError(f"{out}: was refined from another model or judged folder",
                                    hint="resume with the original MODEL and --judged")
            return
        # A killed run that finished no round and no checkpoint is debris: start again.
        if interrupted and (self.overwrite or not _any_progress(out)):
            clear_folder(out, best_effort=True)
        check_output_dir(out, "refine", resume=False, overwrite=self.overwrite)

    def run(self) -> Path:
        import torch

        from medsynth.models.bundle import load_bundle
        from medsynth.models.sampler import default_device
        from medsynth.precision import amp_choice

        cfg, judged = self.cfg, self.judged
        self.device = default_device()
        self.bundle = bundle = load_bundle(self.model, ema=self.generation["ema"],
                                           device=self.device)
        self.objective = model_objective(self.model, bundle.info, bundle.scheduler_config)
        self.amp = amp_choice(self.device)
        self.strength = self.generation.get("prototype_strength")
        # Preflight: pairs (or accepted images) of round 1 exist, before OUT is touched.
        pre = _prepare(judged, bundle, cfg, 1, strength=self.strength, progress=False, read=False)
        if _empty(cfg, pre):
            if cfg.method == "dpo":
                raise no_pairs_error(judged, PairStats(**pre.stats))
            raise MedsynthError(f"{judged.root}: no accepted image (score >= "
                                f"{cfg.accept_score}); nothing to learn from, no model written",
                                hint="lower --accept-score")
        if cfg.method == "rwr" and cfg.real_fraction > 0:
            from medsynth.refine.data import model_training_data

            data_dir, _, _ = model_training_data(bundle.manifest)
            if data_dir is None or not data_dir.is_dir():
                raise MedsynthError(f"{self.model}: the dataset it trained on cannot be found "
                                    f"({data_dir or 'no data input'}); rwr mixes in real images",
                                    hint="use --real-fraction 0 or --method dpo")
        self._check_out()
        out = prepare_output_dir(self.out, "refine", resume=self.resume, overwrite=self.overwrite)
        if not self.resume:
            atomic_write_text(out / CONFIG_NAME, cfg.to_yaml())
            atomic_write_json(out / RUN_FILE, {
                "model": str(self.model.resolve()), "model_sha256": bundle.sha256,
                "judged": str(judged.root.resolve()), "judged_sha256": judged.manifest.sha256})
        else:
            atomic_write_text(out / CONFIG_NAME, cfg.to_yaml())  # steps/rounds may have grown
        (out / MANIFEST_NAME).unlink(missing_ok=True)

        # The trainable network and its reference.
        den = bundle.denoiser
        self.reference = None
        if cfg.adapter == "lora":
            from medsynth.models.adapters import add_lora

            add_lora(den, cfg.rank, alpha=cfg.alpha, seed=cfg.seed)
        else:
            self.reference = _copy(den).eval().requires_grad_(False)
            den.requires_grad_(True)
        self.null_text = bundle.encode_text([""])
        self.null_text = (self.null_text[0].cpu(), self.null_text[1].cpu())

        rounds: list[dict[str, Any]] = []
        self.rounds_done = rounds
        stop_reason = ""
        for k in range(1, cfg.rounds + 1):
            rdir = out / "rounds" / str(k)
            done = rdir / ROUND_DONE
            if done.is_file():  # finished before a kill: take its weights and go on
                info = json.loads(done.read_text("utf-8"))
                self._load_round_weights(rdir)
                rounds.append(info)
                if info.get("ends_run"):
                    stop_reason = str(info.get("stop_reason", ""))
                    break
                continue
            t0 = time.perf_counter()
            if k == 1:
                jk, jsha = judged, None
            else:
                jk = self._sample_and_judge(k, rdir)
                jsha = jk.manifest.sha256
            prep = _prepare(jk, bundle, cfg, k, strength=self.strength, progress=self.progress)
            if _empty(cfg, prep):
                why = (PairStats(**prep.stats).summary() if cfg.method == "dpo"
                       else f"no image scored >= {cfg.accept_score}")
                stop_reason = (f"round {k}: no informative pairs in {jk.root} ({why}); kept the "
                               f"model of round {k - 1}")
                console.print(f"[yellow]{stop_reason}[/]")
                info = {"round": k, "skipped": True, "stats": prep.stats, "ends_run": True,
                        "stop_reason": stop_reason, "seconds": round(time.perf_counter() - t0, 2),
                        "score_mean": float(jk.table["score"].mean())}
                rdir.mkdir(parents=True, exist_ok=True)
                atomic_write_json(done, info)
                rounds.append(info)
                break
            rdir.mkdir(parents=True, exist_ok=True)
            name = "pairs.csv" if cfg.method == "dpo" else "accepted.csv"
            atomic_write_text(rdir / name, prep.table.to_csv(index=False))
            ia = self.interrupt_after
            result = self._train_round(k, rdir, prep.data,
                                       ia[1] if ia is not None and ia[0] == k else None)
            info = self._finish_round(k, rdir, result, prep, jk, jsha,
                                      time.perf_counter() - t0)
            rounds.append(info)
            console.print(f"round {k}: {result.steps} steps"
                          + (f", stopped early: {result.reason}" if result.stopped_early else ""))
            if ia is not None and ia[0] == k and ia[1] is None:
                raise KeyboardInterrupt
        torch.set_grad_enabled(True)
        return self._export(rounds, stop_reason)

    # --- rounds -------------------------------------------------------------------------------
    def _trainable(self) -> dict[str, Any]:
        den = self.bundle.denoiser
        return {n: p.detach().cpu().contiguous() for n, p in den.named_parameters()
                if p.requires_grad}

    def _load_round_weights(self, rdir: Path) -> None:
        import torch
        from safetensors.torch import load_file

        state = load_file(str(rdir / TRAINABLE))
        params = {n: p for n, p in self.bundle.denoiser.named_parameters() if p.requires_grad}
        if set(state) != set(params):
            raise MedsynthError(f"{rdir / TRAINABLE}: weights do not fit the model being refined")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n].to(p))

    def _train_round(self, k: int, rdir: Path, data: RoundData, interrupt: int | None
                     ) -> RoundResult:
        bundle = self.bundle
        cond = bundle.info.conditioning
        trainer = RoundTrainer(
            denoiser=bundle.denoiser, reference=self.reference, cfg=self.cfg, data=data,
            objective=self.objective, amp=self.amp, round_no=k, round_dir=rdir, log_path=self.out / LOG_NAME, device=self.device,
            null_class=bundle.null_class, null_text=self.null_text,
            p_drop=(cond.p_drop_class, cond.p_drop_text), progress=self.progress,
            interrupt_after=interrupt)
        return trainer.run()

    def _finish_round(self, k: int, rdir: Path, result: RoundResult, prep: Prepared,
                      judged: JudgedSet, judged_sha: str | None, seconds: float
                      ) -> dict[str, Any]:
        from safetensors.torch import save

        from medsynth.artifacts import atomic_write_bytes

        atomic_write_bytes(rdir / TRAINABLE, save(self._trainable()))
        info = {"round": k, "judged": str(judged.root), "judged_sha256": judged_sha,
                "stats": prep.stats, "steps": result.steps, "kept_step": result.kept_step,
                "stopped_early": result.stopped_early, "reason": result.reason,
                "last_window": result.last, "train_seconds": round(result.seconds, 2),
                "seconds": round(max(seconds, result.seconds), 2),
                "score_mean": float(judged.table["score"].mean())}
        atomic_write_json(rdir / ROUND_DONE, info)
        return info

    def _round_model(self, k: int) -> Path:
        """Round k's model folder (exported on first need: round k + 1 samples from it)."""
        folder = self.out / "rounds" / str(k) / "model"
        if not (folder / MANIFEST_NAME).is_file():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            self._write_model(folder, rounds=k, round_infos=self.rounds_done[:k], stop_reason="")
        return folder

    def _sample_and_judge(self, k: int, rdir: Path) -> JudgedSet:
        from medsynth.refine.rounds import judge_round, round_plan, sample_round

        cfg = self.cfg
        prev = self._round_model(k - 1) if k > 1 else self.model
        prev_sha = str(read_manifest(prev).sha256)
        gen = dict(self.generation)
        gen.update({k2: v for k2, v in (("sampler", cfg.sampler), ("steps", cfg.sampling_steps),
                                        ("guidance", cfg.guidance)) if v is not None})
        plan = round_plan(self.judged.table, self.bundle.classes, cfg, k)
        synth = sample_round(self.bundle.denoiser, self.bundle, model_dir=prev,
                             model_sha256=prev_sha, plan=plan, generation=gen,
                             out=rdir / "synth", round_no=k,
                             batch_size=cfg.batch_size_sampling, device=self.device,
                             progress=self.progress)
        jdir = judge_round(synth, rdir / "judged", judged=self.judged,
                           judge_factory=self.judge_factory)
        return read_feedback(jdir, model=prev)

    # --- export -------------------------------------------------------------------------------
    def _export(self, rounds: list[dict[str, Any]], stop_reason: str) -> Path:
        self._write_model(self.out, rounds=len(rounds), round_infos=rounds,
                          stop_reason=stop_reason)
        return self.out

    def _write_model(self, folder: Path, *, rounds: int, round_infos: list[dict[str, Any]],
                     stop_reason: str) -> None:
        """A model folder like train's: merged weights, ModelInfo with refined_from, manifest."""
        from medsynth.models.adapters import has_lora, merge_lora
        from medsynth.models.bundle import export_model
        from medsynth.models.info import DenoiserInfo, RefinedFrom

        cfg, bundle = self.cfg, self.bundle
        den = _copy(bundle.denoiser)
        if has_lora(den):
            merge_lora(den)
        den.requires_grad_(False).eval()
        parent = bundle.info
        steps = sum(int(r.get("steps", 0)) for r in round_infos)
        info = dataclasses.replace(
            parent, denoiser=DenoiserInfo(kind=parent.denoiser.kind, folder="unet",
                                          raw_folder=None, spec=dict(parent.denoiser.spec)),
            refined_from=RefinedFrom(path=str(self.model.resolve()), sha256=bundle.sha256,
                                     method=cfg.method),
            steps=int(parent.steps) + steps)
        ae = parent.autoencoder
        export_model(folder, info, denoiser=den, noise_scheduler=self.objective.scheduler,
                     prototypes=bundle.prototypes or None,
                     text_class_head=bundle.text_class_head() if bundle.class_probabilities
                     else None,
                     autoencoder=bundle.folder / ae.folder if ae is not None else None)
        if parent.class_head and (bundle.folder / parent.class_head).is_file():
            shutil.copyfile(bundle.folder / parent.class_head, folder / parent.class_head)
        pm = bundle.manifest
        splits = list(pm.config.get("train_splits") or parent.train_splits)
        if cfg.method == "rwr" and cfg.real_fraction > 0:
            from medsynth.refine.data import model_training_data

            splits = sorted(set(splits) | set(model_training_data(pm)[2]))
        inputs = [input_ref(self.model), input_ref(self.judged.root, "judge")]
        inputs += [dict(r) for r in pm.inputs if r.get("stage") in ("data", "describe")]
        outputs = {
            "classes": bundle.classes, "channels": bundle.channels, "size": bundle.size,
            "shape": list(bundle.shape), "dtype": bundle.dtype, "modality": bundle.modality,
            "spatial_dims": bundle.spatial_dims, "denoiser": parent.denoiser.kind,
            "method": cfg.method, "adapter": cfg.adapter, "rounds": rounds,
            "round_summaries": round_infos, "stop_reason": stop_reason or None,
            "steps": steps, "refine_time_s": round(sum(float(r.get("seconds", 0.0))
                                                       for r in round_infos), 1),
            "files": {"unet": "unet", "scheduler": info.noise_schedule.folder,
                      "model_info": "medsynth_model.json", "log": LOG_NAME, "card": "README.md"},
        }
        config = {**cfg.to_dict(), "train_splits": splits,
                  "dataset_sha256": pm.config.get("dataset_sha256"),
                  "store_sha256": pm.config.get("store_sha256"),
                  "model_sha256": bundle.sha256, "judged_sha256": self.judged.manifest.sha256,
                  "generation": self.generation}
        atomic_write_text(folder / "README.md", _card(self.model, self.judged, cfg, outputs))
        write_manifest(folder, "refine", config=config, inputs=inputs, outputs=outputs)


def _copy(denoiser: Any) -> Any:
    """A deep copy of a denoiser (without the features its last forward kept)."""
    denoiser._features = None
    return copy.deepcopy(denoiser)


def _any_progress(out: Path) -> bool:
    rounds = out / "rounds"
    if not rounds.is_dir():
        return False
    return any((r / ROUND_DONE).is_file() or any((r / "checkpoints").glob("step-*/state.json"))
               for r in rounds.iterdir() if r.is_dir())




def _card(model: Path, judged: JudgedSet, cfg: RefineConfig, outputs: dict[str, Any]) -> str:
    lines = [
        "# medsynth refined model", "",
        f"Refined from `{model}` with `{cfg.method}` ({cfg.adapter}"
        + (f", rank {cfg.rank}" if cfg.adapter == "lora" else "") + f") on the verdicts of "
        f"`{judged.root}` (criteria sha256 {judged.folder.criteria_sha256 or '?'}, backend "
        f"{judged.folder.backend}).", "",
        f"Rounds: {outputs['rounds']}; optimizer steps: {outputs['steps']}; time "
        f"{outputs['refine_time_s']} s.",
    ]
    for r in outputs["round_summaries"]:
        s = r.get("stats", {})
        what = (f"{s.get('kept', 0)} pairs" if cfg.method == "dpo"
                else f"{s.get('accepted', 0)} accepted images")
        lines.append(f"- round {r['round']}: {what}, {r.get('steps', 0)} steps"
                     + (f"; stopped early: {r['reason']}" if r.get("stopped_early") else ""))
    if outputs.get("stop_reason"):
        lines.append(f"- {outputs['stop_reason']}")
    lines += ["", "Load it like a trained model: `medsynth generate MODEL2 ...`.", ""]
    from medsynth.models.card import card_data, card_text

    parent = card_data(model)  # the refined model keeps its parent's library and licence
    return card_text("\n".join(lines), library=str(parent.get("library_name") or "diffusers"),
                     licence=parent.get("license"), base_model=str(model),
                     tags=["refined", cfg.method])
