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


ODD = "a\u2028b\u2029c\x85d\x00e\ufefff é 肺\r\nwindows"


def test_jsonl_keeps_any_unicode_one_record_a_line(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    with artifacts.JsonlAppender(p) as w:
        w.write({"text": ODD})
        w.write({"text": "second"})
    data = p.read_bytes()
    assert data.count(b"\n") == 2 and len(data.decode("utf-8").splitlines()) == 2
    assert artifacts.read_jsonl(p) == [{"text": ODD}, {"text": "second"}]
    p.write_bytes(b"\xef\xbb\xbf" + data + b'{"torn": "\xe2\x80')  # an editor's BOM, a torn tail
    assert artifacts.read_jsonl(p) == [{"text": ODD}, {"text": "second"}]
    with artifacts.JsonlAppender(p) as w:  # the torn tail is dropped before appending
        w.write({"text": "third"})
    assert [r["text"] for r in artifacts.read_jsonl(p)] == [ODD, "second", "third"]


def test_jsonl_refuses_lone_surrogates_with_one_line(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    with artifacts.JsonlAppender(p) as w:
        w.write({"text": "ok"})
        with pytest.raises(MedsynthError, match="not valid Unicode text") as e:
            w.write({"text": "bad \udcff"})
    assert str(e.value).splitlines()[0].startswith(str(p))
    assert p.read_bytes() == b'{"text": "ok"}\n'  # nothing of the refused record written
    p.write_bytes(b'{"text": "ok"}\n{"text": "\\ud800"}\n{"text": "ok"}\n')
    with pytest.raises(MedsynthError, match=r"line 2: not valid Unicode"):
        artifacts.read_jsonl(p)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_written_files_and_folders_follow_the_umask(tmp_path: Path, mask: int) -> None:
    import os
    import stat

    old = os.umask(mask)
    try:
        f = artifacts.atomic_write_text(tmp_path / "new" / "deeper" / "a.txt", "x")
        m = artifacts.write_manifest(tmp_path / "art", "data", config={})
        with artifacts.JsonlAppender(tmp_path / "j" / "log.jsonl") as w:
            w.write({"a": 1})
    finally:
        os.umask(old)
    for p in (f, m.folder / artifacts.MANIFEST_NAME, tmp_path / "j" / "log.jsonl"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p
    for d in (tmp_path / "new", tmp_path / "new" / "deeper", tmp_path / "j"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~mask, d
