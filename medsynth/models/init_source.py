"""The init-source seam: one resolver for the pretrained prior a training run starts from.

``medsynth train DATASET --init SOURCE`` (recipe ``init:``); SOURCE is one of

- ``medsynth``: a medsynth model folder (stage train or refine). Its denoiser, class head, text
  encoder, noise schedule (and autoencoder, for a latent model) are taken over; classes are
  matched by name (:func:`remap_rows`);
- ``diffusers``: a diffusers Stable Diffusion pipeline folder (``model_index.json``), or a hub id
  resolved in the local Hugging Face cache only (:func:`pipeline_folder`; never a download). Its
  VAE is the latent autoencoder, its UNet the denoiser (a class embedding added and zeroed:
  step 0 is exactly the pretrained model, :func:`sd_denoiser`), its scheduler the noise
  schedule, its CLIP the text encoder. SDXL and SD3 / Flux (MMDiT) are refused;
- ``monai-bundle``: a MONAI bundle with a MAISI autoencoder (``configs/inference.json`` +
  ``models/autoencoder*.pt``): the frozen autoencoder of a 2D or 3D latent run
  (:func:`prepare_maisi`).

:func:`resolve_init` names the source, its revision, sha256 and licence note (recorded in the
model info as ``initialized_from``); every refusal is one line, raised before ``--out`` is
touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError

INIT_KINDS = ("medsynth", "diffusers", "monai-bundle")
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                "StableDiffusionInpaintPipeline")
"""Pipelines whose UNet takes medsynth's conditioning (class embedding + cross-attention)."""
_MMDIT = ("StableDiffusion3", "Flux", "SD3", "PixArt", "Sana", "AuraFlow", "HunyuanDiT")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SD_LICENCE_HINT = ("Stable Diffusion 1.x/2.x weights: CreativeML OpenRAIL-M (use restrictions "
                   "apply; check the model card)")


@dataclasses.dataclass
class InitSource:
    """A resolved pretrained prior."""

    kind: str
    """One of :data:`INIT_KINDS`."""
    given: str
    """What the user wrote (a folder or a hub id)."""
    path: Path
    """The local folder (a hub id's snapshot)."""
    revision: str | None = None
    """Hub snapshot commit, or the parent model's medsynth version."""
    sha256: str = ""
    """sha256 of the parent's manifest (medsynth) or of its weight files (pipeline, bundle)."""
    licence: str | None = None
    """Licence note from the source's model card, when it names one."""
    family: str = ""
    """Pipeline class / bundle name / parent stage."""

    @property
    def hub_id(self) -> bool:
        return not Path(self.given).expanduser().exists()

    def record(self) -> dict[str, Any]:
        """JSON form (for the model info's ``initialized_from`` and the manifest)."""
        return {"kind": self.kind, "source": self.given, "path": str(self.path),
                "revision": self.revision, "sha256": self.sha256, "licence": self.licence,
                "family": self.family}


def pipeline_folder(name: str) -> Path:
    """The local folder of a pipeline: ``name`` itself, or the hub id's cached snapshot."""
    p = Path(name).expanduser()
    if p.exists():
        return p.resolve()
    if not _HUB_ID.match(name):
        raise MedsynthError(f"{name}: no such folder (and not a hub id of the form org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as e:
        raise MedsynthError(
            f"{name}: not in the local Hugging Face cache (medsynth never downloads at run "
            f"time; {type(e).__name__})",
            hint=f"download it once elsewhere (huggingface-cli download {name}) or pass the "
            "pipeline folder") from None


def resolve_init(given: str) -> InitSource:
    """What ``given`` is (module doc), or a one-line refusal."""
    from medsynth.artifacts import MANIFEST_NAME, MODEL_STAGES, read_manifest

    p = Path(given).expanduser()
    folder = pipeline_folder(given)
    if not folder.is_dir():
        raise MedsynthError(f"{given}: an init source is a folder (a model, a pipeline or a "
                            "bundle), this is a file")
    if not any(folder.iterdir()):
        raise MedsynthError(f"{given}: empty folder, not a model to start from")
    if (folder / MANIFEST_NAME).is_file():
        m = read_manifest(folder)
        if m.stage not in MODEL_STAGES:
            raise MedsynthError(f"{given}: is a '{m.stage}' artifact, not a model to start from "
                                f"(expected stage {' or '.join(MODEL_STAGES)})")
        if not (folder / "medsynth_model.json").is_file():
            raise MedsynthError(f"{given}: a {m.stage} folder without medsynth_model.json")
        return InitSource("medsynth", given, folder.resolve(), revision=m.medsynth_version,
                          sha256=str(m.sha256), family=m.stage)
    if (folder / "model_index.json").is_file():
        return _resolve_pipeline(given, folder, hub=not p.exists())
    bundle = folder / "configs" / "inference.json"
    if bundle.is_file() or (folder / "configs" / "inference.yaml").is_file():
        weights = sorted((folder / "models").glob("autoencoder*.pt"))
        if not weights:
            raise MedsynthError(f"{given}: a MONAI bundle without models/autoencoder*.pt (only "
                                "MAISI-style autoencoder bundles are init sources)")
        meta = _read_json(folder / "configs" / "metadata.json") or {}
        return InitSource("monai-bundle", given, folder.resolve(),
                          revision=str(meta.get("version") or "") or None,
                          sha256=_files_sha256(weights), licence=_licence(folder, meta),
                          family=str(meta.get("name") or "monai-bundle"))
    raise MedsynthError(f"{given}: not a model to start from (no medsynth.json of a model, no "
                        "model_index.json of a diffusers pipeline, no configs/inference.json "
                        "of a MONAI bundle)")


def _resolve_pipeline(given: str, folder: Path, *, hub: bool) -> InitSource:
    index = _read_json(folder / "model_index.json") or {}
    name = str(index.get("_class_name", ""))
    unet_conf = _read_json(folder / "unet" / "config.json") or {}
    if "XL" in name or unet_conf.get("addition_embed_type"):
        raise MedsynthError(f"{given}: {name or 'this pipeline'} is an SDXL-family model "
                            "(its UNet needs added text/time embeddings); medsynth adapts "
                            "Stable Diffusion 1.x/2.x pipelines")
    if any(k in name for k in _MMDIT) or (folder / "transformer").is_dir():
        raise MedsynthError(f"{given}: {name or 'this pipeline'} is a transformer (MMDiT) "
                            "model, not a UNet; medsynth adapts Stable Diffusion 1.x/2.x "
                            "pipelines")
    if name not in SD_PIPELINES:
        raise MedsynthError(f"{given}: unsupported pipeline family {name!r}; medsynth adapts "
                            f"{', '.join(SD_PIPELINES[:1])} (Stable Diffusion 1.x/2.x)")
    for sub in ("unet", "vae", "scheduler"):
        if not (folder / sub).is_dir():
            raise MedsynthError(f"{given}: the pipeline has no {sub}/ folder")
    if unet_conf.get("_class_name") != "UNet2DConditionModel":
        raise MedsynthError(f"{given}: unet/ is not a UNet2DConditionModel")
    if unet_conf.get("num_class_embeds") or unet_conf.get("class_embed_type"):
        raise MedsynthError(f"{given}: its UNet already has a class embedding; medsynth adds "
                            "its own to a text-to-image UNet")
    weights = [f for sub in ("unet", "vae", "text_encoder") for f in sorted((folder / sub).glob(
        "*.safetensors")) + sorted((folder / sub).glob("*.bin"))]
    revision = folder.name if hub else None
    return InitSource("diffusers", given, folder, revision=revision,
                      sha256=_files_sha256(weights), licence=_licence(folder, {}), family=name)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return d if isinstance(d, dict) else None


def _files_sha256(files: list[Path]) -> str:
    """One digest over the files' names and contents (streamed: multi-GB weights)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _licence(folder: Path, meta: dict[str, Any]) -> str | None:
    """The licence a model card's YAML front matter (or a bundle's metadata) names."""
    if meta.get("license"):
        return str(meta["license"])
    for name in ("README.md", "LICENSE", "LICENSE.md"):
        try:
            text = (folder / name).read_text("utf-8", errors="replace")[:4000]
        except OSError:
            continue
        m = re.search(r"^licen[cs]e:\s*(\S+)", text, flags=re.M | re.I)
        if m:
            return m.group(1)
    return None


# ---------------------------------------------------------------------------------------------
# weights


def remap_rows(old: Any, old_classes: list[str], new_classes: list[str], *,
               null: bool = True, fill: Any = None) -> tuple[Any, list[str]]:
    """Rows of a per-class table (class embedding ``K_old + 1`` rows with ``null``, a class
    head's last layer without) for ``new_classes``: shared classes keep their rows (by name),
    new ones start from ``fill`` (default: the null row, or the mean of the rows), the null
    row moves to the new null index. Returns (rows, the new classes that had no row)."""
    import torch

    real = old[:len(old_classes)]
    base = fill if fill is not None else (old[len(old_classes)] if null else real.mean(0))
    rows, fresh = [], []
    for c in new_classes:
        if c in old_classes:
            rows.append(real[old_classes.index(c)])
        else:
            rows.append(base)
            fresh.append(c)
    if null:
        rows.append(old[len(old_classes)])
    return torch.stack([r.detach().clone() for r in rows]), fresh


def parent_denoiser(src: InitSource, spec: Any, parent_classes: list[str],
                    classes: list[str]) -> Any:
    """A denoiser for ``spec`` (this run's classes) holding the parent model's EMA weights, its
    class embedding remapped by name (:func:`remap_rows`)."""
    from medsynth.models.denoiser import build_denoiser, load_denoiser
    from medsynth.models.info import load_model_info

    info = load_model_info(src.path)
    parent = load_denoiser(src.path / info.denoiser.folder)
    state = dict(parent.net.state_dict())
    key = "class_embedding.weight"
    state[key], _ = remap_rows(state[key], parent_classes, classes)
    den = build_denoiser(spec)
    try:
        den.net.load_state_dict(state)
    except RuntimeError as e:
        raise MedsynthError(f"{src.given}: its denoiser does not fit this run's network "
                            f"({str(e).splitlines()[0]})") from None
    return den.train().requires_grad_(True)


def parent_head(src: InitSource, head: Any, parent_classes: list[str],
                classes: list[str]) -> None:
    """Load the parent's class head into ``head``, its output rows remapped by name (new
    classes: the mean of the parent's rows)."""
    from safetensors.torch import load_file

    from medsynth.models.info import load_model_info

    info = load_model_info(src.path)
    if not info.class_head or not (src.path / info.class_head).is_file():
        return
    state = load_file(str(src.path / info.class_head))
    last = max(k.split(".")[0] for k in state if k.endswith(".weight"))
    for k in (f"{last}.weight", f"{last}.bias"):
        state[k], _ = remap_rows(state[k], parent_classes, classes, null=False)
    try:
        head.load_state_dict(state)
    except RuntimeError as e:
        raise MedsynthError(f"{src.given}: its class head does not fit ({e})") from None


def sd_denoiser(src: InitSource, n_classes: int, *, text_width: int | None = None) -> Any:
    """The pipeline's UNet with a zeroed class embedding of ``n_classes + 1`` rows added (step 0
    is exactly the pretrained UNet); with ``text_width`` (medsynth's own text encoder) a learnt
    projection ``text_proj`` from that width to the UNet's cross-attention width."""
    import torch
    from diffusers import UNet2DConditionModel

    from medsynth.models.denoiser import DiffusersDenoiser

    base = UNet2DConditionModel.from_pretrained(src.path, subfolder="unet",
                                                torch_dtype=torch.float32)
    conf = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    conf["num_class_embeds"] = n_classes + 1
    if text_width is not None:
        conf.update(encoder_hid_dim=int(text_width), encoder_hid_dim_type="text_proj")
    net = UNet2DConditionModel.from_config(conf)
    missing, unexpected = net.load_state_dict(base.state_dict(), strict=False)
    allowed = {"class_embedding.weight", "encoder_hid_proj.weight", "encoder_hid_proj.bias"}
    if unexpected or set(missing) - allowed:
        raise MedsynthError(f"{src.given}: its UNet does not take a class embedding cleanly "
                            f"(missing {sorted(set(missing) - allowed)[:3]}, unexpected "
                            f"{unexpected[:3]})")
    with torch.no_grad():
        net.class_embedding.weight.zero_()
    del base
    return DiffusersDenoiser(net).train()


def sd_config(src: InitSource) -> dict[str, Any]:
    """What a Stable Diffusion pipeline fixes: scheduler, UNet shape, text encoder."""
    sched = _read_json(src.path / "scheduler" / "scheduler_config.json") or {}
    unet = _read_json(src.path / "unet" / "config.json") or {}
    text = _read_json(src.path / "text_encoder" / "config.json")
    tok = _read_json(src.path / "tokenizer" / "tokenizer_config.json") or {}
    return {"scheduler": sched, "unet": unet, "text_encoder": text,
            "max_tokens": int(tok.get("model_max_length") or 77)
            if int(tok.get("model_max_length") or 77) < 10**6 else 77}


# ---------------------------------------------------------------------------------------------
# MONAI bundle / MAISI


def prepare_maisi(src: InitSource, dest: Path) -> Path:
    """Copy a MAISI bundle's autoencoder into ``dest`` as a folder :func:`load_autoencoder`
    reads (weights + the network definition resolved to kwargs), MAISI's CUDA-only options off
    on the CPU."""
    import shutil

    from monai.bundle import ConfigParser

    from medsynth.artifacts import atomic_folder
    from medsynth.models.autoencoder import MAISI_RECORD

    conf = src.path / "configs" / "inference.json"
    if not conf.is_file():
        conf = src.path / "configs" / "inference.yaml"
    parser = ConfigParser()
    try:
        parser.read_config(str(conf))
        key = next((k for k in ("autoencoder_def", "autoencoder", "network_def")
                    if k in parser.config), None)
        if key is None:
            raise KeyError("no autoencoder_def entry")
        raw = dict(parser.config[key])
    except (KeyError, ValueError, OSError) as e:
        raise MedsynthError(f"{conf}: cannot read the autoencoder definition ({e})") from None
    target = str(raw.pop("_target_", ""))
    if "Maisi" not in target and "AutoencoderKlMaisi" not in target:
        raise MedsynthError(f"{conf}: {key} is {target!r}, not a MAISI autoencoder")
    kwargs = {k: parser.get_parsed_content(f"{key}#{k}") for k in raw}
    import torch

    if not torch.cuda.is_available():
        kwargs.update(norm_float16=False, save_mem=False, use_checkpointing=False)
    weights = sorted((src.path / "models").glob("autoencoder*.pt"))[0]

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        shutil.copy2(weights, tmp / weights.name)
        (tmp / MAISI_RECORD).write_text(json.dumps(
            {"kwargs": kwargs, "weights": weights.name, "source": src.record()}, indent=2,
            default=str), "utf-8")

    atomic_folder(dest, write)
    return dest


def env_offline() -> bool:
    """True when the hub is switched off for this process (tests, air-gapped sites)."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")
