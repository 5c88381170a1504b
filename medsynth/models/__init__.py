"""The trained model bundle and its parts: denoiser factory, text encoder, prototypes, intensities.

Shared by ``train`` (writes a bundle), ``generate`` and ``evaluate`` (read it with
:func:`medsynth.models.bundle.load_bundle`). Heavy imports happen inside functions.
"""
