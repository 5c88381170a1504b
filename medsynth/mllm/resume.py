"""Resume keys: which items already have an answer of *this* run.

Two answers about one item are the same work when they come from the same backend, the same
model and the same prompt version (a template's or criteria file's ``name@version+hash``): an
edited prompt is new work, another model's answers are kept beside this one's. A stage stores
the three in every record and, on ``--resume``, skips the items whose records match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class RunKey:
    """backend, model, prompt version."""

    backend: str
    model: str
    version: str

    @classmethod
    def of(cls, record: Mapping[str, Any], version_field: str = "template_version") -> RunKey:
        """The key a stored record (or a manifest's run entry) was made under."""
        return cls(str(record.get("backend")), str(record.get("model")),
                   str(record.get(version_field)))

    def matches(self, record: Mapping[str, Any], version_field: str = "template_version") -> bool:
        return RunKey.of(record, version_field) == self


def finished(records: Iterable[Mapping[str, Any]], key: RunKey, *, id_field: str = "image_id",
             version_field: str = "template_version") -> set[str]:
    """Ids of the items that already have a record (whatever its status) made under ``key``."""
    return {str(r.get(id_field)) for r in records if key.matches(r, version_field)}
