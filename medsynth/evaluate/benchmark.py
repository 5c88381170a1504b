"""Downstream benchmark: does adding synthetic images help a classifier on held-out real data?

For every real-data fraction and seed the same classifier is trained on

* ``real``           the real training images of that fraction,
* ``real+<SYNTH>``   the same real images plus every synthetic image of the set,
* ``real+augment``   the same real images with standard augmentation, repeated to the size of
                     real+<first set> (on by default; see :mod:`.baselines`),
* ``real+oracle``    the same real images plus as many EXTRA real images per class as the first
                     synthetic set adds (``--extra-real DATA``),
* ``<SYNTH>``        the synthetic images alone (once per seed; it uses no real training data),

with early stopping on the real val split (subsampled with the same fraction, so few-shot arms
do not see more real labels than they claim), and tested on the whole real test split, which
the generator never saw (see :func:`medsynth.evaluate.inputs.check_leakage`).

Each run appends one record to ``runs.jsonl`` and writes ``predictions/<run>.csv``; a resumed
evaluation skips finished runs. The summary (:func:`aggregate`) is a paired bootstrap over the
test images and the seeds (:mod:`.stats`): every metric of every arm with its 95 % interval and
the seed spread, every gain over ``real`` with its interval, the smallest gain the set-up can
detect, a verdict only when the interval excludes 0 and there are at least two seeds, and for
each synthetic set the comparison with augmentation and its share of the oracle gain.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import JsonlAppender, atomic_path, atomic_write_bytes, read_jsonl
from medsynth.evaluate.config import EvaluateConfig, Fraction
from medsynth.evaluate.inputs import ImageSet
from medsynth.evaluate.stats import METRICS, PER_CLASS, verdict

__all__ = ["METRICS", "PER_CLASS", "Arm", "aggregate", "plan_arms", "run_benchmark", "verdict"]

MIN_TEST_PER_CLASS = 30
"""Below this many test images a class's figures are flagged as noisy."""
RUNS_FILE = "runs.jsonl"
REFERENCE_MODEL = "classifiers/real-full-seed0.pt"
"""Real-only classifier (all real train images, seed 0), reused for class fidelity."""


def check_test_split(real: Any, classes: list[str]) -> list[str]:
    """Refuse a test split whose metrics are undefined (one class); warn about thin classes."""
    from medsynth.errors import MedsynthError

    counts = real.split("test")["class"].astype(str).value_counts()
    present = [c for c in classes if int(counts.get(c, 0)) > 0]
    if len(present) < 2:
        raise MedsynthError(
            f"{real.root}: the test split holds images of {len(present)} class(es) "
            f"({', '.join(present) or 'none'}); balanced accuracy, macro-F1 and AUROC are "
            "undefined with fewer than two classes",
            hint="re-split the dataset so that every class has test images, or run "
                 "with --no-benchmark for fidelity and privacy only")
    warnings = []
    for c in classes:
        n = int(counts.get(c, 0))
        if n == 0:
            warnings.append(f"class {c} has no test images: its recall and AUROC are undefined "
                            "and left out of the averages")
        elif n < MIN_TEST_PER_CLASS:
            warnings.append(f"class {c} has only {n} test images (< {MIN_TEST_PER_CLASS}): its "
                            "figures are noisy and every interval is wide")
    return warnings


def convergence_warnings(bench: dict[str, Any]) -> list[str]:
    """One line naming the arms whose runs were still improving when ``--epochs`` ran out."""
    bad = [a for a in bench["arms"] if a.get("n_not_converged")]
    if not bad:
        return []
    n = sum(a["n_not_converged"] for a in bad)
    total = sum(a["n_runs"] for a in bench["arms"])
    names = ", ".join(f"{a['setting']} @ {a['fraction']}" for a in bad)
    return [f"{n} of {total} classifier runs were still improving when --epochs "
            f"{bad[0].get('max_epochs')} ran out ({names}); raise --epochs so that early "
            "stopping ends them"]


def subsample(train: ImageSet, frac: Fraction, seed: int, n_classes: int, *,
              minimum: int = 1) -> ImageSet:
    """Stratified, seeded subset of ``train``: a share or a fixed count of every class."""
    rng = np.random.default_rng(seed)
    y = train.y.numpy()
    keep: list[int] = []
    for k in range(n_classes):
        idx = np.nonzero(y == k)[0]
        if len(idx) == 0:
            continue
        idx = rng.permutation(idx)
        if frac.per_class is not None:
            n = min(frac.per_class, len(idx))
        else:
            n = max(minimum, int(round(float(frac.fraction or 1.0) * len(idx))))
        keep += idx[:min(n, len(idx))].tolist()
    return train.subset(sorted(keep), name=f"{train.name}@{frac.label}")


def concat(a: ImageSet, b: ImageSet, name: str) -> ImageSet:
    """Two image sets as one (real + synthetic)."""
    import torch

    return ImageSet(name, torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), a.ids + b.ids)


def classification_metrics(probs: Any, y: Any, n_classes: int) -> dict[str, Any]:
    """Overall and per-class metrics of class probabilities ``probs`` (N, K) against ``y``."""
    import torch
    from torchmetrics.functional.classification import (
        binary_auroc,
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    present = torch.bincount(y, minlength=n_classes) > 0
    recall = multiclass_recall(probs, y, average="none", num_classes=n_classes)
    precision = multiclass_precision(probs, y, average="none", num_classes=n_classes)
    f1 = multiclass_f1_score(probs, y, average="none", num_classes=n_classes)
    nan = torch.tensor(float("nan"))
    # Classes absent from the test split have no recall/AUROC (check_test_split says so once);
    # average over present ones. AUROC one-vs-rest per present class, as multiclass_auroc
    # does, but never called on a class without positives (a torchmetrics UserWarning per run).
    auroc = torch.full((n_classes,), float("nan")) if n_classes > 1 else torch.ones(1)
    if n_classes > 1 and int(present.sum()) > 1:
        for c in torch.nonzero(present).flatten().tolist():
            auroc[c] = binary_auroc(probs[:, c], (y == c).long())
    recall = torch.where(present, recall, nan)
    return {
        "accuracy": float(multiclass_accuracy(probs, y, average="micro", num_classes=n_classes)),
        "balanced_accuracy": float(torch.nanmean(recall)),
        "macro_f1": float(f1[present].mean()),
        "auroc": float(torch.nanmean(auroc)),
        "per_class": {
            "recall": recall.tolist(), "precision": precision.tolist(), "f1": f1.tolist(),
            "auroc": auroc.tolist(),
        },
        "confusion": multiclass_confusion_matrix(probs, y, num_classes=n_classes).tolist(),
    }


@dataclasses.dataclass(frozen=True)
class Arm:
    """One benchmark configuration (a bar in the chart); runs once per seed."""

    setting: str
    """``real``, ``real+<synth>``, ``real+augment``, ``real+oracle`` or ``<synth>``."""
    fraction: Fraction | None
    """Real training data used (None for synthetic-only)."""
    synthetic: str | None
    """Synthetic set added (or, for augment/oracle, whose per-class size they match)."""
    kind: str = "real"
    """``real``, ``synthetic`` (real+synthetic), ``augment``, ``oracle`` or ``synthetic-only``."""

    @property
    def fraction_label(self) -> str:
        return self.fraction.label if self.fraction else "none"

    def key(self, seed: int) -> str:
        safe = self.fraction_label.replace("/", "pc")
        return f"{self.setting}__{safe}__seed{seed}".replace("/", "_").replace(" ", "_")


def plan_arms(fractions: list[Fraction], synth_names: list[str],
              baselines: Sequence[str] = ()) -> list[Arm]:
    """Per fraction: real, real+each set, then the baselines; then one synthetic-only arm per set."""
    arms = []
    first = synth_names[0] if synth_names else None
    for f in fractions:
        arms.append(Arm("real", f, None, "real"))
        arms += [Arm(f"real+{s}", f, s, "synthetic") for s in synth_names]
        arms += [Arm(f"real+{b}", f, first, b) for b in baselines if first is not None]
    arms += [Arm(s, None, s, "synthetic-only") for s in synth_names]
    return arms


def _write_predictions(path: Path, ids: list[str], y: Any, probs: Any, classes: list[str]) -> None:
    import pandas as pd

    df = pd.DataFrame({"image_id": ids, "true": [classes[i] for i in y.tolist()],
                       "pred": [classes[i] for i in probs.argmax(1).tolist()]})
    for k, c in enumerate(classes):
        df[f"p_{c}"] = probs[:, k].numpy()
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.7g")
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_predictions(path: Path, ids: list[str], classes: list[str]) -> np.ndarray:
    """Class probabilities (N, K) of one finished run, checked against the test split's ids."""
    import pandas as pd

    from medsynth.errors import MedsynthError

    df = pd.read_csv(path, dtype={"image_id": str})
    if df["image_id"].astype(str).tolist() != list(ids):
        raise MedsynthError(f"{path}: its test images differ from the real test split (was the "
                            "dataset changed?)", hint="use --overwrite to start again")
    return df[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)


def class_counts(s: ImageSet, n_classes: int) -> dict[int, int]:
    """Images per class index."""
    import torch

    counts = torch.bincount(s.y, minlength=n_classes).tolist()
    return {k: int(n) for k, n in enumerate(counts) if n}


@dataclasses.dataclass
class _Runs:
    """Everything one classifier run needs; picklable, so worker processes get it once."""

    cfg: EvaluateConfig
    out: Path
    classes: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    synth: dict[str, ImageSet]
    flips: tuple[bool, bool]
    device: str
    extra: ImageSet | None

    def run(self, arm: Arm, seed: int) -> dict[str, Any]:
        """Train and test one arm at one seed; write its predictions; return its record.

        A run depends only on (arm, seed) and the thread count (every random draw is seeded
        here), so runs give the same figures in any order and in any process.
        """
        import torch

        from medsynth.evaluate.baselines import augmenter, draw_extra, repeat_to
        from medsynth.evaluate.classifier import predict_proba, train_classifier

        cfg, train, val, test, n_classes = self.cfg, self.train, self.val, self.test, \
            len(self.classes)
        key = arm.key(seed)
        augment = None
        n_added = 0
        if arm.fraction is not None:
            real_part = subsample(train, arm.fraction, seed, n_classes)
            val_part = subsample(val, arm.fraction, seed, n_classes, minimum=2) \
                if len(val) else val
        else:
            real_part, val_part = None, val
        added = self.synth[arm.synthetic] if arm.synthetic is not None else None
        if arm.kind == "synthetic-only":
            assert added is not None, arm  # plan_arms gives every synthetic arm its set
            data = added
            n_added = len(data)
        elif arm.kind != "real":
            # real+synthetic, augment and oracle arms have a real fraction and a set
            assert real_part is not None and added is not None, arm
            if arm.kind == "synthetic":
                data = concat(real_part, added, arm.setting)
                n_added = len(added)
            elif arm.kind == "augment":
                data = repeat_to(real_part, class_counts(added, n_classes), seed)
                n_added = len(data) - len(real_part)
                augment = augmenter(int(train.x.shape[1]), int(train.x.shape[-1]), seed)
            elif arm.kind == "oracle":
                if self.extra is None:
                    raise ValueError("the oracle arm needs extra real images")
                more = draw_extra(self.extra, class_counts(added, n_classes), seed)
                data = concat(real_part, more, arm.setting)
                n_added = len(more)
            else:
                raise ValueError(f"unknown benchmark arm kind {arm.kind!r}")
        else:
            assert real_part is not None, arm
            data = real_part
        if len(val_part) == 0:  # no val split: stop on the training loss instead
            val_part = data
        res = train_classifier(
            cfg.classifier, data.x, data.y, val_part.x, val_part.y, n_classes=n_classes,
            seed=seed, epochs=cfg.epochs, patience=cfg.patience, batch_size=cfg.batch_size,
            lr=cfg.lr, flips=self.flips, device=self.device, augment=augment)
        probs = predict_proba(res.model, test.x, device=self.device)
        m = classification_metrics(probs, test.y, n_classes)
        _write_predictions(self.out / "predictions" / f"{key}.csv", test.ids, test.y, probs,
                           self.classes)
        full = next((f for f in cfg.fractions if f.fraction == 1.0), None)
        if arm.setting == "real" and arm.fraction == full and seed == 0:
            path = self.out / REFERENCE_MODEL
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(res.model.state_dict(), tmp)
        return {"key": key, "setting": arm.setting, "kind": arm.kind,
                "fraction": arm.fraction_label, "synthetic": arm.synthetic, "seed": seed,
                "n_real": len(real_part) if real_part is not None else 0,
                "n_synthetic": len(added) if added is not None and arm.kind in (
                    "synthetic", "synthetic-only") else 0,
                "n_added": n_added, "n_train": len(data),
                "n_val": len(val_part), "epochs": res.epochs, "best_epoch": res.best_epoch,
                # Converged: early stopping fired, or the last `patience` epochs brought no
                # better val loss (also when that happens exactly at --epochs).
                "stopped_early": res.epochs < cfg.epochs
                or res.epochs - res.best_epoch >= max(cfg.patience, 1),
                "seconds": round(res.seconds, 2), **m}


_WORKER_RUNS: _Runs | None = None


def _init_worker(runs: _Runs, threads: int, parent_pid: int, from_main_thread: bool) -> None:
    """Worker process: the parent's thread count (the same float sums), dies with the parent."""
    import torch

    from medsynth.mllm.measure import die_with_parent

    global _WORKER_RUNS
    die_with_parent(parent_pid, from_main_thread)
    torch.set_num_threads(threads)
    _WORKER_RUNS = runs


def _worker_run(arm: Arm, seed: int) -> dict[str, Any]:
    assert _WORKER_RUNS is not None, "worker not initialised"
    return _WORKER_RUNS.run(arm, seed)


def benchmark_workers(cfg: EvaluateConfig, device: str, threads: int, n_runs: int) -> int:
    """Processes for the classifier runs: ``--workers``; else, on the CPU with one thread per run,
    ``MEDSYNTH_THREADS`` or every CPU this process may use; one on a GPU, with several threads
    per run, or for a single run.

    Not the load-based default of :func:`medsynth.threads.default_threads`: right after
    ``medsynth train`` the 1-minute load average still counts the training, and single-thread
    processes do not spin-wait on each other as multi-threaded ones do on a busy machine.
    """
    from medsynth.threads import available_cpus, env_threads

    if device != "cpu" or n_runs < 2:
        return 1
    if cfg.workers is not None:
        return min(cfg.workers, n_runs)
    return min(env_threads() or available_cpus(), n_runs) if threads == 1 else 1


def run_benchmark(cfg: EvaluateConfig, out: Path, classes: list[str], train: ImageSet,
                  val: ImageSet, test: ImageSet, synth: dict[str, ImageSet], *, flips: tuple[bool, bool],
                  device: str, extra: ImageSet | None = None) -> dict[str, Any]:
    """Train and test every arm over every seed (resumable); return the aggregated results.

    With several workers (:func:`benchmark_workers`) the runs go to that many processes, each at
    this process's thread count, so every figure is the same as one process gives.
    """
    import os

    import torch

    from medsynth.ui import console, progress_bar

    arms = plan_arms(cfg.fractions, list(synth), cfg.baselines)
    done = {r["key"]: r for r in read_jsonl(out / RUNS_FILE)}
    todo = [(a, s) for a in arms for s in range(cfg.seeds) if a.key(s) not in done]
    if done and todo:
        console.print(f"benchmark: resuming, {len(done)} run(s) done, {len(todo)} to go")
    runs = _Runs(cfg, out, classes, train, val, test, synth, flips, device, extra)
    threads = torch.get_num_threads()
    workers = benchmark_workers(cfg, device, threads, len(todo))
    if workers > 1:
        console.print(f"benchmark: {len(todo)} classifier runs in {workers} processes")
    with JsonlAppender(out / RUNS_FILE) as log, progress_bar() as bar:
        task = bar.add_task("benchmark runs", total=len(todo), rate="")

        def record(rec: dict[str, Any]) -> None:
            log.write(rec)
            done[rec["key"]] = rec
            bar.advance(task)

        if workers == 1:
            for arm, seed in todo:
                bar.update(task, description=f"train {arm.setting} @ {arm.fraction_label} s{seed}")
                record(runs.run(arm, seed))
        else:
            import multiprocessing as mp
            import threading
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            # spawn, not fork: this process holds threads (progress bar, torch) and locks. The
            # tensors travel once per worker, through shared memory (torch's reductions). The
            # kernel's death signal follows the spawning thread: only from the main thread, as
            # the measure backend does (an evaluate run from a notebook thread).
            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                       initializer=_init_worker,
                                       initargs=(runs, threads, os.getpid(),
                                                 threading.current_thread()
                                                 is threading.main_thread()))
            try:
                pending = {pool.submit(_worker_run, a, s) for a, s in todo}
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        record(f.result())
            except BaseException:
                # a failed or interrupted run: the finished ones are kept (--resume), the
                # rest are not waited for
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    probs_by_key = {k: read_predictions(out / "predictions" / f"{k}.csv", test.ids, classes)
                    for k in done if (out / "predictions" / f"{k}.csv").is_file()
                    and any(k == a.key(s) for a in arms for s in range(cfg.seeds))}
    return aggregate(arms, done, cfg.seeds, classes, probs=probs_by_key, y=test.y.numpy(),
                     n_boot=cfg.bootstrap, max_epochs=cfg.epochs)


def aggregate(arms: list[Arm], runs: dict[str, dict[str, Any]], seeds: int,
              classes: list[str], *, probs: dict[str, np.ndarray], y: np.ndarray,
              n_boot: int = 2000, max_epochs: int | None = None) -> dict[str, Any]:
    """Intervals per arm and metric, gains over real-only, power, verdicts, baselines.

    ``probs`` holds the test-split class probabilities of every finished run (by run key) and
    ``y`` the test labels; the bootstrap replicates are shared by every arm (paired).
    """
    from medsynth.evaluate.stats import Bootstrap

    boot = Bootstrap(y, len(classes), seeds, n_boot=n_boot)

    def finished(arm: Arm, only: set[int] | None = None) -> list[int]:
        return [s for s in range(seeds) if arm.key(s) in runs and arm.key(s) in probs
                and (only is None or s in only)]

    def metrics_of(arm: Arm, ss: list[int]) -> list[dict[str, Any]]:
        return [boot.run_metrics(arm.key(s), probs[arm.key(s)]) for s in ss]

    by_setting = {(a.setting, a.fraction_label): a for a in arms}
    out_arms = []
    for arm in arms:
        ss = finished(arm)
        if not ss:
            continue
        recs = [runs[arm.key(s)] for s in ss]
        summary = boot.arm(metrics_of(arm, ss))
        stopped = [bool(r.get("stopped_early", True)) for r in recs]
        entry: dict[str, Any] = {
            "setting": arm.setting, "kind": arm.kind, "fraction": arm.fraction_label,
            "synthetic": arm.synthetic, "n_runs": len(recs), "seeds_run": ss,
            "n_real": recs[0]["n_real"], "n_synthetic": recs[0]["n_synthetic"],
            "n_added": recs[0].get("n_added", recs[0]["n_synthetic"]),
            "metrics": {m: summary[m] for m in METRICS},
            "per_class": {c: summary["per_class"][k] for k, c in enumerate(classes)},
            "confusion": np.sum([np.asarray(r["confusion"]) for r in recs], axis=0).tolist(),
            "epochs": float(np.mean([r["epochs"] for r in recs])),
            "best_epoch": float(np.mean([r["best_epoch"] for r in recs])),
            "converged": all(stopped), "n_not_converged": int(len(stopped) - sum(stopped)),
            "seconds": float(sum(r["seconds"] for r in recs)),
        }
        base = by_setting.get(("real", arm.fraction_label)) if arm.fraction else None
        if base is not None and arm.kind != "real":
            common = finished(arm, set(finished(base)))
            if common:
                a_runs, b_runs = metrics_of(arm, common), metrics_of(base, common)
                entry["gain"] = boot.gain(a_runs, b_runs)
                entry["power"] = boot.power(a_runs, b_runs)
                entry["verdict"] = verdict(entry["gain"]["balanced_accuracy"])
                if arm.kind == "synthetic":
                    _against_baselines(entry, arm, by_setting, finished, metrics_of, boot)
        out_arms.append(entry)
    if max_epochs is not None:
        for e in out_arms:
            e["max_epochs"] = max_epochs
    return {"classes": classes, "seeds": seeds, "metrics": list(METRICS), "arms": out_arms,
            "bootstrap": {"replicates": n_boot, "level": 0.95, "test_images": int(len(y)),
                          "stratified_by_class": True, "paired": True}}


def _against_baselines(entry: dict[str, Any], arm: Arm, by_setting: dict[Any, Arm],
                       finished: Any, metrics_of: Any, boot: Any) -> None:
    """real+synthetic against real+augment, and its share of the oracle's gain."""
    base = by_setting[("real", arm.fraction_label)]
    aug = by_setting.get(("real+augment", arm.fraction_label))
    if aug is not None:
        common = finished(arm, set(finished(aug)))
        if common:
            g = boot.gain(metrics_of(arm, common), metrics_of(aug, common))
            entry["vs_augment"] = g
            entry["vs_augment_verdict"] = verdict(g["balanced_accuracy"])
    orc = by_setting.get(("real+oracle", arm.fraction_label))
    if orc is None:
        return
    common = finished(arm, set(finished(orc)) & set(finished(base)))
    if not common:
        return
    o_runs, b_runs = metrics_of(orc, common), metrics_of(base, common)
    og = boot.gain(o_runs, b_runs)["balanced_accuracy"]
    if og["lo"] is None or og["lo"] <= 0 or len(common) < 2:
        entry["oracle_recovery"] = {
            "mean": None, "lo": None, "hi": None,
            "reason": "the oracle's own gain is not clearly above 0, so a share of it is "
                      "undefined" if len(common) >= 2 else "needs at least 2 seeds"}
        return
    r = boot.ratio((metrics_of(arm, common), b_runs), (o_runs, b_runs))
    entry["oracle_recovery"] = {**r, "oracle_gain": og["mean"]}
