"""Preference pairs as MAGIC builds them, from the scores of a judged synthetic set.

Two images form a candidate pair when they share their conditioning: the same class and the
same description (class-only images of one class all share the null text). For each candidate
pair, with scores ``s1, s2`` in [0, 1] (an invalid image scores 0):

* both bad: ``max(s1, s2) <= bad_score`` -> no signal (MAGIC: both at most 2 of 5 criteria);
* tie: ``|s1 - s2| <= tie_margin`` -> no signal (this includes MAGIC's "both win" case of two
  equal high scores);
* otherwise the higher score wins.

``pairing: all`` keeps every informative pair of a group, ``extremes`` only its best image
against its worst one. ``max_pairs`` keeps a seeded random subset.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

_EPS = 1e-9  # scores are shares of weighted criteria: compare them with a little slack


@dataclasses.dataclass(frozen=True)
class PairRules:
    """When two same-conditioning images give a preference (see module doc)."""

    bad_score: float = 0.4
    """Both scores <= this: no signal."""
    tie_margin: float = 0.0
    """Scores this close (or closer) are a tie: no signal."""
    pairing: str = "all"
    """all (every informative pair of a group) or extremes (best against worst)."""
    max_pairs: int = 0
    """Keep at most this many pairs (seeded random subset); 0 = all."""
    seed: int = 0
    """Seed of the subset."""


@dataclasses.dataclass(frozen=True)
class Pair:
    """One preference: ``winner`` beat ``loser`` under the same class and description."""

    winner: str
    """sample_id of the preferred image."""
    loser: str
    """sample_id of the other image."""
    cls: str
    """Class name."""
    description: str
    """The description both were conditioned on ("" = class only)."""
    score_w: float
    score_l: float


@dataclasses.dataclass
class PairStats:
    """How the candidate pairs split (the run's log and manifest report these)."""

    images: int = 0
    groups: int = 0
    """Groups of two or more images with the same class and description."""
    candidates: int = 0
    """Same-conditioning pairs looked at."""
    ties: int = 0
    both_bad: int = 0
    informative: int = 0
    kept: int = 0
    """Informative pairs kept (after ``max_pairs``)."""
    per_class: dict[str, int] = dataclasses.field(default_factory=dict)
    """Kept pairs per class."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (f"{self.images} images in {self.groups} same-conditioning groups: "
                f"{self.candidates} candidate pairs, {self.ties} ties, {self.both_bad} both bad "
                f"(<= bad_score), {self.informative} informative, {self.kept} kept")


def effective_score(score: Any, valid: Any) -> float:
    """The score a pair compares: 0 for an invalid image or a missing score."""
    try:
        s = float(score)
    except (TypeError, ValueError):
        return 0.0
    if not np.isfinite(s) or not _truthy(valid):
        return 0.0
    return s


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes")
    try:
        return bool(v) and not (isinstance(v, float) and np.isnan(v))
    except (TypeError, ValueError):
        return False


def compare(s1: float, s2: float, rules: PairRules) -> int:
    """+1 when the first image wins, -1 when the second does, 0 for no signal."""
    if max(s1, s2) <= rules.bad_score + _EPS:
        return 0
    if abs(s1 - s2) <= rules.tie_margin + _EPS:
        return 0
    return 1 if s1 > s2 else -1


def _outcome(s1: float, s2: float, rules: PairRules) -> str:
    if max(s1, s2) <= rules.bad_score + _EPS:
        return "both_bad"
    if abs(s1 - s2) <= rules.tie_margin + _EPS:
        return "tie"
    return "informative"


def build_pairs(table: pd.DataFrame, rules: PairRules) -> tuple[list[Pair], PairStats]:
    """Pairs from a table with columns ``sample_id, class, description, score, image_valid``.

    Deterministic: groups in (class, description) order, members in sample_id order.
    """
    stats = PairStats(images=len(table))
    pairs: list[Pair] = []
    t = table.copy()
    t["description"] = t["description"].fillna("").astype(str) if "description" in t else ""
    valid = t["image_valid"] if "image_valid" in t else pd.Series(True, index=t.index)
    t["_s"] = [effective_score(s, v) for s, v in zip(t["score"], valid, strict=True)]
    t["sample_id"] = t["sample_id"].astype(str)
    t["class"] = t["class"].astype(str)
    for (cls, desc), grp in sorted(t.groupby(["class", "description"], sort=False),
                                   key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        if len(grp) < 2:
            continue
        stats.groups += 1
        members = sorted(zip(grp["sample_id"], grp["_s"], strict=True))
        if rules.pairing == "extremes":
            # the best image against the worst one (max/min keep the lowest id on ties)
            candidates: Iterable[tuple[Any, Any]] = [(max(members, key=lambda m: m[1]),
                                                      min(members, key=lambda m: m[1]))]
        else:
            candidates = itertools.combinations(members, 2)
        for (id1, s1), (id2, s2) in candidates:
            stats.candidates += 1
            what = _outcome(s1, s2, rules)
            if what == "both_bad":
                stats.both_bad += 1
            elif what == "tie":
                stats.ties += 1
            else:
                stats.informative += 1
                w, lo = ((id1, s1), (id2, s2)) if s1 > s2 else ((id2, s2), (id1, s1))
                pairs.append(Pair(winner=w[0], loser=lo[0], cls=str(cls), description=str(desc),
                                  score_w=float(w[1]), score_l=float(lo[1])))
    if rules.max_pairs and len(pairs) > rules.max_pairs:
        rng = np.random.default_rng(rules.seed)
        keep = np.sort(rng.choice(len(pairs), size=rules.max_pairs, replace=False))
        pairs = [pairs[int(i)] for i in keep]
    stats.kept = len(pairs)
    for p in pairs:
        stats.per_class[p.cls] = stats.per_class.get(p.cls, 0) + 1
    return pairs, stats


def pairs_table(pairs: list[Pair]) -> pd.DataFrame:
    """The pairs as a table (``pairs.csv`` of a round)."""
    cols = ["winner", "loser", "class", "description", "score_w", "score_l"]
    return pd.DataFrame([(p.winner, p.loser, p.cls, p.description, p.score_w, p.score_l)
                         for p in pairs], columns=cols)
