"""Model cards (MODEL/README.md) through ``huggingface_hub.ModelCard``: the YAML metadata the Hub
reads (library, tags, licence, base model) built by ``ModelCardData``, the text by the stage
(train: ``train/card.py``; refine: ``refine/run.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TAGS = ["medsynth", "diffusion", "medical-imaging", "synthetic-data"]


def card_text(body: str, *, library: str, licence: str | None = None,
              base_model: str | None = None, tags: list[str] | None = None) -> str:
    """The card's text: metadata front matter, then ``body`` (markdown). ``licence`` None (not
    known, e.g. no prior, or a prior's card that names none) is written as ``other``."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name=library, license=(licence or "other").lower(),
                         base_model=base_model, tags=[*TAGS, *(tags or [])])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def card_data(folder: str | Path) -> dict[str, Any]:
    """The metadata of a model folder's card ({} without a card or with unreadable metadata)."""
    from huggingface_hub import ModelCard

    path = Path(folder) / "README.md"
    if not path.is_file():
        return {}
    try:
        return dict(ModelCard.load(path).data.to_dict())
    except Exception:  # front matter that is not valid YAML: no metadata
        return {}
