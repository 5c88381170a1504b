"""The denoiser seam: one interface for every denoising network, one factory that picks it.

The interface (:class:`Denoiser`, an ``nn.Module``) is all that the trainer, the sampler and the
later stages (judge, refine) call::

    pred = denoiser(x, t, classes, text, text_mask)
        x          (B, C, *spatial) noisy input: pixels or latents, (B, C, H, W) or (B, C, D, H, W)
        t          a scalar or (B,) diffusion timesteps
        classes    (B,) long class ids (id ``n_classes`` = the null class), or (B, K) float class
                   probabilities (CCELLA: the class predicted from the report); K = n_classes or
                   n_classes + 1
        text       (B, L, D) token features; text_mask (B, L), 1 = real token, 0 = padding
        pred       the shape of x: epsilon, v or x0, as the model was trained
    denoiser.pooled_features()  (B, F): mid-block features of the last call, averaged over every
                                spatial axis (input of the class head)
    denoiser.save(folder);  load_denoiser(folder)

Implementations (``kind``), both with CCELLA's dual-head conditioning (the class through a class
embedding added to the timestep embedding, ``n_classes + 1`` rows, the last = null; the text
through cross-attention):

- ``diffusers``: ``UNet2DConditionModel``, the 2D default; saved with ``save_pretrained``, so
  plain diffusers loads ``MODEL/unet``.
- ``monai``: MONAI ``DiffusionModelUNet`` with ``spatial_dims`` 2 or 3; saved as ``config.json``
  + ``model.safetensors``. MONAI's cross-attention has no padding mask: medsynth adds one (same
  weights, same state-dict keys), so an image's condition never depends on its batch.

:func:`plan_denoiser` is the one place that decides the network from the data's shape and the
recipe (``denoiser: auto | diffusers | monai``; auto = diffusers in 2D, MONAI in 3D).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

# torch at import time: only stage code imports this module, never `medsynth --help`.
import torch.nn as nn

from medsynth.artifacts import atomic_folder
from medsynth.choices import DenoiserKind, values
from medsynth.errors import MedsynthError

if TYPE_CHECKING:
    import torch

DENOISER_KINDS = values(DenoiserKind)
"""Denoiser implementations; a recipe may also say ``auto`` (chosen from the data's dims)."""
CONFIG_FILE = "config.json"
MONAI_WEIGHTS = "model.safetensors"


@dataclasses.dataclass
class DenoiserSpec:
    """Everything needed to build a denoiser; derived from the data and the recipe."""

    channels: int
    """Channels of what is denoised (image channels in pixel space, latent channels later)."""
    n_classes: int
    """Number of real classes; the class embedding has ``n_classes + 1`` rows (last = null)."""
    cross_attention_dim: int
    """Text feature width D (the text encoder's hidden size)."""
    size: int | None = None
    """Edge length of square images / cubic volumes; ``shape`` overrides it."""
    shape: tuple[int, ...] | None = None
    """Spatial shape ``(H, W)`` or ``(D, H, W)``; default ``(size,) * spatial_dims``."""
    spatial_dims: int = 2
    """2 for images, 3 for volumes (``monai`` only)."""
    kind: str = "diffusers"
    """Implementation: diffusers (2D) or monai (2D/3D); see :data:`DENOISER_KINDS`."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """Channels per resolution level."""
    attention_levels: tuple[bool, ...] = (False, True, True)
    """Which levels have cross-attention blocks (the mid block always has one)."""
    layers_per_block: int = 1
    """ResNet layers per level."""
    attention_head_dim: int = 8
    """Channels per attention head."""
    norm_num_groups: int = 8
    """GroupNorm groups (must divide every entry of block_out_channels)."""

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        if self.shape is None:
            if self.size is None:
                raise MedsynthError("DenoiserSpec needs size or shape")
            self.shape = (int(self.size),) * int(self.spatial_dims)
        self.shape = tuple(int(s) for s in self.shape)
        self.spatial_dims = len(self.shape)
        self.size = self.shape[-1]
        if self.spatial_dims not in (2, 3):
            raise MedsynthError(f"the denoiser takes 2D or 3D data, got shape {list(self.shape)}")
        if self.kind not in DENOISER_KINDS:
            raise MedsynthError(f"unknown denoiser {self.kind!r}; choose from "
                                f"{', '.join(DENOISER_KINDS)} (or auto)")
        if self.kind == "diffusers" and self.spatial_dims == 3:
            raise MedsynthError("3D volumes need denoiser: monai (diffusers has no 3D UNet)",
                                hint="set denoiser: monai (or auto) in the recipe")
        if len(self.attention_levels) != len(self.block_out_channels):
            raise MedsynthError("attention_levels must have one entry per block_out_channels level")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise MedsynthError(
                f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels "
                f"{list(self.block_out_channels)}"
            )
        if self.channels < 1:
            raise MedsynthError(f"the denoiser needs at least 1 channel, got {self.channels}")
        if self.kind == "monai":
            # MONAI: heads = channels // head_dim at every attending level and the mid block.
            att = [c for c, a in zip(self.block_out_channels, self.attention_levels, strict=True)
                   if a] + [self.block_out_channels[-1]]
            if any(c % self.attention_head_dim for c in att):
                raise MedsynthError(
                    f"attention_head_dim={self.attention_head_dim} must divide the channels of "
                    f"every attending level and of the last level ({att}) for denoiser: monai")
        factor = 2 ** (len(self.block_out_channels) - 1)
        if any(s % factor for s in self.shape):
            raise MedsynthError(
                f"image size {'x'.join(map(str, self.shape))} must be divisible by {factor} "
                f"({len(self.block_out_channels)} resolution levels)",
                hint="set size in the recipe (images are resized) or use fewer levels",
            )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DenoiserSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                                  for k, v in d.items() if k in known}  # JSON lists -> tuples
        return cls(**kwargs)


def plan_denoiser(requested: str, spatial_dims: int) -> str:
    """The denoiser kind for a recipe's ``denoiser`` value and the data's spatial dims."""
    if requested == "auto":
        return "diffusers" if spatial_dims == 2 else "monai"
    if requested not in DENOISER_KINDS:
        raise MedsynthError(f"unknown denoiser {requested!r}; choose auto, "
                            f"{', '.join(DENOISER_KINDS)}")
    if requested == "diffusers" and spatial_dims == 3:
        raise MedsynthError("3D volumes need denoiser: monai (diffusers has no 3D UNet)",
                            hint="set denoiser: monai (or auto) in the recipe")
    return requested


def build_denoiser(spec: DenoiserSpec) -> Denoiser:
    """A freshly initialised denoiser of ``spec.kind`` (see module doc)."""
    if spec.kind == "monai":
        return MonaiDenoiser.from_kwargs(_monai_kwargs(spec))
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in spec.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(spec.attention_levels))
    heads = tuple(max(1, c // spec.attention_head_dim) for c in spec.block_out_channels)
    assert spec.shape is not None
    h, w = spec.shape
    net = UNet2DConditionModel(
        sample_size=spec.size if h == w else (h, w),
        in_channels=spec.channels,
        out_channels=spec.channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=spec.block_out_channels,
        layers_per_block=spec.layers_per_block,
        norm_num_groups=spec.norm_num_groups,
        cross_attention_dim=spec.cross_attention_dim,
        attention_head_dim=heads,
        num_class_embeds=spec.n_classes + 1,
    )
    return DiffusersDenoiser(net)


def _monai_kwargs(spec: DenoiserSpec) -> dict[str, Any]:
    return {
        "spatial_dims": spec.spatial_dims, "in_channels": spec.channels,
        "out_channels": spec.channels, "num_res_blocks": spec.layers_per_block,
        "channels": list(spec.block_out_channels), "attention_levels": list(spec.attention_levels),
        "norm_num_groups": spec.norm_num_groups, "num_head_channels": spec.attention_head_dim,
        "with_conditioning": True, "cross_attention_dim": spec.cross_attention_dim,
        "num_class_embeds": spec.n_classes + 1, "resblock_updown": False, "include_fc": True,
        "use_flash_attention": False,
    }


def load_denoiser(folder: str | os.PathLike[str]) -> Denoiser:
    """The denoiser saved in ``folder`` (its kind read from ``config.json``), in eval mode."""
    folder = Path(folder)
    try:
        conf = json.loads((folder / CONFIG_FILE).read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MedsynthError(f"{folder}: cannot load the denoiser ({e})") from e
    name = conf.get("_class_name")
    try:
        if name == "UNet2DConditionModel":
            from diffusers import UNet2DConditionModel

            den: Denoiser = DiffusersDenoiser(UNet2DConditionModel.from_pretrained(folder))
        elif name == MonaiDenoiser.class_name:
            from safetensors.torch import load_file

            den = MonaiDenoiser.from_kwargs(conf["kwargs"])
            den.net.load_state_dict(load_file(str(folder / MONAI_WEIGHTS)))
        else:
            raise MedsynthError(f"{folder / CONFIG_FILE}: unknown denoiser class {name!r}")
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise MedsynthError(f"{folder}: cannot load the denoiser ({type(e).__name__}: {e})") from e
    return den.eval()


def _class_embedding_takes_probabilities(emb: nn.Embedding) -> None:
    """Let an ``nn.Embedding`` also take class probabilities (same weights and keys)."""
    import torch.nn.functional as F

    class ClassEmbedding(nn.Embedding):
        """Long ids -> rows; float ``(B, K)`` probabilities -> ``probs @ weight`` (K may omit
        the null row)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.is_floating_point():
                if x.shape[-1] == self.num_embeddings - 1:
                    x = F.pad(x, (0, 1))
                return x.to(self.weight.dtype) @ self.weight
            return super().forward(x)

    if type(emb) is nn.Embedding:
        emb.__class__ = ClassEmbedding


def _spatial_pool(f: torch.Tensor) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, C)``: the mean over every spatial axis."""
    import torch.nn.functional as F

    if f.ndim == 4:
        return F.adaptive_avg_pool2d(f, 1).flatten(1)
    if f.ndim == 5:
        return F.adaptive_avg_pool3d(f, 1).flatten(1)
    return f.flatten(2).mean(-1)


class Denoiser(nn.Module):
    """Base of every denoiser: the call signature, pooled features, save (see module doc)."""

    kind = ""
    #: Attention projection names, for a peft ``LoraConfig(target_modules=...)`` (refine).
    lora_target_modules: tuple[str, ...] = ()

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net
        self._features: torch.Tensor | None = None
        _class_embedding_takes_probabilities(self._class_embedding())
        self._mid_block().register_forward_hook(self._keep_features)

    # --- what each implementation tells ----------------------------------------------------
    def _class_embedding(self) -> nn.Embedding:
        return self.net.class_embedding

    def _mid_block(self) -> nn.Module:
        raise NotImplementedError

    @property
    def spatial_dims(self) -> int:
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        """Width F of :meth:`pooled_features` (the deepest level's channels)."""
        raise NotImplementedError

    @property
    def n_class_embeds(self) -> int:
        """Rows of the class embedding (classes + the null class)."""
        return int(self._class_embedding().num_embeddings)

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the network to ``folder`` (atomically); :func:`load_denoiser` reads it back."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    def _keep_features(self, _module: nn.Module, _inp: Any,
                       out: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
        self._features = out[0] if isinstance(out, tuple) else out

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, classes: torch.Tensor,
                text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """The prediction (noise, v or velocity, as trained) for ``x`` at timestep(s) ``t``:
        ``classes`` are long ids ``(B,)`` or probabilities ``(B, K)``, ``text`` ``(B, L, D)``
        with its mask ``(B, L)``."""
        raise NotImplementedError

    def pooled_features(self) -> torch.Tensor:
        """Mid-block features of the last forward, averaged over space: ``(B, feature_dim)``."""
        if self._features is None:
            raise RuntimeError("pooled_features() needs a forward call first")
        return _spatial_pool(self._features)

    @property
    def features(self) -> torch.Tensor | None:
        """Raw mid-block output of the last forward ``(B, F, *spatial)``."""
        return self._features


class DiffusersDenoiser(Denoiser):
    """diffusers ``UNet2DConditionModel`` (2D)."""

    kind = "diffusers"
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0")

    def _mid_block(self) -> nn.Module:
        return self.net.mid_block

    @property
    def spatial_dims(self) -> int:
        return 2

    @property
    def feature_dim(self) -> int:
        return int(self.net.config.block_out_channels[-1])

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, classes: torch.Tensor,
                text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        return self.net(x, t, encoder_hidden_states=text, class_labels=classes,
                        encoder_attention_mask=text_mask).sample

    def save(self, folder: str | os.PathLike[str]) -> None:
        atomic_folder(Path(folder), self.net.save_pretrained)


class MonaiDenoiser(Denoiser):
    """MONAI ``DiffusionModelUNet`` (2D or 3D), with a padding mask on its cross-attention."""

    kind = "monai"
    class_name = "DiffusionModelUNet"
    lora_target_modules = ("to_q", "to_k", "to_v", "out_proj")

    def __init__(self, net: Any, kwargs: dict[str, Any]) -> None:
        super().__init__(net)
        self.kwargs = dict(kwargs)
        _mask_cross_attention(net)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> MonaiDenoiser:
        try:
            import einops  # noqa: F401  (MONAI's attention blocks need it)
            from monai.networks.nets import DiffusionModelUNet
        except ImportError as e:
            raise MedsynthError(f"denoiser: monai needs {e.name} (pip install {e.name})") from e
        return cls(DiffusionModelUNet(**kwargs), kwargs)

    def _mid_block(self) -> nn.Module:
        return self.net.middle_block

    @property
    def spatial_dims(self) -> int:
        return int(self.kwargs["spatial_dims"])

    @property
    def feature_dim(self) -> int:
        return int(self.kwargs["channels"][-1])

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, classes: torch.Tensor,
                text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        import torch

        ts = torch.as_tensor(t, device=x.device)
        if ts.ndim == 0:  # MONAI wants one timestep per sample
            ts = ts.reshape(1).expand(x.shape[0])
        # The mask travels with the text down MONAI's blocks (which pass `context` on untouched)
        # to the masked cross-attention: no module attribute set per call, so torch.compile
        # traces one graph and concurrent calls cannot see each other's masks.
        context = text if text is None or text_mask is None else MaskedContext(text, text_mask)
        return self.net(x, ts, context=context, class_labels=classes)

    def save(self, folder: str | os.PathLike[str]) -> None:
        from safetensors.torch import save_file

        def write(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            conf = {"_class_name": self.class_name, "_library": "monai", "kwargs": self.kwargs}
            (tmp / CONFIG_FILE).write_text(json.dumps(conf, indent=2), "utf-8")
            state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
            save_file(state, str(tmp / MONAI_WEIGHTS))

        atomic_folder(Path(folder), write)


class MaskedContext(NamedTuple):
    """Text features and their padding mask, passed as MONAI's ``context`` (which its blocks
    hand on untouched to the cross-attention)."""

    text: Any
    mask: Any


def _mask_cross_attention(net: Any) -> list[Any]:
    """Let every cross-attention block of a MONAI UNet take a :class:`MaskedContext`."""
    import torch
    from monai.networks.blocks import CrossAttentionBlock

    class MaskedCrossAttention(CrossAttentionBlock):
        """MONAI's cross-attention, with padded text tokens (``mask == 0``) left out."""

        def forward(self, x: Any, context: Any = None) -> Any:
            if not isinstance(context, MaskedContext):
                return super().forward(x, context)
            context, mask = context
            q = self.input_rearrange(self.to_q(x))
            k = self.input_rearrange(self.to_k(context))
            v = self.input_rearrange(self.to_v(context))
            if self.attention_dtype is not None:
                q, k = q.to(self.attention_dtype), k.to(self.attention_dtype)
            keep = mask.to(device=x.device).bool()[:, None, None, :]
            if self.use_flash_attention:
                out = torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, attn_mask=keep, scale=self.scale,
                    dropout_p=self.dropout_rate if self.training else 0.0)
            else:
                att = torch.einsum("blxd,blyd->blxy", q, k) * self.scale
                att = att.masked_fill(~keep, torch.finfo(att.dtype).min).softmax(dim=-1)
                out = torch.einsum("bhxy,bhyd->bhxd", self.drop_weights(att), v)
            return self.drop_output(self.out_proj(self.out_rearrange(out)))

    found = []
    for name, m in net.named_modules():
        if name.endswith("attn2") and type(m) is CrossAttentionBlock:
            m.__class__ = MaskedCrossAttention
            found.append(m)
    return found


def build_class_head(spec: DenoiserSpec) -> nn.Module:
    """CCELLA's class-prediction head on :meth:`Denoiser.pooled_features`: MLP -> logits."""
    c = spec.block_out_channels[-1]
    return nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, spec.n_classes))


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format for 4-D (2D) or 5-D (3D) tensors."""
    import torch

    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
