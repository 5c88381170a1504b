"""Measurements of a 3D latent model and its generated volumes (used by benchmarks.latent_3d).

- :func:`decode_check`: windowed vs whole-volume decoding of real validation volumes;
- :func:`class_recognition`: a small 3D classifier (MONAI ResNet-10, 32^3 copies) trained on
  the real training phantoms names the *requested* class of generated volumes;
- :func:`lesion_by_grade`: the offline prostate measurer's lesion diameter of generated (and
  real test) volumes per requested class, and its rank correlation with the grade;
- :func:`describe_agreement`: the offline prostate measurer (describe) against the ground truth;
- ``medsynth evaluate`` on the set through the CLI (3D classifier benchmark with fewer seeds
  (and epochs) than the defaults for the CPU budget, 2.5D FID against the real-vs-real reference, 3D privacy).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import run_cli

GRADE = {"no_lesion": 0, "pirads_3": 1, "pirads_4_5": 2}


def _psnr(a: Any, b: Any) -> float:
    import torch

    return float(10 * torch.log10(4.0 / ((a.clamp(-1, 1) - b) ** 2).mean()))


def decode_check(model: Path, data: Path, n: int = 6, window: int = 8) -> dict[str, Any]:
    """Whole vs windowed decoding of ``n`` validation volumes' latents (PSNR in [-1, 1])."""

    from medsynth.imaging.dataset import open_dataset
    from medsynth.models.bundle import load_bundle

    b = load_bundle(model)
    ds = open_dataset(data)
    rows = ds.table[ds.table["split"] == "val"].head(n)
    out: dict[str, list[float]] = {"full": [], "window": [], "agree": []}
    t_full = t_win = 0.0
    for _, r in rows.iterrows():
        x = b.from_pixels(ds.load(r).array[None])
        z = b.encode(x)
        t0 = time.perf_counter()
        full = b.decode(z, window=0)
        t1 = time.perf_counter()
        win = b.decode(z, window=window)
        t2 = time.perf_counter()
        t_full, t_win = t_full + t1 - t0, t_win + t2 - t1
        out["full"].append(_psnr(full, x))
        out["window"].append(_psnr(win, x))
        out["agree"].append(_psnr(win, full.clamp(-1, 1)))
    lat = tuple(b.sample_shape[1:])
    return {"n_volumes": len(rows), "latent_shape": list(lat), "window_latent_voxels": window,
            "psnr_full_db": round(float(np.mean(out["full"])), 2),
            "psnr_windowed_db": round(float(np.mean(out["window"])), 2),
            "psnr_windowed_vs_full_db": round(float(np.mean(out["agree"])), 2),
            "decode_s_full": round(t_full / max(1, len(rows)), 2),
            "decode_s_windowed": round(t_win / max(1, len(rows)), 2)}


def noise_floor(model: Path, data: Path, n: int = 6, seed: int = 999) -> dict[str, Any]:
    """How far the autoencoder's PSNR can go on these phantoms: ``n`` fresh phantoms (a seed
    not in the dataset) rendered twice, with and without their Rician noise (the same anatomy,
    the same random draws otherwise). PSNR in [-1, 1] through the model's own intensity map of
    the noise-free volume against the noisy one (what a perfectly denoising autoencoder would
    score), and of the autoencoder's reconstruction against each."""
    from medsynth.data.demo import prostate
    from medsynth.data.demo.common import image_rng
    from medsynth.imaging.dataset import open_dataset
    from medsynth.models.bundle import load_bundle

    b = load_bundle(model)
    ds = open_dataset(data)
    size = int(ds.load(ds.table.iloc[0]).array.shape[-1])
    out: dict[str, list[float]] = {"clean_vs_noisy": [], "recon_vs_noisy": [],
                                   "recon_vs_clean": []}
    for i in range(n):
        cls = prostate.CLASSES[i % len(prostate.CLASSES)]
        vols = []
        for noisy in (True, False):
            rng = image_rng(seed, prostate.CLASSES.index(cls), i)
            attrs = prostate.sample_attributes(cls, rng)
            if not noisy:
                attrs = {**attrs, "noise": 0.0}
            vols.append(b.from_pixels(prostate.render_attributes(cls, attrs, rng, size)[0][None]))
        x, clean = vols
        recon = b.decode(b.encode(x), window=0).clamp(-1, 1)
        out["clean_vs_noisy"].append(_psnr(clean, x))
        out["recon_vs_noisy"].append(_psnr(recon, x))
        out["recon_vs_clean"].append(_psnr(recon, clean))
    return {"n_volumes": n, "size": size,
            **{f"psnr_{k}_db": round(float(np.mean(v)), 2) for k, v in out.items()}}


def _small(arrays: list[np.ndarray], lo: float, hi: float, size: int = 32) -> Any:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.stack([a.astype(np.float32) for a in arrays]))
    x = (x - lo) / (hi - lo) * 2 - 1
    return F.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=False)


def class_recognition(data: Path, synth: Path, *, seed: int = 0, epochs: int = 40) -> dict[str, Any]:
    """Train a 3D ResNet-10 on the real training phantoms (val split for early stopping); its
    accuracy on the real test split and on the generated volumes (against the requested class)."""
    import torch
    from monai.networks.nets import resnet10

    from medsynth.imaging.dataset import open_dataset
    from medsynth.imaging.readers import read_image
    from medsynth.synthset import open_synthetic

    ds = open_dataset(data)
    classes = list(ds.classes)

    def split(name: str) -> tuple[list[np.ndarray], list[int]]:
        rows = ds.table[ds.table["split"] == name]
        return ([ds.load(r).array for _, r in rows.iterrows()],
                [classes.index(str(c)) for c in rows["class"]])

    (tr, ytr), (va, yva), (te, yte) = split("train"), split("val"), split("test")
    lo, hi = float(np.min([a.min() for a in tr])), float(np.percentile(np.stack(tr), 99.5))
    s = open_synthetic(synth)
    syn = [read_image(s.root / str(p)).array for p in s.table["nifti"]]
    ysyn = [classes.index(str(c)) for c in s.table["class"]]
    xtr, xva, xte, xsyn = (_small(v, lo, hi) for v in (tr, va, te, syn))
    torch.manual_seed(seed)
    net = resnet10(spatial_dims=3, n_input_channels=1, num_classes=len(classes))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    best, best_state, patience = -1.0, None, 0
    ytr_t = torch.tensor(ytr)

    def acc(x: Any, y: list[int]) -> tuple[float, float, list[int]]:
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(x[i:i + 16]).argmax(1) for i in range(0, len(x), 16)]).tolist()
        net.train()
        yy = np.array(y)
        pp = np.array(pred)
        bal = float(np.mean([np.mean(pp[yy == c] == c) for c in np.unique(yy)]))
        return float(np.mean(pp == yy)), bal, pred

    t0 = time.perf_counter()
    ep = 0
    for ep in range(epochs):  # noqa: B007  (the epochs run are reported)
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(perm), 8):
            idx = perm[i:i + 8]
            loss = torch.nn.functional.cross_entropy(net(xtr[idx]), ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = acc(xva, yva)[1]
        if v > best:
            best, patience = v, 0
            best_state = {k: t.clone() for k, t in net.state_dict().items()}
        else:
            patience += 1
            if patience >= 8:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    real_acc, real_bal, _ = acc(xte, yte)
    syn_acc, syn_bal, pred = acc(xsyn, ysyn)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(ysyn, pred, strict=True):
        confusion[t, p] += 1
    return {"classifier": "MONAI resnet10 (3D) on 32^3 copies, trained on the real train split",
            "epochs_run": ep + 1, "val_balanced_accuracy": round(best, 3),
            "real_test": {"accuracy": round(real_acc, 3), "balanced_accuracy": round(real_bal, 3),
                          "n": len(yte)},
            "synthetic": {"accuracy": round(syn_acc, 3), "balanced_accuracy": round(syn_bal, 3),
                          "n": len(ysyn),
                          "confusion_requested_x_predicted": confusion.tolist()},
            "chance": round(1 / len(classes), 3), "classes": classes,
            "train_s": round(time.perf_counter() - t0, 1)}


def lesion_by_grade(data: Path, synth: Path) -> dict[str, Any]:
    """Measured lesion diameter (mm; 0 = none found) per class, generated vs real test."""
    from scipy.stats import spearmanr

    from medsynth.imaging.dataset import open_dataset
    from medsynth.imaging.readers import read_image
    from medsynth.pixel_attributes.prostate import measure_prostate
    from medsynth.synthset import open_synthetic

    def measure(img: Any) -> float:
        m = measure_prostate(img.array, img.affine)
        return float(m.get("diameter_mm") or 0.0)

    s = open_synthetic(synth)
    syn = [(str(c), measure(read_image(s.root / str(p)))) for c, p in
           zip(s.table["class"], s.table["nifti"], strict=True)]
    ds = open_dataset(data)
    rows = ds.table[ds.table["split"] == "test"]
    real = [(str(r["class"]), measure(ds.load(r))) for _, r in rows.iterrows()]

    def summary(pairs: list[tuple[str, float]]) -> dict[str, Any]:
        by = {c: [d for k, d in pairs if k == c] for c in GRADE}
        rho = spearmanr([GRADE[c] for c, _ in pairs], [d for _, d in pairs])
        return {"mean_diameter_mm": {c: round(float(np.mean(v)), 2) if v else None
                                     for c, v in by.items()},
                "lesion_found_share": {c: round(float(np.mean([d > 0 for d in v])), 2)
                                       if v else None for c, v in by.items()},
                "spearman_grade_vs_diameter": round(float(rho.statistic), 3),
                "spearman_p": float(rho.pvalue), "n": len(pairs)}

    return {"synthetic": summary(syn), "real_test": summary(real),
            "measurer": "medsynth.pixel_attributes.prostate (offline, mirror-asymmetry lesion)"}


def evaluate_3d(w: Path, *, threads: int = 1, seeds: int = 2, epochs: int | None = None,
                fractions: str | None = None, recognition_epochs: int = 40) -> dict[str, Any]:
    """Every measurement of the latent_3d benchmark on WORKDIR's model and synthetic set."""
    data, model, synth = w / "data", w / "model", w / "synth"
    cache = w / "evaluation.json"
    res: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}

    def step(name: str, fn: Any) -> None:
        if name not in res:
            t0 = time.perf_counter()
            res[name] = fn()
            res[name]["wall_s"] = round(time.perf_counter() - t0, 1)
            cache.write_text(json.dumps(res, indent=2))

    step("describe_agreement", lambda: describe_agreement(data, w / "store"))
    step("decode", lambda: decode_check(model, data))
    step("noise_floor", lambda: noise_floor(model, data))
    step("lesion_by_grade", lambda: lesion_by_grade(data, synth))
    step("class_recognition", lambda: class_recognition(data, synth, epochs=recognition_epochs))
    report = w / "report"
    if "evaluate" not in res:
        try:
            stage = run_cli(["evaluate", "--real", str(data), "--synthetic", str(synth), "--out",
                             str(report), "--threads", str(threads), "--seeds", str(seeds),
                             *(["--epochs", str(epochs)] if epochs else []),
                             *(["--real-fraction", fractions] if fractions else []),
                             "--resume"],
                            w / "log.txt", threads)
            metrics = json.loads((report / "metrics.json").read_text())
            res["evaluate"] = {"stage": stage, "volumes": metrics.get("volumes"),
                               "benchmark_arms": arms_summary(metrics.get("benchmark") or {})}
            cache.write_text(json.dumps(res, indent=2))
        except RuntimeError as e:
            res["evaluate_error"] = str(e)
    return res


def arms_summary(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """Balanced accuracy (mean [95 % interval]) of each benchmark arm of evaluate's metrics."""
    out = []
    for arm in bench.get("arms", []):
        m = arm.get("metrics", {}).get("balanced_accuracy", {})
        out.append({"setting": arm.get("setting"), "fraction": arm.get("fraction"),
                    "n_real": arm.get("n_real"), "n_added": arm.get("n_added"),
                    "balanced_accuracy": [round(float(m[k]), 3) for k in ("mean", "lo", "hi")
                                          if k in m]})
    return out


def describe_agreement(data: Path, store: Path) -> dict[str, Any]:
    """The offline prostate measurer (``describe``, attributes backend) against the phantom's
    ground truth, on the described (train) volumes: exact agreement on zone, side, level and
    margin, lesion found vs present, and the diameter's correlation where both see a lesion."""
    import pandas as pd

    from medsynth.store import open_store

    truth = pd.read_csv(data / "labels.csv").set_index("image_id")
    recs = [r for c in open_store(store).classes for r in open_store(store).records(c)]
    rows = [(truth.loc[r.image_id], r.attributes) for r in recs if r.image_id in truth.index]
    out: dict[str, Any] = {"n": len(rows), "backend": recs[0].model if recs else None}
    for key in ("zone", "side", "level", "margin"):
        out[f"{key}_agreement"] = round(float(np.mean(
            [str(t[key]) == str(a.get(key)) for t, a in rows])), 3)
    present = np.array([str(t["zone"]) != "none" for t, _ in rows])
    found = np.array([str(a.get("zone")) != "none" for _, a in rows])
    out["lesion_detection"] = {"sensitivity": round(float(found[present].mean()), 3),
                               "specificity": round(float((~found[~present]).mean()), 3)}
    both = [(float(t["diameter_mm"]), float(a.get("diameter_mm") or 0)) for t, a in rows
            if str(t["zone"]) != "none" and str(a.get("zone")) != "none"]
    if len(both) > 2:
        d = np.array(both)
        out["diameter"] = {"pearson_r": round(float(np.corrcoef(d[:, 0], d[:, 1])[0, 1]), 3),
                           "mean_abs_error_mm": round(float(np.abs(d[:, 0] - d[:, 1]).mean()), 2),
                           "n": len(both)}
    return out
