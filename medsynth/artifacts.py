"""Manifests, atomic writes and resume bookkeeping: the one module every stage shares.

Every artifact folder holds a ``medsynth.json`` manifest::

    {"schema_version": 1, "stage": "train", "medsynth_version": "0.1.0",
     "created": "2026-11-23T15:30:00+00:00", "config": {...},
     "inputs": [{"path": "...", "stage": "data", "sha256": "..."}],
     "outputs": {...}}

A stage reads its upstream artifact through :func:`read_manifest` only. Where an artifact came
from (synthetic set -> model -> refined-from models -> dataset) is :func:`walk_lineage`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medsynth import __version__
from medsynth.errors import MedsynthError
from medsynth.jsonl import JsonlAppender, read_jsonl, to_jsonable  # noqa: F401 (re-exported)

MANIFEST_NAME = "medsynth.json"
SCHEMA_VERSION = 1
STAGES = ("data", "describe", "train", "generate", "evaluate", "judge", "refine", "clip")
"""Manifest stage names (``clip``: the contrastive image–text model of ``train --stage clip``)."""
MODEL_STAGES = ("train", "refine")
"""Stages that write a model folder (``refine`` writes one whose input is another model)."""
SOURCE_STAGES = ("generate", "judge")
"""Stages between a synthetic set and its model: a set, or the judged folder a filtered set
was selected from."""


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def umask() -> int:
    """The process's umask (read without changing it where Linux tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().split("\n"):
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open()``: 0o666 less the umask (0o644 under umask 022)."""
    return 0o666 & ~umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A killed run therefore never leaves a half-written file under the final name. The file gets
    the mode any Unix tool gives a new file (0o666 less the umask), not mkstemp's private 0o600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # folders: 0o777 less the umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.filename is None:  # a failed write (full disk) names no file: name the target
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_folder(folder: str | os.PathLike[str], write: Any) -> None:
    """``write(tmp)`` fills a temporary folder beside ``folder``, renamed over it when whole: the
    folder variant of :func:`atomic_path` (a killed run never leaves half a folder)."""
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.part")
    old = folder.with_name(f".{folder.name}.old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    write(tmp)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def clear_folder(folder: str | os.PathLike[str], *, remove: bool = False,
                 best_effort: bool = False) -> None:
    """Delete what ``folder`` holds (and ``folder`` itself with ``remove``). ``best_effort``
    (cleaning up after a failed run) passes over what cannot be deleted instead of raising."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=best_effort)
        elif best_effort:
            child.unlink(missing_ok=True)
        else:
            child.unlink()
    if remove:
        folder.rmdir()


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


@dataclasses.dataclass
class Manifest:
    """The parsed ``medsynth.json`` of one artifact folder."""

    stage: str
    config: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: dict[str, Any]
    medsynth_version: str = __version__
    created: str = dataclasses.field(default_factory=now_iso)
    schema_version: int = SCHEMA_VERSION
    folder: Path | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "stage": self.stage,
            "medsynth_version": self.medsynth_version,
            "created": self.created,
            "config": to_jsonable(self.config),
            "inputs": to_jsonable(self.inputs),
            "outputs": to_jsonable(self.outputs),
        }


def input_ref(folder: str | os.PathLike[str], stage: str | None = None) -> dict[str, Any]:
    """Reference to an upstream artifact: its path, stage and the sha256 of its manifest."""
    m = read_manifest(folder, stage)
    return {"path": str(Path(folder).resolve()), "stage": m.stage, "sha256": m.sha256}


def write_manifest(
    folder: str | os.PathLike[str],
    stage: str,
    *,
    config: Any = None,
    inputs: list[dict[str, Any]] | None = None,
    outputs: dict[str, Any] | None = None,
) -> Manifest:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    m = Manifest(stage=stage, config=to_jsonable(config) or {}, inputs=inputs or [],
                 outputs=outputs or {})
    path = Path(folder) / MANIFEST_NAME
    atomic_write_json(path, m.to_dict())
    m.folder = Path(folder)
    m.sha256 = sha256_file(path)
    return m


def read_manifest(folder: str | os.PathLike[str], stage: str | None = None) -> Manifest:
    """Read and check ``folder/medsynth.json``; ``stage`` is the stage the caller expects."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        what = f"a medsynth {stage} artifact" if stage else "a medsynth artifact"
        raise MedsynthError(f"{folder}: not {what} (no {MANIFEST_NAME} found)")
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MedsynthError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(raw, dict) or "stage" not in raw:
        raise MedsynthError(f"{path}: not a medsynth manifest (no 'stage' field)")
    if raw.get("schema_version", 0) > SCHEMA_VERSION:
        raise MedsynthError(
            f"{path}: written by a newer medsynth (schema {raw['schema_version']})",
            hint="upgrade medsynth",
        )
    if stage is not None and raw["stage"] != stage:
        raise MedsynthError(f"{folder}: is a '{raw['stage']}' artifact, expected '{stage}'")
    return Manifest(
        stage=raw["stage"],
        config=raw.get("config") or {},
        inputs=raw.get("inputs") or [],
        outputs=raw.get("outputs") or {},
        medsynth_version=raw.get("medsynth_version", "?"),
        created=raw.get("created", "?"),
        schema_version=raw.get("schema_version", SCHEMA_VERSION),
        folder=folder,
        sha256=sha256_file(path),
    )


def prepare_output_dir(
    folder: str | os.PathLike[str], stage: str, *, resume: bool = False, overwrite: bool = False
) -> Path:
    """Create ``folder`` for a stage's output, refusing to clobber a different artifact.

    An existing folder of the same stage is only reused with ``resume`` (continue) or
    ``overwrite`` (start again); anything else non-empty is an error, so no finished work
    is lost by a mistyped path.
    """
    folder = check_output_dir(folder, stage, resume=resume, overwrite=overwrite)
    if folder.is_dir() and any(folder.iterdir()) and overwrite and not resume:
        clear_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_output_dir(
    folder: str | os.PathLike[str], stage: str, *, resume: bool = False, overwrite: bool = False
) -> Path:
    """The refusals of :func:`prepare_output_dir`, with nothing created or deleted.

    Lets a stage fail early (before long work) and still validate its input before it
    touches the folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MedsynthError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        mpath = folder / MANIFEST_NAME
        if mpath.is_file():
            other = read_manifest(folder).stage
            if other != stage:
                raise MedsynthError(
                    f"{folder}: holds a '{other}' artifact; choose another --out for '{stage}'"
                )
        elif overwrite:
            raise MedsynthError(
                f"{folder}: is not empty and holds no medsynth artifact; refusing to delete it",
                hint="choose an empty or new --out folder",
            )
        if not (resume or overwrite):
            raise MedsynthError(
                f"{folder}: already exists and is not empty",
                hint="use --resume to continue it, --overwrite to replace it, or another --out",
            )
    return folder


# ---------------------------------------------------------------------------------------------
# lineage


@dataclasses.dataclass
class Lineage:
    """Where an artifact came from, read from the ``inputs`` of its manifests.

    From a synthetic set: the sets (and judged folders) it was made from, then the model that
    generated it, then each model that one was refined from, down to the trained model, and the
    datasets every one of those models trained on.
    """

    start: Manifest
    """The manifest the walk started from."""
    sources: list[Manifest] = dataclasses.field(default_factory=list)
    """Synthetic sets and judged folders before the first model (the start first, if it is
    one)."""
    models: list[Manifest] = dataclasses.field(default_factory=list)
    """The generating model first, then each model it was refined from (stage train/refine)."""
    data: list[tuple[Manifest, dict[str, Any]]] = dataclasses.field(default_factory=list)
    """(model, input reference of stage data) for every model on the chain."""
    problems: list[str] = dataclasses.field(default_factory=list)
    """Links that could not be followed (folder gone) or whose manifest changed since."""

    @property
    def generator(self) -> Manifest | None:
        """The model that made the images (None when it cannot be read)."""
        return self.models[0] if self.models else None

    @property
    def trained(self) -> Manifest | None:
        """The model at the root of the chain (stage train, when the chain is complete)."""
        return self.models[-1] if self.models else None

    def data_sha256(self, model: Manifest | None = None) -> set[str]:
        """sha256 of every dataset manifest a model on the chain trained on (as recorded), or
        only those ``model`` trained on."""
        out = {str(ref.get("sha256")) for m, ref in self.data
               if ref.get("sha256") and (model is None or m is model)}
        out |= {str(m.config["dataset_sha256"]) for m in self.models
                if m.config.get("dataset_sha256") and (model is None or m is model)}
        return out


def resolve_input(manifest: Manifest, ref: dict[str, Any]) -> Path:
    """The folder an input reference names (relative paths are relative to ``manifest``'s)."""
    p = Path(str(ref.get("path", "")))
    if not p.is_absolute() and manifest.folder is not None:
        p = (manifest.folder / p).resolve()
    return p


def walk_lineage(folder: str | os.PathLike[str]) -> Lineage:
    """Follow an artifact's inputs back to its datasets (see :class:`Lineage`).

    From a synthetic set (or a judged folder) the walk takes the first input of a model stage,
    else the first input of :data:`SOURCE_STAGES`; from a model, the first input of a model
    stage (the model it refined) and all inputs of stage data. An input whose folder is gone
    ends the walk with a problem; an input whose manifest changed after the downstream artifact
    was made (sha256 differs) is followed and noted. Never loops.
    """
    start = read_manifest(folder)
    lin = Lineage(start=start)
    seen: set[Path] = set()
    cur: Manifest | None = start
    while cur is not None:
        key = (cur.folder or Path(".")).resolve()
        if key in seen:
            lin.problems.append(f"{cur.folder}: the lineage loops back to this folder")
            break
        seen.add(key)
        if cur.stage in MODEL_STAGES:
            lin.models.append(cur)
            lin.data += [(cur, ref) for ref in cur.inputs if ref.get("stage") == "data"]
            cur = _follow(lin, cur, MODEL_STAGES)
        elif cur.stage in SOURCE_STAGES or cur.outputs.get("synthetic") is True:
            lin.sources.append(cur)
            nxt = [r for r in cur.inputs if r.get("stage") in MODEL_STAGES]
            cur = _follow(lin, cur, MODEL_STAGES if nxt else SOURCE_STAGES)
        else:
            break
    return lin


def _follow(lin: Lineage, m: Manifest, stages: tuple[str, ...]) -> Manifest | None:
    ref = next((r for r in m.inputs if r.get("stage") in stages), None)
    if ref is None:
        return None
    path = resolve_input(m, ref)
    if not (path / MANIFEST_NAME).is_file():
        lin.problems.append(f"{m.folder}: its {ref.get('stage')} input {path} cannot be read "
                            "(moved or deleted?)")
        return None
    try:
        up = read_manifest(path)
    except MedsynthError as e:
        lin.problems.append(str(e))
        return None
    if ref.get("sha256") and up.sha256 != ref.get("sha256"):
        lin.problems.append(f"{path}: changed after {m.folder} was made from it (its manifest's "
                            "sha256 differs from the one recorded)")
    return up
