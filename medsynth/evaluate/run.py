"""The evaluation run: open inputs, benchmark, fidelity, privacy, adherence, report.

Layout written (docs/artifacts.md)::

    REPORT/
      evaluate.json             the run's identity (resolved config): a resume must match it
      runs.jsonl                one record per finished benchmark run (the resume state)
      predictions/<run>.csv     test-set class probabilities of every benchmark run
      classifiers/              the real-only reference classifier (class fidelity)
      privacy/<set>.csv         nearest-neighbour distances of every synthetic image
      plots/*.png               the report's figures
      metrics.json              every figure, machine-readable
      report.html               self-contained report (images embedded)
      medsynth.json             stage "evaluate" (written last: a folder with it is complete)
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from medsynth.artifacts import (
    Manifest,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    input_ref,
    prepare_output_dir,
    to_jsonable,
    write_manifest,
)
from medsynth.evaluate.config import EvaluateConfig
from medsynth.evaluate.sections import Metrics, VolumesSection

RUN_FILE = "evaluate.json"
IDENTITY_IGNORES = ("out", "resume", "overwrite", "device", "workers")


def _identity(cfg: EvaluateConfig) -> dict[str, Any]:
    d = to_jsonable(cfg.to_dict())
    d["real"] = str(Path(cfg.real).resolve())
    d["synthetic"] = [str(Path(p).resolve()) for p in cfg.synthetic]
    for key in ("clip", "clip_store"):
        if d.get(key) is not None:
            d[key] = str(Path(d[key]).resolve())
        else:
            d.pop(key, None)  # reports written before --clip existed resume unchanged
    d["extra_real"] = str(Path(cfg.extra_real).resolve()) if cfg.extra_real else None
    return {k: v for k, v in d.items() if k not in IDENTITY_IGNORES}


def _check_identity(out: Path, cfg: EvaluateConfig) -> None:
    """A resumed run must be the same evaluation; a fresh one records its identity."""
    path = out / RUN_FILE
    ident = _identity(cfg)
    if path.is_file():
        from medsynth.resume import require_same_settings

        require_same_settings(json.loads(path.read_text("utf-8")), ident,
                              where=f"{out}: holds an evaluation with other settings",
                              hint="use --overwrite to start again, or another --out")
    else:
        atomic_write_json(path, ident)


def reference_classifier(cfg: EvaluateConfig, out: Path, classes: list[str], train: Any,
                         val: Any, *, flips: tuple[bool, bool], device: str) -> Any:
    """Real-only classifier on all real train images (seed 0): from the benchmark, else trained."""
    import torch

    from medsynth.evaluate.benchmark import REFERENCE_MODEL
    from medsynth.evaluate.classifier import build_classifier, train_classifier

    path = out / REFERENCE_MODEL
    if path.is_file():
        model = build_classifier(cfg.classifier, int(train.x.shape[1]), len(classes),
                                 int(train.x.shape[-1]), spatial_dims=train.x.ndim - 2)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device).eval()
    v = val if len(val) else train
    res = train_classifier(cfg.classifier, train.x, train.y, v.x, v.y, n_classes=len(classes),
                           seed=0, epochs=cfg.epochs, patience=cfg.patience,
                           batch_size=cfg.batch_size, lr=cfg.lr, flips=flips, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(res.model.state_dict(), tmp)
    return res.model


def _write_privacy_csv(out: Path, name: str, synth: Any, details: dict[str, Any],
                       train: Any) -> None:
    import pandas as pd

    d = details["sets"][name]
    df = pd.DataFrame({"sample_id": synth.ids, "nn_feature_distance": d["feature"].numpy(),
                       "nn_pixel_distance": d["pixel"].numpy(),
                       "nn_pixel_image_id": [train.ids[int(i)] for i in d["pixel_nn"]]})
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(out / "privacy" / f"{name}.csv", buf.getvalue().encode("utf-8"))


def run_evaluate(cfg: EvaluateConfig) -> Manifest:
    """Run the whole evaluation into ``cfg.out`` and return its manifest."""
    import torch

    before = torch.get_num_threads()
    threads = cfg.threads or (1 if cfg.classifier == "small" else None)
    try:
        if threads:
            torch.set_num_threads(threads)
        return _run(cfg)
    finally:
        torch.set_num_threads(before)  # in-process callers (tests, notebooks) keep theirs


def _run(cfg: EvaluateConfig) -> Manifest:
    import torch

    from medsynth.errors import BadUsageError
    from medsynth.evaluate.adherence import adherence_report
    from medsynth.evaluate.baselines import load_extra_real
    from medsynth.evaluate.benchmark import check_test_split, convergence_warnings, run_benchmark
    from medsynth.evaluate.classifier import pick_device, predict_proba
    from medsynth.evaluate.features import FeatureExtractor
    from medsynth.evaluate.fidelity import fidelity_report
    from medsynth.evaluate.html_report import print_summary, write_report
    from medsynth.evaluate.inputs import default_size, load_real, load_synthetic, open_inputs
    from medsynth.evaluate.privacy import privacy_report, privacy_warnings
    from medsynth.imaging.modality import allowed_flips
    from medsynth.ui import console

    t0 = time.perf_counter()
    # Open and check everything before creating the output folder: a refused (leaking) set
    # leaves nothing behind.
    real, synths, notes = open_inputs(cfg.real, cfg.synthetic, cfg.independent_model)
    for s in synths:  # a set named like a baseline arm would share its name in the tables
        if s.name in ("real", "augment", "oracle"):
            s.name = f"{s.name}-synthetic"
    if cfg.benchmark:
        notes += check_test_split(real, real.classes)
    classes = real.classes
    size = cfg.size or default_size(real)
    volumes = int(real.manifest.outputs.get("spatial_dims", 2)) == 3
    if volumes and cfg.benchmark and cfg.extra_real is not None:
        raise BadUsageError(f"{cfg.extra_real}: --extra-real (the oracle baseline) works on 2D "
                            "datasets only; volumes take --baselines augment or none")
    extra = None
    if cfg.benchmark and "oracle" in cfg.baselines and cfg.extra_real is not None:
        extra, extra_notes = load_extra_real(cfg.extra_real, real, size, classes)
        notes += extra_notes
    clip = None
    if cfg.clip is not None:
        from medsynth.evaluate.clip_features import open_clip_model, real_texts

        clip, clip_notes = open_clip_model(cfg.clip, real, independent_model=cfg.independent_model,
                                           device=pick_device(cfg.device))
        clip_texts, clip_store = real_texts(clip, cfg.clip_store, real)
        notes = notes + clip_notes
    out = prepare_output_dir(cfg.out, "evaluate", resume=cfg.resume, overwrite=cfg.overwrite)
    _check_identity(out, cfg)
    for w in notes:
        console.print(f"[yellow]warning:[/] {w}")
    device = pick_device(cfg.device)
    torch.manual_seed(0)

    if volumes:  # 3D: RAS-ordered volumes in one intensity window (evaluate/volumes.py)
        from medsynth.evaluate import volumes as vol

        arrays, _ = vol.real_arrays(real, "train", classes)
        window = vol.intensity_window(arrays)
        del arrays
        train, val, test = (vol.load_real_volumes(real, sp, size, classes, window)
                            for sp in ("train", "val", "test"))
        synth = {s.name: vol.load_synthetic_volumes(s, size, classes, window,
                                                    cfg.max_synthetic_per_class) for s in synths}
    else:
        train = load_real(real, "train", size, classes)
        val = load_real(real, "val", size, classes)
        test = load_real(real, "test", size, classes)
        synth = {s.name: load_synthetic(s, size, classes, cfg.max_synthetic_per_class)
                 for s in synths}
    flips = allowed_flips(real.modality)  # (horizontal, vertical), the one definition
    timings: dict[str, float] = {"loading": time.perf_counter() - t0}

    t = time.perf_counter()
    bench = None
    if cfg.benchmark:
        bench = run_benchmark(cfg, out, classes, train, val, test, synth, flips=flips,
                              device=device, extra=extra)
        for w in convergence_warnings(bench):
            console.print(f"[yellow]warning:[/] {w}")
            notes.append(w)
    timings["benchmark"] = time.perf_counter() - t

    t = time.perf_counter()
    ref_model = reference_classifier(cfg, out, classes, train, val, flips=flips, device=device)
    ref_probs_test = predict_proba(ref_model, test.x, device=device)
    ref_probs_synth = {n: predict_proba(ref_model, s.x, device=device) for n, s in synth.items()}

    console.print("extracting EfficientNet-Lite0 features")
    fx = FeatureExtractor(size=cfg.feature_size, device=device)
    volume_metrics: VolumesSection | None = None
    if volumes:  # 2.5D: three planes per volume, side by side (and a per-plane FID)
        pf = vol.PlaneFeatures(fx)
        p_train, p_test = pf.planes(train.x), pf.planes(test.x)
        p_synth = {n: pf.planes(s.x) for n, s in synth.items()}
        f_train, f_test = pf.combined(p_train), pf.combined(p_test)
        f_synth = {n: pf.combined(p) for n, p in p_synth.items()}
        volume_metrics = {"size": size, "window": list(window), "features": pf.name,
                          "fid_2_5d": vol.fid_25d(p_test, p_train, train.y, p_synth,
                                                  {n: s.y for n, s in synth.items()})}
    else:
        f_train, f_test = fx(train.x), fx(test.x)
        f_synth = {n: fx(s.x) for n, s in synth.items()}
    fidelity = fidelity_report(classes, test, train, f_test, f_train, synth, f_synth,
                               k=cfg.knn_k, n_pairs=cfg.msssim_pairs,
                               ref_probs_test=ref_probs_test, ref_probs_synth=ref_probs_synth)
    fidelity["feature_extractor"] = {"name": pf.name if volumes else fx.name,
                                     "input_size": cfg.feature_size,
                                     "dim": int(f_test.shape[1]), "image_size": size,
                                     "dtype": fx.dtype}
    if volumes:  # not the documented 2.5D FID: labelled wherever it is shown
        fidelity["fid_label"] = vol.CONCAT_FID
    timings["fidelity"] = time.perf_counter() - t

    t = time.perf_counter()
    privacy, pdetails = privacy_report(train, test, f_train, f_test, synth, f_synth,
                                       q=cfg.near_copy_quantile, n_pairs=cfg.n_pairs,
                                       classes=classes, table=real.table)
    for w in privacy_warnings(privacy):
        console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
        notes.append(w)
    for name, images in synth.items():
        _write_privacy_csv(out, name, images, pdetails, train)
    timings["privacy"] = time.perf_counter() - t

    t = time.perf_counter()
    adherence = adherence_report(real, synths)
    timings["adherence"] = time.perf_counter() - t

    clip_metrics = None
    if clip is not None:
        from medsynth.evaluate.clip_features import clip_report

        t = time.perf_counter()
        clip_metrics = clip_report(clip, classes=classes, train=train, test=test, synth=synth,
                                   synth_sets=synths, texts_by_id=clip_texts,
                                   store_path=clip_store, k=cfg.knn_k)
        timings["clip"] = time.perf_counter() - t
    t = time.perf_counter()
    from medsynth.evaluate.reports_check import reports_report

    reports, report_examples = reports_report(real, synths)
    timings["reports"] = time.perf_counter() - t

    metrics: Metrics = {
        "real": {"path": str(real.root), "classes": classes, "modality": real.modality,
                 "channels": real.channels, "n_train": len(train), "n_val": len(val),
                 "n_test": len(test), "image_size": size},
        "synthetic": {n: {"path": str(s.root), "n_images": len(synth[n]),
                          "per_class": {classes[c]: int((synth[n].y == c).sum())
                                        for c in sorted(set(synth[n].y.tolist()))}}
                      for n, s in zip(synth, synths, strict=True)},
        "classifier": {"name": cfg.classifier, "epochs": cfg.epochs, "patience": cfg.patience,
                       "device": device, "flips": {"horizontal": flips[0], "vertical": flips[1]},
                       "seeds": cfg.seeds},
        "baselines": {"names": list(cfg.baselines),
                      "extra_real": None if extra is None else
                      {"path": str(cfg.extra_real), "n_images": len(extra),
                       "per_class": {classes[c]: int((extra.y == c).sum())
                                     for c in sorted(set(extra.y.tolist()))}}},
        "warnings": notes,
        "benchmark": bench,
        "fidelity": fidelity,
        "privacy": privacy,
        "adherence": adherence,
        "volumes": volume_metrics,
        "clip": clip_metrics,
        "reports": reports,
    }
    t = time.perf_counter()
    atomic_write_json(out / "metrics.json", metrics)
    files = write_report(out, metrics, train=train, test=test, synth=synth, pdetails=pdetails,
                         report_examples=report_examples)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    metrics["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    atomic_write_json(out / "metrics.json", metrics)
    print_summary(metrics)
    # a set is any synthetic artifact (stage generate, or a filtered set of stage judge)
    inputs = [input_ref(real.root, "data")] + [input_ref(s.root) for s in synths]
    if clip is not None:
        inputs.append(input_ref(clip.folder, "clip"))
    if extra is not None and cfg.extra_real is not None:
        inputs.append(input_ref(cfg.extra_real, "data"))
    summary = [{"setting": a["setting"], "fraction": a["fraction"], "verdict": a.get("verdict")}
               for a in (bench or {}).get("arms", []) if a.get("verdict")]
    outputs = {"metrics": "metrics.json", "report": "report.html", "plots": files,
               "verdicts": summary, "classes": classes, "timings_s": metrics["timings_s"],
               "synthetic_sets": list(synth)}
    return write_manifest(out, "evaluate", config=cfg.to_dict(), inputs=inputs,
                          outputs=outputs)
