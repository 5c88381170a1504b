"""The HTML context of the report: plain values per section for the Jinja2 templates in
``templates/`` (which escape everything). A table cell is text, ``ref(text, reference)`` or
``verdict(v)``; a plot is ``{"alt", "data"}`` (base64 PNG, so the page needs no folder)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medsynth.evaluate.sections import Metrics, PrivacySection, VolumesSection

from medsynth.evaluate.formatting import baseline_texts, detects, fmt, fmt_ci, points, power_text

MEASURE_UNITS = {"abs": "mean |error| (lower better)", "exact": "agreement (higher better)",
                 "jaccard": "Jaccard (higher better)"}
VOLUME_PLANES = ("axial", "coronal", "sagittal")


def ref(text: str, reference: str) -> dict[str, str]:
    """A value with its real-vs-real reference in grey brackets."""
    return {"text": text, "ref": reference}


def verdict(v: str | None) -> dict[str, str | None]:
    return {"verdict": v}


def plot(out: Path, rel: str, alt: str) -> dict[str, str]:
    return {"alt": alt, "data": base64.b64encode((out / rel).read_bytes()).decode("ascii")}


def setup_context(metrics: Metrics) -> dict[str, Any]:
    r, classes, clf = metrics["real"], metrics["real"]["classes"], metrics["classifier"]
    return {"template": "setup.html", "rows": [
        ["real dataset", r["path"]],
        ["classes", ", ".join(classes)],
        ["real images (train / val / test)", f'{r["n_train"]} / {r["n_val"]} / {r["n_test"]}'],
        *[[f"synthetic: {n}", f'{s["n_images"]} images '
           f'({", ".join(f"{k}: {v}" for k, v in s["per_class"].items())})']
          for n, s in metrics["synthetic"].items()],
        ["classifier", f'{clf["name"]} (MONAI), {clf["device"]}, image size {r["image_size"]} px'],
    ]}


def benchmark_context(out: Path, bench: dict[str, Any] | None, plots: dict[str, str]
                      ) -> dict[str, Any]:
    if not bench or not bench["arms"]:
        return {"template": "benchmark.html", "skipped": True}
    classes = bench["classes"]
    verdicts, arms, more, per_class = [], [], [], []
    for a in bench["arms"]:
        g = a.get("gain", {}).get("balanced_accuracy")
        pw = a.get("power") or {}
        if g is not None:
            verdicts.append({"setting": a["setting"], "fraction": a["fraction"],
                             "gain": fmt_ci(g, signed=True), "verdict": a["verdict"],
                             "detectable": points(pw.get("mde")),
                             "seed_sd": fmt((g.get("seeds") or {}).get("sd"), 3),
                             "advice": pw.get("advice"), "baselines": baseline_texts(a)})
        m = a["metrics"]
        arms.append([a["setting"], a["fraction"], fmt(a["n_real"]),
                     fmt(a.get("n_added", a["n_synthetic"])), str(a["n_runs"]),
                     fmt_ci(m["balanced_accuracy"]),
                     fmt_ci(g, signed=True) if g else "",
                     fmt((g.get("seeds") or {}).get("sd")) if g else "",
                     points(pw.get("mde"), "pt") if g else "",
                     verdict(a.get("verdict")),
                     f'{a.get("epochs", 0):.0f} ({a.get("best_epoch", 0):.0f})'
                     + ("" if a.get("converged", True) else " ⚠")])
        gains = a.get("gain", {})
        more.append([a["setting"], a["fraction"], fmt_ci(m["accuracy"]), fmt_ci(m["macro_f1"]),
                     fmt_ci(m["auroc"])] + [fmt_ci(gains.get(k), signed=True) if gains else ""
                                            for k in ("accuracy", "macro_f1", "auroc")])
        per_class.append([a["setting"], a["fraction"]]
                         + [fmt_ci(a["per_class"][c]["recall"], 2) for c in classes]
                         + [fmt_ci(a["per_class"][c]["auroc"], 2) for c in classes])
    boot = bench.get("bootstrap", {})
    return {"template": "benchmark.html", "skipped": False, "seeds": bench["seeds"],
            "replicates": boot.get("replicates", "?"), "test_images": boot.get("test_images", "?"),
            "detects": detects(bench), "power": power_text(bench), "verdicts": verdicts,
            "arms": arms, "more": more, "per_class": per_class,
            "recall_header": [f"recall {c}" for c in classes],
            "auroc_header": [f"AUROC {c}" for c in classes],
            "plots": {"benchmark": plot(out, plots["benchmark"], "benchmark chart"),
                      "confusion": plot(out, plots["confusion"], "confusion matrices")}}


def examples_context(out: Path, plots: dict[str, str], names: list[str]) -> dict[str, Any]:
    return {"template": "examples.html",
            "plots": [plot(out, plots["examples"], "examples")]
            + [plot(out, plots[f"grid_{n}"], f"grid {n}") for n in names]}


def fidelity_context(out: Path, fid: dict[str, Any], classes: list[str], plots: dict[str, str]
                     ) -> dict[str, Any]:
    rf = fid["reference"]
    rows = []
    for name, s in fid["sets"].items():
        for c in ["overall", *classes]:
            p = s["overall"] if c == "overall" else s["per_class"].get(c)
            if p is None:
                continue
            rp = rf["overall"] if c == "overall" else rf["per_class"][c]
            cf = (s.get("class_fidelity") or {}).get(c)
            rcf = (rf.get("class_fidelity") or {}).get(c)
            msssim = "" if c == "overall" else ref(fmt(s["msssim"].get(c), 3),
                                                   fmt(rf["msssim"].get(c), 3))
            rows.append([name, c, fmt(p["n_fake"]),
                         ref(fmt(p["fid"], 1), fmt(rp["fid"], 1)),
                         ref(fmt(p["kid"], 4), fmt(rp["kid"], 4)),
                         *[ref(fmt(p.get(k), 2), fmt(rp.get(k), 2))
                           for k in ("precision", "recall", "density", "coverage")],
                         msssim, ref(fmt(cf, 2), fmt(rcf, 2))])
    fx = fid["feature_extractor"]
    return {"template": "fidelity.html", "extractor": fx["name"], "image_size": fx["image_size"],
            "input_size": fx["input_size"], "rows": rows, "fid_label": fid.get("fid_label"),
            "plot": plot(out, plots["fidelity"], "FID per class")}


def volumes_context(section: VolumesSection) -> dict[str, Any]:
    cols = (*VOLUME_PLANES, "mean")
    f = section["fid_2_5d"]
    rows = [["real vs real (reference)", *[fmt(f["reference"][p], 1) for p in cols],
             str(f["reference"]["n_fake"])]]
    rows += [[name, *[fmt(s[p], 1) for p in cols], str(s["n_fake"])]
             for name, s in f["sets"].items()]
    return {"template": "volumes.html", "method": f["method"], "features": section["features"],
            "size": section["size"], "rows": rows,
            "window": f'{fmt(section["window"][0], 1)}..{fmt(section["window"][1], 1)}'}


def privacy_context(out: Path, priv: PrivacySection, plots: dict[str, str]) -> dict[str, Any]:
    rows = []
    for name, s in priv["sets"].items():
        for space in ("feature", "pixel"):
            p = s[space]
            rows.append([name, space, fmt(p["synth_median_nn"], 4), fmt(p["real_median_nn"], 4),
                         fmt(p["synth_min_nn"], 4), fmt(p["threshold"], 4),
                         f'{fmt(100 * p["near_copy_share"], 1)} % ({p["n_near_copies"]})'
                         if p["near_copy_share"] is not None else
                         "no reference" if p.get("no_reference") else "–",
                         f'{fmt(100 * p["expected_share"], 1)} %'])
    first = next(iter(priv["sets"].values()))
    reasons = sorted({s[sp]["no_reference"] for s in priv["sets"].values()
                      for sp in ("feature", "pixel") if s[sp].get("no_reference")})
    ex = priv.get("reference") or {}
    return {"template": "privacy.html", "rows": rows, "no_reference": reasons,
            "with_copy": ex.get("with_copy") or 0,
            "expected": fmt(100 * first["feature"]["expected_share"], 1),
            "plot": plot(out, plots["privacy"], "privacy histogram"),
            "pairs": [plot(out, plots[f"pairs_{n}"], f"closest pairs {n}") for n in priv["sets"]]}


def adherence_context(adh: dict[str, Any]) -> dict[str, Any]:
    if not adh.get("applies"):
        return {"template": "adherence.html", "applies": False, "reason": adh.get("reason", "")}
    rows, unmeasured = [], []
    for name, s in adh["sets"].items():
        if not s.get("n"):
            unmeasured.append((name, s.get("reason", "")))
            continue
        rows += [[name, f, MEASURE_UNITS[kind], fmt(s["synthetic"].get(f), 3),
                  fmt(s["shuffled"].get(f), 3), fmt(adh["real"].get(f), 3)]
                 for f, kind in adh["fields"].items() if f in s["synthetic"]]
    return {"template": "adherence.html", "applies": True, "rows": rows,
            "unmeasured": unmeasured}


def clip_context(c: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    rf = c["fidelity"]["reference"]
    fid = []
    for name, s in c["fidelity"]["sets"].items():
        for cl in ["overall", *classes]:
            p = s["overall"] if cl == "overall" else s["per_class"].get(cl)
            if p is None:
                continue
            rp = rf["overall"] if cl == "overall" else rf["per_class"][cl]
            fid.append([name, cl, fmt(p["n_fake"]),
                        *[ref(fmt(p.get(k), d), fmt(rp.get(k), d)) for k, d in (
                            ("fid", 3), ("kid", 4), ("precision", 2), ("recall", 2),
                            ("density", 2), ("coverage", 2))]])

    def gap(d: dict[str, Any]) -> str:
        if not d:
            return "–"
        ci = "" if d.get("gap_lo") is None else f' [{d["gap_lo"]:+.3f}, {d["gap_hi"]:+.3f}]'
        return f'{d["gap"]:+.3f}{ci}; wins {100 * d["win"]:.0f} %'

    align = []
    real = c["alignment"].get("real")
    items = [("real test (reference)", real)] if real and real.get("n", 0) >= 2 else []
    for name, a in items + list(c["alignment"]["sets"].items()):
        if a.get("n", 0) < 2 or "matched" not in a:
            align.append([name, fmt(a.get("n")), "–", "–", "–", "–", a.get("reason", "")])
            continue
        sh, sc = a.get("shuffled") or {}, a.get("shuffled_same_class") or {}
        align.append([name, fmt(a["n"]), fmt(a["matched"]), fmt(sh.get("mean")), gap(sh),
                      fmt(sc.get("mean")), gap(sc)])
    r = c.get("retrieval")
    retrieval = None
    if r:
        retrieval = {"n_images": r["n_images"], "n_texts": r["n_texts"], "rows": [
            [name, fmt(r[f"{d}_r1"]), fmt(r[f"{d}_r1_chance"]), fmt(r.get(f"{d}_r1_class_only")),
             fmt(r[f"{d}_r5"]), fmt(r[f"{d}_r5_chance"]), fmt(r.get(f"{d}_r5_class_only"))]
            for name, d in (("image → text", "i2t"), ("text → image", "t2i"))]}
    return {"template": "clip.html", "model": c["model"], "encoder": c["encoder"],
            "text_encoder": c["text_encoder"], "embed_dim": c["embed_dim"],
            "n_train_pairs": c["n_train_pairs"], "train_splits": ", ".join(c["train_splits"]),
            "trained_step": c["trained_step"], "store": c["store"] or "none", "fidelity": fid,
            "alignment": align, "retrieval": retrieval,
            "retrieval_reason": c.get("retrieval_reason") or ""}


def reports_context(rep: dict[str, Any], examples: list[dict[str, Any]]) -> dict[str, Any]:
    rows, unchecked = [], []
    for name, s in rep.get("sets", {}).items():
        if not s.get("n"):
            unchecked.append((name, s.get("reason", "")))
            continue
        rows += [[name, f, MEASURE_UNITS[kind], fmt(s["report"].get(f), 3),
                  fmt(s["shuffled"].get(f), 3), str(s["n_per_field"].get(f, 0))]
                 for f, kind in s["fields"].items() if f in s["report"]]
    return {"template": "reports.html", "rows": rows, "unchecked": unchecked,
            "examples": examples}


def report_context(out: Path, metrics: Metrics, plots: dict[str, str], names: list[str],
                   report_examples: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything ``templates/report.html`` shows: header, navigation, warnings, sections."""
    from medsynth import __version__
    from medsynth.artifacts import now_iso

    classes = metrics["real"]["classes"]
    sections = [setup_context(metrics), benchmark_context(out, metrics.get("benchmark"), plots),
                examples_context(out, plots, names),
                fidelity_context(out, metrics["fidelity"], classes, plots)]
    nav = [("setup", "Setup"), ("benchmark", "Benchmark"), ("examples", "Examples"),
           ("fidelity", "Fidelity")]
    if vols := metrics.get("volumes"):
        sections.append(volumes_context(vols))
        nav.append(("volumes", "Volumes"))
    sections += [privacy_context(out, metrics["privacy"], plots),
                 adherence_context(metrics["adherence"])]
    nav += [("privacy", "Privacy"), ("adherence", "Adherence")]
    if clip := metrics.get("clip"):
        sections.append(clip_context(clip, classes))
        nav.append(("clip", "CLIP"))
    if metrics.get("reports") is not None:
        sections.append(reports_context(metrics["reports"], report_examples or []))
        nav.append(("reports", "Reports"))
    return {"title": "medsynth evaluation report",
            "subtitle": f"{now_iso()} · medsynth {__version__} · real: {metrics['real']['path']}"
                        f" · synthetic: {', '.join(names)}",
            "nav": nav, "warnings": metrics.get("warnings") or [], "sections": sections}
