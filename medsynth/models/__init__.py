"""Everything shared by the stages that touch a model (docs/architecture.md, "Seams").

``denoiser`` (the one network interface and factory), ``info`` (the typed model-info record),
``bundle`` (write a model folder with ``export_model``, read it with ``load_bundle``),
``sampler`` (the one denoising loop), ``text_encoder``, ``prototypes``, ``intensity``.
Heavy imports happen inside functions (``denoiser`` imports torch: stage code only).
"""
