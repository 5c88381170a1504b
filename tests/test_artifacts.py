from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsynth import artifacts
from medsynth.errors import MedsynthError


def test_manifest_roundtrip_and_input_hash(tmp_path: Path) -> None:
    up = tmp_path / "up"
    m = artifacts.write_manifest(up, "data", config={"a": 1, "p": Path("/x")}, outputs={"n": 3})
    raw = json.loads((up / "medsynth.json").read_text())
    assert raw["stage"] == "data" and raw["config"] == {"a": 1, "p": "/x"} and raw["schema_version"] == 1
    back = artifacts.read_manifest(up, "data")
    assert back.sha256 == m.sha256 == artifacts.sha256_file(up / "medsynth.json")
    ref = artifacts.input_ref(up, "data")
    assert ref["sha256"] == m.sha256 and ref["stage"] == "data"


def test_read_manifest_wrong_stage_and_missing(tmp_path: Path) -> None:
    artifacts.write_manifest(tmp_path / "a", "train")
    with pytest.raises(MedsynthError, match="'train' artifact, expected 'data'"):
        artifacts.read_manifest(tmp_path / "a", "data")
    with pytest.raises(MedsynthError, match="no medsynth.json"):
        artifacts.read_manifest(tmp_path / "nothing", "data")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "medsynth.json").write_text("{not json")
    with pytest.raises(MedsynthError, match="unreadable manifest"):
        artifacts.read_manifest(tmp_path / "bad")


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    artifacts.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), artifacts.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_jsonl_appender_drops_torn_tail(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    with artifacts.JsonlAppender(p) as w:
        w.write({"i": 1})
        w.write({"i": 2})
    with open(p, "a") as f:
        f.write('{"i": 3, "tor')  # a killed writer
    assert [r["i"] for r in artifacts.read_jsonl(p)] == [1, 2]
    with artifacts.JsonlAppender(p) as w:
        w.write({"i": 4})
    assert [r["i"] for r in artifacts.read_jsonl(p)] == [1, 2, 4]


def test_prepare_output_dir_refuses_to_clobber(tmp_path: Path) -> None:
    out = tmp_path / "out"
    artifacts.write_manifest(out, "train")
    with pytest.raises(MedsynthError, match="holds a 'train' artifact"):
        artifacts.prepare_output_dir(out, "generate", overwrite=True)
    with pytest.raises(MedsynthError, match="already exists"):
        artifacts.prepare_output_dir(out, "train")
    assert artifacts.prepare_output_dir(out, "train", resume=True) == out
    assert (out / "medsynth.json").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(MedsynthError):
        artifacts.prepare_output_dir(other, "data")
    assert (other / "precious.txt").exists()


def test_overwrite_never_deletes_a_foreign_folder(tmp_path: Path) -> None:
    other = tmp_path / "home"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(MedsynthError, match="refusing to delete"):
        artifacts.prepare_output_dir(other, "data", overwrite=True)
    assert (other / "precious.txt").read_text() == "x"
