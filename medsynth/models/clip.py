"""A small in-domain image–text model (CLIP-style), shared by ``train --stage clip`` and evaluate.

MedCoDi-M (arXiv 2501.04614) aligns images and reports in one latent space learnt
contrastively. medsynth's version is small enough for a CPU: a MONAI ResNet image encoder
(``spatial_dims`` 2 or 3) with a linear projection, and the project's frozen text encoder
(all-MiniLM-L6-v2 token features, mean-pooled over the mask, as sentence-transformers pools
them) with a trained two-layer projection; both land, L2-normalised, in one ``embed_dim``
space. The loss is the symmetric InfoNCE of CLIP (Radford et al. 2021) with a learnable
temperature; texts that are identical strings count as positives of each other (template
descriptions repeat), so two images with the same text are not pushed apart.

Folder written by ``medsynth train --stage clip`` (read with :func:`load_clip`)::

    CLIP/
      medsynth.json         stage "clip"; inputs: the dataset and the description store
      clip_model.json       the typed record (:class:`ClipInfo`)
      clip.safetensors      the weights (image encoder, both projections, logit scale)
      clip_config.yaml      the recipe; train_log.csv; checkpoints/ (resume state)

Images enter as float tensors in [0, 1] (``(B, C, H, W)`` or ``(B, C, D, H, W)``), the same
range evaluate works in; :func:`unit_pixels` maps stored pixels there (uint8 / uint16 by
their dtype's range, floats min-max per image).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import Manifest, atomic_write_json, read_manifest
from medsynth.choices import ClipEncoder, values
from medsynth.errors import MedsynthError
from medsynth.metrics.images import to_unit
from medsynth.models.text_encoder import TextEncoderRef

CLIP_STAGE = "clip"
CLIP_INFO = "clip_model.json"
CLIP_WEIGHTS = "clip.safetensors"
ENCODERS = values(ClipEncoder)
"""Image encoders (MONAI ``ResNet``, basic blocks): ``small`` = one block per level with widths
16-32-64-128 (about 0.7 M parameters in 2D); ``resnet10``/``resnet18`` = MONAI's widths
64-128-256-512."""
_LAYERS = {"small": [1, 1, 1, 1], "resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2]}
_WIDTHS = {"small": [16, 32, 64, 128], "resnet10": [64, 128, 256, 512],
           "resnet18": [64, 128, 256, 512]}
MAX_LOGIT_SCALE = 100.0
"""CLIP clamps the learnt inverse temperature at 100 (temperature 0.01)."""
FORMAT = 1


@dataclasses.dataclass
class ClipSpec:
    """The network's shape: enough to rebuild it before loading the weights."""

    spatial_dims: int = 2
    """2 (images) or 3 (volumes)."""
    channels: int = 1
    """Image channels (grayscale stays 1)."""
    size: int = 32
    """Images are resized to ``size`` per spatial axis before the encoder."""
    encoder: str = "small"
    """One of :data:`ENCODERS`."""
    widths: list[int] | None = None
    """Block widths of the four ResNet levels (None = the encoder's)."""
    embed_dim: int = 128
    """Width of the shared space."""
    text_dim: int = 384
    """Width of the pooled text features (the text encoder's hidden size)."""
    text_hidden: int = 512
    """Hidden width of the text projection (0 = a single linear layer)."""
    init_temperature: float = 0.07
    """Softmax temperature at initialisation (CLIP's 0.07); learnt unless frozen in training."""

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise MedsynthError(f"clip: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.encoder not in ENCODERS:
            raise MedsynthError(f"clip: encoder {self.encoder!r} is not one of {', '.join(ENCODERS)}")
        if self.widths is not None and (len(self.widths) != 4 or min(self.widths) < 1):
            raise MedsynthError(f"clip: widths needs four positive numbers, got {self.widths}")
        if self.size < 8 or self.channels < 1 or self.embed_dim < 2 or self.text_dim < 1:
            raise MedsynthError("clip: size >= 8, channels >= 1, embed_dim >= 2 and text_dim >= 1")
        if not 0 < self.init_temperature < 1:
            raise MedsynthError("clip: init_temperature must be in (0, 1)")

    @property
    def block_widths(self) -> list[int]:
        return list(self.widths or _WIDTHS[self.encoder])


@dataclasses.dataclass
class ClipInfo:
    """``clip_model.json``: what a CLIP folder holds and how it was trained."""

    spec: ClipSpec
    text_encoder: TextEncoderRef
    """The frozen text encoder (rebuilt offline from this record)."""
    classes: list[str]
    """Classes of the training pairs (the dataset's names)."""
    modality: str = ""
    """DICOM modality code of the dataset."""
    train_splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    """Dataset splits whose pairs trained the model (never ``test``: evaluate checks it)."""
    n_train_pairs: int = 0
    n_val_pairs: int = 0
    val_source: str = ""
    """Where the validation pairs came from: ``split:val`` or ``held-out:<fraction>`` of train."""
    step: int = 0
    """Optimizer step of the saved weights (the best validation step with ``select: best``)."""
    val: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Validation retrieval of the saved weights (recall@k both ways, their chance levels)."""
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["text_encoder"] = self.text_encoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipInfo:
        d = dict(d)
        spec = ClipSpec(**{k: v for k, v in d.pop("spec").items()
                           if k in {f.name for f in dataclasses.fields(ClipSpec)}})
        ref = TextEncoderRef.from_dict(d.pop("text_encoder"))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(spec=spec, text_encoder=ref, **{k: v for k, v in d.items() if k in known})


def save_clip_info(folder: str | Path, info: ClipInfo) -> Path:
    return atomic_write_json(Path(folder) / CLIP_INFO, info.to_dict())


def load_clip_info(folder: str | Path) -> ClipInfo:
    path = Path(folder) / CLIP_INFO
    try:
        d = json.loads(path.read_text("utf-8"))
        return ClipInfo.from_dict(d)
    except FileNotFoundError:
        raise MedsynthError(f"{path}: missing (not a medsynth CLIP folder)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise MedsynthError(f"{path}: unreadable CLIP record ({e})") from e


# ------------------------------------------------------------------------------ pixels -> [0, 1]
unit_pixels = to_unit
"""Channel-first pixels -> float32 in [0, 1]: uint8/uint16 by the dtype's range, other types
min-max per image (evaluate's rule, :func:`medsynth.metrics.images.to_unit`)."""


def resize_unit(x: Any, size: int) -> Any:
    """Resize a float batch ``(B, C, *spatial)`` to ``size`` per spatial axis (antialiased in
    2D, trilinear in 3D); unchanged when it already has that size."""
    import torch.nn.functional as F

    spatial = tuple(x.shape[2:])
    target = (size,) * len(spatial)
    if spatial == target:
        return x
    if len(spatial) == 2:
        return F.interpolate(x, size=target, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(x, size=target, mode="trilinear", align_corners=False)


# ------------------------------------------------------------------------------------ the network
def pool_text(hidden: Any, mask: Any) -> Any:
    """Mean of the token features over the mask: ``[B, L, D], [B, L] -> [B, D]``."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def build_image_encoder(spec: ClipSpec) -> Any:
    """The MONAI ResNet trunk (no classifier) for ``spec``; returns (module, feature width).

    Small images (< 96 px) get a 3x3 stride-1 stem without max pooling, so a 32 px image still
    has 4 x 4 positions at the last level; larger ones the usual 7x7 stride-2 stem + max pool.
    """
    from monai.networks.nets import ResNet

    small_input = spec.size < 96
    widths = spec.block_widths
    net = ResNet(block="basic", layers=_LAYERS[spec.encoder], block_inplanes=widths,
                 spatial_dims=spec.spatial_dims, n_input_channels=spec.channels,
                 conv1_t_size=3 if small_input else 7, conv1_t_stride=1 if small_input else 2,
                 no_max_pool=small_input, feed_forward=False)
    return net, widths[-1]


def _clip_module() -> Any:
    import torch
    from torch import nn

    class ClipModel(nn.Module):
        """Image tower (MONAI ResNet + linear), text tower (pooled frozen features + MLP)."""

        def __init__(self, spec: ClipSpec) -> None:
            super().__init__()
            self.spec = spec
            self.image_encoder, feat = build_image_encoder(spec)
            self.image_proj = nn.Linear(feat, spec.embed_dim)
            if spec.text_hidden:
                self.text_proj = nn.Sequential(nn.Linear(spec.text_dim, spec.text_hidden),
                                               nn.GELU(), nn.Linear(spec.text_hidden,
                                                                    spec.embed_dim))
            else:
                self.text_proj = nn.Sequential(nn.Linear(spec.text_dim, spec.embed_dim))
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / spec.init_temperature))))

        def encode_image(self, x: Any) -> Any:
            """``x`` in [0, 1], any size -> L2-normalised embeddings ``(B, embed_dim)``."""
            x = resize_unit(x.float(), self.spec.size) * 2.0 - 1.0
            return nn.functional.normalize(self.image_proj(self.image_encoder(x)), dim=-1)

        def encode_text(self, pooled: Any) -> Any:
            """Pooled text features ``(B, text_dim)`` -> L2-normalised embeddings."""
            return nn.functional.normalize(self.text_proj(pooled.float()), dim=-1)

        def scale(self) -> Any:
            """The inverse temperature, clamped at :data:`MAX_LOGIT_SCALE`."""
            return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    return ClipModel


def build_clip(spec: ClipSpec) -> Any:
    """A freshly initialised CLIP network (torch's global seed decides the weights)."""
    return _clip_module()(spec)


def info_nce(image_emb: Any, text_emb: Any, logit_scale: Any, groups: Any = None) -> Any:
    """Symmetric InfoNCE (CLIP): mean of the image->text and text->image cross-entropies.

    ``logits = logit_scale * image_emb @ text_emb.T``. Without ``groups`` the target of row i
    is column i. With ``groups`` (one id per pair; equal ids = the same text) every pair of
    the group is a positive and the target spreads evenly over them, so duplicates are not
    treated as negatives.
    """
    import torch
    import torch.nn.functional as F

    logits = logit_scale * image_emb @ text_emb.T
    n = logits.shape[0]
    if groups is None:
        target = torch.arange(n, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    same = (groups[:, None] == groups[None, :]).to(logits.dtype)
    soft = same / same.sum(1, keepdim=True)
    i2t = -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(soft * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return 0.5 * (i2t + t2i)


# --------------------------------------------------------------------------------- retrieval
def retrieval_recall(image_emb: Any, text_emb: Any, texts: list[str],
                     ks: tuple[int, ...] = (1, 5), labels: list[Any] | None = None
                     ) -> dict[str, Any]:
    """Image->text and text->image recall@k of paired embeddings, against chance.

    Texts are compared as strings: the gallery of image->text is the set of distinct texts,
    and a hit is the image's own text among the k nearest; text->image queries are the
    distinct texts and a hit is any image paired with that text among the k nearest images.
    Chance is the expected recall of a random ranking (exact, hypergeometric for t2i). With
    ``labels`` (the class of each pair), ``*_class_only`` is the expected recall of a ranker
    that knows the class and nothing else (the class's items first, in random order): a
    model above it has learnt more than the class from the text.
    """
    import math

    import torch

    uniq = list(dict.fromkeys(texts))
    idx = {t: i for i, t in enumerate(uniq)}
    owner = torch.tensor([idx[t] for t in texts])
    n_img, n_txt = len(texts), len(uniq)
    # One embedding per distinct text (identical texts embed identically).
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    t_emb = text_emb[torch.tensor([first[t] for t in uniq])]
    sim = image_emb.float() @ t_emb.float().T  # (n_img, n_txt)
    out: dict[str, Any] = {"n_images": n_img, "n_texts": n_txt}
    counts = torch.bincount(owner, minlength=n_txt)
    for k in ks:
        ki = min(k, n_txt)
        top = sim.topk(ki, dim=1).indices
        out[f"i2t_r{k}"] = float((top == owner[:, None]).any(1).float().mean())
        out[f"i2t_r{k}_chance"] = ki / n_txt
        kt = min(k, n_img)
        topi = sim.T.topk(kt, dim=1).indices  # (n_txt, kt) image indices
        hit = (owner[topi] == torch.arange(n_txt)[:, None]).any(1)
        out[f"t2i_r{k}"] = float(hit.float().mean())
        # P(at least one of the m images of text t among kt random picks of n_img)
        chance = [1.0 - math.comb(n_img - int(m), kt) / math.comb(n_img, kt) for m in counts]
        out[f"t2i_r{k}_chance"] = float(np.mean(chance))
        if labels is not None:
            out.update(_class_only(owner.tolist(), [str(v) for v in labels], k))
    out["mean_recall"] = float(np.mean([out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]))
    return out


def _class_only(owner: list[int], labels: list[str], k: int) -> dict[str, float]:
    """Expected recall@k of a ranker that only knows each pair's class (see
    :func:`retrieval_recall`); a text's class is that of its first image."""
    import math

    text_class: dict[int, str] = {}
    for o, c in zip(owner, labels, strict=True):
        text_class.setdefault(o, c)
    texts_of: dict[str, int] = {}
    for c in text_class.values():
        texts_of[c] = texts_of.get(c, 0) + 1
    imgs_of: dict[str, int] = {}
    for c in labels:
        imgs_of[c] = imgs_of.get(c, 0) + 1
    i2t = [min(k, texts_of[text_class[o]]) / texts_of[text_class[o]] for o in owner]
    t2i = []
    for t, c in text_class.items():
        n_c, m = imgs_of[c], sum(1 for o in owner if o == t)
        kk = min(k, n_c)
        t2i.append(1.0 - math.comb(n_c - m, kk) / math.comb(n_c, kk))
    return {f"i2t_r{k}_class_only": float(np.mean(i2t)),
            f"t2i_r{k}_class_only": float(np.mean(t2i))}


# --------------------------------------------------------------------------------------- loading
@dataclasses.dataclass
class LoadedClip:
    """A CLIP folder ready to embed images and texts (eval mode)."""

    folder: Path
    info: ClipInfo
    manifest: Manifest
    model: Any
    device: Any = None
    _text: Any = dataclasses.field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        return str(self.manifest.sha256)

    @property
    def name(self) -> str:
        return f"clip:{self.folder.name}"

    def embed_images(self, x: Any, batch_size: int = 128) -> Any:
        """L2-normalised embeddings (CPU float) of images in [0, 1]."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size].to(self.device, torch.float32)
                out.append(self.model.encode_image(xb).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.info.spec.embed_dim)

    def text_encoder(self) -> Any:
        from medsynth.models.text_encoder import TextEncoder

        if self._text is None:
            self._text = TextEncoder(dataclasses.replace(self.info.text_encoder),
                                     device=self.device)
        return self._text

    def pooled_texts(self, texts: list[str]) -> Any:
        """Pooled frozen text features of ``texts`` (each distinct text encoded once)."""
        import torch

        uniq = list(dict.fromkeys(texts))
        if not uniq:
            return torch.zeros(0, self.info.spec.text_dim)
        hidden, mask = self.text_encoder().encode(uniq)
        pooled = pool_text(hidden, mask)
        pos = {t: i for i, t in enumerate(uniq)}
        return pooled[torch.tensor([pos[t] for t in texts])]

    def embed_texts(self, texts: list[str]) -> Any:
        """L2-normalised embeddings (CPU float) of ``texts``."""
        import torch

        pooled = self.pooled_texts(texts)
        with torch.inference_mode():
            return self.model.encode_text(pooled.to(self.device)).float().cpu()


def load_clip(folder: str | Path, device: str | None = None) -> LoadedClip:
    """Read a CLIP folder (manifest stage ``clip``) into an eval-mode :class:`LoadedClip`."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = read_manifest(folder, CLIP_STAGE)
    info = load_clip_info(folder)
    if info.format > FORMAT:
        raise MedsynthError(f"{folder / CLIP_INFO}: format {info.format} is newer than this "
                            f"medsynth reads ({FORMAT})", hint="upgrade medsynth")
    model = build_clip(info.spec)
    path = folder / CLIP_WEIGHTS
    try:
        state = load_file(str(path))
    except (OSError, RuntimeError) as e:
        raise MedsynthError(f"{path}: cannot read the CLIP weights ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise MedsynthError(f"{path}: weights do not match {CLIP_INFO} ({e})") from e
    dev = torch.device(device or "cpu")
    return LoadedClip(folder, info, manifest, model.to(dev).eval(), dev)


def save_clip_weights(folder: str | Path, model: Any) -> Path:
    """Write the weights atomically as ``clip.safetensors`` (plain contiguous CPU tensors)."""
    from safetensors.torch import save_file

    from medsynth.artifacts import atomic_path

    path = Path(folder) / CLIP_WEIGHTS
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return path
