"""The report: plots (matplotlib, Agg), a self-contained ``report.html`` and a terminal summary.

Every plot is written to ``plots/<name>.png`` and embedded in the HTML as base64, so the single
``report.html`` file opens anywhere without its folder.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from medsynth.artifacts import atomic_write_bytes, atomic_write_text

TEMPLATE = Path(__file__).parent / "templates" / "report.html"
SETTING_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


# --------------------------------------------------------------------------- formatting helpers
def fmt(v: Any, digits: int = 3) -> str:
    """Number for a table: '-' for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def fmt_ci(d: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    """``mean [lo, hi]`` of a :func:`medsynth.evaluate.benchmark.mean_ci` dict."""
    if not d or d.get("mean") is None:
        return "–"
    sign = "+" if signed else ""
    m = f"{d['mean']:{sign}.{digits}f}"
    if d.get("lo") is None:
        return m
    return f"{m} [{d['lo']:{sign}.{digits}f}, {d['hi']:{sign}.{digits}f}]"


def fmt_pm(d: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    """``mean ±half-width`` (compact, for the terminal)."""
    if not d or d.get("mean") is None:
        return "–"
    m = f"{d['mean']:{'+' if signed else ''}.{digits}f}"
    return m if d.get("lo") is None else f"{m} ±{(d['hi'] - d['lo']) / 2:.{digits}f}"


def points(v: float | None, unit: str = "points") -> str:
    """A balanced-accuracy difference in percentage points: ``3.2 points``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f} {unit}"


def gain_text(a: dict[str, Any]) -> str:
    """One line per arm: gain over real-only with interval, verdict, detectable gain."""
    g = a["gain"]["balanced_accuracy"]
    pw = a.get("power") or {}
    return (f"{a['setting']} with real {a['fraction']}: balanced accuracy "
            f"{fmt_ci(g, signed=True)} vs real-only -> {a['verdict']} "
            f"(detectable: {points(pw.get('mde'))})")


def baseline_texts(a: dict[str, Any]) -> list[str]:
    """The synthetic arm against augmentation and its share of the oracle's gain."""
    out = []
    if "vs_augment" in a:
        g = a["vs_augment"]["balanced_accuracy"]
        out.append(f"{a['setting']} vs real+augment (real {a['fraction']}): "
                   f"{fmt_ci(g, signed=True)} -> {a['vs_augment_verdict']}")
    rec = a.get("oracle_recovery")
    if rec is not None:
        if rec.get("mean") is None:
            out.append(f"{a['setting']} (real {a['fraction']}): share of the oracle gain not "
                       f"defined ({rec.get('reason')})")
        else:
            lo = "–" if rec.get("lo") is None else f"{100 * rec['lo']:.0f}"
            hi = "–" if rec.get("hi") is None else f"{100 * rec['hi']:.0f}"
            out.append(f"{a['setting']} (real {a['fraction']}): synthetic recovers "
                       f"{100 * rec['mean']:.0f} % [{lo}, {hi}] of the oracle gain "
                       f"({fmt(rec.get('oracle_gain'), 3)})")
    return out


def _detects(bench: dict[str, Any], target: float = 0.05) -> bool:
    mdes = [a["power"]["mde"] for a in bench["arms"] if a.get("power")]
    return bool(mdes) and max(mdes) <= target


def power_text(bench: dict[str, Any], target: float = 0.05) -> str:
    """The set-up's power in one sentence: can it detect a ``target`` gain?"""
    mdes = [a["power"]["mde"] for a in bench["arms"] if a.get("power")]
    if not mdes:
        return "No gains measured."
    lo, hi = min(mdes), max(mdes)
    span = points(lo) if abs(hi - lo) < 5e-4 else f"{100 * lo:.1f}-{points(hi)}"
    verdict = (f"a {100 * target:.0f}-point gain is detectable" if hi <= target else
               f"a {100 * target:.0f}-point gain is NOT detectable everywhere")
    return (f"Smallest gain in balanced accuracy this set-up detects (80 % power, 5 % level; "
            f"{bench['seeds']} seeds, {bench.get('bootstrap', {}).get('test_images', '?')} test "
            f"images): {span}; {verdict}.")


def _tile(x: Any) -> np.ndarray:
    """(C, H, W) float tensor in [0, 1] -> (H, W[, 3]) numpy for imshow; a RAS-ordered volume
    (C, D, H, W) -> its axial | coronal | sagittal slices through the centre, side by side in
    radiological display (anterior / superior up, the patient's right on the left)."""
    a = x.detach().cpu().numpy()
    if a.ndim == 4:
        v = a[0]
        d, h, w = v.shape
        planes = [v[d // 2][::-1, ::-1], v[:, h // 2][::-1, ::-1], v[:, :, w // 2][::-1, ::-1]]
        size = max(max(p.shape) for p in planes)
        gap = np.ones((size, 1))
        tiles = []
        for k, p in enumerate(planes):
            pad = np.zeros((size, size))
            pad[:p.shape[0], :p.shape[1]] = p
            tiles += [pad] + ([gap] if k < 2 else [])
        return np.concatenate(tiles, axis=1)
    return a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)


def _montage(xs: list[Any], gap: int = 2) -> np.ndarray:
    """Images side by side with a white gap (grayscale is drawn as RGB)."""
    tiles = []
    for x in xs:
        t = _tile(x)
        tiles.append(np.repeat(t[..., None], 3, -1) if t.ndim == 2 else t)
    if not tiles:
        return np.ones((8, 8, 3))
    h = tiles[0].shape[0]
    sep = np.ones((h, gap, 3))
    parts = []
    for i, t in enumerate(tiles):
        parts += [t] + ([sep] if i < len(tiles) - 1 else [])
    return np.clip(np.concatenate(parts, axis=1), 0, 1)


def _save(fig: Any, out: Path, name: str) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    atomic_write_bytes(out / "plots" / f"{name}.png", buf.getvalue())
    return f"plots/{name}.png"


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure  # Agg canvas: no GUI, no global pyplot state

    return Figure(figsize=(w, h))


def _pick(y: Any, k: int, n: int) -> list[int]:
    return np.nonzero(y.numpy() == k)[0][:n].tolist()


# ----------------------------------------------------------------------------------- the plots
def plot_examples(out: Path, classes: list[str], test: Any, synth: dict[str, Any],
                  n: int = 6) -> str:
    """Rows = classes; columns = real test examples, then each synthetic set's examples."""
    cols = ["real (test)"] + list(synth)
    fig = _figure(2.0 + 1.15 * n * len(cols), 1.25 * len(classes) + 0.8)
    axes = fig.subplots(len(classes), len(cols), squeeze=False)
    for r, c in enumerate(classes):
        for j, (name, s) in enumerate([("real (test)", test), *synth.items()]):
            ax = axes[r][j]
            idx = _pick(s.y, r, n)
            ax.imshow(_montage([s.x[i] for i in idx]), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=12, fontweight="bold")
            if j == 0:
                ax.set_ylabel(c, fontsize=11, rotation=0, ha="right", va="center")
            if not idx:
                ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center")
    fig.suptitle("Real vs synthetic examples per class", fontsize=13)
    return _save(fig, out, "examples")


def plot_grid(out: Path, name: str, classes: list[str], s: Any, n: int = 12) -> str:
    """Sample grid of one synthetic set: a row of ``n`` images per class."""
    present = [k for k in range(len(classes)) if int((s.y == k).sum())]
    fig = _figure(1.0 + 0.95 * n, 1.05 * len(present) + 0.7)
    axes = fig.subplots(len(present), 1, squeeze=False)
    for r, k in enumerate(present):
        ax = axes[r][0]
        ax.imshow(_montage([s.x[i] for i in _pick(s.y, k, n)]), cmap="gray",
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(classes[k], fontsize=11, rotation=0, ha="right", va="center")
    fig.suptitle(f"Synthetic samples: {name}", fontsize=13)
    return _save(fig, out, f"grid_{name}")


def plot_benchmark(out: Path, bench: dict[str, Any], metric: str = "balanced_accuracy") -> str:
    """Left: ``metric`` per real fraction and setting with 95 % CIs; right: gain over real-only."""
    arms = bench["arms"]
    fractions = list(dict.fromkeys(a["fraction"] for a in arms if a["fraction"] != "none"))
    kinds = list(dict.fromkeys(a["setting"] for a in arms if a["fraction"] != "none"))
    synth_only = [a for a in arms if a["fraction"] == "none"]
    fig = _figure(13, 4.8)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
    width = 0.8 / max(len(kinds), 1)
    xs = np.arange(len(fractions))

    def err(d: dict[str, Any]) -> tuple[float, list[list[float]]]:
        m = d["mean"] if d["mean"] is not None else np.nan
        lo = d["lo"] if d.get("lo") is not None else m
        hi = d["hi"] if d.get("hi") is not None else m
        return m, [[m - lo], [hi - m]]

    for i, kind in enumerate(kinds):
        for j, f in enumerate(fractions):
            a = next((a for a in arms if a["setting"] == kind and a["fraction"] == f), None)
            if a is None:
                continue
            m, e = err(a["metrics"][metric])
            ax.bar(xs[j] + (i - (len(kinds) - 1) / 2) * width, m, width * 0.95, yerr=e,
                   capsize=4, color=SETTING_COLORS[i % len(SETTING_COLORS)],
                   label=kind if j == 0 else None)
    for i, a in enumerate(synth_only):
        m, _ = err(a["metrics"][metric])
        d = a["metrics"][metric]
        ax.axhline(m, ls="--", lw=1.5, color="#555", label=f"{a['setting']} only")
        if d.get("lo") is not None:
            ax.axhspan(d["lo"], d["hi"], color="#999", alpha=0.15 + 0.05 * i)
    ax.set_xticks(xs, [f"real {f}" for f in fractions], fontsize=11)
    ax.set_ylabel(metric.replace("_", " "), fontsize=11)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Test {metric.replace('_', ' ')} (mean, 95% bootstrap CI)", fontsize=12)
    ax.legend(fontsize=9, loc="best", framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)

    gains = [a for a in arms if "gain" in a]
    sets = list(dict.fromkeys(a["setting"] for a in gains))
    width2 = 0.8 / max(len(sets), 1)
    for i, sname in enumerate(sets):
        for j, f in enumerate(fractions):
            a = next((a for a in gains if a["setting"] == sname and a["fraction"] == f), None)
            if a is None:
                continue
            m, e = err(a["gain"][metric])
            x = xs[j] + (i - (len(sets) - 1) / 2) * width2
            ax2.bar(x, m, width2 * 0.95, yerr=e, capsize=5,
                    color=SETTING_COLORS[(i + 1) % len(SETTING_COLORS)],
                    label=sname if j == 0 else None)
            mde = (a.get("power") or {}).get("mde") if metric == "balanced_accuracy" else None
            if mde is not None:  # the smallest gain this arm could detect
                ax2.hlines([mde, -mde], x - width2 * 0.45, x + width2 * 0.45, colors="#777",
                           linestyles=":", lw=1.5,
                           label="detectable gain (80% power)" if (i, j) == (0, 0) else None)
    ax2.axhline(0, color="black", lw=1)
    ax2.set_xticks(xs, [f"real {f}" for f in fractions], fontsize=11)
    ax2.set_ylabel(f"gain in {metric.replace('_', ' ')}", fontsize=11)
    ax2.set_title("Gain over real-only (paired bootstrap, 95% CI)", fontsize=12)
    if sets:
        ax2.legend(fontsize=9)
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "benchmark")


def plot_confusions(out: Path, bench: dict[str, Any]) -> str:
    """Row-normalised confusion matrices (summed over seeds) of every benchmark arm."""
    arms = bench["arms"]
    classes = bench["classes"]
    ncols = min(4, len(arms))
    nrows = math.ceil(len(arms) / ncols)
    side = 2.2 + 0.45 * len(classes)
    fig = _figure(side * ncols, side * nrows + 0.4)
    fig.set_layout_engine("constrained")  # keeps axis labels clear of the next row's titles
    axes = fig.subplots(nrows, ncols, squeeze=False)
    short = [c if len(c) <= 10 else c[:9] + "…" for c in classes]
    for ax in axes.ravel()[len(arms):]:
        ax.axis("off")
    for ax, a in zip(axes.ravel(), arms, strict=False):
        cm = np.asarray(a["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(classes)), short, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), short, fontsize=8)
        ax.set_title(f"{a['setting']} @ {a['fraction']}", fontsize=10)
        ax.set_xlabel("predicted", fontsize=8)
    fig.suptitle("Confusion matrices on the real test split (rows: true class)", fontsize=12)
    return _save(fig, out, "confusion")


def plot_pairs(out: Path, name: str, s: Any, train: Any, closest: list[dict[str, Any]]) -> str:
    """Closest synthetic/real-training pairs: synthetic on top, its nearest real image below."""
    n = max(len(closest), 1)
    fig = _figure(1.6 * n + 0.8, 4.0)
    axes = fig.subplots(2, n, squeeze=False)
    for j, c in enumerate(closest):
        for r, (img, label) in enumerate(((s.x[c["synth_index"]], c["synthetic_id"]),
                                          (train.x[c["real_index"]], c["real_id"]))):
            ax = axes[r][j]
            t = _tile(img)
            ax.imshow(t, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label if len(label) <= 24 else "…" + label[-23:], fontsize=6)
        axes[0][j].set_title(f"d={c['feature_distance']:.3f}\nrmse={c['pixel_distance']:.3f}",
                             fontsize=8)
    axes[0][0].set_ylabel("synthetic", fontsize=10)
    axes[1][0].set_ylabel("nearest real\n(train)", fontsize=10)
    fig.suptitle(f"{name}: closest synthetic / training pairs (feature cosine distance)",
                 fontsize=11)
    fig.tight_layout()
    return _save(fig, out, f"pairs_{name}")


def plot_privacy(out: Path, pdetails: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Cumulative distributions of nearest-training-image distances: synthetic vs real test.

    Where a curve crosses the threshold line is its near-copy share; a copying generator's curve
    rises at 0, an honest one follows the real test curve.
    """
    fig = _figure(12, 3.8)
    axes = fig.subplots(1, 2)
    for ax, space, label in ((axes[0], "feature", "feature cosine distance"),
                             (axes[1], "pixel", "pixel RMSE")):
        curves = [("real test (reference)", pdetails["reference"][space].numpy(), "#555")]
        curves += [(name, d[space].numpy(), SETTING_COLORS[(i + 1) % len(SETTING_COLORS)])
                   for i, (name, d) in enumerate(pdetails["sets"].items())]
        for name, v, color in curves:
            if len(v):
                xs = np.sort(v)
                ax.step(np.concatenate([[0], xs]), np.arange(len(xs) + 1) / len(xs),
                        where="post", color=color, lw=2, label=name)
        thr = next(iter(metrics["sets"].values()))[space]["threshold"] if metrics["sets"] else None
        if thr is not None:
            ax.axvline(thr, color="#b42318", ls="--", label="near-copy threshold")
        ax.set_xlabel(f"distance to the nearest real training image ({label})", fontsize=10)
        ax.set_ylabel("share of images at or below")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, out, "privacy")


def plot_fidelity(out: Path, fidelity: dict[str, Any], classes: list[str]) -> str:
    """FID per class: each synthetic set beside the real-vs-real reference."""
    sets = fidelity["sets"]
    fig = _figure(max(6.0, 1.6 * len(classes) + 2), 3.8)
    ax = fig.subplots()
    names = ["real train vs test (reference)"] + list(sets)
    width = 0.8 / len(names)
    xs = np.arange(len(classes) + 1)
    labels = [*classes, "all"]
    for i, name in enumerate(names):
        src = fidelity["reference"] if i == 0 else sets[name]
        vals = [(src["per_class"].get(c) or {}).get("fid") for c in classes]
        vals.append(src["overall"]["fid"])
        ax.bar(xs + (i - (len(names) - 1) / 2) * width,
               [np.nan if v is None else v for v in vals], width * 0.95,
               color="#999" if i == 0 else SETTING_COLORS[i % len(SETTING_COLORS)], label=name)
    ax.set_xticks(xs, labels, fontsize=10)
    ax.set_ylabel("FID (lower = closer to real test)")
    ax.set_title("FID per class (EfficientNet-Lite0 features)", fontsize=12)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "fidelity")


# --------------------------------------------------------------------------------- HTML pieces
def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>'
                 for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>'
                                     for i, c in enumerate(r)) + "</tr>" for r in rows)
    head = f"<tr>{th}</tr>" if any(header) else ""
    return f"<table>{head}{body}</table>"


def _img(out: Path, rel: str, alt: str) -> str:
    data = base64.b64encode((out / rel).read_bytes()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _verdict_class(v: str | None) -> str:
    v = v or ""
    return "helps" if v.startswith("helps") else "hurts" if v.startswith("hurts") else "neutral"


def _ref(v: str) -> str:
    return f'<span class="ref">({v})</span>'


def _verdict_span(v: str | None) -> str:
    return f'<span class="{_verdict_class(v)}">{html.escape(v or "")}</span>' if v else ""


def _benchmark_html(out: Path, bench: dict[str, Any], plots: dict[str, str]) -> str:
    classes = bench["classes"]
    items = []
    for a in bench["arms"]:
        if "gain" not in a:
            continue
        g = a["gain"]["balanced_accuracy"]
        pw = a.get("power") or {}
        advice = (f'<br><span class="advice">{html.escape(pw["advice"])}</span>'
                  if pw.get("advice") else "")
        items.append(f'<li>{html.escape(a["setting"])} with real {html.escape(a["fraction"])}:'
                     f' balanced accuracy {fmt_ci(g, signed=True)} vs real-only → '
                     f'{_verdict_span(a["verdict"])} <span class="ref">(detectable: '
                     f'{points(pw.get("mde"))}; seed spread ±'
                     f'{fmt((g.get("seeds") or {}).get("sd"), 3)})</span>{advice}</li>')
        items += [f'<li class="sub">{html.escape(t)}</li>' for t in baseline_texts(a)]
    rows, more = [], []
    for a in bench["arms"]:
        m = a["metrics"]
        g = a.get("gain", {}).get("balanced_accuracy")
        rows.append([html.escape(a["setting"]), html.escape(a["fraction"]), fmt(a["n_real"]),
                     fmt(a.get("n_added", a["n_synthetic"])), str(a["n_runs"]),
                     fmt_ci(m["balanced_accuracy"]),
                     fmt_ci(g, signed=True) if g else "",
                     fmt((g.get("seeds") or {}).get("sd")) if g else "",
                     points((a.get("power") or {}).get("mde"), "pt") if g else "",
                     _verdict_span(a.get("verdict")),
                     f'{a.get("epochs", 0):.0f} ({a.get("best_epoch", 0):.0f})'
                     + ("" if a.get("converged", True) else " ⚠")])
        gains = a.get("gain", {})
        more.append([html.escape(a["setting"]), html.escape(a["fraction"]),
                     fmt_ci(m["accuracy"]), fmt_ci(m["macro_f1"]), fmt_ci(m["auroc"])]
                    + [fmt_ci(gains.get(k), signed=True) if gains else ""
                       for k in ("accuracy", "macro_f1", "auroc")])
    table = _table(["setting", "real data", "n real", "n added", "seeds", "balanced acc.",
                    "gain (bal. acc.)", "seed sd", "detectable", "verdict", "epochs (best)"],
                   rows, 2)
    table2 = _table(["setting", "real data", "accuracy", "macro-F1", "AUROC", "gain (accuracy)",
                     "gain (macro-F1)", "gain (AUROC)"], more, 2)
    pc_rows = []
    for a in bench["arms"]:
        pc_rows.append([html.escape(a["setting"]), html.escape(a["fraction"])] +
                       [fmt_ci(a["per_class"][c]["recall"], 2) for c in classes] +
                       [fmt_ci(a["per_class"][c]["auroc"], 2) for c in classes])
    pc = _table(["setting", "real data"] + [f"recall {c}" for c in classes] +
                [f"AUROC {c}" for c in classes], pc_rows, 2)
    boot = bench.get("bootstrap", {})
    return (
        '<section id="benchmark"><h2>Does synthetic data help? Downstream classifier benchmark</h2>'
        f'<p class="note">Same classifier trained on each setting, {bench["seeds"]} seed(s) each,'
        ' tested on the held-out real test split (never seen by the generator). Intervals: 95 % '
        f'paired bootstrap ({boot.get("replicates", "?")} replicates) that resamples the '
        f'{boot.get("test_images", "?")} test images (within each class) and the seeds, the '
        'same replicate for every arm; gains are paired by seed (same real images) and by test '
        'image. <i>Seed sd</i>: the spread of the gain between seeds alone. <i>Detectable '
        'gain</i>: the smallest gain this set-up finds with 80 % power at the 5 % level (2.8 '
        'bootstrap standard errors). A verdict needs an interval that excludes 0 and at least '
        'two seeds. <i>augment</i>: the same real images with standard augmentation, repeated '
        'to the size of real+synthetic; <i>oracle</i>: the same real images plus as many extra '
        'real images as synthetic ones.</p>'
        f'<p class="power{"" if _detects(bench) else " weak"}">'
        f'{html.escape(power_text(bench))}</p>'
        f'<ul class="verdicts">{"".join(items)}</ul>{table}'
        f'{_img(out, plots["benchmark"], "benchmark chart")}'
        f'<h3>Other metrics (95 % paired bootstrap intervals)</h3>{table2}'
        f'<h3>Per class (recall = sensitivity)</h3>{pc}'
        f'<h3>Confusion matrices</h3>{_img(out, plots["confusion"], "confusion matrices")}'
        '</section>')


def _fidelity_html(out: Path, fid: dict[str, Any], classes: list[str], plots: dict[str, str]
                   ) -> str:
    ref = fid["reference"]
    rows = []
    for name, s in fid["sets"].items():
        for c in ["overall", *classes]:
            p = s["overall"] if c == "overall" else s["per_class"].get(c)
            if p is None:
                continue
            rp = ref["overall"] if c == "overall" else ref["per_class"][c]
            ms = s["msssim"].get(c) if c != "overall" else None
            rms = ref["msssim"].get(c) if c != "overall" else None
            cf = (s.get("class_fidelity") or {}).get(c)
            rcf = (ref.get("class_fidelity") or {}).get(c)
            rows.append([html.escape(name), html.escape(c), fmt(p["n_fake"]),
                         f'{fmt(p["fid"], 1)} {_ref(fmt(rp["fid"], 1))}',
                         f'{fmt(p["kid"], 4)} {_ref(fmt(rp["kid"], 4))}',
                         f'{fmt(p["precision"], 2)} {_ref(fmt(rp["precision"], 2))}',
                         f'{fmt(p["recall"], 2)} {_ref(fmt(rp["recall"], 2))}',
                         f'{fmt(p.get("density"), 2)} {_ref(fmt(rp.get("density"), 2))}',
                         f'{fmt(p.get("coverage"), 2)} {_ref(fmt(rp.get("coverage"), 2))}',
                         f'{fmt(ms, 3)} {_ref(fmt(rms, 3))}' if c != "overall" else "",
                         f'{fmt(cf, 2)} {_ref(fmt(rcf, 2))}'])
    fx = fid["feature_extractor"]
    return (
        '<section id="fidelity"><h2>Fidelity and diversity</h2>'
        f'<p class="note">Features: {html.escape(fx["name"])} (ImageNet weights, offline), images '
        f'at {fx["image_size"]} px resized to {fx["input_size"]} px. Each figure compares the '
        'synthetic images with the real <b>test</b> images; the grey value in brackets is the '
        'real-vs-real reference (real train vs real test), what two samples of the real '
        'distribution of these sizes reach. FID/KID: lower is closer. Precision: share of '
        'synthetic images on the real manifold (k-NN); recall: share of real images covered '
        'by the synthetic manifold; density (about 1 when the distributions match) and '
        'coverage are their outlier-robust versions (Naeem et al. 2020). MS-SSIM between '
        'random same-class pairs: lower = more '
        'diverse. Class fidelity: accuracy of a real-trained classifier on the synthetic '
        'images (reference: on real test images).</p>'
        + (f'<p class="note">Volumes: {html.escape(fid["fid_label"])} is the FID of the three '
           "planes' features side by side; the 2.5D FID (mean of the per-plane FIDs, the one "
           'the docs quote) is in the Volumes section.</p>' if fid.get("fid_label") else "")
        + _table(["set", "class", "n", html.escape(fid.get("fid_label", "FID")), "KID",
                  "precision", "recall", "density",
                  "coverage", "MS-SSIM", "class fidelity"], rows, 2)
        + _img(out, plots["fidelity"], "FID per class") + '</section>')


def _privacy_html(out: Path, priv: dict[str, Any], plots: dict[str, str]) -> str:
    rows = []
    for name, s in priv["sets"].items():
        for space in ("feature", "pixel"):
            p = s[space]
            rows.append([html.escape(name), space, fmt(p["synth_median_nn"], 4),
                         fmt(p["real_median_nn"], 4), fmt(p["synth_min_nn"], 4),
                         fmt(p["threshold"], 4),
                         f'{fmt(100 * p["near_copy_share"], 1)} % ({p["n_near_copies"]})'
                         if p["near_copy_share"] is not None else
                         "no reference" if p.get("no_reference") else "–",
                         f'{fmt(100 * p["expected_share"], 1)} %'])
    pairs = "".join(_img(out, plots[f"pairs_{n}"], f"closest pairs {n}") for n in priv["sets"])
    return (
        '<section id="privacy"><h2>Privacy: nearest training images</h2>'
        '<p class="note">Distance from every synthetic image to its nearest real <b>training</b>'
        ' image (feature cosine distance and pixel RMSE). Near-copy threshold: the '
        f'{fmt(100 * next(iter(priv["sets"].values()))["feature"]["expected_share"], 1)} % '
        'quantile of the real test images\' own nearest-training-image distances; a generator '
        'that does not copy shows a near-copy share close to that expected share (test '
        'images that are copies of, or share a group with, training images do not count).</p>'
        + _no_reference(priv)
        + _table(["set", "space", "median NN (synth)", "median NN (real test)", "min NN (synth)",
                  "threshold", "near-copies", "expected"], rows, 2)
        + _img(out, plots["privacy"], "privacy histogram") + pairs + '</section>')


def _no_reference(priv: dict[str, Any]) -> str:
    """The privacy section's warning when the real data gave no near-copy reference."""
    reasons = sorted({s[sp]["no_reference"] for s in priv["sets"].values()
                      for sp in ("feature", "pixel") if s[sp].get("no_reference")})
    ex = priv.get("reference") or {}
    lines = [f"No reference, so no near-copy share: {html.escape(r)}." for r in reasons]
    if ex.get("with_copy"):
        lines.append(f"{ex['with_copy']} real test image(s) are exact copies of training images.")
    return "".join(f'<p class="note"><b>{t}</b></p>' for t in lines)


def _adherence_html(adh: dict[str, Any]) -> str:
    if not adh.get("applies"):
        return ('<section id="adherence"><h2>Attribute adherence</h2>'
                f'<p class="note">Not applicable: {html.escape(adh.get("reason", ""))}</p>'
                '</section>')
    how = adh["fields"]
    rows, notes = [], []
    for name, s in adh["sets"].items():
        if not s.get("n"):
            notes.append(f'<p class="note"><b>{html.escape(name)}</b>: not measured '
                         f'({html.escape(s.get("reason", ""))}).</p>')
            continue
        for f, kind in how.items():
            if f not in s["synthetic"]:
                continue
            unit = {"abs": "mean |error| (lower better)", "exact": "agreement (higher better)",
                    "jaccard": "Jaccard (higher better)"}[kind]
            rows.append([html.escape(name), f, unit, fmt(s["synthetic"].get(f), 3),
                         fmt(s["shuffled"].get(f), 3), fmt(adh["real"].get(f), 3)])
    table = _table(["set", "attribute", "measure", "synthetic", "shuffled", "real"], rows, 3) \
        if rows else ""
    return ('<section id="adherence"><h2>Attribute adherence</h2>'
            '<p class="note">Each synthetic image is measured with <code>medsynth.measure</code> '
            'and compared with the attributes of the description it was generated from. '
            '<b>shuffled</b>: the same measurement against the request of a random other '
            'sample of the same class (what the class alone explains); <b>real</b>: real test '
            'images against their own ground truth (the measurement noise floor). Text '
            'conditioning works when <i>synthetic</i> beats <i>shuffled</i>.</p>'
            + table + "".join(notes) + '</section>')


def write_report(out: Path, metrics: dict[str, Any], *, train: Any, test: Any,
                 synth: dict[str, Any], pdetails: dict[str, Any],
                 report_examples: list[dict[str, Any]] | None = None) -> list[str]:
    """Write every plot and ``report.html``; return the plot paths (relative to ``out``)."""
    classes = metrics["real"]["classes"]
    plots: dict[str, str] = {"examples": plot_examples(out, classes, test, synth)}
    for name, s in synth.items():
        plots[f"grid_{name}"] = plot_grid(out, name, classes, s)
        plots[f"pairs_{name}"] = plot_pairs(out, name, s, train,
                                            pdetails["sets"][name]["closest"])
    bench = metrics.get("benchmark")
    if bench and bench["arms"]:
        plots["benchmark"] = plot_benchmark(out, bench)
        plots["confusion"] = plot_confusions(out, bench)
    plots["privacy"] = plot_privacy(out, pdetails, metrics["privacy"])
    plots["fidelity"] = plot_fidelity(out, metrics["fidelity"], classes)

    sections = []
    if metrics.get("warnings"):
        sections.append('<div class="warn">' + "<br>".join(html.escape(w) for w in
                                                          metrics["warnings"]) + "</div>")
    r = metrics["real"]
    setup = _table(["", ""], [
        ["real dataset", html.escape(r["path"])],
        ["classes", html.escape(", ".join(classes))],
        ["real images (train / val / test)", f'{r["n_train"]} / {r["n_val"]} / {r["n_test"]}'],
        *[[f"synthetic: {html.escape(n)}", f'{s["n_images"]} images '
           f'({html.escape(", ".join(f"{k}: {v}" for k, v in s["per_class"].items()))})']
          for n, s in metrics["synthetic"].items()],
        ["classifier", html.escape(f'{metrics["classifier"]["name"]} (MONAI), '
                                   f'{metrics["classifier"]["device"]}, image size '
                                   f'{r["image_size"]} px')],
    ], left=2)
    sections.append(f'<section id="setup"><h2>Setup</h2>{setup}</section>')
    if bench and bench["arms"]:
        sections.append(_benchmark_html(out, bench, plots))
    else:
        sections.append('<section id="benchmark"><h2>Downstream benchmark</h2>'
                        '<p class="note">Skipped (--no-benchmark).</p></section>')
    sections.append('<section id="examples"><h2>Real and synthetic examples</h2>'
                    + _img(out, plots["examples"], "examples")
                    + "".join(_img(out, plots[f"grid_{n}"], f"grid {n}") for n in synth)
                    + "</section>")
    sections.append(_fidelity_html(out, metrics["fidelity"], classes, plots))
    if metrics.get("volumes"):
        from medsynth.evaluate.volumes import volumes_html

        sections.append(volumes_html(metrics["volumes"]))
    sections.append(_privacy_html(out, metrics["privacy"], plots))
    sections.append(_adherence_html(metrics["adherence"]))
    if metrics.get("clip"):
        from medsynth.evaluate.clip_features import clip_html

        sections.append(clip_html(metrics["clip"], classes))
    if metrics.get("reports") is not None:
        from medsynth.evaluate.reports_check import reports_html

        sections.append(reports_html(metrics["reports"], report_examples or []))
    from medsynth import __version__
    from medsynth.artifacts import now_iso

    nav = " ".join(f'<a href="#{k}">{v}</a>' for k, v in (
        ("setup", "Setup"), ("benchmark", "Benchmark"), ("examples", "Examples"),
        ("fidelity", "Fidelity"), *((("volumes", "Volumes"),) if metrics.get("volumes") else ()),
        ("privacy", "Privacy"), ("adherence", "Adherence"),
        *((("clip", "CLIP"),) if metrics.get("clip") else ()),
        *((("reports", "Reports"),) if metrics.get("reports") is not None else ())))
    page = Template(TEMPLATE.read_text("utf-8")).substitute(
        title="medsynth evaluation report",
        subtitle=html.escape(f"{now_iso()} · medsynth {__version__} · real: {r['path']} · "
                             f"synthetic: {', '.join(synth)}"),
        nav=nav, body="\n".join(sections))
    atomic_write_text(out / "report.html", page)
    return sorted(plots.values())


# ------------------------------------------------------------------------------ terminal summary
def print_summary(metrics: dict[str, Any]) -> None:
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
    vol25 = (metrics.get("volumes") or {}).get("fid_2_5d")
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
    if metrics.get("clip"):
        from medsynth.evaluate.clip_features import clip_summary_lines

        for line in clip_summary_lines(metrics["clip"]):
            out.print(line)
