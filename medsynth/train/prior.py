"""Training from a pretrained prior (recipe ``init:``, ``adapter:``): the trainer's hooks.

The source itself is resolved by :mod:`medsynth.models.init_source`; this module is what the
training loop calls, in order:

1. :func:`open_prior` (before ``--out`` is touched): resolve the source, take over what it fixes
   into the recipe (network shape, text encoder, noise schedule, autoencoder; a recipe key that
   contradicts it is a one-line error), then :meth:`Prior.check` against the data;
2. :meth:`Prior.start` (the run begins): record the source in ``MODEL/init_source.json``; a
   resumed run refuses a source that changed since;
3. :meth:`Prior.build_denoiser`, :meth:`Prior.init_head`, :meth:`Prior.noise_scheduler`: the
   initial weights. A resumed run builds them the same way and the checkpoint then overwrites
   every trained tensor, so the init is never applied on top of trained weights;
4. :meth:`Prior.adapt` (``adapter: lora``: peft LoRA, :mod:`medsynth.models.adapters`; the
   class embedding, and the text projection where there is one, trained in full beside it) and
   :meth:`Prior.hook_accelerator` (LoRA checkpoints hold only the trainable tensors);
5. :meth:`Prior.before_export`: ``initialized_from`` in the model info; LoRA folded into the
   weights (``unet/`` loads in plain diffusers) and saved in diffusers' LoRA format
   (``lora/pytorch_lora_weights.safetensors``) for a diffusers denoiser.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError
from medsynth.models.init_source import InitSource, resolve_init
from medsynth.train.config import TrainConfig

INIT_RECORD = "init_source.json"
LORA_FOLDER = "lora"
LORA_FILE = "pytorch_lora_weights.safetensors"


def trainable(module: Any) -> list[Any]:
    """The parameters that train (all of them, except under a LoRA adapter)."""
    return [p for p in module.parameters() if p.requires_grad]


def check_resume_init(out: Path, cfg: TrainConfig) -> None:
    """``--resume`` continues the prior the run started from, never another (or none)."""
    saved = Path(out) / "train_config.yaml"
    if not saved.is_file():
        return
    import yaml

    try:
        before = (yaml.safe_load(saved.read_text("utf-8")) or {}).get("init")
    except (OSError, yaml.YAMLError):
        return
    if (before or None) != (cfg.init or None):
        said = f"--init {cfg.init}" if cfg.init else "no --init"
        raise MedsynthError(f"{out}: this run started from init {before or '(none)'}; "
                            f"{said} cannot resume it",
                            hint="resume with the run's own init, or start a new --out")


def open_prior(cfg: TrainConfig) -> tuple[TrainConfig, Prior | None]:
    """The recipe with what the init source fixes taken over, and the prior (None without
    ``init``)."""
    if not cfg.init:
        return cfg, None
    src = resolve_init(cfg.init)
    prior = Prior(src, cfg)
    return prior.adopt(cfg), prior


class Prior:
    """A resolved init source and the adaptation the recipe asks for (module doc)."""

    def __init__(self, src: InitSource, cfg: TrainConfig) -> None:
        self.src, self.cfg = src, cfg
        self.parent_info: Any = None
        self.classes_new: list[str] = []
        self.classes_kept: list[str] = []
        if src.kind == "medsynth":
            from medsynth.models.info import load_model_info

            self.parent_info = load_model_info(src.path)

    @property
    def strict_checkpoints(self) -> bool:
        """False when checkpoints hold only the trainable tensors (LoRA)."""
        return self.cfg.adapter != "lora"

    # --- 1. the recipe ----------------------------------------------------------------------
    def adopt(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with the source's network, text encoder, schedule and autoencoder."""
        fixed = self._fixed(cfg)
        defaults = TrainConfig()
        changes = {}
        for k, v in fixed.items():
            have = getattr(cfg, k)
            if have == v:
                continue
            if have != getattr(defaults, k):
                raise MedsynthError(
                    f"recipe: {k} is {have!r} but the init source {self.src.given} has {v!r}",
                    hint=f"drop {k} from the recipe (the init source fixes it) or start "
                    "without --init")
            changes[k] = v
        out = TrainConfig.from_dict({**cfg.to_dict(), **changes}, source="init")
        self.cfg = out
        return out

    def _fixed(self, cfg: TrainConfig) -> dict[str, Any]:
        src = self.src
        if src.kind == "medsynth":
            return self._fixed_parent()
        if src.kind == "diffusers":
            from medsynth.models.init_source import sd_config

            c = sd_config(src)
            unet, sched = c["unet"], c["scheduler"]
            lpb = unet.get("layers_per_block", 2)
            fixed: dict[str, Any] = {
                "denoiser": "diffusers", "latent": True, "autoencoder": str(src.path / "vae"),
                "block_out_channels": [int(x) for x in unet["block_out_channels"]],
                "attention_levels": ["CrossAttn" in t for t in unet["down_block_types"]],
                "layers_per_block": int(lpb if isinstance(lpb, int) else lpb[0]),
                "norm_num_groups": int(unet.get("norm_num_groups") or 32),
                "noise_schedule": "ddpm",
                "num_train_timesteps": int(sched.get("num_train_timesteps", 1000)),
                "beta_schedule": str(sched.get("beta_schedule", "linear")),
                "prediction_type": str(sched.get("prediction_type", "epsilon")),
            }
            if cfg.init_text == "pipeline":
                if c["text_encoder"] is None:
                    raise MedsynthError(f"{src.given}: the pipeline has no text_encoder/; use "
                                        "init_text: own")
                fixed.update(text_encoder=src.given if src.hub_id else str(src.path),
                             text_encoder_kind="clip", max_text_tokens=c["max_tokens"],
                             long_text="cut")
            return fixed
        # monai-bundle: a frozen autoencoder for a latent run; the denoiser is the recipe's.
        return {"latent": True, "autoencoder": str(self._maisi_folder())}

    def _fixed_parent(self) -> dict[str, Any]:
        from medsynth.models.denoiser import DenoiserSpec

        info = self.parent_info
        if not info.denoiser.spec:
            raise MedsynthError(f"{self.src.given}: a model of the first release (no network "
                                "record); train it again with this medsynth to start from it")
        spec = DenoiserSpec.from_dict(info.denoiser.spec)
        sched = json.loads((self.src.path / info.noise_schedule.folder /
                            "scheduler_config.json").read_text("utf-8"))
        t = info.text_encoder
        fixed: dict[str, Any] = {
            "denoiser": spec.kind, "block_out_channels": list(spec.block_out_channels),
            "attention_levels": list(spec.attention_levels),
            "layers_per_block": spec.layers_per_block,
            "attention_head_dim": spec.attention_head_dim,
            "norm_num_groups": spec.norm_num_groups,
            "text_encoder": t.name, "text_encoder_kind": t.kind, "text_layer": t.layer,
            "max_text_tokens": t.max_tokens, "long_text": t.long_text,
            "text_chunk_overlap": t.chunk_overlap, "max_text_chunks": t.max_chunks,
            "noise_schedule": info.noise_schedule.kind,
            "num_train_timesteps": int(sched.get("num_train_timesteps", 1000)),
            "ccella": info.conditioning.class_input == "probabilities",
            "latent": info.autoencoder is not None,
        }
        if info.noise_schedule.kind == "ddpm":
            fixed.update(beta_schedule=str(sched.get("beta_schedule", "squaredcos_cap_v2")),
                         prediction_type=info.prediction_type)
        if info.autoencoder is not None:
            fixed["autoencoder"] = str(self.src.path)
        return fixed

    def _maisi_folder(self) -> Path:
        import tempfile

        from medsynth.models.init_source import prepare_maisi

        dest = Path(tempfile.gettempdir()) / f"medsynth-maisi-{self.src.sha256[:16]}"
        return dest if dest.is_dir() else prepare_maisi(self.src, dest)

    def check(self, data: Any, dataset: Any) -> None:
        """Refuse data the source cannot take, and a prior that saw this dataset's test split."""
        src, where = self.src, self.src.given
        if src.kind == "medsynth":
            info = self.parent_info
            if info.spatial_dims != data.spatial_dims:
                raise MedsynthError(f"{where}: a {info.spatial_dims}D model, the data are "
                                    f"{data.spatial_dims}D")
            if info.channels != data.channels:
                raise MedsynthError(f"{where}: a {info.channels}-channel model, the data have "
                                    f"{data.channels} channels")
            self.classes_kept = [c for c in data.classes if c in info.classes]
            self.classes_new = [c for c in data.classes if c not in info.classes]
            self._check_lineage(dataset)
        elif src.kind == "diffusers":
            if data.spatial_dims != 2:
                raise MedsynthError(f"{where}: a Stable Diffusion pipeline takes 2D images, the "
                                    "data are volumes (use a MAISI bundle for 3D)")
            if data.channels not in (1, 3):
                raise MedsynthError(f"{where}: the Stable Diffusion VAE takes 1- or 3-channel "
                                    f"images, the data have {data.channels} channels")
            self.classes_new = list(data.classes)
            if self.cfg.init_text == "pipeline":
                from medsynth.models.init_source import sd_config

                c = sd_config(src)
                width = int(c["text_encoder"].get("hidden_size", 0))
                cross = c["unet"].get("cross_attention_dim")
                if width != cross:
                    raise MedsynthError(f"{where}: its text encoder gives {width}-wide features, "
                                        f"its UNet attends to {cross}")
        else:
            self.classes_new = list(data.classes)

    def _check_lineage(self, dataset: Any) -> None:
        from medsynth.artifacts import walk_lineage

        lin = walk_lineage(self.src.path)
        for m in lin.models:
            splits = m.config.get("train_splits") or []
            same = m.config.get("dataset_sha256") == dataset.sha256 or any(
                ref.get("sha256") == dataset.sha256 for ref in m.inputs
                if ref.get("stage") == "data")
            if same and "test" in splits:
                raise MedsynthError(f"{self.src.given}: its lineage trained on the test split of "
                                    f"{dataset.root} ({m.folder}); a prior must not have seen "
                                    "the images this model will be evaluated on")

    # --- 2. the run -------------------------------------------------------------------------
    def start(self, out: Path, *, resume: bool) -> None:
        """Record the source (fresh run) or refuse one that changed since (resume)."""
        from medsynth.artifacts import atomic_write_json

        path = Path(out) / INIT_RECORD
        rec = self.src.record()
        if resume and path.is_file():
            old = json.loads(path.read_text("utf-8"))
            if old.get("sha256") != rec["sha256"]:
                raise MedsynthError(f"{self.src.given}: the init source changed since this run "
                                    f"started (sha256 {str(old.get('sha256'))[:12]} -> "
                                    f"{rec['sha256'][:12]}); resuming would mix two priors",
                                    hint="restore the source, or start a new --out")
            return
        atomic_write_json(path, rec)

    # --- 3. initial weights -----------------------------------------------------------------
    def build_denoiser(self, spec: Any, classes: list[str], text_width: int) -> Any:
        from medsynth.models.init_source import parent_denoiser, sd_denoiser

        if self.src.kind == "medsynth":
            return parent_denoiser(self.src, spec, self.parent_info.classes, list(classes))
        if self.src.kind == "diffusers":
            own = self.cfg.init_text == "own"
            return sd_denoiser(self.src, len(classes), text_width=text_width if own else None)
        from medsynth.models.denoiser import build_denoiser

        return build_denoiser(spec)

    def init_head(self, head: Any, classes: list[str]) -> None:
        if self.src.kind == "medsynth":
            from medsynth.models.init_source import parent_head

            parent_head(self.src, head, self.parent_info.classes, list(classes))

    def intensity(self, mapping: Any, data: Any) -> Any:
        """The parent's pixel mapping when dtype and modality agree (what its denoiser knows);
        for a MAISI autoencoder and CT, MAISI's window: [-1000, 1000] HU clipped to [-1, 1]
        (the autoencoder then sees [0, 1])."""
        if self.src.kind == "monai-bundle" and data.modality == "CT":
            from medsynth.models.intensity import IntensityMapping

            return IntensityMapping(mapping.dtype, -1000.0, 1000.0)
        info = self.parent_info
        if info is not None and info.dtype == data.dtype and info.modality == data.modality:
            return info.intensity
        return mapping

    def noise_scheduler(self, sched: Any) -> Any:
        """The source's own training schedule (betas included), else ``sched``."""
        from diffusers import DDPMScheduler

        if self.src.kind == "diffusers":
            conf = json.loads((self.src.path / "scheduler" / "scheduler_config.json")
                              .read_text("utf-8"))
            conf = {k: v for k, v in conf.items() if not k.startswith("_")}
            return DDPMScheduler.from_config({**conf, "clip_sample": False})
        if self.src.kind == "medsynth" and self.parent_info.noise_schedule.kind == "ddpm":
            folder = self.src.path / self.parent_info.noise_schedule.folder
            return DDPMScheduler.from_pretrained(folder)
        return sched

    # --- 4. adaptation ----------------------------------------------------------------------
    def adapt(self, den: Any) -> Any:
        """``adapter: lora``: LoRA on the attention projections; the class embedding (and a
        text projection) trained in full beside it. ``full``: everything trains."""
        if self.cfg.adapter != "lora":
            return den.requires_grad_(True)
        from medsynth.models.adapters import add_lora

        targets = tuple(self.cfg.lora_targets) if self.cfg.lora_targets else None
        add_lora(den, self.cfg.lora_rank, alpha=self.cfg.lora_alpha, targets=targets,
                 seed=self.cfg.seed)
        for name in ("class_embedding", "encoder_hid_proj"):
            m = getattr(den.net, name, None)
            if m is not None:
                m.requires_grad_(True)
        return den

    def hook_accelerator(self, acc: Any, den: Any) -> None:
        """LoRA: checkpoints keep only the denoiser's trainable tensors (the base comes from
        the init source again on resume)."""
        if self.cfg.adapter != "lora":
            return

        def save_hook(models: list[Any], weights: list[Any], _out: str) -> None:
            keep = {n for n, p in den.named_parameters() if p.requires_grad}
            for i, m in enumerate(models):
                if acc.unwrap_model(m) is den:
                    weights[i] = {k: v for k, v in weights[i].items() if k in keep}

        acc.register_save_state_pre_hook(save_hook)

    # --- 5. export --------------------------------------------------------------------------
    def before_export(self, out: Path, info: Any, den: Any, ema: Any,
                      autoencoder: Any = None) -> tuple[Any, Any]:
        """The model info with ``initialized_from``; LoRA folded in (and saved in diffusers'
        format). Returns (info, the EMA to export with: None once folded in)."""
        from medsynth.models.info import InitInfo

        cfg = self.cfg
        text = ("parent" if self.src.kind == "medsynth" else
                cfg.init_text if self.src.kind == "diffusers" else "recipe")
        info.initialized_from = InitInfo(
            **self.src.record(), adapter=cfg.adapter,
            lora={"rank": cfg.lora_rank, "alpha": cfg.lora_alpha or cfg.lora_rank,
                  "targets": list(cfg.lora_targets or den.lora_target_modules)}
            if cfg.adapter == "lora" else None,
            text=text, classes_kept=list(self.classes_kept),
            classes_new=list(self.classes_new))
        if info.autoencoder is not None and autoencoder is not None:
            info.autoencoder.kind = autoencoder.record.kind
        if cfg.adapter != "lora":
            return info, ema
        from medsynth.models.adapters import merge_lora

        ema.copy_to(trainable(den))  # the end of the run: EMA weights are the model's
        if den.kind == "diffusers":
            save_lora_diffusers(den, Path(out) / LORA_FOLDER, cfg.lora_rank,
                                cfg.lora_alpha or cfg.lora_rank,
                                list(cfg.lora_targets or den.lora_target_modules))
        merge_lora(den)
        info.denoiser = dataclasses.replace(info.denoiser, raw_folder=None)
        return info, None

    def manifest_inputs(self) -> list[dict[str, Any]]:
        """A medsynth parent is an upstream artifact: the lineage walks through it."""
        if self.src.kind != "medsynth":
            return []
        from medsynth.artifacts import input_ref

        return [{**input_ref(self.src.path), "role": "init"}]


def save_lora_diffusers(den: Any, folder: Path, rank: int, alpha: float,
                        targets: list[str]) -> Path:
    """The LoRA of a diffusers UNet in diffusers' format (``load_lora_weights`` reads it)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from medsynth.artifacts import atomic_folder
    from medsynth.models.adapters import ADAPTER_NAME

    state = get_peft_model_state_dict(den.net, adapter_name=ADAPTER_NAME)
    state = {k: v.detach().cpu().float().contiguous() for k, v in state.items()}
    meta = LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=targets).to_dict()
    meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}

    def write(tmp: Path) -> None:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=state,
                                                  unet_lora_adapter_metadata=meta)

    atomic_folder(folder, write)
    return folder / LORA_FILE
