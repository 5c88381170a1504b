"""The terminal summary of an evaluation: rich tables of the benchmark, fidelity and privacy."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medsynth.evaluate.sections import Metrics

from medsynth.evaluate.formatting import baseline_texts, fmt, fmt_pm, points, power_text


def print_summary(metrics: Metrics) -> None:
    """Rich tables: benchmark arms with gains and verdicts; fidelity and privacy per set."""
    from rich.table import Table

    from medsynth.ui import out

    bench = metrics.get("benchmark")
    if bench and bench["arms"]:
        t = Table(title="Downstream benchmark on the real test split "
                        "(mean ±95% bootstrap half-width; test images and seeds)")
        for col in ("setting", "real", "n real", "n added", "bal. acc.", "gain bal. acc.",
                    "detectable", "verdict"):
            t.add_column(col, justify="left" if col in ("setting", "real", "verdict")
                         else "right")
        for a in bench["arms"]:
            m = a["metrics"]
            v = a.get("verdict", "")
            color = {"helps": "green", "hurts": "red"}.get(v.split(" ")[0], "yellow")
            t.add_row(a["setting"], a["fraction"], fmt(a["n_real"]),
                      fmt(a.get("n_added", a["n_synthetic"])),
                      fmt_pm(m["balanced_accuracy"]),
                      fmt_pm(a["gain"]["balanced_accuracy"], signed=True) if "gain" in a else "",
                      points(a["power"]["mde"], "pt") if a.get("power") else "",
                      f"[{color}]{v}[/]" if v else "")
        out.print(t)
        for a in bench["arms"]:
            for line in baseline_texts(a):
                out.print(f"  {line}")
            advice = (a.get("power") or {}).get("advice")
            if advice:
                out.print(f"  [yellow]{a['setting']} @ {a['fraction']}:[/] {advice}")
        out.print(power_text(bench))
    fid = metrics["fidelity"]
    ref = fid["reference"]
    t = Table(title="Fidelity vs real test (real-vs-real reference in brackets)")
    vols = metrics.get("volumes")
    vol25 = vols["fid_2_5d"] if vols else None
    fid_cols = (fid.get("fid_label", "FID"), *(("FID 2.5D (mean of planes)",) if vol25 else ()))
    for col in ("set", *fid_cols, "KID", "precision", "coverage", "class fid.", "near-copies"):
        t.add_column(col, justify="left" if col == "set" else "right")
    for name, s in fid["sets"].items():
        p, rp = s["overall"], ref["overall"]
        priv = metrics["privacy"]["sets"][name]["feature"]
        cf = (s.get("class_fidelity") or {}).get("overall")
        rcf = (ref.get("class_fidelity") or {}).get("overall")
        v25 = [f'{fmt(vol25["sets"][name]["mean"], 1)} ({fmt(vol25["reference"]["mean"], 1)})'
               ] if vol25 and name in vol25["sets"] else [""] if vol25 else []
        t.add_row(name, f'{fmt(p["fid"], 1)} ({fmt(rp["fid"], 1)})', *v25,
                  f'{fmt(p["kid"], 4)} ({fmt(rp["kid"], 4)})',
                  f'{fmt(p["precision"], 2)} ({fmt(rp["precision"], 2)})',
                  f'{fmt(p.get("coverage"), 2)} ({fmt(rp.get("coverage"), 2)})',
                  f"{fmt(cf, 2)} ({fmt(rcf, 2)})",
                  f'{fmt(100 * priv["near_copy_share"], 1)}% '
                  f'({fmt(100 * priv["expected_share"], 1)}%)'
                  if priv["near_copy_share"] is not None else "no reference")
    out.print(t)
    if clip := metrics.get("clip"):
        from medsynth.evaluate.clip_features import clip_summary_lines

        for line in clip_summary_lines(clip):
            out.print(line)
