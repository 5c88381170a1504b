"""Training's export: the model-info record and the finished model folder (weights with the EMA,
scheduler, heads, prototypes, card, manifest written last)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import atomic_write_text, input_ref, write_manifest
from medsynth.models.bundle import CLASS_HEAD_FILE, export_model
from medsynth.models.ccella import TEXT_CLASS_HEAD_FILE
from medsynth.models.info import (
    AutoencoderInfo,
    ConditioningInfo,
    DenoiserInfo,
    ModelInfo,
    NoiseSchedule,
    PrototypeInfo,
)
from medsynth.models.prototypes import PROTOTYPE_FILE

LOG_NAME = "train_log.csv"


def model_info(cfg: Any, data: Any, *, spec: Any, text_ref: Any, mapping: Any,
               prototypes: dict[int, Any], latents: Any, prediction_type: str,
               step: int) -> ModelInfo:
    """The model-info record of a run's model after ``step`` steps."""
    return ModelInfo(
        classes=list(data.classes), channels=data.channels, spatial_dims=data.spatial_dims,
        shape=list(data.spatial_shape), dtype=data.dtype, modality=data.modality,
        intensity=mapping, text_encoder=text_ref,
        denoiser=DenoiserInfo(kind=spec.kind, spec=spec.to_dict()),
        prediction_type=prediction_type,
        noise_schedule=NoiseSchedule(kind=cfg.noise_schedule),
        prototypes=PrototypeInfo(file=PROTOTYPE_FILE if prototypes else None,
                                 per_class=cfg.prototypes_per_class,
                                 strength=cfg.prototype_strength,
                                 temperature=cfg.prototype_temperature,
                                 classes_with_bank=sorted(prototypes)),
        conditioning=ConditioningInfo(
            class_input="probabilities" if cfg.ccella else "ids",
            p_drop_class=cfg.p_drop_class, p_drop_text=cfg.p_drop_text,
            text_class_head=TEXT_CLASS_HEAD_FILE if cfg.ccella else None,
            temperature=cfg.ccella_temperature),
        autoencoder=autoencoder_info(latents),
        # Filled in when the data carry them (real data with spacing/affine).
        spacing=_listed(getattr(data, "spacing", None)),
        affine=_listed(getattr(data, "affine", None)),
        class_head=CLASS_HEAD_FILE,
        augmentation={"hflip": data.hflip, "vflip": data.vflip},
        train_splits=list(cfg.splits), steps=step,
    )


def autoencoder_info(lat: Any) -> AutoencoderInfo | None:
    if lat is None:
        return None
    from medsynth.train.autoencoder import AE_FOLDER

    return AutoencoderInfo(folder=AE_FOLDER, scaling_factor=lat.scaling_factor,
                           latent_channels=lat.channels, latent_shape=list(lat.shape),
                           latent_std=round(lat.latent_std, 6))


def export_run(out: Path, info: ModelInfo, *, cfg: Any, data: Any, dataset: Any, store: Any,
               denoiser: Any, noise_scheduler: Any, ema: Any, class_head: Any, text_head: Any,
               prototypes: dict[int, Any], latents: Any, grid: Path, train_time: float,
               images_seen: int, text_cut: dict[str, Any] | None, acc: Any) -> None:
    """Write the model folder ``out`` of a finished run (the manifest last)."""
    export_model(out, info, denoiser=denoiser, noise_scheduler=noise_scheduler, ema=ema,
                 class_head=class_head, prototypes=prototypes, text_class_head=text_head)
    final_loss = _last_loss(out / LOG_NAME)
    speed = images_seen / train_time if train_time > 0 else None
    outputs = {
        "classes": data.classes, "channels": data.channels, "size": data.size,
        "shape": list(data.spatial_shape), "dtype": data.dtype, "modality": data.modality,
        "spatial_dims": data.spatial_dims, "denoiser": info.denoiser.kind,
        "steps": info.steps, "n_train_images": len(data), "n_described": data.n_described,
        "final_loss": final_loss, "train_time_s": round(train_time, 1),
        "images_per_s": round(speed, 2) if speed else None,
        "text_cut": text_cut,
        "mixed_precision": acc.mixed_precision, "processes": acc.num_processes,
        "device": str(acc.device), "noise_schedule": cfg.noise_schedule,
        "class_input": info.conditioning.class_input,
        "latent": None if latents is None else {
            "latent_shape": list(latents.shape), "latent_channels": latents.channels,
            "scaling_factor": latents.scaling_factor,
            "latent_std": round(latents.latent_std, 4),
            "autoencoder": dict(latents.metrics),
            "reused": cfg.autoencoder},
        "peak_rss_gib": _peak_rss_gib(),
        "files": {"unet": info.denoiser.folder, "unet_raw": info.denoiser.raw_folder,
                  "scheduler": info.noise_schedule.folder, "model_info": "medsynth_model.json",
                  "log": LOG_NAME, "sample_grid": str(grid.relative_to(out)),
                  "card": "README.md"},
    }
    inputs = [input_ref(dataset.root, "data")]
    if store is not None:
        inputs.append(input_ref(store.root, "describe"))
    config = {**cfg.to_dict(), "train_splits": list(cfg.splits),
              "dataset_sha256": dataset.sha256,
              "store_sha256": store.sha256 if store is not None else None}
    from medsynth.train.card import model_card

    atomic_write_text(out / "README.md", model_card(dataset, store, data, cfg, info, outputs))
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


def _last_loss(path: Path) -> float | None:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["loss"]) if rows else None
    except (OSError, KeyError, ValueError):
        return None
