"""The generation run: plan, stream batches to disk, journal every image, resume, shard.

Layout written (docs/artifacts.md)::

    SYNTH/
      run.json                  the run's identity (config, model hash) and DICOM study/series UIDs
      .journal/rank<r>.jsonl    one record per finished image (flushed per image): the resume state
      png/<class>/<id>.png  dicom/<class>/<id>.dcm  nifti/<class>/<id>.nii.gz
                                (3D models: nifti, and dicom/<class>/<id>/slice_NNNN.dcm or
                                dicom/<class>/<id>.dcm with --dicom-layout enhanced)
      reports/<class>/<id>.txt  the description the image was conditioned on
      samples.csv               one row per image (written from the journal when the run ends)
      medsynth.json             stage "generate" (written last: a folder with it is complete)

An image's files are written atomically first, then its journal record; so a killed run has
only complete files, and ``--resume`` regenerates exactly the images without a record (same
ids, same seeds, same file names: no duplicates) until the plan's count is reached.

Sharding: under ``accelerate launch`` each process takes a disjoint round-robin share of the
images still to do and writes its own journal; the main process merges them at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from medsynth import __version__
from medsynth.artifacts import (
    JsonlAppender,
    Manifest,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    input_ref,
    prepare_output_dir,
    read_jsonl,
    write_manifest,
)
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.generate import oversample
from medsynth.generate.conditioning import (
    SampleSpec,
    class_folders,
    plan_digest,
    plan_samples,
    requests_from_csv,
    requests_from_options,
    shard,
)
from medsynth.generate.config import GenerateConfig
from medsynth.generate.plans import ImagePlan
from medsynth.generate.plans import prepare as prepare_image_plan
from medsynth.imaging.storage import Rescale
from medsynth.resume import require_same_settings
from medsynth.synthset import SAMPLES_CSV, write_samples
from medsynth.threads import device_name, torch_threads

RUN_FILE = "run.json"
JOURNAL_DIR = ".journal"
_EXT = {"png": ".png", "dicom": ".dcm", "nifti": ".nii.gz"}


@dataclasses.dataclass
class RunResult:
    """What a finished (or partly finished, on a non-main process) run reports."""

    out: Path
    n_planned: int
    n_made: int
    """Images made by this process in this invocation (0 when everything was already done)."""
    seconds: float
    """Wall time of the sampling loop of this process."""
    manifest: Manifest | None = None

    @property
    def images_per_second(self) -> float:
        return self.n_made / self.seconds if self.seconds > 0 else 0.0


def _store_for(cfg: GenerateConfig, model_manifest: Manifest) -> Any:
    """The description store: ``--store``, else the one the model was trained with, if any."""
    from medsynth.store import open_store

    if cfg.prompt is not None:
        return None
    if cfg.store:
        return open_store(cfg.store)
    for ref in model_manifest.inputs:
        if ref.get("stage") == "describe" and Path(str(ref.get("path", ""))).is_dir():
            return open_store(ref["path"])
    return None


def relative_paths(spec: SampleSpec, folder: str, formats: list[str], report: bool = True, *,
                   volume: bool = False, dicom_layout: str = "series") -> dict[str, str]:
    """File paths (relative to SYNTH) of one sample in every format, plus its report (and, with
    DICOM, the report's Structured Report; a volume's DICOM series is a folder, its SR one
    file about all its slices)."""
    paths = {f: f"{f}/{folder}/{spec.sample_id}{_EXT[f]}" for f in formats}
    if volume and "dicom" in paths:
        from medsynth.generate.writers.volume import relative_dicom_path

        paths["dicom"] = relative_dicom_path(folder, spec.sample_id, dicom_layout)
    if report:
        paths["report"] = f"reports/{folder}/{spec.sample_id}.txt"
        if "dicom" in formats:
            paths["sr"] = f"sr/{folder}/{spec.sample_id}.dcm"
    return paths


def _safe_join(root: Path, rel: str) -> Path:
    """``root / rel``, refusing anything that would land outside ``root`` (defence in depth)."""
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()):
        raise MedsynthError(f"refusing to write {rel!r}: outside the output folder {root}")
    return p


def _check_identity(out: Path, cfg: GenerateConfig, model_sha: str) -> dict[str, Any] | None:
    """The saved run state, after checking a resumed run continues the same run."""
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MedsynthError(f"{path}: unreadable run state ({e})") from e
    require_same_settings(
        state.get("identity", {}), cfg.identity(),
        where=f"{out}: --resume must continue the same run, but these settings differ",
        hint="rerun with the original options, or use --overwrite / another --out")
    if state.get("model_sha256") != model_sha:
        raise MedsynthError(f"{out}: was generated with a different model (sha256 mismatch)",
                            hint="use --overwrite or another --out")
    return state


def _done(out: Path) -> dict[str, dict[str, Any]]:
    """sample_id -> journal record, for images whose record exists and whose files all exist."""
    done: dict[str, dict[str, Any]] = {}
    for f in sorted((out / JOURNAL_DIR).glob("rank*.jsonl")):
        for rec in read_jsonl(f):
            files = [rec.get(k) for k in (*_EXT, "report", "sr") if rec.get(k)]
            # a volume's DICOM series is a folder of slices
            if all((out / str(p)).is_file() or (out / str(p)).is_dir() for p in files):
                done[str(rec["sample_id"])] = rec
    return done


def _clean_partials(out: Path) -> int:
    """Remove temp files left by a killed writer (``.<name>.<random>.part``)."""
    n = 0
    for p in out.rglob(".*.part"):
        p.unlink(missing_ok=True)
        n += 1
    return n


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What every writer of a run needs besides the pixels: geometry and stored-value maps."""

    spacing: tuple[float, ...] | None
    """Pixel spacing (rows, cols), or (slices, rows, cols) for volumes, in mm (--spacing, else
    the model's), None = unknown (1 mm)."""
    affine: list[list[float]] | None
    """RAS affine of a generated image (the model's orientation at ``spacing``), for NIfTI
    (and the DICOM geometry of volumes)."""
    rescale: Rescale | None
    """Stored-value map of int16/float32 images in PNG (and of float32 in DICOM)."""


def run_geometry(cfg: GenerateConfig, bundle: Any) -> Geometry:
    """Spacing, affine and value map of a run, from the options and the model."""
    if bundle.spatial_dims == 3:
        return _volume_geometry(cfg, bundle)
    spacing_src = cfg.spacing or bundle.spacing
    spacing = tuple(float(v) for v in spacing_src[-2:]) if spacing_src else None
    affine = bundle.info.affine
    if affine is not None and cfg.spacing:
        # --spacing overrides the model's: keep its orientation, rescale its in-plane axes
        a = np.asarray(affine, dtype=np.float64)
        centre = a[:3, :3] @ np.array([(bundle.size - 1) / 2, (bundle.size - 1) / 2, 0.0])
        for axis, sp in ((0, spacing[1]), (1, spacing[0])):  # NIfTI i = column, j = row
            a[:3, axis] = a[:3, axis] / np.linalg.norm(a[:3, axis]) * sp
        a[:3, 3] = a[:3, 3] + centre - a[:3, :3] @ np.array([(bundle.size - 1) / 2] * 2 + [0.0])
        affine = a.tolist()
    rescale = None
    if bundle.channels == 1:
        rescale = Rescale.for_values(bundle.dtype, bundle.intensity.low, bundle.intensity.high,
                                     bundle.modality)
    return Geometry(spacing, affine, rescale)  # type: ignore[arg-type]


def _volume_geometry(cfg: GenerateConfig, bundle: Any) -> Geometry:
    """Volumes: the model's affine (orientation, spacing, position of the training volumes);
    ``--spacing`` (slices, rows, cols) rescales its axes about the volume's centre."""
    if cfg.spacing is not None and len(cfg.spacing) != 3:
        raise MedsynthError(f"--spacing: a 3D model needs three numbers (slices, rows, cols), "
                            f"got {cfg.spacing}")
    spacing = tuple(float(v) for v in (cfg.spacing or bundle.spacing or ())) or None
    affine = bundle.info.affine
    if affine is not None and cfg.spacing:
        a = np.asarray(affine, dtype=np.float64)
        d, h, w = bundle.shape
        centre_vox = np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
        centre = a[:3, :3] @ centre_vox + a[:3, 3]
        for axis, sp in ((0, spacing[2]), (1, spacing[1]), (2, spacing[0])):  # i, j, k
            a[:3, axis] = a[:3, axis] / np.linalg.norm(a[:3, axis]) * sp
        a[:3, 3] = centre - a[:3, :3] @ centre_vox
        affine = a.tolist()
    rescale = None
    if bundle.channels == 1:
        rescale = Rescale.for_values(bundle.dtype, bundle.intensity.low, bundle.intensity.high,
                                     bundle.modality)
    return Geometry(spacing, affine, rescale)


def check_formats(cfg: GenerateConfig, bundle: Any) -> None:
    """Formats the model's outputs can be written in (PNG holds 2D images only)."""
    if bundle.spatial_dims == 3 and "png" in cfg.formats:
        raise BadUsageError(f"{cfg.model}: a 3D model makes volumes; PNG holds 2D images",
                            hint="use --format nifti, dicom or nifti,dicom")
    if bundle.spatial_dims == 3 and "dicom" in cfg.formats and bundle.channels != 1:
        raise BadUsageError(f"{cfg.model}: DICOM volumes need one channel, the model makes "
                            f"{bundle.channels}", hint="use --format nifti")


def _write_sample(out: Path, spec: SampleSpec, pixels: Any, paths: dict[str, str],
                  cfg: GenerateConfig, dicom_run: Any, geometry: Geometry,
                  report: Any = None) -> None:
    """All files of one image (each atomic), the report and its Structured Report last."""
    if pixels.ndim == 4:  # a volume: NIfTI and DICOM through the volume writers
        from medsynth.generate.writers.volume import write_volume

        write_volume(pixels, {f: _safe_join(out, paths[f]) for f in ("nifti", "dicom")
                              if f in paths},
                     affine=geometry.affine, spacing=geometry.spacing, rescale=geometry.rescale,
                     dicom_layout=cfg.dicom_layout, run=dicom_run, cls=spec.cls,
                     sample_id=spec.sample_id, index=spec.index + 1,
                     description=spec.description, seed=spec.seed)
    else:
        _write_planes(out, spec, pixels, paths, cfg, dicom_run, geometry)
    if report is not None and "report" in paths:
        if "sr" in paths:
            from medsynth.generate.writers.sr import write_sr

            write_sr(_safe_join(out, paths["sr"]), _safe_join(out, paths["dicom"]),
                     report.report.sections, instance_number=spec.index + 1, seed=spec.seed,
                     writer=report.writer)
        atomic_write_text(_safe_join(out, paths["report"]), report.text)


def _write_planes(out: Path, spec: SampleSpec, pixels: Any, paths: dict[str, str],
                  cfg: GenerateConfig, dicom_run: Any, geometry: Geometry) -> None:
    """A 2D image's PNG, DICOM and NIfTI files."""
    if "png" in paths:
        from medsynth.generate.writers.png import write_png

        write_png(pixels, _safe_join(out, paths["png"]), rescale=geometry.rescale)
    if "dicom" in paths:
        from medsynth.generate.writers.dicom import write_dicom

        write_dicom(pixels, _safe_join(out, paths["dicom"]), run=dicom_run, cls=spec.cls,
                    sample_id=spec.sample_id, instance_number=spec.index + 1,
                    description=spec.description, seed=spec.seed, spacing=geometry.spacing,
                    rescale=geometry.rescale)
    if "nifti" in paths:
        from medsynth.generate.writers.nifti import write_nifti

        write_nifti(pixels, _safe_join(out, paths["nifti"]), spacing=geometry.spacing,
                    affine=geometry.affine, description=f"medsynth synthetic {spec.cls}")


def _encode(bundle: Any, specs: list[SampleSpec], cache: dict[str, Any],
            strength: float | None) -> tuple[Any, Any]:
    """Text features of each sample's description, encoded one text at a time.

    One at a time (and cached) so an image's condition never depends on what else is in the
    batch (tokenizer padding would otherwise change the features in the last bits).
    """
    from medsynth.models.text_encoder import pad_features

    feats = []
    for s in specs:
        key = f"{s.class_id}\x00{s.description}"
        if key not in cache:
            h, m = bundle.encode_text([s.description], classes=[s.class_id],
                                      prototype_strength=strength)
            n = int(m[0].sum())
            cache[key] = (h[0, :n].float().cpu(), m[0, :n].cpu())
        feats.append(cache[key][0])
    return pad_features(feats)


def plan_for(cfg: GenerateConfig, classes: list[str], store: Any,
             splits: list[str] | None = None) -> list[SampleSpec]:
    """The full, ordered list of samples a config asks for (before sharding and resume)."""
    if cfg.prompts_csv:
        requests = requests_from_csv(cfg.prompts_csv, classes)
    else:
        requests = requests_from_options(cfg.classes, classes, cfg.n, cfg.prompt)
    return plan_samples(requests, classes, base_seed=cfg.seed, store=store, splits=splits)


def run_generate(cfg: GenerateConfig, *, resume: bool = False, overwrite: bool = False,
                 only: list[str] | None = None) -> RunResult:
    """Generate the synthetic set described by ``cfg`` into ``cfg.out`` (see module doc).

    Args:
        cfg: the run's configuration.
        resume: continue a killed run in ``cfg.out`` (same settings) up to exactly its count.
        overwrite: delete an earlier ``generate`` output in ``cfg.out`` and start again.
        only: make just these sample ids of the plan (regenerate single images, identical).
    """
    with torch_threads(cfg.threads) as threads:
        return _run(cfg, resume=resume, overwrite=overwrite, only=only, threads=threads)


def _run(cfg: GenerateConfig, *, resume: bool, overwrite: bool, only: list[str] | None,
         threads: int) -> RunResult:
    import torch
    from accelerate import PartialState

    from medsynth.generate.writers.dicom import DicomRunInfo
    from medsynth.models.bundle import load_bundle
    from medsynth.models.sampler import denoise
    from medsynth.ui import console, progress_bar, track

    # cpu=True without CUDA: processes started by `accelerate launch`/torchrun then form a gloo
    # group (MULTI_CPU) instead of each believing it is alone.
    state = PartialState(cpu=not torch.cuda.is_available())
    rank, world = state.process_index, state.num_processes
    out = Path(cfg.out)
    check_output_dir(out, "generate", resume=resume, overwrite=overwrite)
    device = state.device if state.device.type != "mps" else torch.device("cpu")
    # the model before the folder: a model that cannot load leaves no empty --out behind
    bundle = load_bundle(cfg.model, ema=cfg.ema, device=device)
    if state.is_main_process:
        prepare_output_dir(out, "generate", resume=resume, overwrite=overwrite)
        _clean_partials(out)
    state.wait_for_everyone()
    check_formats(cfg, bundle)
    if cfg.class_input != "auto" and not bundle.class_probabilities:
        raise BadUsageError(f"--class-input {cfg.class_input}: only for CCELLA-mode models "
                            "(trained with ccella: true); this one takes class ids")
    store = _store_for(cfg, bundle.manifest)
    # Stored descriptions only of images the model trained on: never a test image's text.
    splits = bundle.train_splits or None
    images = prepare_image_plan(cfg, bundle, store, splits,  # --init-images/--twin/--balance
                                base=lambda: plan_for(cfg, bundle.classes, store, splits=splits))
    plan = images.specs if images else plan_for(cfg, bundle.classes, store, splits=splits)
    plan = oversample.expand(plan, cfg.oversample, cfg.seed)
    if images:
        images.expanded(plan)  # candidates keep their request's source image / twin
    digest = plan_digest(plan)
    if only:
        wanted = set(only)
        unknown = sorted(wanted - {s.sample_id for s in plan})
        if unknown:
            raise MedsynthError(f"--only: no sample(s) {unknown} in this run's plan",
                                hint="sample ids look like <class>-000012 (see samples.csv)")
        plan = [s for s in plan if s.sample_id in wanted]
    if images:  # every init image still to use readable and fitting, before anything is written
        finished = _done(out) if resume else {}
        images.check([s for s in plan if s.sample_id not in finished], bundle, track)
    folders = class_folders(bundle.classes)
    geometry = run_geometry(cfg, bundle)

    # Run state: identity for resume checks, and the DICOM study/series UIDs of the whole run.
    run_state = _check_identity(out, cfg, bundle.sha256) if resume else None
    if run_state is not None:
        # Same options but another plan: the store or the prompts CSV changed since.
        if run_state.get("plan_sha256", digest) != digest:
            raise MedsynthError(
                f"{out}: --resume would make different images than the run it continues "
                "(the description store or the prompts CSV changed)",
                hint="use --overwrite or another --out")
        if (run_state.get("only") or None) != (only or None):
            raise MedsynthError(f"{out}: --resume must use the same --only as the original run")
    if run_state is None:
        if state.is_main_process:
            run_state = {
                "identity": cfg.identity(), "only": only, "model_sha256": bundle.sha256,
                "n_planned": len(plan), "plan_sha256": digest,
                "dicom": dataclasses.asdict(DicomRunInfo.new(
                    bundle.classes, bundle.modality, Path(cfg.model).resolve().name)),
            }
            atomic_write_json(out / RUN_FILE, run_state)
        state.wait_for_everyone()
        run_state = json.loads((out / RUN_FILE).read_text("utf-8"))
    dicom_run = DicomRunInfo.from_dict(run_state["dicom"])

    done = _done(out) if resume else {}
    # Every process must see the same finished set before any process writes a new record.
    state.wait_for_everyone()
    todo = shard([s for s in plan if s.sample_id not in done], rank, world)
    if state.is_main_process and done:
        console.print(f"resuming: {len(done)} of {len(plan)} image(s) already done")

    from medsynth.generate.reports import ReportStep

    reports = ReportStep(cfg, out, plan, bundle.modality, bundle.classes, rank=rank)
    scheduler = bundle.make_scheduler(cfg.sampler)
    net, sampling = sampling_network(cfg, bundle, device)
    null_h, null_m = bundle.encode_text([""])
    cut = _cut_texts(bundle, plan, warn=state.is_main_process and not only)
    cache: dict[str, Any] = {}
    # what an image's bits depend on besides its seed (docs/generate.md, Reproducibility)
    computed = {"threads": threads, "device": device_name(device)}
    made, t0 = 0, time.perf_counter()
    with JsonlAppender(out / JOURNAL_DIR / f"rank{rank}.jsonl") as journal, \
            progress_bar() as bar, contextlib.closing(reports), BatchWriter() as writer:
        task = bar.add_task(f"generate [{rank}]" if world > 1 else "generate", total=len(todo),
                            rate="")

        def write_batch(batch: list[SampleSpec], pixels: Any, class_inputs: list[str],
                        written: dict[str, Any]) -> None:
            """Files then journal record of every image of a batch (on the writer thread)."""
            nonlocal made
            for spec, px, ci in zip(batch, pixels, class_inputs, strict=True):
                paths = relative_paths(spec, folders[spec.cls], cfg.formats, reports.enabled,
                                       volume=bundle.spatial_dims == 3,
                                       dicom_layout=cfg.dicom_layout)
                rep = written.get(spec.sample_id)
                _write_sample(out, spec, px, paths, cfg, dicom_run, geometry, rep)
                row = {**_row(spec, paths, cfg, bundle.sha256, geometry,
                               spec.description in cut, rep), "class_input": ci,
                       "precision": sampling["precision"], **computed, "batch": len(batch)}
                journal.write({**row, **images.row(spec)} if images else row)
                made += 1
                bar.advance(task)
            elapsed = time.perf_counter() - t0
            bar.update(task, rate=f"{made / elapsed:.2f} img/s" if elapsed > 0 else "")

        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start : start + cfg.batch_size]
            hidden, mask = _encode(bundle, batch, cache, cfg.prototype_strength)
            classes, class_inputs = _class_input(bundle, batch, hidden, mask, cfg.class_input)
            init = images.init_batch(batch, bundle) if images else None
            x = denoise(net, scheduler, class_ids=classes, precision=sampling["precision"],
                        text_hidden=hidden, text_mask=mask, null_class=bundle.null_class,
                        null_hidden=null_h.cpu(), null_mask=null_m.cpu(),
                        seeds=[s.seed for s in batch], sample_shape=bundle.sample_shape,
                        steps=cfg.steps, guidance=cfg.guidance, device=device,
                        decode=bundle.decode_hook(cfg.decode_window), init=init,
                        strength=cfg.strength if init is not None else 1.0)
            pixels = bundle.to_pixels(x)
            written = reports.write(batch, pixels)
            writer.submit(write_batch, batch, pixels, class_inputs, written)
    seconds = time.perf_counter() - t0
    state.wait_for_everyone()
    result = RunResult(out=out, n_planned=len(plan), n_made=made, seconds=seconds)
    if state.is_main_process:
        result.manifest = _finish(out, cfg, plan, bundle, store, only, geometry, threads,
                                  reports.info(), images, sampling)
    return result


class BatchWriter:
    """Writes a batch's files and journal records on one thread while the next batch samples.

    At most one batch waits (memory stays flat); batches are written in order, each image's
    files before its record, so a killed run still has only complete images. An error of the
    writer is raised in the sampling thread at the next batch (or at the end).
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medsynth-writer")
        self._pending: Any = None

    def submit(self, fn: Any, *args: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def sampling_network(cfg: GenerateConfig, bundle: Any, device: Any) -> tuple[Any, dict[str, Any]]:
    """The network the sampler calls and how it runs (the manifest's ``precision``,
    ``cpu_bf16_units``, ``compile`` and ``compile_s``): ``--precision`` resolved on this device,
    and with ``--compile`` the denoiser through ``torch.compile``, compiled here on one step so
    the one-off cost is measured apart from the sampling rate."""
    from medsynth.models.sampler import cpu_bf16_units, resolve_precision

    precision = resolve_precision(cfg.precision, device)
    info: dict[str, Any] = {"precision": precision, "precision_requested": cfg.precision,
                            "cpu_bf16_units": cpu_bf16_units(), "compile": cfg.compile}
    net = bundle.denoiser
    if cfg.compile:
        import torch

        from medsynth.models.sampler import autocast_for

        net = torch.compile(bundle.denoiser)
        t0 = time.perf_counter()
        b = 2 * cfg.batch_size if cfg.guidance != 1.0 else cfg.batch_size
        x = torch.zeros((b, *bundle.sample_shape), device=device)
        d = bundle.text_ref.hidden_size
        classes = (torch.zeros(b, bundle.null_class + 1, device=device)
                   if bundle.class_probabilities else torch.zeros(b, dtype=torch.long, device=device))
        with torch.inference_mode(), autocast_for(device, precision):
            net(x, torch.tensor(999, device=device), classes, torch.zeros(b, 1, d, device=device),
                torch.ones(b, 1, dtype=torch.long, device=device))
        info["compile_s"] = round(time.perf_counter() - t0, 1)
    return net, info


def _class_input(bundle: Any, batch: list[SampleSpec], hidden: Any, mask: Any,
                 mode: str) -> tuple[Any, list[str]]:
    """The sampler's class argument and, per image, how the class got in (samples.csv
    ``class_input``): ``id`` for class-id models; CCELLA-mode models: ``class`` (one-hot of the
    requested class) or ``text:p0,p1,...`` (the probabilities the text head predicted)."""
    ids = [s.class_id for s in batch]
    if not bundle.class_probabilities:
        return ids, ["id"] * len(batch)
    if mode == "text":
        empty = [s.sample_id for s in batch if not s.description.strip()]
        if empty:
            raise MedsynthError(f"--class-input text: sample {empty[0]} has no description to "
                                "predict its class from", hint="use --class-input auto or class")
    source = [mode if mode != "auto" else ("text" if s.description.strip() else "class")
              for s in batch]
    probs = bundle.class_condition(ids, hidden, mask, source)
    return probs, [("text:" + ",".join(f"{float(v):.3f}" for v in p)) if src == "text"
                   else "class" for p, src in zip(probs, source, strict=True)]


def _cut_texts(bundle: Any, plan: list[SampleSpec], warn: bool) -> set[str]:
    """Descriptions of the plan longer than the text encoder's window (cut there); one warning
    with the count of images they condition, given before sampling starts."""
    texts = sorted({s.description for s in plan if s.description.strip()})
    if not texts:
        return set()
    from medsynth.models.text_encoder import warn_truncated

    enc = bundle.text_encoder()
    limit = int(enc.capacity)  # one window, or the cap of the chunked windows
    counts = dict(zip(texts, enc.token_counts(texts), strict=True))
    cut = {t for t, n in counts.items() if n > limit}
    enc.warned = True  # reported here, for the whole run, not per batch
    if cut and warn:
        n_images = sum(1 for s in plan if s.description in cut)
        warn_truncated({"n_cut": n_images, "n_texts": sum(1 for s in plan if s.description.strip()),
                        "max_tokens": limit, "longest_tokens": max(counts.values()),
                        "window": int(enc.ref.max_tokens),
                        "chunks": int(enc.ref.max_chunks) if enc.chunked else 1},
                       "prompts (descriptions) of this run")
    return cut


def _row(spec: SampleSpec, paths: dict[str, str], cfg: GenerateConfig, model_sha: str,
         geometry: Geometry, cut: bool, report: Any = None) -> dict[str, Any]:
    """One samples.csv row (journal record); the columns are defined in medsynth.synthset."""
    return {
        "sample_id": spec.sample_id, "class": spec.cls,
        "png": paths.get("png", ""), "dicom": paths.get("dicom", ""),
        "nifti": paths.get("nifti", ""), "report": paths.get("report", ""),
        "description": spec.description, "seed": spec.seed, "sampler": cfg.sampler,
        "steps": cfg.steps, "guidance": cfg.guidance, "model_sha256": model_sha,
        "medsynth_version": __version__, "class_id": spec.class_id, "index": spec.index,
        "description_source": spec.source,
        "png_values": geometry.rescale.describe() if geometry.rescale and "png" in paths else "",
        "text_cut": int(cut), "sr": paths.get("sr", ""),
        "report_writer": report.writer if report is not None else "",
        "report_warning": report.warning if report is not None else "",
        **oversample.columns(spec, cfg.oversample),
    }


def _finish(out: Path, cfg: GenerateConfig, plan: list[SampleSpec], bundle: Any, store: Any,
            only: list[str] | None, geometry: Geometry, threads: int,
            reports: dict[str, Any] | None = None, images: ImagePlan | None = None,
            sampling: dict[str, Any] | None = None) -> Manifest:
    """Merge the journals into samples.csv (plan order) and write the manifest last."""
    done = _done(out)
    missing = [s.sample_id for s in plan if s.sample_id not in done]
    if missing:
        raise MedsynthError(f"{out}: {len(missing)} image(s) missing after the run "
                            f"(first: {missing[0]})", hint="rerun with --resume")
    table = write_samples(out, [done[s.sample_id] for s in plan])
    from medsynth.loaders import write_set_loaders

    loaders = write_set_loaders(out, table, bundle.classes, cfg.formats)
    counts = table.groupby("class").size().to_dict()
    inputs = [input_ref(cfg.model)]  # stage train or refine (load_bundle checked which)
    if store is not None:
        inputs.append(input_ref(store.root, "describe"))
    run_state = json.loads((out / RUN_FILE).read_text("utf-8"))
    outputs = {
        "n_images": len(table), "counts": {str(k): int(v) for k, v in counts.items()},
        "classes": sorted({s.cls for s in plan}, key=bundle.classes.index),
        "class_folders": {c: f for c, f in class_folders(bundle.classes).items()
                          if c in counts},
        "formats": cfg.formats, "samples": SAMPLES_CSV, "model_sha256": bundle.sha256,
        "channels": bundle.channels, "dtype": bundle.dtype, "modality": bundle.modality,
        "size": bundle.size, "spatial_dims": bundle.spatial_dims,
        "dicom_study_uid": run_state["dicom"]["study_uid"],
        "dicom_series_uids": run_state["dicom"]["series_uids"],
        "only": only or None, "synthetic": True, "threads": threads, **(sampling or {}),
        "reproducibility": _reproducibility(table, threads),
        "oversample": cfg.oversample,
        "spacing": list(geometry.spacing) if geometry.spacing else None,
        "affine": geometry.affine,
        # how each format holds the values (docs/intensities.md)
        "values": {
            "png": geometry.rescale.to_dict() if geometry.rescale and "png" in cfg.formats else None,
            "dicom": ({"rescale_slope": 1.0, "rescale_intercept": 0.0, "pixel_representation": 1}
                      if bundle.dtype == "int16" else
                      {"rescale_slope": geometry.rescale.slope,
                       "rescale_intercept": geometry.rescale.intercept}
                      if bundle.dtype == "float32" and geometry.rescale else None)
            if "dicom" in cfg.formats else None,
            "nifti": {"dtype": bundle.dtype} if "nifti" in cfg.formats else None,
            "unit": "HU" if bundle.modality == "CT" and bundle.dtype == "int16" else None,
        },
        "text_cut": {"images": int(table["text_cut"].fillna(0).astype(int).sum()),
                     "max_tokens": int(bundle.text_encoder().capacity)
                     if any(s.description.strip() for s in plan) else
                     int(bundle.text_ref.max_tokens),
                     "long_text": bundle.text_ref.long_text},
        "reports": {**(reports or {}),
                    "written": {str(k): int(v) for k, v in table["report_writer"].fillna("")
                                .astype(str).value_counts().items() if k}},
        "loaders": loaders,
    }
    if images:
        inputs += images.inputs
        outputs.update(images.outputs)
        if images.twin is not None and "twin" in outputs:
            outputs["twin"]["privacy"] = _twin_check(out, cfg, table, images, only, bundle)
    config = dataclasses.asdict(cfg)
    return write_manifest(out, "generate", config=config, inputs=inputs, outputs=outputs)


def _reproducibility(table: Any, threads: int) -> dict[str, Any]:
    """The threads and devices the images were made with (a resumed run may mix them) and the
    torch version: the same seed gives bitwise the same image again only when these and the
    batch size (samples.csv ``batch``) match."""
    import torch

    def used(col: str, default: Any) -> list[Any]:
        vals = table[col].dropna() if col in table else []
        return sorted({v.item() if hasattr(v, "item") else v for v in vals} or {default})

    return {"threads": used("threads", threads), "devices": used("device", "cpu"),
            "torch": torch.__version__,
            "bitwise_when": "same threads, device, batch size and torch version"}


def _twin_check(out: Path, cfg: GenerateConfig, table: Any, images: ImagePlan,
                only: list[str] | None, bundle: Any) -> dict[str, Any]:
    """The twin's near-copy check (medsynth/generate/twin.py), unless switched off or partial."""
    if not cfg.privacy_check:
        return {"skipped": "--no-privacy-check"}
    if only:
        return {"skipped": "--only made part of the twin"}
    from medsynth.generate.twin import twin_privacy

    assert images.twin is not None
    device = "cuda" if getattr(bundle.device, "type", "cpu") == "cuda" else "cpu"
    return twin_privacy(out, table, images.twin, device=device)
