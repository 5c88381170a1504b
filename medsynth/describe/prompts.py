"""Chain-of-thought prompt templates: loading, the conversation sent to a model, the text filler.

A template is a YAML file (the built-in ones live in ``medsynth/describe/templates``; the format
is documented in ``docs/describe.md``). Its ``version`` plus a hash of the file's content form the
``template_version`` recorded with every description, so any edit to a template is visible in
the store.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.describe.schema import UNSURE, Schema, schema_from_dict
from medsynth.errors import MedsynthError
from medsynth.mllm.request import Request
from medsynth.mllm.templates import content_version, fill

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
BUILTIN = ("derm", "cxr", "colon", "mri", "prostate", "ct")
REQUIRED_KEYS = ("name", "version", "system", "steps", "attributes", "answer")
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MODALITY_CODES = {"XC": "derm", "DX": "cxr", "CR": "cxr", "MR": "mri", "ES": "colon", "SM": "colon",
                  "GM": "colon", "CT": "ct"}
"""DICOM modality code of a dataset -> built-in template (for ``--modality auto``)."""


@dataclasses.dataclass
class Template:
    """A parsed chain-of-thought template."""

    name: str
    version: str
    modality: str
    system: str
    context: str
    steps: list[str]
    answer: str
    schema: Schema
    text: dict[str, Any]
    digest: str
    source: str

    @property
    def full_version(self) -> str:
        """``name@version+hash``: recorded with every description."""
        return f"{self.name}@{self.version}+{self.digest[:8]}"

    def conversation(self, image: np.ndarray, label: str | None, **context: Any) -> Request:
        """The first turn for one image: steps, vocabulary, label context and answer format.

        The request carries the answer's JSON schema (sent as ``response_format`` where a server
        accepts it); ``context`` fills the placeholders ({fov_mm}, ...).
        """
        values = {"label": label or "unknown", "fov_mm": "unknown", **context}
        parts = []
        if label and self.context:
            parts.append(fill(self.context, values))
        parts += [fill(s, values) for s in self.steps]
        parts.append(self.answer.replace("{schema}", self.schema.json_skeleton()))
        return Request(system=fill(self.system, values), user="\n".join(parts), images=[image],
                       schema=self.schema.json_schema(), schema_name=f"{self.name}_description")

    def render_text(self, attrs: dict[str, Any]) -> str:
        """Fill the template's text sentence from structured attributes (same wording for all
        backends). ``none_visible`` (``attributes``, ``text``): when every one of those
        attributes is ``not_visible``, the text is that sentence instead (e.g. "No whole lesion
        found in the image.")."""
        spec = self.text or {}
        absent = spec.get("none_visible") or {}
        names = absent.get("attributes") or []
        if names and all(attrs.get(n) == UNSURE[0] for n in names):
            return str(absent.get("text", "Nothing to describe."))
        tmpl = spec.get("template") or " ".join(f"{{{n}}}" for n in self.schema.names)
        phrases = spec.get("phrases") or {}
        labels = spec.get("labels") or {}
        blank: set[str] = set()
        for key, hide in (spec.get("when_none") or {}).items():
            if attrs.get(key) in ("none", *UNSURE, None):
                blank |= set(hide)
        out = {}
        for name in {f for _, f, _, _ in string.Formatter().parse(tmpl) if f}:
            out[name] = "" if name in blank else _phrase(name, attrs.get(name), phrases.get(name), labels)
        text = tmpl.format(**out)
        text = " ".join(text.split()).replace(" ,", ",").replace(" .", ".").replace(" ;", ";")
        return text[:1].upper() + text[1:]


def _item(v: Any, labels: dict[str, str]) -> str:
    return str(labels.get(v, str(v).replace("_", " ")))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _phrase(name: str, value: Any, rule: Any, labels: dict[str, str]) -> str:
    """Render one attribute value with its phrase rule (format string or mapping)."""
    pretty = name.replace("_", " ")
    if value is None:
        return ""
    if isinstance(value, list):
        rule = rule if isinstance(rule, dict) else {}
        items = [_item(v, labels) for v in value]
        if not items:
            return str(rule.get("empty", f"no {pretty}"))
        key = "one" if len(items) == 1 else "list"
        fmt = rule.get(key, "{items}")
        count = NUMBER_WORDS[len(items)] if len(items) < len(NUMBER_WORDS) else str(len(items))
        return str(fmt).format(items=_join(items), count=count, n=len(items))
    if isinstance(value, str) and value in UNSURE:
        if isinstance(rule, dict) and value in rule:
            return str(rule[value])
        if isinstance(rule, dict) and "unsure" in rule:
            return str(rule["unsure"])
        return f"{pretty} {value.replace('_', ' ')}"
    if isinstance(rule, dict) and "format" in rule:
        rule = rule["format"]
    if isinstance(rule, dict):
        if value in rule:
            return str(rule[value])
        return _item(value, labels)
    if isinstance(rule, str):
        try:
            return rule.format(value=value)
        except (ValueError, TypeError):
            return rule.format(value=str(value))
    return _item(value, labels)


def load_template(name_or_path: str | Path) -> Template:
    """Load a built-in template by name (``derm``, ``cxr``, ``colon``, ``mri``, ``prostate``, ``ct``)
    or a YAML file."""
    import yaml

    p = Path(name_or_path)
    if str(name_or_path) in BUILTIN:
        p = TEMPLATE_DIR / f"{name_or_path}.yaml"
    elif not p.is_file():
        raise MedsynthError(f"{name_or_path}: no such template file",
                            hint=f"built-in templates: {', '.join(BUILTIN)}")
    raw = p.read_bytes()
    try:
        d = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise MedsynthError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(d, dict):
        raise MedsynthError(f"{p}: a template must be a YAML mapping")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise MedsynthError(f"{p}: template is missing keys {missing}",
                            hint="see docs/describe.md, 'Template files'")
    if not isinstance(d["steps"], list) or not d["steps"]:
        raise MedsynthError(f"{p}: 'steps' must be a non-empty list of questions")
    if "{schema}" not in str(d["answer"]):
        raise MedsynthError(f"{p}: 'answer' must contain the placeholder {{schema}}")
    return Template(
        name=str(d["name"]), version=str(d["version"]), modality=str(d.get("modality", d["name"])),
        system=str(d["system"]), context=str(d.get("context", "")),
        steps=[str(s) for s in d["steps"]], answer=str(d["answer"]),
        schema=schema_from_dict(d["attributes"], str(p)), text=d.get("text") or {},
        digest=content_version(str(d["name"]), str(d["version"]), raw)[0], source=str(p),
    )


PROSTATE_CLASSES = re.compile(r"prostat|pi-?rads|lesion|csp?ca|gleason|isup", re.IGNORECASE)
"""Class names that tell an MR volume set is a prostate one (``--modality auto``)."""


def template_for_modality(modality: str, dataset_modality: str | None = None,
                          spatial_dims: int = 2, classes: Sequence[str] | None = None) -> str:
    """Resolve ``--modality`` (``auto`` uses the dataset's DICOM modality code; MR volumes get
    the prostate volume template when a class name says prostate (pirads, lesion, ...), MR
    slices the ``mri`` one; CT volumes and slices ``ct``). Other MR volumes are refused: the
    prostate measurer would find a gland in a brain."""
    if modality != "auto":
        return modality
    code = (dataset_modality or "").upper()
    if code == "MR" and spatial_dims == 3:
        if classes is None or any(PROSTATE_CLASSES.search(str(c)) for c in classes):
            return "prostate"
        raise MedsynthError(
            f"MR volumes of classes {', '.join(map(str, classes))}: the only built-in MR volume "
            "template is for the prostate, and no class name says prostate",
            hint="pass --template FILE (format in docs/describe.md), or --modality prostate "
                 "if these are prostate volumes")
    if code in MODALITY_CODES:
        return MODALITY_CODES[code]
    raise MedsynthError(f"cannot tell the modality from the dataset's modality code {code or '?'!r}",
                        hint=f"pass --modality {'|'.join(BUILTIN)} or --template FILE")
