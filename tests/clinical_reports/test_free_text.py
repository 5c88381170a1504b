"""Free-text prompts (real-style chest radiograph reports) are read clause by clause: negations,
devices and sides of other structures never become a sided lung opacity; a template report
states only what its prompt states, and carries the prompt where it says more."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from medsynth.clinical_reports import context_for, parse_report, read_report, template_report
from medsynth.clinical_reports.scope import mentions, positive_text, sentences

CORPUS = yaml.safe_load((Path(__file__).parent / "data" / "cxr_reports.yaml").read_text("utf-8"))
CLASSES = ("normal", "pneumonia", "pleural_effusion", "cardiomegaly")


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 40
    texts = [c["text"] for c in CORPUS]
    assert any("\u2028" in t for t in texts) and any("\u00a0" in t for t in texts)
    assert any(len(t) > 400 for t in texts) and any(t.isupper() for t in texts)
    assert sum(c["expect"].get("side") == "none" for c in CORPUS) >= 15


@pytest.mark.parametrize("case", CORPUS, ids=[c["text"][:40] for c in CORPUS])
def test_each_real_style_report_reads_as_stated(case: dict) -> None:
    attrs, unread = read_report("cxr", case["text"])
    assert attrs == case["expect"], (case["text"], attrs)
    assert bool(unread) == case["carry"], (case["text"], unread)
    assert parse_report("cxr", case["text"]) == attrs


def test_the_issue_example_gets_no_side() -> None:
    text = "Lungs are clear. A pacemaker is seen in the left chest wall."
    assert parse_report("cxr", text) == {"side": "none"}
    ctx = context_for(sample_id="p", cls="normal", family="cxr", attributes=None,
                      description=text)
    rep = template_report(ctx)
    assert "left lung" not in rep.text.lower() and "opacity" not in rep.section("IMPRESSION")
    assert rep.section("PROMPT") == text  # the device is carried in the prompt's own words


@pytest.mark.parametrize("cls", CLASSES)
def test_template_reports_of_free_text_prompts_state_only_the_prompt(cls: str) -> None:
    sided = 0
    for i, case in enumerate(CORPUS):
        ctx = context_for(sample_id=f"s{i}", cls=cls, family="cxr", attributes=None,
                          description=case["text"], seed=i)
        rep = template_report(ctx)
        stated = parse_report("cxr", rep.text)
        # nothing the prompt (or the class: a cardiomegaly image has a big heart, a normal one
        # clear lungs unless its prompt said more) did not state, nothing contradicting it
        allowed = dict(case["expect"])
        if cls == "cardiomegaly":
            allowed.setdefault("heart_size", "enlarged")
        if cls in ("normal", "cardiomegaly") and not case["carry"]:
            allowed.setdefault("side", "none")
        assert all(allowed.get(k) == v for k, v in stated.items()), (case, rep.text)
        sided += stated.get("side") in ("left", "right", "bilateral")
        assert ("PROMPT" in [t for t, _ in rep.sections]) == case["carry"], rep.text
        assert rep.text.count("FINDINGS:") == 1
    # a sided opacity exactly where the prompt states one
    assert sided == sum(c["expect"].get("side") in ("left", "right", "bilateral")
                        for c in CORPUS)


def test_negation_scope_and_hedges() -> None:
    from medsynth.clinical_reports.parse import _OPACITY

    def status(text: str) -> list[str]:
        return [m.status for m in mentions(text, _OPACITY)]

    assert status("No pleural effusion, pneumothorax or consolidation.") == ["negated"] * 2
    assert status("Without focal consolidation.") == ["negated"]
    assert status("Negative for pneumonia. Free of effusion.") == ["negated", "negated"]
    assert status("The consolidation has resolved.") == ["negated"]
    assert status("Opacity is not seen.") == ["negated"]
    assert status("No effusion but a left lower lobe opacity.") == ["negated", "positive"]
    assert status("No change in the left lower lobe opacity.") == ["positive"]
    assert status("Possible left opacity.") == ["uncertain"]
    assert status("Pneumonia cannot be excluded.") == ["uncertain"]
    assert sentences("Ratio 0.45. Lungs clear; no effusion\u2028Heart normal") == [
        "ratio 0.45", "lungs clear", "no effusion", "heart normal"]
    assert "effusion" not in positive_text("No effusion. Left opacity.")
    assert "opacity" in positive_text("No effusion. Left opacity.")


def test_side_belongs_to_its_clause() -> None:
    assert parse_report("cxr", "Left chest wall pacemaker. Opacity at the right base.") == {
        "side": "right", "zone": "lower"}
    assert parse_report("cxr", "Opacity, right base. Left IJ line.")["side"] == "right"
    # a side in another clause of the sentence is not the opacity's
    assert "side" not in parse_report("cxr", "In the left chest wall a port, and an opacity.")


def test_generic_report_keeps_the_prompts_own_headings() -> None:
    text = "FINDINGS:\nSmall hypodense lesion in the liver.\n\nIMPRESSION:\nLikely a cyst."
    rep = template_report(context_for(sample_id="g", cls="lesion", family="generic",
                                      attributes=None, description=text))
    assert not rep.text.startswith("FINDINGS:\nFINDINGS:")
    assert rep.text.count("FINDINGS:") == 1 and rep.text.count("IMPRESSION:") == 1
    assert rep.section("FINDINGS") == "Small hypodense lesion in the liver."
    plain = template_report(context_for(sample_id="h", cls="cyst", family="generic",
                                        attributes=None, description="A round  cyst."))
    assert [t for t, _ in plain.sections] == ["FINDINGS", "IMPRESSION"]
    assert plain.section("FINDINGS") == "A round cyst."


def test_prostate_side_only_from_a_lesion_clause() -> None:
    text = "FINDINGS: Left seminal vesicle unremarkable. A 9 mm lesion in the right peripheral zone."
    assert parse_report("prostate", text)["side"] == "right"
    assert "side" not in parse_report("prostate", "FINDINGS: Left hip prosthesis artefact.")


def _cxr_set(root: Path, data: Path, prompts: dict[str, str], attributes: dict | None) -> Path:
    from medsynth.artifacts import atomic_write_bytes, atomic_write_text, input_ref, write_manifest
    from medsynth.imaging.dataset import open_dataset
    from medsynth.synthset import SAMPLE_COLUMNS

    ds, rows = open_dataset(data), []
    for cls, grp in ds.split("train").groupby("class"):
        if cls not in prompts:
            continue
        for i, (_, row) in enumerate(grp.iterrows()):
            sid = f"{cls}-{i:06d}"
            png = f"png/{cls}/{sid}.png"
            (root / png).parent.mkdir(parents=True, exist_ok=True)
            (root / png).write_bytes(ds.path_of(row).read_bytes())
            ctx = context_for(sample_id=sid, cls=str(cls), family="cxr", attributes=attributes,
                              description=prompts[str(cls)], seed=i)
            rep = f"reports/{cls}/{sid}.txt"
            atomic_write_text(root / rep, template_report(ctx).text)
            rows.append({"sample_id": sid, "class": cls, "png": png, "report": rep,
                         "description": prompts[str(cls)], "seed": i,
                         "report_writer": "template"})
    buf = io.StringIO()
    pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS)).to_csv(buf, index=False)
    atomic_write_bytes(root / "samples.csv", buf.getvalue().encode())
    write_manifest(root, "generate", config={}, inputs=[input_ref(data, "data")],
                   outputs={"samples": "samples.csv", "synthetic": True, "modality": "DX"})
    return root


def test_evaluate_consistency_check_reads_free_text_reports(tmp_path: Path) -> None:
    """evaluate's report check on a chest set whose reports come from real-style prompts: the
    reports of clear-lung images state clear lungs (never the pacemaker's side), and agree with
    the images better than the old reading's "left lung opacity" reports did."""
    from medsynth.cli import app
    from medsynth.evaluate.reports_check import reports_report
    from medsynth.imaging.dataset import open_dataset
    from medsynth.synthset import open_synthetic

    data = tmp_path / "cxr"
    r = CliRunner().invoke(app, ["data", "demo", "cxr", "--out", str(data), "--n-per-class", "6",
                                 "--size", "64"])
    assert r.exit_code == 0, r.output
    prompts = {"normal": "Lungs are clear. A pacemaker is seen in the left chest wall. Right "
                         "heart border is sharp.",
               "cardiomegaly": "Cardiomegaly. No focal consolidation. Left-sided port."}
    honest = open_synthetic(_cxr_set(tmp_path / "honest", data, prompts, None))
    old = open_synthetic(_cxr_set(tmp_path / "old", data, prompts, {"side": "left"}))
    old.name = "old"
    rep, _ = reports_report(open_dataset(data), [honest, old])
    h, o = rep["sets"][honest.name], rep["sets"]["old"]
    assert h["family"] == "cxr" and h["n"] == o["n"] > 0
    assert h["n_per_field"]["side"] == h["n"]  # every report states the side ...
    for row in honest.table.itertuples():
        text = (honest.root / str(row.report)).read_text("utf-8")
        assert parse_report("cxr", text)["side"] == "none"  # ... and it is "none"
        assert "PROMPT:" in text
    # clear-lung phantoms: the measured side agrees with "none" far more than with "left"
    assert h["report"]["side"] > o["report"]["side"] + 0.3
