"""``generate --oversample K``: K candidates per requested image, for the judge to choose from.

Each requested image (class, description, seed) becomes K candidates that share its class and
description and differ only in their seed; candidate 0 keeps the request's own seed, so it is
the very image a run without ``--oversample`` makes. Candidates are numbered on within their
class (request i, candidate j -> index i*K + j), and samples.csv records ``request`` (i) and
``oversample`` (K). ``medsynth judge filter --per-request`` then keeps the best candidate of every
request (exactly ``--n`` per class again, with the requested descriptions), ``--per-class-n N``
the best N of each class.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from medsynth.generate.conditioning import SampleSpec, image_seed


def expand(plan: list[SampleSpec], k: int, base_seed: int) -> list[SampleSpec]:
    """The plan with every sample replaced by its ``k`` candidates (in order)."""
    if k <= 1:
        return plan
    out: list[SampleSpec] = []
    for spec in plan:
        prefix = spec.sample_id.rsplit("-", 1)[0]
        for j in range(k):
            index = spec.index * k + j
            seed = spec.seed if j == 0 else image_seed(base_seed, f"{spec.cls}\x00candidate{j}",
                                                       spec.index)
            out.append(dataclasses.replace(spec, sample_id=f"{prefix}-{index:06d}", index=index,
                                           seed=seed))
    return out


def columns(spec: SampleSpec, k: int) -> dict[str, Any]:
    """The samples.csv columns of one candidate (``request``, ``oversample``)."""
    return {"request": spec.index // max(k, 1), "oversample": max(k, 1)}
