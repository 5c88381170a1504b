"""Which images a run makes: class, description and seed of every sample, decided up front.

Randomness is sampled first and recorded, then applied deterministically (torchio style): the
plan is a pure function of the config, the model's classes and the store, so a resumed or
sharded run makes exactly the same samples, and any single sample can be regenerated alone.

Descriptions (the image's "report"):
- default: a random stored description of the class (VAP-Diffusion retrieval), drawn with the
  image's own seed, so it does not depend on which other images are made;
- ``--prompt TEXT``: one explicit description for every image;
- ``--prompts-csv FILE``: rows of ``class, prompt, n`` (an empty prompt = retrieval);
- no store and no prompt: class-only conditioning (the null text).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import random
from pathlib import Path
from typing import Any

from medsynth.choices import comma_list
from medsynth.errors import MedsynthError
from medsynth.store import Store, class_dirname


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """One image to generate."""

    sample_id: str
    """Unique id, also the file stem in every format: ``<class folder>-<index:06d>``."""
    cls: str
    """Class name (as in the model)."""
    class_id: int
    """Class index in the model."""
    index: int
    """Index of the sample inside its class (0-based)."""
    seed: int
    """The image's own seed (initial noise, stochastic sampler steps, description retrieval)."""
    description: str
    """The text the image is conditioned on ("" = null text, class-only)."""
    source: str
    """Where the description came from: ``store:<image_id>``, ``prompt`` or ``none``."""
    init_id: str = ""
    """Image-to-image: id of the source image the sample starts from ("" = from noise)."""
    init_class: str = ""
    """Class of that source image ("" when unlabelled or from noise)."""
    twin_of: str = ""
    """Twin: id of the real image this sample stands for ("" otherwise)."""
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The stored description's attributes (empty for prompts and class-only): what the
    report writer may state."""


@dataclasses.dataclass(frozen=True)
class Request:
    """``n`` images of ``cls``, with a fixed ``prompt`` or (None) retrieved descriptions."""

    cls: str
    n: int
    prompt: str | None = None


def class_folders(classes: list[str]) -> dict[str, str]:
    """Safe, distinct folder names for class names (never a separator, '..' or a clash)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for i, c in enumerate(classes):
        name = class_dirname(c)
        if name.lower() in used:  # e.g. "a b" and "a_b", or names differing only in case
            name = f"{name}-{i}"
        used.add(name.lower())
        out[c] = name
    return out


def image_seed(base_seed: int, cls: str, index: int) -> int:
    """The seed of image ``index`` of class ``cls``: stable whatever else the run makes."""
    h = hashlib.sha256(f"medsynth:{base_seed}:{cls}:{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def check_class(name: str, classes: list[str], where: str = "--class") -> str:
    """``name`` if the model knows it, else a clear error listing the valid classes."""
    if name in classes:
        return name
    folded = {c.lower(): c for c in classes}
    if name.lower() in folded:
        return folded[name.lower()]
    raise MedsynthError(f"{where}: the model has no class {name!r}",
                        hint=f"valid classes: {', '.join(repr(c) for c in classes)}, or '*' for all")


def requests_from_options(classes: list[str], model_classes: list[str], n: int,
                          prompt: str | None) -> list[Request]:
    """``--class`` (repeatable, comma-separated, ``*`` or ``all``) and ``--n`` per class into requests.

    A model class name always means that class: a class named ``all`` is selected on its own;
    ``*`` means every class (and so does ``all`` when no class is named so).
    """
    names: list[str] = []
    has_all = any(c.lower() == "all" for c in model_classes)
    for c in classes:
        for part in [c.strip()] if c in model_classes else comma_list(c):
            if part == "*" or (part.lower() == "all" and not has_all):
                names.extend(model_classes)
            else:
                names.append(check_class(part, model_classes))
    seen: list[str] = []
    for c in names:
        if c not in seen:
            seen.append(c)
    return [Request(c, n, prompt) for c in seen]


def requests_from_csv(path: str | Path, model_classes: list[str]) -> list[Request]:
    """Rows ``class, prompt, n`` of a CSV file (header required) into requests."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise MedsynthError(f"{path}: cannot read the prompts CSV ({e})") from e
    if not rows:
        raise MedsynthError(f"{path}: no rows (expected a header 'class,prompt,n' and rows)")
    missing = {"class", "n"} - set(rows[0])
    if missing:
        raise MedsynthError(f"{path}: missing column(s) {sorted(missing)}; expected class,prompt,n")
    out: list[Request] = []
    for i, row in enumerate(rows, start=2):
        cls = check_class(str(row["class"]).strip(), model_classes, where=f"{path}:{i}")
        try:
            n = int(str(row["n"]).strip())
        except ValueError:
            raise MedsynthError(f"{path}:{i}: n must be an integer, got {row['n']!r}") from None
        if n < 1:
            raise MedsynthError(f"{path}:{i}: n must be at least 1, got {n}")
        prompt = (row.get("prompt") or "").strip() or None
        out.append(Request(cls, n, prompt))
    return out


def plan_samples(requests: list[Request], model_classes: list[str], *, base_seed: int,
                 store: Store | None, splits: list[str] | None = None) -> list[SampleSpec]:
    """Every sample of the run, in a fixed order, with its id, seed and description.

    ``splits``: draw stored descriptions only from images of these dataset splits (the model's
    training splits), so no synthetic image is conditioned on a held-out test image's text.
    """
    folders = class_folders(model_classes)
    counters: dict[str, int] = {}
    specs: list[SampleSpec] = []
    for req in requests:
        if req.prompt is None and store is not None:
            store.records(req.cls)  # raises a clear error if the store lacks the class
        for _ in range(req.n):
            k = counters.get(req.cls, 0)
            counters[req.cls] = k + 1
            seed = image_seed(base_seed, req.cls, k)
            attrs: dict[str, Any] = {}
            if req.prompt is not None:
                text, source = req.prompt, "prompt"
            elif store is not None:
                rec = store.sample(req.cls, random.Random(seed), splits=splits)
                text, source, attrs = rec.text, f"store:{rec.image_id}", dict(rec.attributes)
            else:
                text, source = "", "none"
            specs.append(SampleSpec(
                sample_id=f"{folders[req.cls]}-{k:06d}", cls=req.cls,
                class_id=model_classes.index(req.cls), index=k, seed=seed,
                description=text, source=source, attributes=attrs,
            ))
    return specs


def plan_digest(specs: list[SampleSpec]) -> str:
    """sha256 of what the plan makes (ids, classes, seeds, descriptions, source images): resume
    must match it."""
    h = hashlib.sha256()
    for s in specs:
        h.update(f"{s.sample_id}\x00{s.cls}\x00{s.seed}\x00{s.description}".encode())
        if s.init_id or s.twin_of:  # text-to-image plans keep the digest they always had
            h.update(f"\x00{s.init_id}\x00{s.init_class}\x00{s.twin_of}".encode())
        h.update(b"\x01")
    return h.hexdigest()


def shard(specs: list[SampleSpec], index: int, count: int) -> list[SampleSpec]:
    """The disjoint share of process ``index`` of ``count`` (round-robin over the plan)."""
    return specs[index::count]
