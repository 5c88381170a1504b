"""Report writers: template reports state exactly the conditioning (read back by the parser),
varied by seed; the llm writer over real HTTP checks, re-asks and falls back to the template."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from medsynth.clinical_reports import (
    ReportWriterConfig,
    context_for,
    make_writer,
    normalize,
    parse_report,
    parse_sections,
    report_family,
    template_report,
)
from medsynth.clinical_reports.llm import LLMWriter, consistency_problems
from medsynth.vocabulary import DERM_COLORS, DERM_STRUCTURES
from tests.scripted_openai import Scripted, serve


def _derm_attrs(rng: random.Random) -> dict:
    return {"diameter_mm": round(rng.uniform(2, 20), 1), "asymmetry": rng.choice([0, 1, 2]),
            "border": rng.choice(["regular", "irregular"]),
            "colors": sorted(rng.sample(DERM_COLORS, rng.randint(1, 4)), key=DERM_COLORS.index),
            "structures": sorted(rng.sample(DERM_STRUCTURES, rng.randint(0, 3)),
                                 key=DERM_STRUCTURES.index) or ["none"]}


def _cxr_attrs(rng: random.Random, cls: str) -> dict:
    side = "none" if cls in ("normal", "cardiomegaly") else rng.choice(["left", "right",
                                                                        "bilateral"])
    ctr = round(rng.uniform(0.52, 0.65) if cls == "cardiomegaly" else rng.uniform(0.38, 0.49), 2)
    return {"side": side, "zone": "none" if side == "none" else rng.choice(["upper", "middle",
                                                                               "lower"]),
            "opacity_extent": 0.0 if side == "none" else round(rng.uniform(0.1, 0.35), 2),
            "ctr": ctr, "heart_size": "enlarged" if ctr > 0.5 else "normal"}


def _prostate_attrs(rng: random.Random, cls: str) -> dict:
    if cls == "no_lesion":
        return {"pirads": 1, "zone": "none", "side": "none", "margin": "none",
                "diameter_mm": 0.0, "gland_volume_ml": rng.uniform(20, 60)}
    size = rng.uniform(5, 28)
    epe = rng.choice(["yes", "no"])
    return {"pirads": 3 if cls == "pirads_3" else 5 if size >= 15 or epe == "yes" else 4,
            "zone": rng.choice(["peripheral", "transition"]), "side": rng.choice(["left", "right"]),
            "level": rng.choice(["base", "mid", "apex"]), "diameter_mm": size,
            "t2_hypointensity": rng.uniform(0.2, 0.6),
            "margin": rng.choice(["circumscribed", "ill_defined"]),
            "extraprostatic_extension": epe, "gland_volume_ml": rng.uniform(20, 60)}


CASES = [("derm", c) for c in ("melanoma", "nevus", "seborrheic_keratosis")] + \
    [("cxr", c) for c in ("normal", "pneumonia", "pleural_effusion", "cardiomegaly")] + \
    [("prostate", c) for c in ("no_lesion", "pirads_3", "pirads_4_5")]


@pytest.mark.parametrize(("family", "cls"), CASES)
def test_template_reports_state_exactly_the_conditioning(family: str, cls: str) -> None:
    rng = random.Random(f"{family}{cls}")
    phrasings = set()
    for seed in range(40):
        raw = {"derm": lambda: _derm_attrs(rng), "cxr": lambda: _cxr_attrs(rng, cls),
               "prostate": lambda: _prostate_attrs(rng, cls)}[family]()
        ctx = context_for(sample_id=f"s{seed}", cls=cls, family=family, attributes=raw,
                          seed=seed)
        rep = template_report(ctx)
        assert rep.text == template_report(ctx).text  # deterministic
        stated = parse_report(family, rep.text)
        # nothing the conditioning did not ask for, nothing contradicting it ...
        assert all(ctx.attributes.get(k) == v for k, v in stated.items()), (rep.text, raw)
        # ... and every asked-for attribute is stated (the hypointensity as a band, not a number)
        assert set(ctx.attributes) - set(stated) <= {"t2_hypointensity"}, (rep.text, raw)
        assert consistency_problems(family, ctx, rep.text) == [], rep.text
        phrasings.add(rep.text.split("\n")[1][:12] + rep.section("IMPRESSION")[:12])
        titles = [t for t, _ in rep.sections]
        assert titles == {"cxr": ["FINDINGS", "IMPRESSION"],
                          "derm": ["LESION SIZE", "ASYMMETRY", "BORDER", "COLOURS", "STRUCTURES",
                                   "IMPRESSION"],
                          "prostate": ["TECHNIQUE", "FINDINGS", "ASSESSMENT", "IMPRESSION"]
                          }[family]
        assert parse_sections(rep.text).sections == rep.sections
    assert len(phrasings) > 1  # phrasing varies with the seed


def test_class_only_and_unknown_attributes_invent_nothing() -> None:
    ctx = context_for(sample_id="a", cls="pneumonia", family="cxr", attributes={}, seed=1)
    rep = template_report(ctx)
    assert parse_report("cxr", rep.text) == {} and "not specified" in rep.text
    ctx = context_for(sample_id="b", cls="melanoma", family="derm",
                      attributes={"diameter_mm": "uncertain", "border": "irregular",
                                  "colors": ["uncertain"], "asymmetry": "not_visible",
                                  "structures": ["not_visible"]}, seed=2)
    assert ctx.attributes == {"border": "irregular"}
    rep = template_report(ctx)
    assert parse_report("derm", rep.text) == {"border": "irregular"}
    assert rep.text.count("Not assessed.") == 4
    none = context_for(sample_id="c", cls="nevus", family="derm", attributes={
        k: "not_visible" for k in ("diameter_mm", "asymmetry", "border")} | {
        "colors": ["not_visible"], "structures": ["not_visible"]})
    assert "No whole lesion" in template_report(none).text


def test_attributes_from_a_free_text_prompt() -> None:
    # describe's own template sentences (derm and cxr) read back as attributes
    derm = ("A 8.8 mm asymmetric (both axes) lesion with an irregular border, three colours "
            "(light brown, dark brown and blue-grey) and a blue-white veil.")
    ctx = context_for(sample_id="x", cls="melanoma", family="derm", attributes=None,
                      description=derm)
    assert ctx.attributes == {"diameter_mm": 8.8, "asymmetry": 2, "border": "irregular",
                              "colors": ["light_brown", "dark_brown", "blue_grey"],
                              "structures": ["blue_white_veil"]}
    cxr = ("An opacity in the left lung (lower zone, 12% of the lung); enlarged cardiac "
           "silhouette (cardiothoracic ratio 0.55).")
    assert parse_report("cxr", cxr) == {"side": "left", "zone": "lower", "opacity_extent": 0.12,
                                        "ctr": 0.55, "heart_size": "enlarged"}
    assert parse_report("cxr", "Clear lung fields without focal opacity; normal heart size "
                               "(cardiothoracic ratio 0.44).") == {
        "side": "none", "ctr": 0.44, "heart_size": "normal"}
    # the template report of a prompt states what the prompt states, and nothing more
    rep = template_report(context_for(sample_id="y", cls="pneumonia", family="cxr",
                                      attributes=None, description="patchy opacity, right base"))
    assert parse_report("cxr", rep.text) == {"side": "right", "zone": "lower"}


def test_family_from_modality_classes_and_attributes() -> None:
    assert report_family("DX", ["normal", "pneumonia"]) == "cxr"
    assert report_family("XC", ["melanoma"]) == "derm"
    assert report_family("MR", ["no_lesion", "pirads_3"]) == "prostate"
    assert report_family("OT", ["a"], {"pirads": 3, "zone": "peripheral"}) == "prostate"
    assert report_family("OT", ["a"], {"colors": ["red"]}) == "derm"
    assert report_family("CT", ["a", "b"]) == "generic"
    assert normalize("cxr", {"side": "none", "zone": "lower", "ctr": "uncertain"}) == \
        {"side": "none"}


def test_consistency_check_catches_invented_and_contradicting_findings() -> None:
    ctx = context_for(sample_id="s", cls="pneumonia", family="cxr",
                      attributes={"side": "left", "zone": "lower", "ctr": 0.45})
    ok = "FINDINGS:\nOpacity in the left lower zone. Cardiothoracic ratio 0.45.\n\nIMPRESSION:\n" \
         "Left lower-zone pneumonia. No pleural effusion."
    assert consistency_problems("cxr", ctx, ok) == []
    bad = "FINDINGS:\nOpacity in the right upper zone. Small pleural effusion.\n\nIMPRESSION:\nx"
    problems = consistency_problems("cxr", ctx, bad)
    assert any("side" in p and "'left'" in p for p in problems)
    assert any("zone" in p for p in problems)
    assert any("effusion" in p for p in problems)
    normal = context_for(sample_id="n", cls="normal", family="cxr", attributes={})
    assert consistency_problems("cxr", normal, "FINDINGS:\nThe lungs are clear.\n\nIMPRESSION:\n"
                                               "Normal.") == []
    assert consistency_problems("cxr", normal, "FINDINGS:\nCardiothoracic ratio 0.61, "
                                               "cardiomegaly.\n\nIMPRESSION:\nx")


# ------------------------------------------------------------------------- llm over real HTTP
@pytest.fixture
def scripted() -> Iterator[Scripted]:
    with serve() as state:
        yield state


def _llm(url: str, **kw: object) -> LLMWriter:
    w = make_writer(ReportWriterConfig(writer="llm", backend="openai", model="scripted",
                                       base_url=url, **kw))
    assert isinstance(w, LLMWriter)
    return w


GOOD = "FINDINGS:\nAirspace opacity in the left lower zone.\n\nIMPRESSION:\nLeft pneumonia."


def test_llm_report_accepted_reasked_and_fallback(scripted: Scripted) -> None:
    import numpy as np

    ctxs = [context_for(sample_id=f"p{i}", cls="pneumonia", family="cxr", seed=i, modality="DX",
                        attributes={"side": "left", "zone": "lower"},
                        image=np.zeros((1, 8, 8), np.uint16)) for i in range(3)]
    w = _llm(scripted.url, max_reasks=1, concurrency=1)
    # 1: valid at once; 2: malformed (no sections), then valid; 3: empty twice -> template
    scripted.script = [("ok", "```\n" + GOOD + "\n```"), ("ok", "It is pneumonia."),
                       ("ok", GOOD), ("ok", ""), ("ok", "  ")]
    res = w.write(ctxs)
    assert [r.writer for r in res] == ["llm", "llm", "template-fallback"]
    assert res[0].report.sections == [("FINDINGS", "Airspace opacity in the left lower zone."),
                                      ("IMPRESSION", "Left pneumonia.")]
    assert len(res[1].raw) == 2 and res[1].raw[0] == "It is pneumonia."
    assert "empty" in res[2].warning and len(res[2].raw) == 2
    assert res[2].text == template_report(ctxs[2]).text  # nothing lost: the template report
    # the re-ask sent the problems back; the prompt listed the findings, not the image
    reask = scripted.requests[2]["messages"]
    assert "FINDINGS:' is missing" in reask[-1]["content"]
    assert "side: left" in scripted.requests[0]["messages"][-1]["content"]
    assert isinstance(scripted.requests[0]["messages"][-1]["content"], str)
    # an inconsistent report is re-asked, then falls back
    scripted.script = [("ok", "FINDINGS:\nRight upper zone opacity.\n\nIMPRESSION:\nx")] * 2
    res = w.write(ctxs[:1])
    assert res[0].writer == "template-fallback" and "side" in res[0].warning
    info = w.info()
    assert info["writer"] == "llm" and info["model"] == "scripted" and "report@" in \
        info["prompt_version"]
    w.close()


def test_llm_with_image_and_dead_server(scripted: Scripted) -> None:
    import numpy as np

    ctx = context_for(sample_id="p", cls="pneumonia", family="cxr", seed=0,
                      attributes={"side": "left"}, image=np.zeros((1, 8, 8), np.uint16))
    w = _llm(scripted.url, with_image=True, concurrency=1, max_reasks=0)
    scripted.script = [("ok", GOOD)]  # states a zone nobody asked for
    assert w.write([ctx])[0].writer == "template-fallback"
    scripted.script = [("ok", GOOD.replace(" lower zone", " lung"))]
    assert w.write([ctx])[0].writer == "llm"
    content = scripted.requests[-1]["messages"][-1]["content"]
    assert content[0]["type"] == "image_url"
    w.close()
    # a server that fails every request: every report falls back, with the reason
    w = make_writer(ReportWriterConfig(writer="llm", model="m", base_url="http://127.0.0.1:9/v1",
                                       timeout=2))
    w.backend.retries = 0  # type: ignore[attr-defined]
    res = w.write([ctx])
    assert res[0].writer == "template-fallback" and res[0].warning
    assert res[0].text == template_report(ctx).text
