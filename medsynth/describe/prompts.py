"""Chain-of-thought prompt templates: loading, the conversation sent to a model, the text filler.

A template is a YAML file (the built-in ones live in ``medsynth/describe/templates``; the format
is documented in ``docs/describe.md``). Its ``version`` plus a hash of the file's content form the
``template_version`` recorded with every description, so any edit to a template is visible in
the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import string
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.describe.schema import UNSURE, Schema, schema_from_dict
from medsynth.errors import MedsynthError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
BUILTIN = ("derm", "cxr", "colon", "mri")
REQUIRED_KEYS = ("name", "version", "system", "steps", "attributes", "answer")
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MODALITY_CODES = {"XC": "derm", "DX": "cxr", "CR": "cxr", "MR": "mri", "ES": "colon", "SM": "colon",
                  "GM": "colon"}
"""DICOM modality code of a dataset -> built-in template (for ``--modality auto``)."""


@dataclasses.dataclass
class Conversation:
    """One chat: a system text, a user turn with the image, and any re-ask turns."""

    system: str
    user: str
    image: np.ndarray
    """Channel-first image as stored; backends convert it for display (8-bit) themselves."""
    turns: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """Later (role, text) turns: the model's rejected answers and the correction requests."""

    def reask(self, answer: str, problems: list[str]) -> None:
        """Append the rejected answer and a request to fix exactly the listed problems."""
        self.turns.append(("assistant", answer))
        self.turns.append(("user", "Your answer could not be used: " + "; ".join(problems)
                           + ". Answer again with only the JSON object in the required format."))

    def openai_messages(self, image_url: str) -> list[dict[str, Any]]:
        """OpenAI chat-completions messages (image as a data URL)."""
        msgs: list[dict[str, Any]] = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": self.user}]},
        ]
        msgs += [{"role": r, "content": t} for r, t in self.turns]
        return msgs


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

    def conversation(self, image: np.ndarray, label: str | None, **context: Any) -> Conversation:
        """The first turn for one image: steps, vocabulary, label context and answer format."""
        fill = {"label": label or "unknown", "fov_mm": "unknown", **context}
        parts = []
        if label and self.context:
            parts.append(_format(self.context, fill))
        parts += [_format(s, fill) for s in self.steps]
        parts.append(self.answer.replace("{schema}", self.schema.json_skeleton()))
        return Conversation(system=_format(self.system, fill), user="\n".join(parts), image=image)

    def render_text(self, attrs: dict[str, Any]) -> str:
        """Fill the template's text sentence from structured attributes (same wording for all backends)."""
        spec = self.text or {}
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


def _format(text: str, fill: dict[str, Any]) -> str:
    """str.format that leaves unknown placeholders as they are."""

    class _Keep(dict):  # type: ignore[type-arg]
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    return string.Formatter().vformat(text, (), _Keep(fill))


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
    """Load a built-in template by name (``derm``, ``cxr``, ``colon``, ``mri``) or a YAML file."""
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
        digest=hashlib.sha256(raw).hexdigest(), source=str(p),
    )


def template_for_modality(modality: str, dataset_modality: str | None = None) -> str:
    """Resolve ``--modality`` (``auto`` uses the dataset's DICOM modality code)."""
    if modality != "auto":
        return modality
    code = (dataset_modality or "").upper()
    if code in MODALITY_CODES:
        return MODALITY_CODES[code]
    raise MedsynthError(f"cannot tell the modality from the dataset's modality code {code or '?'!r}",
                        hint=f"pass --modality {'|'.join(BUILTIN)} or --template FILE")
