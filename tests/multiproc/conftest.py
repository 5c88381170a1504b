"""Fixtures of the multi-process tests: the tiny latent/3D sets of tests/latent, one thread."""

from __future__ import annotations

from tests.latent.conftest import _one_thread, prostate16, rgb16  # noqa: F401  (fixtures)
