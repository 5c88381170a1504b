"""Image prompts, synthetic twins and class balancing: which real image each sample stands on.

Three ways a run's plan comes from real images (MedCoDi-M's multi-prompt uses, MAGIC's
image-to-image synthesis); each only adds to the plan of :mod:`medsynth.generate.conditioning`
(class, description, seed per sample), decided up front, recorded, resumable:

- ``--init-images DATASET|FOLDER``: every sample starts from a real image noised to
  ``--strength`` S (SDEdit, :func:`medsynth.models.sampler.denoise`), of any target ``--class``
  (possibly another class than the source's: class translation), with the usual description
  and guidance. Assignment: for each target class the source images (of ``--split``, of
  ``--init-class``; of any class, of the target class or of the other classes by
  ``--init-pairing any|same|other``) are shuffled with a seed from (``--seed``, target class) and cycled: sample
  ``k`` of the class starts from source ``k mod N``. A sample's source therefore depends only on
  its class and index, like its seed: resumed, sharded and ``--only`` runs use the same ones.
- ``--twin DATASET``: one sample per real image of ``--split`` (same class, the real image's own
  stored description when the store has it), from noise or from the image at ``--strength``;
  then the near-copy check (:mod:`medsynth.generate.twin`).
- ``--balance DATASET``: per class, ``target - real count`` samples (``--target max`` = the
  largest class), from noise or from ``--init-images``.

Init images reach the model as its training images did: the same dimensionality and channels
(else an error naming the file), the same pixel type (or an exact widening), square images of
another size stretched as ``medsynth train --size`` does, non-square ones fitted as
``medsynth data import --resize pad|crop`` does, then the model's intensity mapping to [-1, 1],
and, for latent models, the autoencoder's encoder (:func:`to_model_space`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import MANIFEST_NAME, input_ref, read_manifest
from medsynth.errors import BadUsageError, MedsynthError
from medsynth.generate.conditioning import (
    Request,
    SampleSpec,
    class_folders,
    image_seed,
    plan_samples,
    requests_from_options,
)
from medsynth.generate.config import GenerateConfig
from medsynth.imaging.dataset import Dataset, open_dataset
from medsynth.imaging.image import Image
from medsynth.imaging.readers import image_kind, read_image
from medsynth.imaging.transforms import fit_to_size, resize_square

ASSIGNMENT = ("per target class, the source images shuffled with a seed from (--seed, class) "
              "and cycled: sample k of the class starts from source k mod N")
_WIDENINGS = {("uint8", "int16"), ("uint8", "float32"), ("uint16", "float32"),
              ("int16", "float32")}
"""(image dtype, model dtype) pairs converted exactly (values kept), as dataset reading does."""


@dataclasses.dataclass(frozen=True)
class SourceItem:
    """One real image a sample can start from (or stand for)."""

    image_id: str
    """Dataset image_id, or the path inside an image folder (posix)."""
    cls: str
    """Its class ("" when an image folder does not say)."""
    split: str
    """Its dataset split ("" for an image folder)."""
    row: int
    """Row in the dataset's labels.csv (-1 for an image folder)."""
    path: Path


@dataclasses.dataclass
class ImageSource:
    """The real images of a dataset (some splits) or of a plain image folder."""

    kind: str
    """``dataset`` or ``folder``."""
    root: Path
    items: list[SourceItem]
    splits: list[str] | None
    """Splits taken (None for a folder)."""
    dataset: Dataset | None = None

    def load(self, item: SourceItem) -> Image:
        """The image as stored (a dataset's through its labels: modality, geometry, type)."""
        if self.dataset is not None:
            return self.dataset.load(self.dataset.table.iloc[item.row])
        return read_image(item.path)

    def by_id(self) -> dict[str, SourceItem]:
        return {it.image_id: it for it in self.items}

    def input_ref(self, role: str) -> dict[str, Any]:
        """This source as a manifest input (datasets with their manifest's sha256)."""
        if self.dataset is not None:
            return {**input_ref(self.root, "data"), "role": role, "splits": self.splits}
        return {"path": str(self.root.resolve()), "stage": None, "sha256": None, "role": role,
                "kind": "folder", "n_images": len(self.items)}


def open_source(path: str | Path, splits: list[str], *, option: str,
                need_dataset: bool = False) -> ImageSource:
    """A dataset folder (images of ``splits``) or an image folder (``root/<class>/*``, every file).

    ``need_dataset``: twins and balancing count a dataset's splits; a plain folder is an error.
    """
    root = Path(path)
    if not root.is_dir():
        raise MedsynthError(f"{option} {root}: no such folder",
                            hint="give a dataset folder (medsynth data import) or an image folder")
    if (root / MANIFEST_NAME).is_file():
        stage = read_manifest(root).stage
        if stage != "data":
            raise MedsynthError(f"{option} {root}: is a '{stage}' artifact, not a dataset or an "
                                "image folder")
        ds = open_dataset(root)
        rows = ds.table[ds.table["split"].isin(splits)]
        if rows.empty:
            have = sorted(ds.table["split"].dropna().astype(str).unique())
            what = ("the real training images a twin stands for" if option == "--twin" else
                    "images to count" if option == "--balance" else "images to start from")
            raise MedsynthError(f"{option} {root}: no images in split(s) {', '.join(splits)} "
                                f"(it has {', '.join(have) or 'no splits'}); {what}",
                                hint="choose the split with --split")
        items = [SourceItem(str(r["image_id"]), str(r["class"]), str(r["split"]), int(i),
                            ds.root / str(r["path"]))
                 for i, (_, r) in enumerate(ds.table.iterrows()) if r["split"] in splits]
        return ImageSource("dataset", root, items, list(splits), ds)
    if need_dataset:
        raise MedsynthError(f"{option} {root}: not a medsynth dataset (no {MANIFEST_NAME}); "
                            f"{option} needs a dataset with splits",
                            hint=f"import it first: medsynth data import {root} --out DATASET")
    items = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or image_kind(p) is None:
            continue
        rel = p.relative_to(root)
        items.append(SourceItem(rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else "", "",
                                -1, p))
    if not items:
        raise MedsynthError(f"{option} {root}: no images found",
                            hint="expected root/<class>/*.png|jpg|tif|dcm|nii.gz or root/*.png")
    return ImageSource("folder", root, items, None)


# --- init images -> the model's input ---------------------------------------------------------
def fit_image(img: Image, bundle: Any, *, resize: str, where: str) -> np.ndarray:
    """A real image as the model's training images were: dims, channels, dtype, size (module doc)."""
    a = img.array
    dims = a.ndim - 1
    if dims != bundle.spatial_dims:
        hint = ("import 2D slices with medsynth data import --slices" if dims == 3 else
                "give volumes of the model's kind")
        raise MedsynthError(f"{where}: a {dims}D image, but the model makes {bundle.spatial_dims}D "
                            "images", hint=hint)
    if a.shape[0] != bundle.channels:
        name = {1: "grayscale", 3: "RGB"}
        raise MedsynthError(
            f"{where}: {a.shape[0]}-channel ({name.get(a.shape[0], '?')}) image, but the model "
            f"makes {bundle.channels}-channel ({name.get(bundle.channels, '?')}) images",
            hint="convert the images to the model's channels first (medsynth never changes "
                 "grayscale to RGB or back on its own)")
    have, want = str(a.dtype), bundle.dtype
    if have != want:
        if (have, want) not in _WIDENINGS:
            raise MedsynthError(
                f"{where}: {have} pixels, but the model's are {want} (its intensity mapping "
                f"[{bundle.intensity.low:g}, {bundle.intensity.high:g}] is in {want} values)",
                hint=f"import the images with medsynth data import --dtype {want} (or the same "
                     "settings as the training data) and pass that dataset")
        a = a.astype(want)
    shape = tuple(int(s) for s in a.shape[1:])
    if shape != tuple(bundle.shape):
        size = int(bundle.shape[-1])
        if len(set(shape)) == 1 and len(set(bundle.shape)) == 1 and dims == 2:
            a = resize_square(a, size)  # the train stage's --size rule
        else:
            a = fit_to_size(a, size, resize)[0]  # the data import's --resize rule
    return np.ascontiguousarray(a)


def to_model_space(bundle: Any, x: Any) -> Any:
    """Init images in [-1, 1] pixel space -> the denoiser's space.

    Pixel models take them as they are. Latent models (``bundle.latent``) take the scaled
    latents of their autoencoder: ``bundle.encode(x)`` (provided by the bundle once latent
    models load; the sampler then noises the latents, denoises and decodes).
    """
    if not getattr(bundle, "latent", False):
        return x
    encode = getattr(bundle, "encode", None)
    if encode is None:
        raise MedsynthError(f"{getattr(bundle, 'folder', 'model')}: a latent model without an "
                            "image encoder: image-to-image needs the autoencoder's encode",
                            hint="upgrade medsynth")
    return encode(x)


# --- plans ------------------------------------------------------------------------------------
def assign_sources(specs: list[SampleSpec], source: ImageSource, *, base_seed: int,
                   init_classes: list[str], pairing: str = "any") -> list[SampleSpec]:
    """Give every sample its source image (module doc: seeded shuffle per target class, cycled).

    ``pairing``: ``any`` source image, only sources of the sample's own class (``same``:
    variations), or only sources of other classes (``other``: class translation).
    """
    pool = source.items
    where = f"{source.root}" + (f" (split {', '.join(source.splits)})" if source.splits else "")
    if init_classes:
        have = {it.cls for it in pool}
        wanted = set()
        for c in init_classes:
            for part in [p.strip() for p in c.split(",") if p.strip()]:
                name = _match(part, sorted(have))
                if name is None:
                    raise MedsynthError(
                        f"--init-class {part!r}: no such class among the init images of {where}",
                        hint=f"their classes: {', '.join(repr(c) for c in sorted(have))}")
                wanted.add(name)
        pool = [it for it in pool if it.cls in wanted]
    orders: dict[str, list[SourceItem]] = {}
    out = []
    for s in specs:
        if s.cls not in orders:
            same = [it for it in pool if it.cls.lower() == s.cls.lower()]
            order = {"any": list(pool), "same": same,
                     "other": [it for it in pool if it.cls.lower() != s.cls.lower()]}[pairing]
            if not order:
                raise MedsynthError(f"--init-pairing {pairing}: no init images for class "
                                    f"{s.cls!r} in {where}" + (f" of --init-class "
                                                               f"{', '.join(init_classes)}"
                                                               if init_classes else ""),
                                    hint="their classes: " + ", ".join(
                                        repr(c) for c in sorted({it.cls for it in pool})))
            random.Random(image_seed(base_seed, f"init-images:{s.cls}", 0)).shuffle(order)
            orders[s.cls] = order
        it = orders[s.cls][s.index % len(orders[s.cls])]
        out.append(dataclasses.replace(s, init_id=it.image_id, init_class=it.cls))
    return out


def _match(name: str, classes: list[str]) -> str | None:
    """The model class ``name`` means (exact, else ignoring case), or None."""
    if name in classes:
        return name
    return next((c for c in classes if c.lower() == name.lower()), None)


def _selected_classes(classes: list[str], model_classes: list[str]) -> list[str]:
    """--class values (names, commas, ``*``/``all``) as model class names."""
    return [r.cls for r in requests_from_options(classes, model_classes, 1, None)]


def twin_specs(source: ImageSource, cfg: GenerateConfig, model_classes: list[str], store: Any,
               *, from_image: bool, store_splits: list[str] | None) -> list[SampleSpec]:
    """One sample per real image (dataset order within each class), same class, its own text.

    The description is ``--prompt``, else the real image's own stored description (when the
    store describes this dataset and has one), else a random stored description of the class,
    else none (class only). Real images of classes the model lacks are an error, unless
    ``--class`` chose the classes to twin.
    """
    chosen = set(_selected_classes(cfg.classes, model_classes))
    unknown = sorted({it.cls for it in source.items if _match(it.cls, model_classes) is None})
    if unknown and all(c in ("*", "all") for c in cfg.classes):
        raise MedsynthError(f"--twin {source.root}: class(es) {unknown} are not classes of the "
                            "model", hint=f"the model knows {', '.join(model_classes)}; choose "
                            "the classes to twin with --class")
    own = _own_descriptions(store, source) if store is not None and cfg.prompt is None else {}
    folders = class_folders(model_classes)
    counters: dict[str, int] = {}
    specs = []
    for it in source.items:
        cls = _match(it.cls, model_classes)
        if cls is None or cls not in chosen:
            continue
        k = counters.get(cls, 0)
        counters[cls] = k + 1
        seed = image_seed(cfg.seed, cls, k)
        if cfg.prompt is not None:
            text, src = cfg.prompt, "prompt"
        elif it.image_id in own:
            text, src = own[it.image_id], f"store:{it.image_id}"
        elif store is not None:
            rec = store.sample(cls, random.Random(seed), splits=store_splits)
            text, src = rec.text, f"store:{rec.image_id}"
        else:
            text, src = "", "none"
        specs.append(SampleSpec(
            sample_id=f"{folders[cls]}-{k:06d}", cls=cls, class_id=model_classes.index(cls),
            index=k, seed=seed, description=text, source=src,
            init_id=it.image_id if from_image else "", init_class=it.cls if from_image else "",
            twin_of=it.image_id))
    if not specs:
        raise MedsynthError(f"--twin {source.root}: no real images of the chosen class(es) in "
                            f"split(s) {', '.join(source.splits or [])}")
    return specs


def _own_descriptions(store: Any, source: ImageSource) -> dict[str, str]:
    """image_id -> stored text, for a store made from this very dataset (else nothing)."""
    data = [r for r in store.manifest.inputs if r.get("stage") == "data"]
    if data and source.dataset is not None and all(r.get("sha256") != source.dataset.sha256
                                                   for r in data):
        return {}
    classes = {it.image_id: it.cls for it in source.items}
    return {i: r.text for i, r in store.by_image().items()
            if classes.get(i) == r.cls and r.text.strip()}


def balance_counts(source: ImageSource, classes: list[str], target: str) -> dict[str, Any]:
    """Real counts per class and what each class needs to reach ``target`` (``max`` or N).

    A number below a class's real count is an error naming the class (nothing is removed).
    """
    real = {c: 0 for c in classes}
    for it in source.items:
        c = _match(it.cls, classes)
        if c is not None:
            real[c] += 1
    goal = max(real.values()) if target == "max" else int(target)
    over = {c: n for c, n in real.items() if n > goal}
    if over:
        listing = ", ".join(f"{c} ({n})" for c, n in over.items())
        raise BadUsageError(f"--target {goal}: below the real count of {listing} in "
                            f"{source.root} split(s) {', '.join(source.splits or [])}",
                            hint="balancing only adds images: use --target max or a number at "
                                 f"least {max(over.values())}")
    need = {c: goal - n for c, n in real.items()}
    warnings = [f"class {c}: {need[c]} synthetic image(s) from {n} real one(s): the model saw "
                f"{'almost ' if n > 1 else ''}nothing of it, expect copies of that image"
                for c, n in real.items() if 0 < n < MIN_REAL_TO_BALANCE and need[c] > 0]
    if warnings:
        from medsynth.ui import console

        for w in warnings:
            console.print(f"[yellow]warning:[/] --balance {w}", soft_wrap=True)
    return {"target": goal, "real_counts": real, "synthetic_counts": need,
            "after": {c: goal for c in classes}, "warnings": warnings}


MIN_REAL_TO_BALANCE = 5
"""Fewer real images of a class than this: --balance warns (it makes many images from few)."""


@dataclasses.dataclass
class ImagePlan:
    """A run's plan when it stands on real images, and what the run records about them."""

    specs: list[SampleSpec]
    strength: float | None
    """Share of the schedule run from the source images (None: no init images)."""
    source: ImageSource | None
    """Where init images come from (None when every sample starts from noise)."""
    resize: str
    outputs: dict[str, Any]
    """Manifest outputs: ``init_images`` / ``twin`` / ``balance`` sections."""
    inputs: list[dict[str, Any]]
    """Extra manifest inputs (the datasets or folder, with their role)."""
    twin: ImageSource | None = None
    _items: dict[str, SourceItem] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.source is not None:
            self._items = self.source.by_id()

    def expanded(self, plan: list[SampleSpec]) -> None:
        """Take the run's final plan (``--oversample`` candidates share their request's source
        image and twin): the twin's ``stands_for`` then names every candidate."""
        self.specs = plan
        if "twin" in self.outputs:
            self.outputs["twin"]["stands_for"] = {s.sample_id: s.twin_of for s in plan}

    def row(self, spec: SampleSpec) -> dict[str, Any]:
        """The samples.csv columns of image prompts (medsynth.synthset.COLUMNS)."""
        return {"init_image_id": spec.init_id, "init_class": spec.init_class,
                "strength": self.strength if self.strength is not None else "",
                "twin_of": spec.twin_of}

    def pixels(self, init_id: str, bundle: Any) -> np.ndarray:
        """Source image ``init_id`` mapped to the model's pixels (dtype, channels, size)."""
        assert self.source is not None
        item = self._items[init_id]
        return fit_image(self.source.load(item), bundle, resize=self.resize,
                         where=str(item.path))

    def check(self, specs: list[SampleSpec], bundle: Any, progress: Callable[..., Any]) -> None:
        """Read and map every source image ``specs`` use once, before anything is sampled."""
        ids = sorted({s.init_id for s in specs if s.init_id})
        if self.source is not None:
            for i in progress(ids, "checking init images"):
                self.pixels(i, bundle)

    def init_batch(self, batch: list[SampleSpec], bundle: Any) -> Any:
        """The batch's source images in the denoiser's space, or None (all from noise)."""
        import torch

        if self.source is None or self.strength is None or self.strength >= 1.0:
            return None
        x = torch.stack([bundle.from_pixels(self.pixels(s.init_id, bundle)) for s in batch])
        return to_model_space(bundle, x)


def prepare(cfg: GenerateConfig, bundle: Any, store: Any, store_splits: list[str] | None, *,
            base: Callable[[], list[SampleSpec]]) -> ImagePlan | None:
    """The plan of a run with ``--init-images``, ``--twin`` or ``--balance`` (None otherwise).

    ``base`` makes the run's text-to-image plan (``--class``/``--n``, ``--prompts-csv``), to
    which ``--init-images`` adds the source images.
    """
    if not (cfg.init_images or cfg.twin or cfg.balance):
        return None
    classes = bundle.classes
    outputs: dict[str, Any] = {}
    inputs: list[dict[str, Any]] = []
    init = twin = None
    if cfg.twin:
        twin = open_source(cfg.twin, cfg.splits, option="--twin", need_dataset=True)
        from_image = (cfg.strength or 1.0) < 1.0
        specs = twin_specs(twin, cfg, classes, store, from_image=from_image,
                           store_splits=store_splits)
        init = twin if from_image else None
        inputs.append(twin.input_ref("twin"))
        outputs["twin"] = {
            "dataset": str(twin.root.resolve()), "splits": twin.splits, "n_real": len(specs),
            "strength": cfg.strength, "from": "image" if from_image else "noise",
            "stands_for": {s.sample_id: s.twin_of for s in specs},
        }
    else:
        if cfg.balance:
            counted = open_source(cfg.balance, cfg.splits, option="--balance", need_dataset=True)
            chosen = _selected_classes(cfg.classes, classes)
            bal = balance_counts(counted, chosen, cfg.balance_target)
            requests = [Request(c, n, cfg.prompt) for c, n in bal["synthetic_counts"].items()
                        if n > 0]
            if not requests:
                raise MedsynthError(f"--balance {counted.root}: already balanced at "
                                    f"{bal['target']} image(s) per class; nothing to generate",
                                    hint="raise --target to add images to every class")
            inputs.append(counted.input_ref("balance"))
            outputs["balance"] = {"dataset": str(counted.root.resolve()),
                                  "splits": counted.splits, **bal}
            specs = plan_samples(requests, classes, base_seed=cfg.seed, store=store,
                                 splits=store_splits)
        else:
            specs = base()  # the text-to-image plan of --class/--n or --prompts-csv
        if cfg.init_images:
            src = open_source(cfg.init_images, cfg.splits, option="--init-images")
            if cfg.strength is not None and cfg.strength < 1.0:
                specs = assign_sources(specs, src, base_seed=cfg.seed,
                                       init_classes=cfg.init_classes, pairing=cfg.init_pairing)
                init = src
            # (strength 1 starts from noise: the run is text-to-image, its source recorded)
            inputs.append(src.input_ref("init-images"))
            used = {s.init_id for s in specs if s.init_id}
            outputs["init_images"] = {
                "path": str(src.root.resolve()), "kind": src.kind, "splits": src.splits,
                "classes": sorted({s.init_class for s in specs if s.init_id}),
                "pairing": cfg.init_pairing, "strength": cfg.strength,
                "resize": cfg.init_resize, "n_sources": len(used),
                "assignment": ASSIGNMENT if used else "none: strength 1 starts from noise",
            }
    return ImagePlan(specs=specs, strength=cfg.strength, source=init, resize=cfg.init_resize,
                     outputs=outputs, inputs=inputs, twin=twin)
