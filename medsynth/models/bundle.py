"""The trained model folder: how ``train`` writes it and how ``generate``/``evaluate`` load it.

Layout (docs/artifacts.md)::

    MODEL/
      medsynth.json            stage "train" (written last)
      unet/  unet_raw/         UNet2DConditionModel.save_pretrained (EMA / raw weights)
      scheduler/               DDPMScheduler.save_pretrained (training noise schedule)
      medsynth_model.json      classes, channels, size, dtype, intensity, text encoder, prototypes
      prototypes.safetensors   per-class prototype token embeddings
      class_head.safetensors   CCELLA class-prediction head (on the UNet mid-block features)
      README.md  samples/  train_log.csv  checkpoints/

Plain diffusers loads it: ``UNet2DConditionModel.from_pretrained(MODEL / "unet")`` and
``DDPMScheduler.from_pretrained(MODEL / "scheduler")``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import Manifest, atomic_write_json, read_manifest
from medsynth.errors import MedsynthError
from medsynth.models.intensity import IntensityMapping
from medsynth.models.prototypes import PROTOTYPE_FILE, apply_prototypes, load_prototypes
from medsynth.models.text_encoder import TextEncoder, TextEncoderRef, null_text, pad_features

MODEL_INFO = "medsynth_model.json"
CLASS_HEAD_FILE = "class_head.safetensors"
FORMAT_VERSION = 1


@dataclasses.dataclass
class ModelBundle:
    """A loaded medsynth model: the UNet plus everything needed to condition and decode it."""

    folder: Path
    unet: Any
    """diffusers ``UNet2DConditionModel`` in eval mode (EMA weights unless ``ema=False``)."""
    scheduler_config: dict[str, Any]
    """The training noise schedule; build any diffusers scheduler with ``Cls.from_config``."""
    classes: list[str]
    """Class names; the index is the class id."""
    channels: int
    size: int
    spatial_dims: int
    dtype: str
    """Pixel dtype of the training data (uint8 / uint16 / ...), used by :meth:`to_pixels`."""
    modality: str
    intensity: IntensityMapping
    text_ref: TextEncoderRef
    prototypes: dict[int, Any]
    prototype_strength: float
    prototype_temperature: float
    prediction_type: str
    info: dict[str, Any]
    """The parsed ``medsynth_model.json``."""
    manifest: Manifest
    sha256: str
    """sha256 of the model's ``medsynth.json``: identifies the model in downstream manifests."""
    device: Any = None
    _encoder: Any = dataclasses.field(default=None, repr=False)

    @property
    def null_class(self) -> int:
        """The class id meaning "no class" (unconditional / classifier-free guidance)."""
        return len(self.classes)

    @property
    def train_splits(self) -> list[str]:
        return list(self.manifest.config.get("train_splits", self.info.get("train_splits", [])))

    def class_id(self, name: str) -> int:
        """Class id of ``name``, or a MedsynthError listing the known classes."""
        if name not in self.classes:
            raise MedsynthError(f"{self.folder}: unknown class {name!r}",
                                hint=f"the model knows: {', '.join(self.classes)}")
        return self.classes.index(name)

    def to_pixels(self, x: Any) -> np.ndarray:
        """Model output in [-1, 1] ``(B, C, H, W)`` -> pixels of the original dtype (uint8/uint16)."""
        return self.intensity.to_pixels(x)

    def from_pixels(self, arr: np.ndarray) -> Any:
        """Pixels -> float32 torch tensor in [-1, 1] (the mapping used in training)."""
        import torch

        return torch.from_numpy(self.intensity.from_pixels(arr))

    def text_encoder(self) -> TextEncoder:
        """The recorded text encoder, loaded once on first use."""
        if self._encoder is None:
            self._encoder = TextEncoder(TextEncoderRef.from_dict(self.text_ref.to_dict()),
                                        device=self.device)
        return self._encoder

    def encode_text(self, texts: list[str], classes: list[int] | None = None,
                    prototype_strength: float | None = None) -> tuple[Any, Any]:
        """Cross-attention condition ``(hidden [B, L, D] float32, mask [B, L] long)`` for ``texts``.

        ``""`` is the null text. With ``classes`` the Prototype Condition Mechanism pulls each
        text toward its class's training prototypes (strength default from the bundle; 0 = off).
        """
        if all(not t.strip() for t in texts):
            hidden, mask = null_text(len(texts), self.text_ref.hidden_size)
        else:
            hidden, mask = self.text_encoder().encode(list(texts))
        if classes is not None:
            if len(classes) != len(texts):
                raise MedsynthError("encode_text: classes and texts must have the same length")
            s = self.prototype_strength if prototype_strength is None else float(prototype_strength)
            hidden = apply_prototypes(hidden, mask, classes, self.prototypes, s,
                                      self.prototype_temperature)
        if self.device is not None:
            hidden, mask = hidden.to(self.device), mask.to(self.device)
        return hidden, mask


def load_bundle(path: str | os.PathLike[str], *, ema: bool = True, device: Any = None,
                dtype: Any = None) -> ModelBundle:
    """Load a model folder written by ``medsynth train`` (see module doc).

    ``ema`` picks ``unet/`` (EMA weights) or ``unet_raw/``; ``device``/``dtype`` move the UNet.
    """
    from diffusers import UNet2DConditionModel

    folder = Path(path)
    manifest = read_manifest(folder, "train")
    info_path = folder / MODEL_INFO
    try:
        info = json.loads(info_path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MedsynthError(f"{info_path}: missing or unreadable ({e})") from e
    sub = folder / ("unet" if ema else "unet_raw")
    try:
        unet = UNet2DConditionModel.from_pretrained(sub)
    except (OSError, ValueError) as e:
        raise MedsynthError(f"{sub}: cannot load the UNet ({e})") from e
    unet.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        unet.to(device=device, dtype=dtype)
    try:
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MedsynthError(f"{folder / 'scheduler'}: missing or unreadable scheduler ({e})") from e
    proto_info = info.get("prototypes", {})
    protos = load_prototypes(folder / PROTOTYPE_FILE) if (folder / PROTOTYPE_FILE).is_file() else {}
    return ModelBundle(
        folder=folder,
        unet=unet,
        scheduler_config=sched,
        classes=list(info["classes"]),
        channels=int(info["channels"]),
        size=int(info["size"]),
        spatial_dims=int(info.get("spatial_dims", 2)),
        dtype=str(info["dtype"]),
        modality=str(info.get("modality", "OT")),
        intensity=IntensityMapping.from_dict(info["intensity"]),
        text_ref=TextEncoderRef.from_dict(info["text_encoder"]),
        prototypes=protos,
        prototype_strength=float(proto_info.get("strength", 0.0)),
        prototype_temperature=float(proto_info.get("temperature", 0.1)),
        prediction_type=str(info.get("prediction_type", sched.get("prediction_type", "epsilon"))),
        info=info,
        manifest=manifest,
        sha256=str(manifest.sha256),
        device=device,
    )


def save_pretrained_atomic(model: Any, folder: Path) -> None:
    """``model.save_pretrained(folder)`` so a killed run never leaves a half-written folder."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.part")
    old = folder.with_name(f".{folder.name}.old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    model.save_pretrained(tmp)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def write_model_info(folder: Path, info: dict[str, Any]) -> None:
    """Write ``medsynth_model.json`` (format version added)."""
    atomic_write_json(Path(folder) / MODEL_INFO, {"format": FORMAT_VERSION, **info})


__all__ = ["ModelBundle", "load_bundle", "pad_features", "save_pretrained_atomic",
           "write_model_info", "MODEL_INFO", "CLASS_HEAD_FILE"]
