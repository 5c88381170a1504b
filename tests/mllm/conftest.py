"""Fixtures for the engine tests: the scripted OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scripted_openai import Scripted, serve


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    with serve() as state:
        yield state
