"""The model-info record (``MODEL/medsynth_model.json``): one typed definition, two mirror functions.

:func:`save_model_info` writes a :class:`ModelInfo`, :func:`load_model_info` reads it back equal
(``load(save(x)) == x``). Stage ``train`` writes it, stage ``refine`` writes it again for the
model it makes; ``generate``, ``evaluate``, ``judge`` read it through
:func:`medsynth.models.bundle.load_bundle`.

Format history: 1 = the first release (flat keys, ``size``, ``denoiser: "unet2d"``); read by
converting on load. 2 = this record. 3 = a model that needs what format 2 lacks to sample
correctly (a Stable Diffusion VAE, a CLIP text encoder whose null text is CLIP("")): written
only for such models, so an older medsynth refuses them instead of sampling them wrongly;
every other model is still written as format 2. ``initialized_from`` (any format) records the
pretrained prior a model started from.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from medsynth.artifacts import atomic_write_json
from medsynth.errors import MedsynthError
from medsynth.models.intensity import IntensityMapping
from medsynth.models.text_encoder import TextEncoderRef

MODEL_INFO = "medsynth_model.json"
FORMAT_VERSION = 3
BASE_FORMAT = 2
"""The format written for models that need nothing of format 3."""


@dataclasses.dataclass
class DenoiserInfo:
    """Where the denoiser's weights are and how it was built."""

    kind: str
    """Implementation: ``diffusers`` (UNet2DConditionModel) or ``monai`` (DiffusionModelUNet)."""
    folder: str = "unet"
    """Folder of the weights used by default (EMA weights after training)."""
    raw_folder: str | None = "unet_raw"
    """Folder of the raw (non-EMA) weights, or None when the model has only one set."""
    spec: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The :class:`~medsynth.models.denoiser.DenoiserSpec` it was built from (empty: format 1)."""


@dataclasses.dataclass
class NoiseSchedule:
    """The training noise schedule; samplers are built from it."""

    kind: str = "ddpm"
    """``ddpm``: a diffusers DDPMScheduler config; ``rflow``: rectified flow (MONAI
    RFlowScheduler config, :mod:`medsynth.models.rflow`; the network predicts x0 - noise)."""
    folder: str = "scheduler"
    """Folder with ``scheduler_config.json`` (plain diffusers: ``DDPMScheduler.from_pretrained``)."""


@dataclasses.dataclass
class PrototypeInfo:
    """Prototype Condition Mechanism (VAP-Diffusion) settings."""

    file: str | None = None
    """Safetensors file of the per-class prototype banks (None: no descriptions at training)."""
    per_class: int = 0
    """k-means prototypes per class."""
    strength: float = 0.0
    """Default pull of test-time text tokens toward the class's prototypes (0 = off)."""
    temperature: float = 0.1
    """Softmax temperature of the attention over prototypes."""
    classes_with_bank: list[int] = dataclasses.field(default_factory=list)
    """Class ids that have a bank (classes without described training images have none)."""


@dataclasses.dataclass
class ConditioningInfo:
    """How class and text reach the denoiser (CCELLA dual head)."""

    class_input: str = "ids"
    """``ids`` (class ids, the null class = ``len(classes)``) or ``probabilities`` (CCELLA's
    class predicted from the report, given to the class embedding as probabilities)."""
    p_drop_class: float = 0.1
    """Training probability of the null class (classifier-free guidance)."""
    p_drop_text: float = 0.1
    """Training probability of the null text (one all-zero token), independent of the class."""
    text_class_head: str | None = None
    """CCELLA mode (``class_input == "probabilities"``): file of the head that predicts the class
    from the pooled text features (:mod:`medsynth.models.ccella`); None otherwise."""
    temperature: float = 1.0
    """CCELLA mode: the denoiser gets ``softmax(text_head_logits / temperature)``."""


@dataclasses.dataclass
class AutoencoderInfo:
    """A latent model's autoencoder (the denoiser then works on its scaled latents)."""

    folder: str
    """Folder of the autoencoder (MONAI AutoencoderKL: config.json + model.safetensors)."""
    scaling_factor: float
    """Latents are multiplied by this before diffusion (1 / std of the training latents)."""
    latent_channels: int
    """Channels of the latent tensor."""
    latent_shape: list[int]
    """Spatial shape of the latent tensor."""
    kind: str = "monai-autoencoderkl"
    """Implementation of the autoencoder."""
    latent_std: float | None = None
    """Std of the scaled training latents (about 1 by construction; recorded as a check)."""


@dataclasses.dataclass
class RefinedFrom:
    """Lineage of a model written by ``refine``: the model it started from."""

    path: str
    """Folder of the parent model (as given to refine)."""
    sha256: str
    """sha256 of the parent model's ``medsynth.json``."""
    method: str = ""
    """How it was refined (e.g. ``dpo``, ``rwr``)."""


@dataclasses.dataclass
class InitInfo:
    """The pretrained prior a model started from (``medsynth train --init``) and how it was
    adapted."""

    kind: str
    """``medsynth`` (a medsynth model), ``diffusers`` (a Stable Diffusion pipeline) or
    ``monai-bundle`` (a MAISI autoencoder)."""
    source: str
    """As given: a folder or a hub id."""
    path: str = ""
    """The local folder it was read from (a hub id's cache snapshot)."""
    revision: str | None = None
    """Hub snapshot commit, bundle version, or the parent's medsynth version."""
    sha256: str = ""
    """sha256 of the parent's manifest, or of the source's weight files."""
    licence: str | None = None
    """Licence named by the source's model card (None: not stated there; check its terms)."""
    family: str = ""
    """Pipeline class, bundle name or the parent's stage."""
    adapter: str = "full"
    """``full`` or ``lora``."""
    lora: dict[str, Any] | None = None
    """LoRA rank, alpha and target modules (adapter lora)."""
    text: str = "parent"
    """Text encoder: ``parent``, ``pipeline`` (its CLIP), ``own`` (medsynth's through a learnt
    projection) or ``recipe``."""
    classes_kept: list[str] = dataclasses.field(default_factory=list)
    """Classes whose embedding and class-head rows came from the parent (matched by name)."""
    classes_new: list[str] = dataclasses.field(default_factory=list)
    """Classes that started from the parent's null row (class head: the mean row)."""


@dataclasses.dataclass
class ModelInfo:
    """Everything a stage needs to use a model folder besides the weights."""

    classes: list[str]
    """Class names; the index is the class id; id ``len(classes)`` is the null class."""
    channels: int
    """Image channels (1 grayscale, 3 RGB)."""
    spatial_dims: int
    """2 (images) or 3 (volumes)."""
    shape: list[int]
    """Spatial shape of generated images: ``[H, W]`` or ``[D, H, W]`` (pixels, not latents)."""
    dtype: str
    """Pixel dtype of the training data (uint8, uint16, int16, float32)."""
    modality: str
    """DICOM modality of the training data (XC, DX, CR, MR, CT, ..., OT)."""
    intensity: IntensityMapping
    """Pixel values <-> the model's [-1, 1] range."""
    text_encoder: TextEncoderRef
    """The text encoder whose token features condition the denoiser."""
    denoiser: DenoiserInfo
    """Denoiser kind, build spec and weight folders."""
    prediction_type: str = "epsilon"
    """What the denoiser predicts: epsilon, v_prediction or sample (rectified flow: always
    v_prediction, meaning the flow velocity x0 - noise; see ``noise_schedule.kind``)."""
    noise_schedule: NoiseSchedule = dataclasses.field(default_factory=NoiseSchedule)
    """The training noise schedule."""
    prototypes: PrototypeInfo = dataclasses.field(default_factory=PrototypeInfo)
    """Prototype Condition Mechanism settings."""
    conditioning: ConditioningInfo = dataclasses.field(default_factory=ConditioningInfo)
    """How class and text are given to the denoiser."""
    spacing: list[float] | None = None
    """Pixel/voxel spacing in mm per spatial axis (the training data's), or None if unknown."""
    affine: list[list[float]] | None = None
    """4x4 voxel-to-world affine of the training data's orientation, or None."""
    class_head: str | None = None
    """File of the class-prediction head on the denoiser's pooled mid-block features."""
    autoencoder: AutoencoderInfo | None = None
    """The autoencoder of a latent model; None in pixel space."""
    refined_from: RefinedFrom | None = None
    """The model this one was refined from; None for a trained model."""
    initialized_from: InitInfo | None = None
    """The pretrained prior training started from; None for a model trained from scratch."""
    augmentation: dict[str, bool] = dataclasses.field(default_factory=dict)
    """Flips used in training (``hflip``, ``vflip``)."""
    train_splits: list[str] = dataclasses.field(default_factory=list)
    """Dataset splits the model saw."""
    steps: int = 0
    """Optimizer steps of the weights."""
    format: int = BASE_FORMAT
    """Version of this record's layout."""

    @property
    def null_class(self) -> int:
        """The class id meaning "no class"."""
        return len(self.classes)

    @property
    def required_format(self) -> int:
        """The oldest format that samples this model correctly (module doc)."""
        ae = self.autoencoder
        if self.text_encoder.kind == "clip" or (ae is not None and ae.kind != "monai-autoencoderkl"):
            return FORMAT_VERSION
        return BASE_FORMAT

    @property
    def size(self) -> int:
        """Edge length (the last spatial axis; all axes for square/cubic data)."""
        return int(self.shape[-1])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["intensity"] = self.intensity.to_dict()
        d["text_encoder"] = self.text_encoder.to_dict()
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        """The record from its JSON form (keys a later format adds are ignored)."""

        def sub(klass: Any, v: Any) -> Any:
            if v is None or isinstance(v, klass):
                return v
            names = {f.name for f in dataclasses.fields(klass)}
            return klass(**{k: x for k, x in v.items() if k in names})

        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["intensity"] = IntensityMapping.from_dict(d["intensity"])
        kw["text_encoder"] = TextEncoderRef.from_dict(d["text_encoder"])
        for name, klass in (("denoiser", DenoiserInfo), ("noise_schedule", NoiseSchedule),
                            ("prototypes", PrototypeInfo), ("conditioning", ConditioningInfo),
                            ("autoencoder", AutoencoderInfo), ("refined_from", RefinedFrom),
                            ("initialized_from", InitInfo)):
            if name in kw:
                kw[name] = sub(klass, kw[name])
        return cls(**kw)


def save_model_info(folder: str | os.PathLike[str], info: ModelInfo) -> Path:
    """Write ``info`` to ``folder/medsynth_model.json`` (atomically)."""
    return atomic_write_json(Path(folder) / MODEL_INFO, {**info.to_dict(),
                                                              "format": info.required_format})


def load_model_info(folder: str | os.PathLike[str]) -> ModelInfo:
    """Read ``folder/medsynth_model.json`` (any format up to :data:`FORMAT_VERSION`)."""
    path = Path(folder) / MODEL_INFO
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MedsynthError(f"{path}: missing or unreadable ({e})") from e
    fmt = int(raw.get("format", 1))
    if fmt > FORMAT_VERSION:
        raise MedsynthError(f"{path}: written by a newer medsynth (model format {fmt})",
                            hint="upgrade medsynth")
    if fmt == 1:
        raw = _from_format1(raw, Path(folder))
    try:
        return ModelInfo.from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise MedsynthError(f"{path}: incomplete model info ({type(e).__name__}: {e})") from e


def _from_format1(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A format-1 record (the first release) in format-2 form."""
    size = int(raw["size"])
    dims = int(raw.get("spatial_dims", 2))
    cond = raw.get("conditioning", {})
    sched: dict[str, Any] = {}
    try:
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        pass
    return {
        **{k: raw[k] for k in ("classes", "channels", "dtype", "intensity", "text_encoder")},
        "spatial_dims": dims,
        "shape": [size] * dims,
        "modality": raw.get("modality", "OT"),
        "denoiser": {"kind": "diffusers", "folder": "unet", "raw_folder": "unet_raw"},
        "prediction_type": raw.get("prediction_type", sched.get("prediction_type", "epsilon")),
        "prototypes": raw.get("prototypes", {}),
        "conditioning": {"class_input": "ids", "p_drop_class": cond.get("p_drop_class", 0.1),
                         "p_drop_text": cond.get("p_drop_text", 0.1)},
        "spacing": raw.get("spacing"),
        "affine": raw.get("affine"),
        "class_head": raw.get("class_head"),
        "augmentation": raw.get("augmentation", {}),
        "train_splits": raw.get("train_splits", []),
        "steps": raw.get("steps", 0),
        "format": 1,
    }
