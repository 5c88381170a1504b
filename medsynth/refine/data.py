"""What refine trains on, decoded once: images in [-1, 1] and their conditions.

* Synthetic images are read through the synthetic set (:mod:`medsynth.synthset`) and mapped to
  the model's range with the bundle's intensity mapping (the inverse of what generate wrote).
* Conditions are what the images were generated with: the class id and the description,
  re-encoded through the bundle's text encoder with the set's prototype strength (one text at
  a time, as generate encodes, so a condition never depends on its batch).
* Real images (rwr): the training split(s) of the dataset the model trained on, found through
  the model's lineage, with the descriptions of the store it trained with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import MedsynthError


@dataclasses.dataclass
class Conditions:
    """Encoded conditions: one row per distinct (class id, description)."""

    class_ids: Any
    """(K,) long."""
    hidden: Any
    """(K, L, D) float32 text features (padded)."""
    mask: Any
    """(K, L) long (1 = real token)."""
    index: dict[tuple[int, str], int]
    """(class id, description) -> row."""
    class_probs: Any = None
    """CCELLA-mode models: (K, n_classes) float, the class input generate gives the denoiser
    (the text head's prediction where there is a description, else the one-hot class)."""

    def rows(self, keys: list[tuple[int, str]]) -> Any:
        import torch

        return torch.tensor([self.index[k] for k in keys], dtype=torch.long)

    def of(self, rows: Any) -> tuple[Any, Any, Any]:
        """(class input, text features, mask) of condition ``rows``."""
        classes = self.class_ids if self.class_probs is None else self.class_probs
        return classes[rows], self.hidden[rows], self.mask[rows]

    @staticmethod
    def drop_class(classes: Any, drop: Any, null_class: int) -> Any:
        """The class input with the ``drop`` rows set to the null class (CFG dropout): ids, or
        probabilities widened by the null column (as CCELLA training's class input)."""
        import torch.nn.functional as F

        if not classes.is_floating_point():
            classes = classes.clone()
            classes[drop] = null_class
            return classes
        wide = F.pad(classes, (0, null_class + 1 - classes.shape[1]))
        wide[drop] = F.one_hot(torch_full(int(drop.sum()), null_class), null_class + 1).to(wide)
        return wide


def encode_conditions(bundle: Any, keys: list[tuple[int, str]],
                      prototype_strength: float | None) -> Conditions:
    """Encode every distinct (class id, description) of ``keys`` (one text at a time)."""
    import torch

    from medsynth.models.text_encoder import pad_features

    uniq = sorted(set(keys))
    feats, masks = [], []
    for cid, desc in uniq:
        h, m = bundle.encode_text([desc], classes=[cid], prototype_strength=prototype_strength)
        n = int(m[0].sum()) or 1
        feats.append(h[0, :n].float().cpu())
        masks.append(m[0, :n].cpu())
    hidden, mask = pad_features(feats)
    class_ids = torch.tensor([c for c, _ in uniq], dtype=torch.long)
    probs = None
    if bundle.class_probabilities:
        probs = bundle.class_condition(class_ids.tolist(), hidden, mask).float().cpu()
    return Conditions(class_ids=class_ids, hidden=hidden, mask=mask,
                      index={k: i for i, k in enumerate(uniq)}, class_probs=probs)


def torch_full(n: int, value: int) -> Any:
    import torch

    return torch.full((n,), value, dtype=torch.long)


def to_model_space(bundle: Any, images: Any, batch: int = 8) -> Any:
    """Images in [-1, 1] -> what the denoiser denoises: a latent model's scaled latents (encoded
    in batches, no gradient, back on the CPU); pixels unchanged."""
    import torch

    if not bundle.latent or len(images) == 0:
        return images
    dev = bundle.device if bundle.device is not None else "cpu"
    with torch.no_grad():
        return torch.cat([bundle.encode(images[i : i + batch].to(dev)).float().cpu()
                          for i in range(0, len(images), batch)])


def read_synthetic(synth: Any, sample_ids: list[str], bundle: Any, *,
                   progress: bool = True) -> tuple[Any, dict[str, int]]:
    """Images of ``sample_ids`` as one float32 tensor ``(N, C, *shape)`` in [-1, 1].

    Returns the tensor and sample_id -> row. Each image must have the model's shape and
    channels (the images a model generated always do).
    """
    import torch

    from medsynth.imaging.readers import read_image
    from medsynth.ui import track

    rows = synth.table.set_index(synth.table["sample_id"].astype(str))
    want = (bundle.channels, *bundle.shape)  # pixels (a latent model's images, not latents)
    out = []
    ids = list(dict.fromkeys(sample_ids))
    for sid in track(ids, "reading images") if progress else ids:
        path = synth.path_of(rows.loc[sid])
        arr = read_image(path).array
        if tuple(arr.shape) != want:
            raise MedsynthError(f"{path}: shape {list(arr.shape)} is not the model's "
                                f"{list(want)} (channels first)")
        out.append(bundle.from_pixels(arr))
    return torch.stack(out) if out else torch.empty((0, *want)), {s: i for i, s in enumerate(ids)}


@dataclasses.dataclass
class RealData:
    """Real training images (rwr), in [-1, 1], with their class ids and descriptions."""

    images: Any
    class_ids: list[int]
    texts: list[str]
    dataset: Path
    splits: list[str]


def model_training_data(model_manifest: Any) -> tuple[Path | None, Path | None, list[str]]:
    """(dataset folder, store folder or None, splits) the model (or its root model) trained on."""
    from medsynth.artifacts import resolve_input, walk_lineage

    lin = walk_lineage(model_manifest.folder)
    data = store = None
    splits: list[str] = []
    for m in reversed(lin.models):  # the trained model is the root of the chain
        for ref in m.inputs:
            if ref.get("stage") == "data" and data is None:
                data = resolve_input(m, ref)
            if ref.get("stage") == "describe" and store is None:
                store = resolve_input(m, ref)
        splits = splits or [str(s) for s in (m.config.get("train_splits") or [])]
    return data, store, splits or ["train"]


def load_real(bundle: Any, *, progress: bool = True) -> RealData:
    """The real images the model trained on (its dataset's training splits), at its shape."""
    import torch

    from medsynth.imaging.dataset import open_dataset
    from medsynth.imaging.transforms import resize_2d
    from medsynth.store import open_store
    from medsynth.ui import track

    data_dir, store_dir, splits = model_training_data(bundle.manifest)
    if data_dir is None or not data_dir.is_dir():
        raise MedsynthError(f"{bundle.folder}: the dataset it trained on cannot be found "
                            f"({data_dir or 'no data input in its manifest'})",
                            hint="rwr mixes in real training images; use --real-fraction 0 or "
                                 "--method dpo")
    ds = open_dataset(data_dir)
    texts: dict[str, str] = {}
    if store_dir is not None and store_dir.is_dir():
        texts = {k: r.text for k, r in open_store(store_dir).by_image().items()}
    rows = ds.table[ds.table["split"].isin(splits) & ds.table["class"].isin(bundle.classes)]
    if rows.empty:
        raise MedsynthError(f"{data_dir}: no images of the model's classes in split(s) {splits}")
    images, cids, txts = [], [], []
    items = [r for _, r in rows.iterrows()]
    for r in track(items, "reading real images") if progress else items:
        arr = ds.load(r).array
        if arr.ndim != 3:
            raise MedsynthError(f"{ds.path_of(r)}: rwr reads 2D images only")
        if arr.shape[0] != bundle.channels:
            raise MedsynthError(f"{ds.path_of(r)}: {arr.shape[0]} channel(s), the model has "
                                f"{bundle.channels}")
        if tuple(arr.shape[1:]) != tuple(bundle.shape):
            arr = resize_2d(arr, int(bundle.size), "pad")
        images.append(bundle.from_pixels(np.asarray(arr)))
        cids.append(bundle.class_id(str(r["class"])))
        txts.append(texts.get(str(r["image_id"]), ""))
    return RealData(images=torch.stack(images), class_ids=cids, texts=txts, dataset=data_dir,
                    splits=splits)
