"""The description store written by ``describe`` and read by ``train``, ``generate`` and ``evaluate``.

Layout: ``STORE/<class>/descriptions.jsonl`` (one record per image, appended and flushed per
record), ``STORE/<class>/summary.json`` (attribute frequencies) and ``STORE/medsynth.json``.
Class folder names are :func:`class_dirname` of the class; the record holds the real name.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from medsynth.artifacts import JsonlAppender, Manifest, read_jsonl, read_manifest
from medsynth.errors import MedsynthError

RECORDS_NAME = "descriptions.jsonl"
SUMMARY_NAME = "summary.json"


def class_dirname(cls: str) -> str:
    """Folder name for a class: safe characters only, never a path separator or '..'."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(cls)).strip("._")
    return s or "class"


@dataclasses.dataclass
class DescriptionRecord:
    image_id: str
    path: str
    cls: str
    split: str
    attributes: dict[str, Any]
    text: str
    backend: str
    model: str
    template_version: str
    timestamp: str
    status: str = "ok"
    raw: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["class"] = d.pop("cls")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DescriptionRecord:
        d = dict(d)
        d["cls"] = d.pop("class")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def summarize_records(records: list[DescriptionRecord]) -> dict[str, Any]:
    """Per-attribute value frequencies of the 'ok' records (lists count each element)."""
    freq: dict[str, Counter[str]] = defaultdict(Counter)
    ok = [r for r in records if r.status == "ok"]
    for r in ok:
        for k, v in r.attributes.items():
            for item in v if isinstance(v, list) else [v]:
                freq[k][str(item)] += 1
    return {"n_ok": len(ok), "n_failed": len(records) - len(ok),
            "attributes": {k: dict(c.most_common()) for k, c in sorted(freq.items())}}


class Store:
    """Read access to a description store, grouped per class."""

    def __init__(self, root: Path, manifest: Manifest, records: dict[str, list[DescriptionRecord]]):
        self.root = root
        self.manifest = manifest
        self.by_class = records

    @property
    def classes(self) -> list[str]:
        return sorted(self.by_class)

    @property
    def sha256(self) -> str:
        return str(self.manifest.sha256)

    def records(self, cls: str | None = None, *, status: str | None = "ok",
                backend: str | None = None,
                splits: list[str] | None = None) -> list[DescriptionRecord]:
        if cls is not None and cls not in self.by_class:
            raise MedsynthError(f"{self.root}: no descriptions for class {cls!r}",
                                hint=f"classes in the store: {', '.join(self.classes)}")
        pool = self.by_class[cls] if cls is not None else [r for v in self.by_class.values() for r in v]
        return [r for r in pool if (status is None or r.status == status)
                and (backend is None or r.backend == backend)
                and (splits is None or r.split in splits)]

    def by_image(self, backend: str | None = None) -> dict[str, DescriptionRecord]:
        """image_id -> the latest 'ok' record (of ``backend`` when given)."""
        out: dict[str, DescriptionRecord] = {}
        for r in self.records(status="ok", backend=backend):
            out[r.image_id] = r
        return out

    def sample(self, cls: str, rng: random.Random, backend: str | None = None,
               splits: list[str] | None = None) -> DescriptionRecord:
        """A random 'ok' description of ``cls``; ``splits`` keeps held-out images' texts out.

        Each image counts once, with its latest description (as in :meth:`by_image`, what
        training used): an image re-described with another template or backend is not
        drawn twice as often as the others. The pool is in image order, not the journal's: a
        describe run with worker processes appends records as they finish, and the same seed
        must draw the same description from the same store whatever that order was.
        """
        latest = {r.image_id: r for r in self.records(cls, backend=backend, splits=splits)}
        pool = [latest[k] for k in sorted(latest)]
        if not pool:
            where = f" in splits {splits}" if splits else ""
            raise MedsynthError(f"{self.root}: class {cls!r} has no successful descriptions{where}")
        return pool[rng.randrange(len(pool))]


def open_store(path: str | Path) -> Store:
    root = Path(path)
    manifest = read_manifest(root, "describe")
    records: dict[str, list[DescriptionRecord]] = {}
    for f in sorted(root.glob(f"*/{RECORDS_NAME}")):
        for d in read_jsonl(f):
            try:
                rec = DescriptionRecord.from_dict(d)
            except (KeyError, TypeError) as e:
                raise MedsynthError(f"{f}: malformed description record ({e})") from e
            records.setdefault(rec.cls, []).append(rec)
    return Store(root, manifest, records)


def record_writer(root: str | Path, cls: str, *, sync_interval: float = 0.0) -> JsonlAppender:
    """Appender for one class's records (the writer side, used by ``describe``).

    Every record is written and flushed before the next (a killed process loses nothing);
    ``sync_interval`` > 0 fsyncs at most that often and on close, so fast writers (thousands
    of records a minute) are not bound by the disk's sync latency (only a power cut could lose
    the last seconds); 0 fsyncs every record.
    """
    return JsonlAppender(Path(root) / class_dirname(cls) / RECORDS_NAME, sync_interval)
