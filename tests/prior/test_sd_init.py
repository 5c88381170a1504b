"""--init a Stable Diffusion pipeline (tiny, random, saved by the test): weights, zero class
embedding, VAE scale, CLIP text, LoRA, resume, hub cache, generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.models.init_source import resolve_init, sd_denoiser
from tests.prior.conftest import run_cfg


def test_sd_unet_weights_equal_and_step0_is_the_pretrained_model(tiny_sd: Path) -> None:
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").eval()
    den = sd_denoiser(resolve_init(str(tiny_sd)), n_classes=3).eval()
    own = den.net.state_dict()
    for k, v in base.state_dict().items():
        assert torch.equal(own[k], v), k
    emb = den.net.class_embedding.weight.detach()
    assert emb.shape[0] == 4 and float(emb.abs().max()) == 0.0
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 77, 32, generator=g)
    t = torch.tensor([10, 500, 900])
    with torch.no_grad():
        want = base(x, t, encoder_hidden_states=text).sample
        got = den(x, t, torch.tensor([0, 1, 3]), text, torch.ones(3, 77, dtype=torch.long))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sd_model_records_source_vae_scale_and_clip(sd_model: Path, tiny_sd: Path) -> None:
    from medsynth.models.bundle import load_bundle

    info = json.loads((sd_model / "medsynth_model.json").read_text())
    assert info["format"] == 3  # an older reader must refuse it
    init = info["initialized_from"]
    assert init["kind"] == "diffusers" and init["licence"] == "creativeml-openrail-m"
    assert len(init["sha256"]) == 64 and init["adapter"] == "full"
    from huggingface_hub import ModelCard

    card = ModelCard.load(sd_model / "README.md")  # the prior's licence and the base model
    assert card.data.license == "creativeml-openrail-m" and card.data.base_model == init["source"]
    assert card.data.library_name == "diffusers" and "medsynth" in card.data.tags
    assert info["autoencoder"]["kind"] == "diffusers-autoencoderkl"
    assert info["autoencoder"]["scaling_factor"] == pytest.approx(0.18215)
    assert info["text_encoder"]["kind"] == "clip" and info["text_encoder"]["max_tokens"] == 77
    sched = json.loads((sd_model / "scheduler" / "scheduler_config.json").read_text())
    assert sched["beta_schedule"] == "scaled_linear" and sched["beta_start"] == 0.00085
    b = load_bundle(sd_model)
    h, m = b.encode_text([""])
    assert h.shape == (1, 77, 32) and int(m.sum()) == 77 and float(h.abs().sum()) > 0  # CLIP("")
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    z = b.encode(x)
    assert z.shape == (2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = b.decode(z)
    assert y.shape == (2, 1, 16, 16) and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_generate_reads_sd_models(sd_model: Path, lora_model: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medsynth.cli import app

    for m in (sd_model, lora_model):
        res = CliRunner().invoke(app, ["generate", str(m), "--out", str(tmp_path / m.parent.name),
                                       "--n", "1", "--steps", "2"])
        assert res.exit_code == 0, res.output
        from PIL import Image

        png = sorted((tmp_path / m.parent.name / "png").rglob("*.png"))
        assert png and Image.open(png[0]).size == (16, 16) and Image.open(png[0]).mode in ("L", "I;16")


def test_lora_trains_only_lora_and_class_embedding(tiny_sd: Path) -> None:
    from medsynth.train.config import TrainConfig
    from medsynth.train.prior import Prior, trainable

    cfg = TrainConfig(init=str(tiny_sd), adapter="lora", lora_rank=4)
    prior = Prior(resolve_init(str(tiny_sd)), cfg)
    den = prior.adapt(sd_denoiser(prior.src, 2))
    names = [n for n, p in den.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "class_embedding" in n for n in names)
    n_lora = sum(p.numel() for n, p in den.named_parameters() if "lora_" in n)
    assert n_lora == 23_040  # rank 4 on to_q, to_k, to_v, to_out.0 of the tiny UNet
    assert len(trainable(den)) == len(names)


def test_lora_model_loads_in_plain_diffusers(lora_model: Path, tiny_sd: Path) -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(lora_model / "unet")
    assert not any("lora" in k for k in unet.state_dict())
    assert not (lora_model / "unet_raw").exists()
    info = json.loads((lora_model / "medsynth_model.json").read_text())
    assert info["initialized_from"]["lora"]["rank"] == 4 and info["denoiser"]["raw_folder"] is None
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items() if ".to_" in k}
    pipe.load_lora_weights(lora_model / "lora")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = {k: v for k, v in pipe.unet.state_dict().items() if k in base}
    merged = unet.state_dict()
    assert set(fused) == set(base)
    assert any(not torch.equal(base[k], fused[k]) for k in base)  # the LoRA changed them ...
    for k in base:  # ... exactly as medsynth's merged unet/ holds them
        torch.testing.assert_close(fused[k], merged[k], rtol=1e-5, atol=1e-6, msg=k)
    ck = sorted((lora_model / "checkpoints").glob("step-*"))[-1]
    weights = load_file(str(ck / "model.safetensors"))
    assert weights and all("lora_" in k or "class_embedding" in k for k in weights)


def test_lora_resume_after_init_is_exact(tiny_sd: Path, gray16: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from medsynth.train.loop import train

    cfg = run_cfg(init=str(tiny_sd), adapter="lora", lora_rank=4, max_steps=3)
    whole = train(gray16, tmp_path / "whole", cfg=cfg, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(gray16, tmp_path / "cut", cfg=cfg, progress=False, interrupt_after=2)
    cut = train(gray16, tmp_path / "cut", cfg=cfg, progress=False, resume=True)
    a = load_file(str(whole / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(cut / "unet" / "diffusion_pytorch_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_hub_id_from_the_local_cache(tiny_sd: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    from tests.prior.components import place_in_hub_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    place_in_hub_cache(tiny_sd, tmp_path / "hub", "medsynth-test/tiny-sd", sha="a" * 40)
    src = resolve_init("medsynth-test/tiny-sd")
    assert src.kind == "diffusers" and src.revision == "a" * 40
    assert src.sha256 == resolve_init(str(tiny_sd)).sha256
    with pytest.raises(MedsynthError, match="not in the local Hugging Face cache"):
        resolve_init("medsynth-test/not-there")


def test_clip_text_cut_at_77_is_warned_and_recorded(tiny_sd: Path, gray16: Path,
                                                     tmp_path: Path) -> None:
    from medsynth.artifacts import input_ref, now_iso, read_manifest, write_manifest
    from medsynth.imaging.dataset import open_dataset
    from medsynth.store import DescriptionRecord, record_writer
    from medsynth.train.loop import train

    ds, store = open_dataset(gray16), tmp_path / "store"
    for cls, grp in ds.table.groupby("class"):
        with record_writer(store, str(cls)) as w:
            for i, (_, r) in enumerate(grp.iterrows()):
                w.write(DescriptionRecord(
                    image_id=str(r["image_id"]), path=str(r["path"]), cls=str(cls),
                    split=str(r["split"]), attributes={}, backend="template", model="none",
                    text=" ".join(["a dark round lesion"] * (2 if i % 2 else 30)),
                    template_version="1", timestamp=now_iso()).to_dict())
    write_manifest(store, "describe", config={}, inputs=[input_ref(gray16, "data")],
                   outputs={"classes": ds.classes})
    m = train(gray16, tmp_path / "m", cfg=run_cfg(init=str(tiny_sd), max_steps=1),
              store_path=store, progress=False)
    cut = read_manifest(m).outputs["text_cut"]
    assert cut["max_tokens"] == 77 and cut["texts"] > 0 and cut["longest_tokens"] > 77


def test_own_text_encoder_through_a_learnt_projection(tiny_sd: Path, gray16: Path,
                                                      tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    from medsynth.models.info import load_model_info
    from medsynth.train.loop import train

    m = train(gray16, tmp_path / "m", cfg=run_cfg(init=str(tiny_sd), init_text="own",
                                                   max_steps=1), progress=False)
    info = load_model_info(m)
    assert info.text_encoder.kind == "encoder" and info.text_encoder.hidden_size == 384
    assert info.initialized_from.text == "own" and info.format == 3
    unet = UNet2DConditionModel.from_pretrained(m / "unet")
    assert unet.config.encoder_hid_dim == 384 and unet.config.cross_attention_dim == 32
