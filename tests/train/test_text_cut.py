"""Descriptions longer than the text encoder's window: read whole in chunks (the default), or
cut with one warning in train (``long_text: cut``), recorded either way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth.artifacts import input_ref, now_iso, write_manifest
from medsynth.cli import app
from medsynth.store import DescriptionRecord, record_writer
from medsynth.train.config import TrainConfig
from tests.train.fixtures import make_dataset

LONG = ("Frontal chest radiograph. There is patchy airspace consolidation in the right lower zone "
        "with air bronchograms and blunting of the right costophrenic angle. ") * 3


@pytest.mark.parametrize("long_text", ["cut", "chunks"])
def test_long_descriptions_warned_and_recorded(tmp_path: Path, long_text: str) -> None:
    ds = make_dataset(tmp_path / "ds")
    store = tmp_path / "store"
    for cls, grp in ds.table.groupby("class"):
        with record_writer(store, str(cls)) as w:
            for j, (_, r) in enumerate(grp.iterrows()):
                w.write(DescriptionRecord(
                    image_id=str(r["image_id"]), path=str(r["path"]), cls=str(cls),
                    split=str(r["split"]), attributes={}, text=LONG + str(j) if j % 2 else "short",
                    backend="template", model="none", template_version="1",
                    timestamp=now_iso()).to_dict())
    write_manifest(store, "describe", config={}, inputs=[input_ref(ds.root, "data")],
                   outputs={"classes": ds.classes})
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TrainConfig.tiny(max_steps=1, checkpoint_every=1, sample_every=0,
                                       long_text=long_text).to_yaml())
    r = CliRunner().invoke(app, ["train", str(ds.root), "--store", str(store), "--out",
                                 str(tmp_path / "model"), "--config", str(recipe)])
    assert r.exit_code == 0, r.output
    cut = json.loads((tmp_path / "model" / "medsynth.json").read_text())["outputs"]["text_cut"]
    ref = json.loads((tmp_path / "model" / "medsynth_model.json").read_text())["text_encoder"]
    assert ref["long_text"] == long_text
    if long_text == "chunks":  # the whole description conditions: nothing cut, no warning
        assert "token" not in r.output and cut["images"] == 0 and cut["max_tokens"] == 386
        assert (ref["chunk_overlap"], ref["max_chunks"]) == (16, 8)
        return
    assert r.output.count("64-token window") == 1
    long_ids = {str(r["image_id"]) for _, grp in ds.table.groupby("class")
                for j, (_, r) in enumerate(grp.iterrows()) if j % 2}
    t = ds.table
    n_long = int(((t["split"] == "train") & t["image_id"].isin(long_ids)).sum())
    assert cut["images"] == n_long > 0 and cut["max_tokens"] == 64 and cut["longest_tokens"] > 64
