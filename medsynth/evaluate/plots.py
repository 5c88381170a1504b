"""The report's plots (matplotlib Figure on the Agg canvas, no pyplot state): every plot is
written to ``plots/<name>.png`` and its relative path returned."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medsynth.evaluate.sections import Metrics, PrivacySection

import numpy as np

from medsynth.artifacts import atomic_write_bytes

SETTING_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


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


def plot_privacy(out: Path, pdetails: dict[str, Any], metrics: PrivacySection) -> str:
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
        first = next(iter(metrics["sets"].values()), None)
        thr = (first["feature"] if space == "feature" else first["pixel"])["threshold"] \
            if first else None
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


def plot_all(out: Path, metrics: Metrics, *, train: Any, test: Any,
             synth: dict[str, Any], pdetails: dict[str, Any]) -> dict[str, str]:
    """Every plot of the report: name -> path relative to ``out``."""
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
    return plots
