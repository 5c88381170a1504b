"""Sentences, clauses and negation of free report text, for the parsers (a small NegEx).

A finding stated in a report text is read only inside its own sentence and clause, and only
when nothing in that scope negates or hedges it: "No focal consolidation" is no consolidation,
"A pacemaker is seen in the left chest wall" says nothing about a lung opacity, "right heart
border" is not the side of anything in the lungs. The cues follow NegEx (Chapman et al. 2001):
pre-negations ("no", "without", "negative for", "free of", ...) reach forward to the end of the
sentence or to a termination term ("but", "however", ...); post-negations ("resolved", "is not
seen") reach back to the start of the clause; pseudo-negations ("no change in") negate nothing;
hedges ("possible", "cannot be excluded", "versus") leave a finding unread either way.
"""

from __future__ import annotations

import dataclasses
import re

_SENTENCE = re.compile(r"[.!?](?!\d)|;|\n|\u2028|\u2029|\u0085")
# termination terms: a negation or hedge does not reach past them
_TERMINATE = re.compile(r",?\s*\b(?:but|however|although|though|whereas|while|except(?: for)?|"
                        r"aside from|apart from|other than|which|with the exception of|"
                        r"otherwise|yet)\b|\s+-{1,2}\s+|:")
_PSEUDO = re.compile(r"\b(?:no (?:significant |interval |appreciable )?(?:change|increase|"
                     r"decrease|worsening|improvement)|not (?:only|significantly changed|"
                     r"changed)|without (?:significant |interval )?change|no longer "
                     r"(?:require|need)s?)\b")
_PRE_NEG = re.compile(r"\b(?:no|not|never|without|nor|negative for|free of|clear of|absence of|"
                      r"absent|resolution of|resolved|cleared|denies|ruled out)\b")
_POST_NEG = re.compile(r"\b(?:(?:is|are|was|were|has|have|been)\s+)*(?:not (?:seen|identified|"
                       r"present|visible|demonstrated|appreciated|evident|noted)|absent|"
                       r"resolved|cleared|gone|no longer (?:seen|present|visible|evident))\b")
_HEDGE = re.compile(r"\b(?:possible|possibly|probable|probably|questionable|suspect\w*|"
                    r"suspicious|concerning|may|might|could|cannot (?:be )?(?:excluded|exclude|"
                    r"ruled out)|not (?:be )?excluded|versus|vs|differential|rule out|r/o|"
                    r"evaluate for|assess for|query|likely|equivocal|borderline|resolving|"
                    r"indeterminate|cannot (?:be )?assess\w*|upper (?:limits? of )?normal)\b")


@dataclasses.dataclass
class Mention:
    """One finding term found in a text, with its scope and whether it is asserted."""

    term: str
    """The matched words."""
    sentence: str
    """The sentence it stands in (lower case)."""
    clause: str
    """Its clause: the sentence cut at commas and termination terms outside parentheses, with a
    bare location fragment ("..., right base") joined to the clause before it."""
    status: str
    """``positive``, ``negated`` or ``uncertain``."""


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (decimal points are not sentence ends), lower case."""
    return [s.strip() for s in _SENTENCE.split(str(text or "").lower()) if s.strip()]


_CLAUSE = re.compile(r",|\s+\b(?:but|however|although|though|whereas|while|which|with the "
                     r"exception of|aside from|apart from|otherwise)\b")


def clause_spans(sentence: str, fragment: re.Pattern[str] | None = None
                 ) -> list[tuple[int, int]]:
    """``(start, end)`` of each clause of one sentence: cut at commas and termination terms
    outside parentheses; a clause that is only a location (``fragment`` matches it whole, as
    in "patchy opacity, right base") belongs to the clause before it."""
    depth, cuts = 0, []
    marks = {m.start(): m.end() for m in _CLAUSE.finditer(sentence)}
    for i, c in enumerate(sentence):
        depth += (c in "([") - (c in ")]" and depth > 0)
        if depth == 0 and i in marks:
            cuts.append((i, marks[i]))
    spans, start = [], 0
    for a, b in cuts:
        spans.append((start, a))
        start = b
    spans.append((start, len(sentence)))
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if not sentence[a:b].strip(" ,"):
            continue
        if out and fragment is not None and fragment.fullmatch(sentence[a:b].strip(" ,")):
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def status_of(sentence: str, span: tuple[int, int], start: int, end: int) -> str:
    """Whether the term at ``sentence[start:end]`` (inside the clause ``span``) is asserted:
    ``positive``, ``negated`` or ``uncertain``."""
    before = sentence[:start]
    # a pre-negation or hedge reaches forward to the term unless a termination term intervenes
    cut = max([m.end() for m in _TERMINATE.finditer(before)] or [0])
    window = _PSEUDO.sub(" ", before[cut:])
    after = re.split(_TERMINATE, sentence[end:max(end, span[1])])[0]
    if _PRE_NEG.search(window):
        return "negated"
    if _HEDGE.search(window) or _HEDGE.search(after):
        return "uncertain"
    if _POST_NEG.search(_PSEUDO.sub(" ", after)):
        return "negated"
    return "positive"


def mentions(text: str, term: re.Pattern[str],
             fragment: re.Pattern[str] | None = None) -> list[Mention]:
    """Every match of ``term`` in ``text`` with its sentence, clause and status."""
    out = []
    for s in sentences(text):
        spans = clause_spans(s, fragment)
        for m in term.finditer(s):
            span = next((sp for sp in spans if sp[0] <= m.start() < sp[1]), (0, len(s)))
            out.append(Mention(m.group(0), s, s[span[0]:span[1]].strip(" ,"),
                               status_of(s, span, m.start(), m.end())))
    return out


def positive_text(text: str) -> str:
    """``text`` without its negated and hedged stretches (for a plain word search)."""
    keep = []
    for s in sentences(text):
        parts = re.split(_TERMINATE, s)
        for p in parts:
            p2 = _PSEUDO.sub(" ", p)
            if not (_PRE_NEG.search(p2) or _HEDGE.search(p2) or _POST_NEG.search(p2)):
                keep.append(p)
    return ". ".join(keep)
