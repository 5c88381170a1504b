"""Tiny pretrained components, built and saved by the tests (never downloaded, never committed):
a random Stable Diffusion pipeline, its copy in a local hub-cache layout, a MAISI-style bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

VOCAB = ["<|startoftext|>", "<|endoftext|>", "!", "a", "b", "c", "d", "e", "l", "n", "o", "r",
         "s", "t", "i", "u", "m", "g", "k", "h", "p", "v", "y", "w"]


def build_tiny_sd(folder: Path, *, family: str = "StableDiffusionPipeline",
                  prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """A random 2-level Stable Diffusion pipeline (16 px images -> 4x8x8 latents)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=77,
                                        vocab_size=len(VOCAB) + 2 * len(VOCAB), bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1))
    tok_dir = folder.parent / f".{folder.name}-tok"
    tok_dir.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(VOCAB)}
    for t in VOCAB[2:]:
        vocab[t + "</w>"] = len(vocab)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                        model_max_length=77)
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type=prediction_type, clip_sample=False,
                          steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    shutil.rmtree(tok_dir)
    (folder / "README.md").write_text("---\nlicense: creativeml-openrail-m\n---\n# tiny\n")
    if family != "StableDiffusionPipeline":
        idx = json.loads((folder / "model_index.json").read_text())
        idx["_class_name"] = family
        (folder / "model_index.json").write_text(json.dumps(idx))
    return folder


def place_in_hub_cache(pipeline: Path, cache: Path, repo: str, sha: str = "0" * 40) -> Path:
    """The pipeline in huggingface_hub's cache layout (models--org--name/snapshots/<sha>)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / sha
    shutil.copytree(pipeline, snap)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(sha)
    return snap


MAISI_KW = dict(spatial_dims=3, in_channels=1, out_channels=1, latent_channels=4,
                num_channels=[8, 16], num_res_blocks=[1, 1], norm_num_groups=8,
                attention_levels=[False, False], with_encoder_nonlocal_attn=False,
                with_decoder_nonlocal_attn=False, norm_float16=False, num_splits=1,
                save_mem=False, use_checkpointing=False, use_convtranspose=False)


def build_tiny_maisi(folder: Path, *, spatial_dims: int = 3, seed: int = 0) -> Path:
    """A MAISI-style MONAI bundle: configs/inference.json + models/autoencoder.pt."""
    import torch
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    torch.manual_seed(seed)
    kw = {**MAISI_KW, "spatial_dims": spatial_dims}
    net = AutoencoderKlMaisi(**kw)
    (folder / "models").mkdir(parents=True)
    (folder / "configs").mkdir()
    torch.save(net.state_dict(), folder / "models" / "autoencoder.pt")
    conf = {"autoencoder_def": {"_target_": "monai.apps.generation.maisi.networks."
                                "autoencoderkl_maisi.AutoencoderKlMaisi", **kw}}
    (folder / "configs" / "inference.json").write_text(json.dumps(conf, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(
        {"name": "tiny_maisi", "version": "0.1", "license": "Apache-2.0"}))
    return folder
