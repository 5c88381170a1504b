"""Model cards through huggingface_hub.ModelCard: the metadata parses back, the text is kept."""

from __future__ import annotations

from pathlib import Path

from medsynth.models.card import card_data, card_text


def test_card_metadata_parses_back(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    body = "# medsynth model: a, b\n\n## Data\n- dataset: `x`\n"
    text = card_text(body, library="monai", licence="CreativeML-OpenRAIL-M",
                     base_model="org/prior", tags=["refined", "dpo"])
    (tmp_path / "README.md").write_text(text)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "monai" and card.data.license == "creativeml-openrail-m"
    assert card.data.base_model == "org/prior"
    assert card.data.tags == ["medsynth", "diffusion", "medical-imaging", "synthetic-data",
                              "refined", "dpo"]
    assert card.text.strip() == body.strip()
    assert card_data(tmp_path)["license"] == "creativeml-openrail-m"


def test_unknown_licence_and_missing_cards(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    meta = ModelCard(card_text("# m\n", library="diffusers")).data
    assert meta.license == "other" and meta.base_model is None
    assert card_data(tmp_path) == {}  # no README.md
    (tmp_path / "README.md").write_text("---\n: [unclosed\n---\n# m\n")
    assert card_data(tmp_path) == {}
