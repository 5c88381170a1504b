"""The model card (MODEL/README.md): data, recipe, conditioning, results, sample grid; its
metadata (library, tags, licence and base model of a prior) through :mod:`medsynth.models.card`."""

from __future__ import annotations

from typing import Any

from medsynth import __version__
from medsynth.models.card import card_text


def model_card(dataset: Any, store: Any, data: Any, cfg: Any, info: Any,
               outputs: dict[str, Any]) -> str:
    """Markdown model card for a trained model folder (``info``: its ModelInfo record)."""
    counts = {c: int((data.labels == i).sum()) for i, c in enumerate(data.classes)}
    rows = "\n".join(f"| {c} | {n} |" for c, n in counts.items())
    recipe = "\n".join(f"  {k}: {v}" for k, v in cfg.to_dict().items())
    store_line = (f"`{store.root}` (sha256 `{store.sha256[:12]}`), {data.n_described} of "
                  f"{len(data)} training images described" if store is not None
                  else "none: class-only conditioning (text = null)")
    shape = "x".join(str(s) for s in info.shape)
    if info.denoiser.kind == "diffusers":
        net = "diffusers `UNet2DConditionModel`"
        load = f"""from diffusers import UNet2DConditionModel, DDPMScheduler
unet = UNet2DConditionModel.from_pretrained("MODEL/{info.denoiser.folder}")        # EMA weights
scheduler = DDPMScheduler.from_pretrained("MODEL/{info.noise_schedule.folder}")
# or, with class map, text encoder, prototypes and intensity mapping:
"""
    else:
        net = f"MONAI `DiffusionModelUNet` (spatial_dims {info.spatial_dims})"
        load = ""
    space = "pixel-space"
    latent = ""
    if info.autoencoder is not None:
        ae = info.autoencoder
        space = "latent"
        m = (outputs.get("latent") or {}).get("autoencoder", {})
        quality = (f"reconstruction PSNR {m['psnr_db']:.2f} dB, SSIM {m['ssim']:.3f} on "
                   f"{m.get('n_images')} image(s) of the {m.get('split')} split"
                   if "psnr_db" in m else "reconstruction quality: see its own folder")
        latent = f"""
## Autoencoder (latent diffusion)
- MONAI `AutoencoderKL` in `{ae.folder}/`; latents {ae.latent_channels} x {'x'.join(map(str, ae.latent_shape))}
- scaling factor {ae.scaling_factor:.5g} (1 / std of the training latents; scaled std {ae.latent_std})
- {quality}
- {'reused from ' + str(cfg.autoencoder) if cfg.autoencoder else f'trained here: {cfg.ae_max_steps} steps'}
"""
    ccella = ""
    if info.conditioning.class_input == "probabilities":
        ccella = (f"\n- CCELLA mode: the class input is softmax(text head / "
                  f"{info.conditioning.temperature}) predicted from the description (one-hot "
                  f"where there is none); + {cfg.ccella_loss_weight} x {cfg.ccella_loss} class loss")
    schedule = ("rectified flow (sampler rflow)" if info.noise_schedule.kind == "rflow"
                else f"DDPM, {info.prediction_type}")
    prior = info.initialized_from
    body = f"""# medsynth model: {', '.join(data.classes)}

Class- and text-conditioned {space} diffusion model ({net}; {schedule}) trained by `medsynth train`
(medsynth {__version__}). **Synthetic-data research model, not for diagnosis.**

## Data
- dataset: `{dataset.root}` (manifest sha256 `{dataset.sha256[:12]}`), modality {data.modality},
  {data.channels} channel(s), {data.dtype}, trained at {shape} px
- splits used for training: {', '.join(cfg.splits)} (never the test split unless listed here)
- descriptions: {store_line}
- augmentation: horizontal flip {'on' if data.hflip else 'off'}, vertical flip {'on' if data.vflip else 'off'}

| class | training images |
| --- | --- |
{rows}

## Conditioning (CCELLA dual head + VAP-Diffusion prototypes)
- class id -> class embedding added to the timestep embedding; id {len(data.classes)} = null class
- description -> token features of `{info.text_encoder.name}` ({info.text_encoder.hidden_size}-d)
  -> cross-attention; "" = null text
- classifier-free guidance dropout: class {cfg.p_drop_class}, text {cfg.p_drop_text} (independent)
- joint loss: denoising MSE + {cfg.class_loss_weight} x class cross-entropy (head on mid-block features)
- Prototype Condition Mechanism: {cfg.prototypes_per_class} prototypes per class, strength {cfg.prototype_strength},
  temperature {cfg.prototype_temperature}{ccella}
{latent}
## Training
- steps {outputs['steps']}, batch {cfg.batch_size} x accumulation {cfg.grad_accum} x {outputs['processes']} process(es),
  lr {cfg.lr} ({cfg.lr_schedule}, warm-up {cfg.warmup_steps}), EMA decay {cfg.ema_decay}
- device {outputs['device']}, mixed precision {outputs['mixed_precision']}
- training time {outputs['train_time_s']} s (all resumed parts), {outputs['images_per_s']} images/s, final loss {outputs['final_loss']}

## Samples
![samples]({outputs['files']['sample_grid']})

## Load
```python
{load}from medsynth.models.bundle import load_bundle
bundle = load_bundle("MODEL")
```

## Recipe
```yaml
{recipe}
```
"""
    return card_text(body, library="diffusers" if info.denoiser.kind == "diffusers" else "monai",
                     licence=prior.licence if prior is not None else None,
                     base_model=prior.source if prior is not None else None)
