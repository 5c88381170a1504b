"""One torch thread: the tiny models here gain nothing from more, and the CI box is shared."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
