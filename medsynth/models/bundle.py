"""A model folder: how ``train`` (and ``refine``) write it, how every later stage loads it.

Layout (docs/artifacts.md)::

    MODEL/
      medsynth.json            stage "train" or "refine" (written last)
      unet/  unet_raw/         the denoiser: EMA / raw weights (diffusers save_pretrained for the
                               2D UNet; config.json + model.safetensors for MONAI nets)
      scheduler/               DDPMScheduler.save_pretrained (training noise schedule)
      medsynth_model.json      the typed model-info record (medsynth.models.info.ModelInfo)
      prototypes.safetensors   per-class prototype token embeddings
      class_head.safetensors   CCELLA class-prediction head (on the pooled mid-block features)
      text_class_head.safetensors  CCELLA mode: the class predicted from the text
      autoencoder/             latent models: the AutoencoderKL (medsynth.models.autoencoder; a
                               Stable Diffusion VAE or a MAISI autoencoder for an --init model)
      lora/                    adapter lora, diffusers denoiser: pytorch_lora_weights.safetensors
                               (StableDiffusionPipeline.load_lora_weights reads it)
      init_source.json         the pretrained prior the run started from (--init)
      README.md  samples/  train_log.csv  checkpoints/

Plain diffusers loads a 2D default model: ``UNet2DConditionModel.from_pretrained(MODEL / "unet")``
and ``DDPMScheduler.from_pretrained(MODEL / "scheduler")``.

:func:`export_model` writes every file but the manifest (train and refine both call it, so a
refined model loads exactly like a trained one); :func:`load_bundle` reads the folder back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import MODEL_STAGES, Manifest, atomic_write_bytes, read_manifest
from medsynth.errors import MedsynthError
from medsynth.models.info import MODEL_INFO, ModelInfo, load_model_info, save_model_info
from medsynth.models.intensity import IntensityMapping
from medsynth.models.prototypes import load_prototypes, save_prototypes
from medsynth.models.text_encoder import TextEncoder, TextEncoderRef, null_text, pad_features

CLASS_HEAD_FILE = "class_head.safetensors"


@dataclasses.dataclass
class ModelBundle:
    """A loaded medsynth model: the denoiser plus everything needed to condition and decode it."""

    folder: Path
    info: ModelInfo
    """The typed ``medsynth_model.json``."""
    denoiser: Any
    """The :class:`~medsynth.models.denoiser.Denoiser` in eval mode (EMA weights unless
    ``ema=False``)."""
    scheduler_config: dict[str, Any]
    """The training noise schedule; samplers are built from it (:func:`make_scheduler`)."""
    prototypes: dict[int, Any]
    """Class id -> prototype bank ``[K, D]``."""
    manifest: Manifest
    sha256: str
    """sha256 of the model's ``medsynth.json``: identifies the model in downstream manifests."""
    device: Any = None
    _encoder: Any = dataclasses.field(default=None, repr=False)
    _autoencoder: Any = dataclasses.field(default=None, repr=False)
    _text_head: Any = dataclasses.field(default=None, repr=False)

    # --- the record, for short ----------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names; the index is the class id."""
        return self.info.classes

    @property
    def null_class(self) -> int:
        """The class id meaning "no class" (unconditional / classifier-free guidance)."""
        return self.info.null_class

    @property
    def channels(self) -> int:
        return self.info.channels

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of a generated image (pixels)."""
        return tuple(self.info.shape)

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def spatial_dims(self) -> int:
        return self.info.spatial_dims

    @property
    def dtype(self) -> str:
        """Pixel dtype of the training data (uint8 / uint16 / ...), used by :meth:`to_pixels`."""
        return self.info.dtype

    @property
    def modality(self) -> str:
        return self.info.modality

    @property
    def intensity(self) -> IntensityMapping:
        return self.info.intensity

    @property
    def text_ref(self) -> TextEncoderRef:
        return self.info.text_encoder

    @property
    def prediction_type(self) -> str:
        return self.info.prediction_type

    @property
    def prototype_strength(self) -> float:
        return self.info.prototypes.strength

    @property
    def prototype_temperature(self) -> float:
        return self.info.prototypes.temperature

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """Spacing in mm per spatial axis of the training data, or None."""
        return tuple(float(v) for v in self.info.spacing) if self.info.spacing else None

    @property
    def affine(self) -> np.ndarray | None:
        """The training data's 4x4 affine, or None."""
        return np.asarray(self.info.affine, dtype=np.float64) if self.info.affine else None

    @property
    def unet(self) -> Any:
        """The bare network (``UNet2DConditionModel`` for kind diffusers)."""
        return self.denoiser.net

    @property
    def latent(self) -> bool:
        """True when the denoiser works on an autoencoder's latents."""
        return self.info.autoencoder is not None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)`` of what the sampler denoises: pixels, or a latent model's latents."""
        ae = self.info.autoencoder
        if ae is not None:
            return (int(ae.latent_channels), *(int(s) for s in ae.latent_shape))
        return (self.channels, *self.shape)

    @property
    def class_probabilities(self) -> bool:
        """True for CCELLA-mode models (the class input is probabilities, see
        :meth:`class_condition`)."""
        return self.info.conditioning.class_input == "probabilities"

    @property
    def train_splits(self) -> list[str]:
        return list(self.manifest.config.get("train_splits", self.info.train_splits))

    # --- use --------------------------------------------------------------------------------
    def class_id(self, name: str) -> int:
        """Class id of ``name``, or a MedsynthError listing the known classes."""
        if name not in self.classes:
            raise MedsynthError(f"{self.folder}: unknown class {name!r}",
                                hint=f"the model knows: {', '.join(self.classes)}")
        return self.classes.index(name)

    def autoencoder(self) -> Any:
        """A latent model's :class:`~medsynth.models.autoencoder.Autoencoder` (loaded once)."""
        from medsynth.models.autoencoder import load_autoencoder

        ae = self.info.autoencoder
        if ae is None:
            raise MedsynthError(f"{self.folder}: a pixel-space model has no autoencoder")
        if self._autoencoder is None:
            self._autoencoder = load_autoencoder(self.folder / ae.folder, device=self.device,
                                                 scaling_factor=ae.scaling_factor,
                                                 channels=self.channels)
        return self._autoencoder

    def decode(self, z: Any, *, window: int | None = None) -> Any:
        """Scaled latents -> images in [-1, 1] (the sampler's ``decode`` hook); ``window``: see
        :meth:`~medsynth.models.autoencoder.Autoencoder.decode` (None = by memory)."""
        return self.autoencoder().decode(z, window=window)

    def encode(self, x: Any) -> Any:
        """Images in [-1, 1] -> what the sampler denoises (scaled latents; pixels unchanged)."""
        return self.autoencoder().encode(x) if self.latent else x

    def decode_hook(self, window: int | None = None) -> Any:
        """The sampler's ``decode`` argument: None in pixel space."""
        if not self.latent:
            return None
        return lambda z: self.decode(z, window=window)

    def text_class_head(self) -> Any:
        """CCELLA mode: the head that predicts the class from the text (loaded once)."""
        from medsynth.models.ccella import load_text_head

        f = self.info.conditioning.text_class_head
        if not f:
            raise MedsynthError(f"{self.folder}: not a CCELLA-mode model (no text class head)")
        if self._text_head is None:
            self._text_head = load_text_head(self.folder / f)
            if self.device is not None:
                self._text_head.to(self.device)
        return self._text_head

    def class_condition(self, class_ids: list[int], hidden: Any, mask: Any,
                        source: list[str] | None = None) -> Any:
        """The sampler's ``class_ids`` argument for a batch.

        Class-id models: the ids. CCELLA-mode models: float probabilities ``(B, n_classes)``,
        per image from the text head (``source`` ``"text"``) or the one-hot of the requested
        class (``"class"``); the default is the text where the image has one (mask with more
        than the null token), else the class.
        """
        from medsynth.models.ccella import sampling_class_input

        if not self.class_probabilities:
            return list(class_ids)
        return sampling_class_input(self.text_class_head(), class_ids, hidden, mask,
                                    len(self.classes), self.info.conditioning.temperature, source)

    def make_scheduler(self, name: str) -> Any:
        """Sampler ``name`` (:data:`medsynth.models.sampler.SAMPLERS`) on this model's schedule."""
        from medsynth.models.sampler import make_scheduler

        return make_scheduler(name, self.scheduler_config, latent=self.latent)

    def to_pixels(self, x: Any) -> np.ndarray:
        """Model output in [-1, 1] ``(B, C, *spatial)`` -> pixels of the original dtype."""
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
        from medsynth.models.prototypes import apply_prototypes

        if all(not t.strip() for t in texts) and self.text_ref.kind != "clip":
            # (a CLIP text encoder's null text is CLIP(""), what Stable Diffusion learnt)
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


def _require_weights(folder: Path) -> None:
    """One line naming a deleted weights file (diffusers would say it found no ``.bin``)."""
    from medsynth.models.denoiser import CONFIG_FILE, MONAI_WEIGHTS, MonaiDenoiser

    try:
        name = json.loads((folder / CONFIG_FILE).read_text("utf-8")).get("_class_name")
    except (OSError, json.JSONDecodeError, AttributeError):
        return  # load_denoiser names an unreadable config
    want = [MONAI_WEIGHTS] if name == MonaiDenoiser.class_name else \
        ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]
    if not any((folder / w).is_file() for w in want):
        raise MedsynthError(f"{folder / want[0]}: missing: the model folder has lost its weights",
                            hint="copy the whole model folder again (or train it again)")


def load_bundle(path: str | os.PathLike[str], *, ema: bool = True, device: Any = None,
                dtype: Any = None) -> ModelBundle:
    """Load a model folder written by ``medsynth train`` or ``medsynth refine`` (module doc).

    ``ema`` picks the EMA weights (``unet/``) or the raw ones (``unet_raw/``, when the model has
    them); ``device``/``dtype`` move the denoiser. Model-info format 1 (the first release) loads
    too.
    """
    from medsynth.models.denoiser import load_denoiser

    folder = Path(path)
    manifest = read_manifest(folder)
    if manifest.stage not in MODEL_STAGES:
        raise MedsynthError(f"{folder}: is a '{manifest.stage}' artifact, expected a model "
                            f"({' or '.join(MODEL_STAGES)})")
    info = load_model_info(folder)
    sub = info.denoiser.folder if ema or not info.denoiser.raw_folder else info.denoiser.raw_folder
    _require_weights(folder / sub)
    den = load_denoiser(folder / sub)
    den.requires_grad_(False)
    if device is not None or dtype is not None:
        den.to(device=device, dtype=dtype)
    sched_dir = folder / info.noise_schedule.folder
    try:
        sched = json.loads((sched_dir / "scheduler_config.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MedsynthError(f"{sched_dir}: missing or unreadable scheduler ({e})") from e
    pfile = info.prototypes.file
    protos = load_prototypes(folder / pfile) if pfile and (folder / pfile).is_file() else {}
    return ModelBundle(folder=folder, info=info, denoiser=den, scheduler_config=sched,
                       prototypes=protos, manifest=manifest, sha256=str(manifest.sha256),
                       device=device)


def export_model(folder: str | os.PathLike[str], info: ModelInfo, *, denoiser: Any,
                 noise_scheduler: Any, ema: Any = None, class_head: Any = None,
                 prototypes: dict[int, Any] | None = None, text_class_head: Any = None,
                 autoencoder: str | os.PathLike[str] | None = None) -> None:
    """Write a model folder's files (all but the manifest, which the stage writes last).

    Args:
        folder: the model folder.
        info: its record; ``info.denoiser.folder`` gets the EMA weights when ``ema`` is given
            (else the plain weights), ``info.denoiser.raw_folder`` the raw ones.
        denoiser: the trained :class:`~medsynth.models.denoiser.Denoiser`.
        noise_scheduler: the diffusers scheduler it was trained with (saved to
            ``info.noise_schedule.folder``).
        ema: a diffusers ``EMAModel`` over ``denoiser.parameters()``, or None.
        class_head: the class-prediction head (saved to ``info.class_head``), or None.
        prototypes: class id -> prototype bank, saved to ``info.prototypes.file``.
        text_class_head: CCELLA mode: the text class head, saved to
            ``info.conditioning.text_class_head``.
        autoencoder: latent models: the autoencoder folder to copy to ``info.autoencoder.folder``
            (nothing is copied when it already is that folder).
    """
    from safetensors.torch import save

    from medsynth.artifacts import atomic_folder

    folder = Path(folder)
    if info.denoiser.raw_folder:
        denoiser.save(folder / info.denoiser.raw_folder)
    if ema is not None:
        params = list(denoiser.parameters())
        ema.store(params)
        ema.copy_to(params)
        try:
            denoiser.save(folder / info.denoiser.folder)
        finally:
            ema.restore(params)
    else:
        denoiser.save(folder / info.denoiser.folder)
    atomic_folder(folder / info.noise_schedule.folder, noise_scheduler.save_pretrained)
    if class_head is not None and info.class_head:
        state = {k: v.detach().cpu().contiguous() for k, v in class_head.state_dict().items()}
        atomic_write_bytes(folder / info.class_head, save(state))
    if prototypes and info.prototypes.file:
        save_prototypes(folder / info.prototypes.file, prototypes, info.classes)
    if text_class_head is not None and info.conditioning.text_class_head:
        from medsynth.models.ccella import save_text_head

        save_text_head(folder / info.conditioning.text_class_head, text_class_head)
    if autoencoder is not None and info.autoencoder is not None:
        import shutil

        dest = folder / info.autoencoder.folder
        if Path(autoencoder).resolve() != dest.resolve():
            atomic_folder(dest, lambda tmp: shutil.copytree(autoencoder, tmp))
    save_model_info(folder, info)


__all__ = ["ModelBundle", "ModelInfo", "load_bundle", "export_model", "pad_features",
           "MODEL_INFO", "CLASS_HEAD_FILE", "MODEL_STAGES"]
