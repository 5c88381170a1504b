"""Any Unicode in a model's answer survives the description store: written, read, resumed."""

from __future__ import annotations

import json
from pathlib import Path

from medsynth.describe.config import DescribeConfig
from medsynth.describe.run import run_describe
from medsynth.store import RECORDS_NAME, open_store
from tests.describe.conftest import VALID, Scripted
from tests.generate.test_text_safety import ODD


def test_store_keeps_line_separators_nul_and_bom(scripted: Scripted, derm_dataset: Path,
                                                 tmp_path: Path) -> None:
    scripted.default = ("ok", json.dumps({**VALID, "summary": f"A brown lesion. {ODD}"}))
    store = tmp_path / "store"

    def cfg(**kw: object) -> DescribeConfig:
        return DescribeConfig(dataset=str(derm_dataset), out=str(store), backend="openai",
                              model="scripted", base_url=scripted.url, split="all",
                              **kw)  # type: ignore[arg-type]

    s = run_describe(cfg(), progress=False)
    assert (s.described, s.failed, s.errors) == (8, 0, 0)
    for f in store.glob(f"*/{RECORDS_NAME}"):  # one line per record for any line tool
        assert f.read_bytes().count(b"\n") == len(f.read_bytes().split(b"\n")) - 1
    recs = open_store(store).records(status="ok")
    assert len(recs) == 8 and all(r.text.endswith(ODD) for r in recs)
    s2 = run_describe(cfg(resume=True), progress=False)
    assert (s2.described, s2.skipped) == (0, 8)
