"""Reports (issue 17): report–image consistency on the derm and cxr demos, how much of a
real-length report conditions the image, and report-writing speed per writer.

    python -m benchmarks reports                       # speed, long_text, consistency
    python -m benchmarks.reports --parts speed,long_text
    python -m benchmarks.reports --parts consistency_generated --steps 1500 --workdir /tmp/rb

consistency: per demo (derm, cxr; --n-per-class, --size 64): ``data demo``, ``describe
--split all`` (attributes), then template reports of the real test images written from their
describe record (what would condition a generated image of them) and from their ground truth,
checked by evaluate's report–image check (stated vs measured per attribute, against a shuffled
report of the same class): the consistency of a generator that shows exactly what it is asked.
consistency_generated: the same on generated images (demo -> describe -> train with
examples/derm-demo.yaml cut to --steps -> generate --report template --per-class).

long_text: 240 real-length reports (1-8 template reports of the three styles joined, plus a
"Follow-up in 4 weeks." sentence: 40-600 tokens); for each over 64 tokens, the same text with
its last number changed (4 -> 9 weeks, same length); share whose two embeddings differ, for
``long_text: cut`` (the old 64-token window) and ``chunks`` (default).

speed: reports per second of the template writer; of the llm writer over loopback ``transformers
serve`` with a tiny random LLaVA (its answers are invalid: one re-ask each, then the template
fallback, so it measures the full cost of a bad answer); and of the local transformers backend.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MS = [sys.executable, "-m", "medsynth.cli"]


def _run(*args: str) -> None:
    env = {**os.environ, "MEDSYNTH_NO_PROGRESS": "1"}
    subprocess.run([*MS, *args], check=True, env=env, cwd=ROOT)


def _contexts(n: int, seed: int = 0) -> list[Any]:
    from medsynth.clinical_reports import context_for
    from tests.clinical_reports.test_writers import _cxr_attrs, _derm_attrs, _prostate_attrs

    rng = random.Random(seed)
    out = []
    for i in range(n):
        fam = ("derm", "cxr", "prostate")[i % 3]
        cls = {"derm": "melanoma", "cxr": "pneumonia", "prostate": "pirads_4_5"}[fam]
        attrs = (_derm_attrs(rng) if fam == "derm" else _cxr_attrs(rng, cls) if fam == "cxr"
                 else _prostate_attrs(rng, cls))
        out.append(context_for(sample_id=f"s{i}", cls=cls, family=fam, attributes=attrs, seed=i))
    return out


# ------------------------------------------------------------------------------------ speed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def speed(workdir: Path) -> dict[str, Any]:
    import urllib.request

    from medsynth.clinical_reports import ReportWriterConfig, TemplateWriter, make_writer
    from tests.describe.tiny_vlm import build_tiny_llava

    res: dict[str, Any] = {"load_avg_1m": round(os.getloadavg()[0], 2)}
    ctxs = _contexts(3000)
    w = TemplateWriter()
    t0 = time.perf_counter()
    w.write(ctxs)
    res["template_reports_per_s"] = round(len(ctxs) / (time.perf_counter() - t0), 1)

    model = build_tiny_llava(workdir / "tiny-llava")
    small = _contexts(24, seed=1)
    local = make_writer(ReportWriterConfig(writer="llm", backend="transformers",
                                           model=str(model), max_reasks=1, concurrency=8,
                                           max_tokens=48))
    t0 = time.perf_counter()
    out = local.write(small)
    res["llm_local_transformers"] = {
        "reports_per_s": round(len(small) / (time.perf_counter() - t0), 2),
        "n": len(small), "writers": sorted({r.writer for r in out}),
        "answers_per_report": sum(len(r.raw) for r in out) / len(out)}
    local.close()

    exe = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if exe is None:
        res["llm_transformers_serve"] = "skipped: transformers CLI missing"
        return res
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "serve", str(model), "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        served = make_writer(ReportWriterConfig(
            writer="llm", backend="openai", model=str(model), max_reasks=1, concurrency=4,
            base_url=f"http://127.0.0.1:{port}/v1", max_tokens=48, timeout=120))
        served.write(small[:2])  # warm-up (the server loads the model on first use)
        t0 = time.perf_counter()
        out = served.write(small)
        res["llm_transformers_serve"] = {
            "reports_per_s": round(len(small) / (time.perf_counter() - t0), 2), "n": len(small),
            "writers": sorted({r.writer for r in out}),
            "answers_per_report": sum(len(r.raw) for r in out) / len(out),
            "concurrency": 4}
        served.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    return res


# -------------------------------------------------------------------------------- long text
def long_text() -> dict[str, Any]:
    import torch

    from medsynth.clinical_reports import template_report
    from medsynth.models.text_encoder import TextEncoder, TextEncoderRef

    rng = random.Random(0)
    pieces = [template_report(c).text.replace("\n\n", " ").replace("\n", " ")
              for c in _contexts(300, seed=2)]
    texts = []
    for _ in range(240):
        k = rng.randint(1, 8)
        texts.append(" ".join(rng.sample(pieces, k)) + " Follow-up in 4 weeks.")
    cut = TextEncoder(TextEncoderRef(long_text="cut"))
    chunks = TextEncoder(TextEncoderRef())
    counts = chunks.token_counts(texts)
    long_ = [(t, n) for t, n in zip(texts, counts, strict=True) if n > 64]
    res: dict[str, Any] = {"n_texts": len(texts), "n_over_64": len(long_),
                           "tokens": {"min": min(counts), "median": sorted(counts)[len(counts) // 2],
                                      "max": max(counts)},
                           "chunks_capacity": chunks.capacity}
    for name, enc in (("cut", cut), ("chunks", chunks)):
        differ = 0
        t0 = time.perf_counter()
        for t, _ in long_:
            # the same text with its very last word-token changed (same length: 4 -> 9 weeks)
            h, m = enc.encode([t, t[: -len("4 weeks.")] + "9 weeks."], warn=False)
            if not torch.allclose(h[0], h[1], atol=1e-6):
                differ += 1
        res[name] = {"share_whole_text_conditions": round(differ / len(long_), 3),
                     "n_differ": differ, "seconds": round(time.perf_counter() - t0, 1)}
    res["share_within_cap"] = round(sum(1 for _, n in long_ if n <= chunks.capacity)
                                    / len(long_), 3)
    return res


# ------------------------------------------------------------------------------ consistency
def _demo(d: Path, kind: str, n_per_class: int, size: int) -> None:
    if not (d / "data" / "medsynth.json").is_file():
        _run("data", "demo", kind, "--out", str(d / "data"), "--n-per-class", str(n_per_class),
             "--size", str(size), "--seed", "0", "--overwrite")
    if not (d / "store" / "medsynth.json").is_file():
        _run("describe", str(d / "data"), "--out", str(d / "store"), "--split", "all",
             "--overwrite")


def _report_set(root: Path, d: Path, kind: str, source: str) -> Path:
    """A synthetic-set folder of the real test images with template reports written from
    ``source``: ``store`` (the describe record's attributes: what would condition a generated
    image of them) or ``truth`` (the phantom's ground truth)."""
    import io

    import pandas as pd

    from medsynth.artifacts import atomic_write_bytes, input_ref, write_manifest
    from medsynth.clinical_reports import context_for, template_report
    from medsynth.imaging.dataset import open_dataset
    from medsynth.store import open_store
    from medsynth.synthset import SAMPLE_COLUMNS

    real = open_dataset(d / "data")
    store = open_store(d / "store").by_image()
    rows = []
    for i, (_, row) in enumerate(real.split("test").iterrows()):
        attrs = store[str(row["image_id"])].attributes if source == "store" else row.to_dict()
        ctx = context_for(sample_id=str(row["image_id"]), cls=str(row["class"]), family=kind,
                          attributes=attrs, seed=i)
        rel = f"reports/{row['image_id']}.txt"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(template_report(ctx).text)
        rows.append({"sample_id": str(row["image_id"]), "class": row["class"],
                     "png": os.path.relpath(real.path_of(row), root), "report": rel,
                     "seed": i, "report_writer": "template"})
    buf = io.StringIO()
    pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS)).to_csv(buf, index=False)
    atomic_write_bytes(root / "samples.csv", buf.getvalue().encode())
    write_manifest(root, "generate", config={"benchmark": source},
                   inputs=[input_ref(d / "data", "data")],
                   outputs={"samples": "samples.csv", "synthetic": True})
    return root


def consistency(workdir: Path, n_per_class: int, sizes: dict[str, int]) -> dict[str, Any]:
    """Reports of real demo images (a generator that shows exactly what it was asked for)
    against their measurement, per attribute, vs shuffled same-class reports. Sizes as in
    describe_agreement (derm 64 px, cxr 128 px: at 64 px the cxr measurer finds an opacity on
    about half of the normal radiographs, which would hide the reports behind its noise)."""
    from medsynth.evaluate.reports_check import reports_report
    from medsynth.imaging.dataset import open_dataset
    from medsynth.synthset import open_synthetic

    res: dict[str, Any] = {"n_per_class": n_per_class, "sizes": sizes,
                           "load_avg_1m_start": round(os.getloadavg()[0], 1)}
    for kind in ("derm", "cxr"):
        d = workdir / f"{kind}{sizes[kind]}"
        _demo(d, kind, n_per_class, sizes[kind])
        real = open_dataset(d / "data")
        sets = []
        for source in ("store", "truth"):
            s = open_synthetic(_report_set(workdir / f"{kind}_{source}", d, kind, source))
            s.name = source
            sets.append(s)
        rep, _ = reports_report(real, sets, seed=0)
        res[kind] = {name: {"n": v.get("n"), "report_vs_image": v.get("report"),
                            "shuffled": v.get("shuffled")} for name, v in rep["sets"].items()}
        res[kind]["fields"] = next(iter(rep["sets"].values())).get("fields")
    res["load_avg_1m_end"] = round(os.getloadavg()[0], 1)
    return res


def consistency_generated(workdir: Path, steps: int, n_per_class: int,
                          per_class: int) -> dict[str, Any]:
    """The same check on generated images: demo -> describe -> train (derm-demo recipe cut to
    ``steps``) -> generate --report template -> evaluate's check."""
    from medsynth.evaluate.reports_check import reports_report
    from medsynth.imaging.dataset import open_dataset
    from medsynth.synthset import open_synthetic

    res: dict[str, Any] = {"steps": steps, "size": 32, "threads": 1,
                           "load_avg_1m_start": round(os.getloadavg()[0], 1)}
    for kind in ("derm", "cxr"):
        d = workdir / f"gen_{kind}"
        recipe = {"derm": "examples/derm-demo.yaml", "cxr": "examples/cxr-cpu.yaml"}[kind]
        t0 = time.perf_counter()
        _demo(d, kind, n_per_class, 32)
        if not (d / "model" / "medsynth.json").is_file():
            _run("train", str(d / "data"), "--store", str(d / "store"), "--out", str(d / "model"),
                 "--config", recipe, "--max-steps", str(steps), "--sample-every", "0",
                 "--threads", "1", "--overwrite")
        if not (d / "synth" / "medsynth.json").is_file():
            _run("generate", str(d / "model"), "--class", "all", "--n", str(per_class),
                 "--store", str(d / "store"), "--out", str(d / "synth"), "--report", "template",
                 "--threads", "1", "--resume")
        synth = open_synthetic(d / "synth")
        # the measurer's ceiling at this size: real test images with ground-truth reports
        truth = open_synthetic(_report_set(workdir / f"gen_{kind}_truth", d, kind, "truth"))
        synth.name, truth.name = "generated", "truth"
        rep, _ = reports_report(open_dataset(d / "data"), [synth, truth])
        res[kind] = {"recipe": recipe, "minutes": round((time.perf_counter() - t0) / 60, 1),
                     **{name: {"n": v.get("n"), "report_vs_image": v.get("report"),
                               "shuffled": v.get("shuffled")}
                        for name, v in rep["sets"].items()},
                     "fields": rep["sets"]["generated"].get("fields")}
    res["load_avg_1m_end"] = round(os.getloadavg()[0], 1)
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="speed,long_text,consistency")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--steps", type=int, default=1500, help="training steps of the demo models")
    p.add_argument("--n-per-class", type=int, default=120)
    p.add_argument("--size", type=int, default=64, help="derm demo image size (consistency)")
    p.add_argument("--cxr-size", type=int, default=128, help="cxr demo image size (consistency)")
    p.add_argument("--per-class", type=int, default=60, help="generated images per class")
    a = p.parse_args(argv if argv is not None else [])  # `python -m benchmarks` passes none
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-reports-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    parts = a.parts.split(",")
    if "speed" in parts:
        results["speed"] = speed(work)
    if "long_text" in parts:
        results["long_text"] = long_text()
    if "consistency" in parts:
        results["consistency"] = consistency(work, a.n_per_class,
                                              {"derm": a.size, "cxr": a.cxr_size})
    if "consistency_generated" in parts:
        results["consistency_generated"] = consistency_generated(work, a.steps, a.n_per_class,
                                                                 a.per_class)
    results["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    import json

    from benchmarks.common import RESULTS

    old = RESULTS / "reports.json"  # parts run separately keep each other's results
    if old.is_file():
        prev = json.loads(old.read_text()).get("results", {})
        results = {**prev, **results}
    record("reports", results)


if __name__ == "__main__":
    main(sys.argv[1:])
