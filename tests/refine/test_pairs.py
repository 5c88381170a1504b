"""MAGIC's pair rules: same conditioning only, higher score wins, ties and both-bad pairs give
no signal, invalid images score 0."""

from __future__ import annotations

import pandas as pd

from medsynth.refine.pairs import PairRules, build_pairs, compare


def table(rows: list[tuple[str, str, str, float, bool]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["sample_id", "class", "description", "score",
                                       "image_valid"])


def test_compare_rules() -> None:
    r = PairRules(bad_score=0.4)
    assert compare(0.8, 0.6, r) == 1 and compare(0.6, 0.8, r) == -1
    assert compare(0.4, 0.2, r) == 0          # both bad (<= 0.4: 2 of 5 criteria)
    assert compare(0.6, 0.6, r) == 0          # tie
    assert compare(1.0, 1.0, r) == 0          # MAGIC "both win": no preference
    assert compare(0.6, 0.0, r) == 1          # one bad, one good: the good one wins
    assert compare(0.7, 0.6, PairRules(bad_score=0.4, tie_margin=0.1)) == 0
    assert compare(0.6 + 1e-12, 0.6, r) == 0  # float noise is a tie


def test_pairs_only_within_class_and_description() -> None:
    t = table([
        ("a0", "mel", "dark", 1.0, True), ("a1", "mel", "dark", 0.6, True),
        ("a2", "mel", "dark", 0.6, True),                       # tie with a1
        ("b0", "mel", "light", 0.2, True), ("b1", "mel", "light", 0.0, True),  # both bad
        ("c0", "nev", "dark", 0.8, True),                       # alone: no pair
        ("d0", "nev", "", 0.9, True), ("d1", "nev", "", 0.5, False),  # invalid scores 0
    ])
    pairs, stats = build_pairs(t, PairRules(bad_score=0.4))
    got = {(p.winner, p.loser) for p in pairs}
    assert got == {("a0", "a1"), ("a0", "a2"), ("d0", "d1")}
    # never across descriptions or classes (c0 would beat b0 on score alone)
    assert all(p.description in ("dark", "") for p in pairs)
    assert stats.groups == 3 and stats.candidates == 5
    assert stats.ties == 1 and stats.both_bad == 1 and stats.informative == 3 and stats.kept == 3
    assert stats.per_class == {"mel": 2, "nev": 1}
    d = next(p for p in pairs if p.winner == "d0")
    assert d.score_l == 0.0  # the invalid image's 0.5 counts as 0


def test_extremes_and_cap() -> None:
    t = table([(f"s{i}", "mel", "x", s, True) for i, s in enumerate([0.5, 1.0, 0.0, 0.75])])
    pairs, stats = build_pairs(t, PairRules(pairing="extremes"))
    assert [(p.winner, p.loser) for p in pairs] == [("s1", "s2")] and stats.candidates == 1
    allp, _ = build_pairs(t, PairRules())
    assert len(allp) == 6  # s0 (0.5) vs s2 (0.0) counts: one of them is above bad_score
    capped, s2 = build_pairs(t, PairRules(max_pairs=2, seed=3))
    assert len(capped) == 2 and s2.informative == 6 and s2.kept == 2
    assert set(capped) <= set(allp)
    again, _ = build_pairs(t, PairRules(max_pairs=2, seed=3))
    assert again == capped  # seeded


def test_no_pairs() -> None:
    t = table([("a", "mel", "x", 0.5, True), ("b", "mel", "x", 0.5, True),
               ("c", "mel", "y", 0.1, True), ("d", "mel", "y", 0.3, True)])
    pairs, stats = build_pairs(t, PairRules())
    assert pairs == [] and stats.ties == 1 and stats.both_bad == 1
    assert "0 informative" in stats.summary()
