"""Fixtures of the GPU tests: the tiny sets of tests/latent."""

from __future__ import annotations

from tests.latent.conftest import prostate16, rgb16  # noqa: F401  (fixtures)
