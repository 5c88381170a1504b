"""The autoencoder of latent models (MONAI ``AutoencoderKL``, 2D or 3D): build, save, load, use.

Shared by ``train`` (the autoencoder phase, the latent cache) and ``generate`` (decoding the
sampled latents; encoding initial images). A folder holds::

    autoencoder/
      config.json         {"_class_name": "AutoencoderKL", "_library": "monai", "kwargs": {...},
                           "medsynth": AutoencoderRecord (spec, scaling factor, metrics, ...)}
      model.safetensors   the weights

The diffusion model works on *scaled latents* ``z = scaling_factor * mu(x)``: the encoder's mean
(never a sample) times 1 / (std of the training latents), so that the latents the denoiser sees
have a standard deviation of about 1 whatever the KL weight gave. :meth:`Autoencoder.decode`
divides the factor out again and maps the latents back to pixels in [-1, 1].

Decoding a large volume at once needs the decoder's full-resolution activations for the whole
volume; :meth:`Autoencoder.decode` then slides a window over the latent (MONAI
``sliding_window_inference``, gaussian blending, overlap 0.4) and stitches the decoded windows,
keeping peak memory at the window's (``decode_window``, or chosen from a memory budget).

Two pretrained autoencoders load behind the same :class:`Autoencoder` (a pretrained prior,
:mod:`medsynth.models.init_source`), both frozen and with a fixed scaling factor:

- a diffusers ``AutoencoderKL`` folder (a Stable Diffusion pipeline's ``vae/``): 3-channel, so
  grayscale images are repeated to 3 channels on encode and the decoded channels averaged back;
  always run in fp32 outside autocast (fp16 SD VAEs give NaNs); its own ``scaling_factor``
  (0.18215 for SD 1/2: the pretrained UNet expects exactly that scale, not 1 / std);
- a MONAI bundle's MAISI autoencoder (``AutoencoderKlMaisi``): inputs in [0, 1] (CT first
  clipped to the [-1000, 1000] HU window, which medsynth's [-1, 1] already is for CT), mapped
  from and to medsynth's [-1, 1].
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from medsynth.errors import MedsynthError

AE_CLASS = "AutoencoderKL"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DECODE_BUDGET_GIB_CPU = 3.0
"""Default memory budget of one decode on the CPU; above it decoding slides a window."""
WINDOW_OVERLAP = 0.4
"""Overlap of neighbouring decode windows (as MAISI), blended with gaussian weights."""


@dataclasses.dataclass
class AutoencoderSpec:
    """How an AutoencoderKL is built (the recipe's ``ae_*`` keys and the data's shape)."""

    spatial_dims: int
    """2 (images) or 3 (volumes)."""
    channels: int
    """Image channels (1 grayscale, 3 RGB)."""
    latent_channels: int = 4
    """Channels of the latent tensor."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """Channels per level; the latent is ``2 ** (levels - 1)`` times smaller per axis."""
    layers_per_block: int = 1
    """Residual blocks per level."""
    norm_num_groups: int = 16
    """GroupNorm groups (must divide every level's channels)."""
    attention: bool = False
    """Non-local attention in the deepest level and the mid block (2D only: too costly in 3D)."""

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if self.spatial_dims not in (2, 3):
            raise MedsynthError(f"the autoencoder takes 2D or 3D data, got {self.spatial_dims}D")
        if self.attention and self.spatial_dims == 3:
            raise MedsynthError("ae_attention: non-local attention is not offered in 3D (its "
                                "memory grows with the square of the voxel count)",
                                hint="set ae_attention: false for volumes")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise MedsynthError(f"ae_norm_num_groups={self.norm_num_groups} must divide every "
                                f"ae_block_out_channels {list(self.block_out_channels)}")
        if self.latent_channels < 1 or self.channels < 1:
            raise MedsynthError("the autoencoder needs at least 1 image and 1 latent channel")

    @property
    def factor(self) -> int:
        """Downsampling per axis."""
        return 2 ** (len(self.block_out_channels) - 1)

    def latent_shape(self, shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
        """Spatial latent shape of an image of spatial ``shape`` (every axis divisible)."""
        bad = [s for s in shape if s % self.factor]
        if bad or len(shape) != self.spatial_dims:
            raise MedsynthError(
                f"image shape {'x'.join(map(str, shape))} does not fit the autoencoder: every "
                f"one of its {self.spatial_dims} axes must be divisible by {self.factor} "
                f"({len(self.block_out_channels)} levels)",
                hint="resize the data (size/shape in the recipe) or use fewer ae levels")
        return tuple(int(s) // self.factor for s in shape)

    def monai_kwargs(self) -> dict[str, Any]:
        levels = len(self.block_out_channels)
        return {
            "spatial_dims": self.spatial_dims, "in_channels": self.channels,
            "out_channels": self.channels, "num_res_blocks": self.layers_per_block,
            "channels": list(self.block_out_channels),
            "attention_levels": [self.attention and i == levels - 1 for i in range(levels)],
            "latent_channels": self.latent_channels, "norm_num_groups": self.norm_num_groups,
            "with_encoder_nonlocal_attn": self.attention,
            "with_decoder_nonlocal_attn": self.attention, "include_fc": True,
        }

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoencoderSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()
                      if k in names})


@dataclasses.dataclass
class AutoencoderRecord:
    """What an autoencoder folder says about itself (``config.json``'s ``medsynth`` entry)."""

    spec: AutoencoderSpec
    scaling_factor: float = 1.0
    """1 / std of the training latents (means) of the data it was trained on."""
    latent_mean: float = 0.0
    """Mean of those latents (recorded, not subtracted)."""
    image_shape: list[int] = dataclasses.field(default_factory=list)
    """Spatial shape of the images it was trained on (patches were cut from them)."""
    patch_shape: list[int] | None = None
    """Training patch shape (None: whole images)."""
    intensity: dict[str, Any] | None = None
    """The pixel <-> [-1, 1] mapping of its training data (IntensityMapping.to_dict())."""
    steps: int = 0
    """Optimizer steps it was trained for."""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Reconstruction quality: psnr_db, ssim (on [-1, 1] data, range 2), split, n_images."""
    modality: str = "OT"
    """Modality of its training data."""
    fixed_scaling: bool = False
    """A pretrained autoencoder whose scaling factor is its own (never 1 / std of the data)."""
    kind: str = "monai-autoencoderkl"
    """``monai-autoencoderkl`` (trained by medsynth), ``diffusers-autoencoderkl`` (a Stable
    Diffusion VAE) or ``monai-maisi`` (a MAISI bundle's autoencoder)."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["spec"] = self.spec.to_dict()
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoencoderRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["spec"] = AutoencoderSpec.from_dict(d["spec"])
        return cls(**kw)


class Autoencoder:
    """An AutoencoderKL with its record: encode to scaled latents, decode (windowed if large)."""

    def __init__(self, net: Any, record: AutoencoderRecord) -> None:
        self.net = net
        self.record = record

    # --- facts ------------------------------------------------------------------------------
    @property
    def spec(self) -> AutoencoderSpec:
        return self.record.spec

    @property
    def scaling_factor(self) -> float:
        return float(self.record.scaling_factor)

    @property
    def device(self) -> Any:
        return next(self.net.parameters()).device

    def to(self, device: Any) -> Autoencoder:
        self.net.to(device)
        return self

    def check_data(self, channels: int, spatial_dims: int, where: str) -> None:
        """A clear error when data of ``channels`` x ``spatial_dims``D cannot go through it.

        A Stable Diffusion VAE takes 1-channel data too (repeated to 3, averaged back): checking
        it against the data sets the channels it returns."""
        s = self.spec
        if isinstance(self.net, _DiffusersVAE) and spatial_dims == 2 and channels in (1, 3):
            self.net.channels = channels
            self.record.spec = dataclasses.replace(s, channels=channels)
            return
        if s.spatial_dims != spatial_dims or s.channels != channels:
            raise MedsynthError(
                f"{where}: the autoencoder takes {s.channels}-channel {s.spatial_dims}D data, "
                f"the data are {channels}-channel {spatial_dims}D",
                hint="train a new autoencoder (drop --autoencoder) or pick one trained on "
                "data like these")

    # --- use --------------------------------------------------------------------------------
    def encode_mean(self, x: Any, *, window: int | None = None) -> Any:
        """Unscaled latent means of images ``x`` in [-1, 1] ``(B, C, *spatial)`` (no grad)."""
        import torch

        with torch.no_grad():
            x = x.to(self.device, dtype=torch.float32)
            if window:
                return _windowed(lambda p: self.net.encode(p)[0], x, window * self.spec.factor,
                                 self.device)
            return self.net.encode(x)[0]

    def encode(self, x: Any, *, window: int | None = None) -> Any:
        """Scaled latents ``scaling_factor * mu(x)`` of images in [-1, 1] (the denoiser's space)."""
        return self.encode_mean(x, window=window) * self.scaling_factor

    def decode(self, z: Any, *, window: int | None = None,
               budget_gib: float | None = None) -> Any:
        """Scaled latents ``(B, C_lat, *latent)`` -> images in [-1, 1] (not clipped), no grad.

        ``window``: latent voxels per axis of the decode window (0 = whole at once; None =
        whole unless :func:`decode_bytes` exceeds ``budget_gib``, then a window that fits).
        """
        import torch

        z = z.to(self.device, dtype=torch.float32) / self.scaling_factor
        if window is None:
            window = self.auto_window(tuple(z.shape[2:]), batch=1, budget_gib=budget_gib)
        # fp32 even inside the sampler's autocast: a bf16 decode costs visible intensity error
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            if window and window < max(z.shape[2:]):
                # One image at a time: the window is sized for one.
                return torch.cat([_windowed(self.net.decode, z[i:i + 1], window, self.device)
                                  for i in range(z.shape[0])])
            return self.net.decode(z)

    def auto_window(self, latent_shape: tuple[int, ...], *, batch: int = 1,
                    budget_gib: float | None = None) -> int:
        """0 when decoding ``batch`` latents of ``latent_shape`` fits the budget, else the
        largest window (latent voxels per axis, a multiple of 4) that does."""
        budget = (budget_gib if budget_gib is not None else default_budget_gib(self.device)) * 2**30
        if decode_bytes(self.spec, latent_shape, batch) <= budget:
            return 0
        w = max(latent_shape)
        while w > 4 and decode_bytes(self.spec, (w,) * len(latent_shape), 1) > budget:
            w -= 4
        return max(4, w)

    def reconstruct(self, x: Any) -> Any:
        """``decode(encode(x))`` through the means, in [-1, 1] space (no grad)."""
        return self.decode(self.encode(x), window=0)


def decode_bytes(spec: AutoencoderSpec, latent_shape: tuple[int, ...], batch: int = 1) -> int:
    """Rough peak bytes of decoding: a few float32 activations of the full-resolution level."""
    numel = math.prod(int(s) * spec.factor for s in latent_shape)
    return int(6 * batch * spec.block_out_channels[0] * numel * 4)


def default_budget_gib(device: Any) -> float:
    """Decode budget: half the free GPU memory, or :data:`DECODE_BUDGET_GIB_CPU` on the CPU."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free / 2**30 / 2
    return DECODE_BUDGET_GIB_CPU


def _windowed(fn: Any, x: Any, roi: int, device: Any) -> Any:
    """``fn`` over windows of ``roi`` voxels per axis of ``x``, gaussian-blended (MONAI)."""
    from monai.inferers import sliding_window_inference

    roi_size = [min(int(roi), int(s)) for s in x.shape[2:]]
    out = sliding_window_inference(x, roi_size=roi_size, sw_batch_size=1, predictor=fn,
                                   overlap=WINDOW_OVERLAP, mode="gaussian", sw_device=device,
                                   device=device)
    return out if not isinstance(out, (tuple, list)) else out[0]


def build_autoencoder(spec: AutoencoderSpec) -> Any:
    """A freshly initialised MONAI ``AutoencoderKL`` for ``spec``."""
    try:
        from monai.networks.nets import AutoencoderKL
    except ImportError as e:
        raise MedsynthError(f"latent diffusion needs {e.name} (pip install monai)") from e
    return AutoencoderKL(**spec.monai_kwargs())


def save_autoencoder(folder: str | os.PathLike[str], net: Any, record: AutoencoderRecord) -> Path:
    """Write ``net`` and ``record`` to ``folder`` atomically (read back by :func:`load_autoencoder`)."""
    from safetensors.torch import save_file

    from medsynth.artifacts import atomic_folder

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        conf = {"_class_name": AE_CLASS, "_library": "monai",
                "kwargs": record.spec.monai_kwargs(), "medsynth": record.to_dict()}
        (tmp / CONFIG_FILE).write_text(json.dumps(conf, indent=2), "utf-8")

    atomic_folder(Path(folder), write)
    return Path(folder)


class _DiffusersVAE(nn.Module):
    """A diffusers ``AutoencoderKL`` behind MONAI's ``encode -> (mu, sigma)`` / ``decode``:
    grayscale repeated to its 3 channels and averaged back; fp32 outside autocast."""

    def __init__(self, vae: Any, channels: int = 3) -> None:
        super().__init__()
        self.vae = vae.float()
        self.channels = channels

    def encode(self, x: Any) -> tuple[Any, Any]:
        import torch

        with torch.autocast(x.device.type, enabled=False):
            if x.shape[1] == 1:
                x = x.repeat(1, 3, *([1] * (x.ndim - 2)))
            d = self.vae.encode(x.float()).latent_dist
        return d.mean, d.std

    def decode(self, z: Any) -> Any:
        import torch

        with torch.autocast(z.device.type, enabled=False):
            out = self.vae.decode(z.float()).sample
        return out.mean(1, keepdim=True) if self.channels == 1 else out


class _MaisiAE(nn.Module):
    """A MAISI autoencoder behind the same calls: medsynth's [-1, 1] <-> MAISI's [0, 1]."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def encode(self, x: Any) -> tuple[Any, Any]:
        z_mu, z_sigma = self.net.encode((x.float() + 1) / 2)
        return z_mu, z_sigma

    def decode(self, z: Any) -> Any:
        return self.net.decode(z.float()) * 2 - 1


DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
MAISI_RECORD = "medsynth_maisi.json"
"""Written beside a copied MAISI bundle: the network definition resolved to plain kwargs."""


def _pretrained_kind(folder: Path) -> str | None:
    """``diffusers`` or ``maisi`` when ``folder`` holds such a pretrained autoencoder."""
    conf_path = folder / CONFIG_FILE
    if conf_path.is_file() and any((folder / w).is_file() for w in DIFFUSERS_WEIGHTS):
        try:
            conf = json.loads(conf_path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if conf.get("_class_name") == AE_CLASS and "_diffusers_version" in conf:
            return "diffusers"
    if (folder / MAISI_RECORD).is_file():
        return "maisi"
    return None


def _load_pretrained(folder: Path, kind: str) -> Autoencoder:
    """A frozen pretrained autoencoder (diffusers VAE or MAISI) with its fixed scaling factor."""
    if kind == "diffusers":
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(folder)
        c = vae.config
        spec = AutoencoderSpec(spatial_dims=2, channels=int(c.in_channels),
                               latent_channels=int(c.latent_channels),
                               block_out_channels=tuple(c.block_out_channels),
                               layers_per_block=int(c.layers_per_block),
                               norm_num_groups=int(c.norm_num_groups))
        rec = AutoencoderRecord(spec=spec, scaling_factor=float(c.scaling_factor or 1.0),
                                fixed_scaling=True, kind="diffusers-autoencoderkl")
        return Autoencoder(_DiffusersVAE(vae, int(c.in_channels)), rec)
    import torch
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    meta = json.loads((folder / MAISI_RECORD).read_text("utf-8"))
    net = AutoencoderKlMaisi(**meta["kwargs"])
    state = torch.load(folder / meta["weights"], weights_only=True, map_location="cpu")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    net.load_state_dict(state)
    k = meta["kwargs"]
    levels = list(k["num_channels"])
    spec = AutoencoderSpec(spatial_dims=int(k["spatial_dims"]), channels=int(k["in_channels"]),
                           latent_channels=int(k["latent_channels"]),
                           block_out_channels=tuple(levels),
                           layers_per_block=int(list(k["num_res_blocks"])[0]),
                           norm_num_groups=int(k["norm_num_groups"]))
    rec = AutoencoderRecord(spec=spec, scaling_factor=float(meta.get("scaling_factor", 1.0)),
                            fixed_scaling=False, kind="monai-maisi")
    return Autoencoder(_MaisiAE(net), rec)


def find_autoencoder(path: str | os.PathLike[str]) -> Path:
    """The autoencoder folder of ``path``: the folder itself, or a latent model's ``autoencoder/``
    (a medsynth AutoencoderKL, a Stable Diffusion pipeline's ``vae/``, a prepared MAISI copy)."""
    p = Path(path)
    for cand in (p, p / "autoencoder", p / "vae"):
        if _pretrained_kind(cand):
            return cand
        if (cand / CONFIG_FILE).is_file() and (cand / WEIGHTS_FILE).is_file():
            try:
                conf = json.loads((cand / CONFIG_FILE).read_text("utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if conf.get("_class_name") == AE_CLASS:
                return cand
    raise MedsynthError(f"{p}: no autoencoder here (expected {CONFIG_FILE} + {WEIGHTS_FILE} of an "
                        f"{AE_CLASS}, or a latent model folder with autoencoder/)",
                        hint="pass a model folder trained with latent: true, or its autoencoder/")


def load_autoencoder(path: str | os.PathLike[str], *, device: Any = None,
                     scaling_factor: float | None = None,
                     channels: int | None = None) -> Autoencoder:
    """The autoencoder in ``path`` (see :func:`find_autoencoder`), in eval mode, no grads.

    ``scaling_factor`` overrides the folder's own (a model records the factor of its data).
    """
    from safetensors.torch import load_file

    folder = find_autoencoder(path)
    kind = _pretrained_kind(folder)
    if kind:
        try:
            ae = _load_pretrained(folder, kind)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise MedsynthError(f"{folder}: cannot load the autoencoder ({type(e).__name__}: "
                                f"{e})") from e
        ae.net.eval().requires_grad_(False)
        if channels is not None:
            ae.check_data(channels, ae.spec.spatial_dims, where=str(folder))
        if scaling_factor is not None:
            ae.record = dataclasses.replace(ae.record, scaling_factor=float(scaling_factor))
        return ae.to(device) if device is not None else ae
    try:
        conf = json.loads((folder / CONFIG_FILE).read_text("utf-8"))
        record = AutoencoderRecord.from_dict(conf["medsynth"])
        net = build_autoencoder(record.spec)
        net.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except MedsynthError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise MedsynthError(f"{folder}: cannot load the autoencoder ({type(e).__name__}: {e})") from e
    if scaling_factor is not None:
        record = dataclasses.replace(record, scaling_factor=float(scaling_factor))
    net.eval().requires_grad_(False)
    if device is not None:
        net.to(device)
    return Autoencoder(net, record)


def reconstruction_metrics(x: Any, recon: Any) -> dict[str, float]:
    """PSNR (dB) and SSIM of reconstructions, images in [-1, 1] (data range 2), per-image means."""
    import torch
    from monai.metrics import PSNRMetric, SSIMMetric

    x, recon = x.float().cpu(), recon.float().clamp(-1, 1).cpu()
    dims = x.ndim - 2
    psnr = PSNRMetric(max_val=2.0, reduction="mean")(recon, x)
    # SSIM window 7 (not 11): small volumes and latents-sized test images still fit it.
    win = min(7, min(int(s) for s in x.shape[2:]))
    win -= 1 - win % 2
    ssim = SSIMMetric(spatial_dims=dims, data_range=2.0, win_size=win, reduction="mean")(recon, x)
    return {"psnr_db": float(torch.as_tensor(psnr).mean()),
            "ssim": float(torch.as_tensor(ssim).mean())}


def latent_stats(latents: Any) -> tuple[float, float]:
    """(mean, std) of a latent stack; the scaling factor is 1 / std."""
    import torch

    z = torch.as_tensor(latents).double()
    return float(z.mean()), float(z.std())
