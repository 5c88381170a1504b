"""Evaluate with the in-domain CLIP model (``evaluate --clip MODEL``; ``train --stage clip``).

Three figures, each beside its reference:

* **In-domain fidelity**: FID, KID and k-NN precision/recall/density/coverage computed by the
  same functions as the EfficientNet-Lite0 ones (:mod:`medsynth.evaluate.fidelity`), on the
  CLIP image embeddings, with the same real-vs-real reference (the same real training images).
* **Image–text alignment** of every synthetic set: cosine similarity of each image with the
  text that conditioned it (samples.csv ``description``), against the **shuffled** baseline
  (another sample's text of the same set: what a model that ignores the text reaches) and the
  same-class shuffle (what the class alone explains). Reference: real test images with their
  own stored descriptions. Text conditioning shows as matched > shuffled.
* **Retrieval** on the real test split: image->text and text->image recall@1/5 of the real
  test (image, description) pairs, against chance: how well the shared space itself works.

The real test texts come from the store the CLIP model was trained with (or ``--clip-store``);
describe the test split into it (``medsynth describe DATA --out STORE --split test --resume``)
for retrieval and the real alignment reference. A CLIP model that trained on the test split is
refused, as is one trained on another dataset unless ``--independent-model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsynth.artifacts import resolve_input
from medsynth.errors import MedsynthError

N_BOOT = 1000


def open_clip_model(path: Path, real: Any, *, independent_model: bool,
                    device: str = "cpu") -> tuple[Any, list[str]]:
    """Load the CLIP folder and check it against the real dataset; returns (model, warnings)."""
    from medsynth.models.clip import load_clip

    clip = load_clip(path, device=device)
    info, where = clip.info, clip.folder
    if "test" in info.train_splits:
        raise MedsynthError(f"{where}: the CLIP model trained on the test split "
                            f"(train_splits={info.train_splits}); its retrieval and features "
                            "on that split would leak",
                            hint="train it with --splits train (the default)")
    if info.spec.channels != real.channels:
        raise MedsynthError(f"{where}: a {info.spec.channels}-channel CLIP model, but "
                            f"{real.root} has {real.channels} channel(s)")
    if info.spec.spatial_dims != 2:
        raise MedsynthError(f"{where}: a {info.spec.spatial_dims}D CLIP model; evaluate "
                            "compares 2D images")
    warnings: list[str] = []
    data_sha = {r.get("sha256") for r in clip.manifest.inputs if r.get("stage") == "data"}
    if real.sha256 not in data_sha:
        if not independent_model:
            raise MedsynthError(f"{where}: the CLIP model was trained on another dataset than "
                                f"{real.root}, so the test images may be among its training "
                                "pairs",
                                hint="train it on this dataset, or pass --independent-model "
                                     "if the two datasets share no images")
        warnings.append(f"{clip.name}: trained on another dataset (--independent-model)")
    unknown = sorted(set(real.classes) - set(info.classes))
    if unknown:
        warnings.append(f"{clip.name}: never saw class(es) {unknown}")
    return clip, warnings


def real_texts(clip: Any, store_path: Path | None, real: Any) -> tuple[dict[str, str], str]:
    """image_id -> description of the real images, from ``store_path`` or the CLIP's store."""
    from medsynth.store import open_store

    if store_path is None:
        ref = next((r for r in clip.manifest.inputs if r.get("stage") == "describe"), None)
        if ref is None:
            return {}, ""
        store_path = resolve_input(clip.manifest, ref)
        if not store_path.is_dir():
            return {}, f"{store_path} (missing)"
    store = open_store(store_path)
    known = set(real.table["image_id"].astype(str))
    return ({i: r.text.strip() for i, r in store.by_image().items()
             if i in known and r.text.strip()}, str(store_path))


# ----------------------------------------------------------------------------------- alignment
def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation without fixed points (n >= 2)."""
    perm = rng.permutation(n)
    fixed = np.nonzero(perm == np.arange(n))[0]
    for i in fixed:  # swap each fixed point with a random other position
        j = int(rng.integers(n - 1))
        j = j + 1 if j >= i else j
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def shuffled_partner(texts: list[str], groups: list[Any] | None, rng: np.random.Generator
                     ) -> np.ndarray:
    """For each item, another item (within its group when ``groups`` is given) whose text is
    used as the shuffled baseline; -1 where no other item exists. Partners with the same text
    string are allowed (a text that repeats is a fair baseline for it)."""
    n = len(texts)
    out = np.full(n, -1, dtype=np.int64)
    keys = groups if groups is not None else [0] * n
    for g in dict.fromkeys(keys):
        idx = np.array([i for i in range(n) if keys[i] == g])
        if len(idx) >= 2:
            out[idx] = idx[_derangement(len(idx), rng)]
    return out


def _boot_ci(v: np.ndarray, rng: np.random.Generator) -> tuple[float | None, float | None]:
    if len(v) < 2:
        return None, None
    means = v[rng.integers(0, len(v), size=(N_BOOT, len(v)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def alignment(img: Any, txt: Any, texts: list[str], labels: list[Any], seed: int = 0
              ) -> dict[str, Any]:
    """Matched vs shuffled cosine similarity of paired image and text embeddings.

    ``gap`` = mean(matched - shuffled) with a 95 % bootstrap interval over images; ``win`` =
    share of images whose own text is closer than the shuffled one.
    """
    rng = np.random.default_rng(seed)
    n = len(texts)
    if n < 2:
        return {"n": n}
    sim = (img.float() @ txt.float().T).numpy()  # (n, n) image i vs text j
    matched = np.diag(sim)
    out: dict[str, Any] = {"n": n, "n_texts": len(set(texts)),
                           "matched": float(matched.mean())}
    for name, groups in (("shuffled", None), ("shuffled_same_class", list(labels))):
        part = shuffled_partner(texts, groups, rng)
        ok = part >= 0
        if not ok.any():
            out[name] = None
            continue
        sh = sim[np.nonzero(ok)[0], part[ok]]
        diff = matched[ok] - sh
        lo, hi = _boot_ci(diff, rng)
        out[name] = {"mean": float(sh.mean()), "gap": float(diff.mean()), "gap_lo": lo,
                     "gap_hi": hi, "win": float((diff > 0).mean()), "n": int(ok.sum())}
    return out


# --------------------------------------------------------------------------------------- report
def clip_report(clip: Any, *, classes: list[str], train: Any, test: Any, synth: dict[str, Any],
                synth_sets: list[Any], texts_by_id: dict[str, str], store_path: str,
                k: int) -> dict[str, Any]:
    """Every CLIP figure of an evaluation (see the module docstring)."""
    import torch

    from medsynth.evaluate.fidelity import fidelity_pair, reference_indices
    from medsynth.ui import console

    console.print(f"extracting CLIP features ({clip.folder})")
    f_train, f_test = clip.embed_images(train.x), clip.embed_images(test.x)
    f_synth = {n: clip.embed_images(s.x) for n, s in synth.items()}

    # (a) in-domain fidelity, same functions and same reference images as EfficientNet-Lite0.
    keep = reference_indices(train.y, synth, len(classes))
    f_ref, y_ref = f_train[keep], train.y[keep]
    ref: dict[str, Any] = {"overall": fidelity_pair(f_test, f_ref, k), "per_class": {}}
    for c, name in enumerate(classes):
        ref["per_class"][name] = fidelity_pair(f_test[test.y == c], f_ref[y_ref == c], k)
    sets: dict[str, Any] = {}
    for name, s in synth.items():
        present = sorted(set(s.y.tolist()))
        entry = {"overall": fidelity_pair(f_test[np.isin(test.y.numpy(), present)],
                                          f_synth[name], k), "per_class": {}}
        for c in present:
            entry["per_class"][classes[c]] = fidelity_pair(f_test[test.y == c],
                                                           f_synth[name][s.y == c], k)
        sets[name] = entry
    fidelity = {"reference": ref, "sets": sets}

    # (b) alignment: synthetic images against the texts that conditioned them.
    align: dict[str, Any] = {"sets": {}, "real": None}
    by_name = {s.name: s for s in synth_sets}
    for name, s in synth.items():
        table = by_name[name].table
        desc = dict(zip(table["sample_id"].astype(str),
                        table.get("description", [""] * len(table)), strict=False))
        rows = [i for i, sid in enumerate(s.ids)
                if isinstance(desc.get(sid), str) and desc[sid].strip()]
        if len(rows) < 2:
            align["sets"][name] = {"n": len(rows), "reason": "fewer than 2 images conditioned "
                                   "on a text (class-only samples have none)"}
            continue
        texts = [desc[s.ids[i]].strip() for i in rows]
        ri = torch.tensor(rows)
        align["sets"][name] = alignment(f_synth[name][ri], clip.embed_texts(texts), texts,
                                        s.y[ri].tolist())
    test_rows = [i for i, iid in enumerate(test.ids) if iid in texts_by_id]
    retrieval: dict[str, Any] | None = None
    if len(test_rows) >= 2:
        ti = torch.tensor(test_rows)
        texts = [texts_by_id[test.ids[i]] for i in test_rows]
        t_emb = clip.embed_texts(texts)
        align["real"] = alignment(f_test[ti], t_emb, texts, test.y[ti].tolist())
        # (c) retrieval on the real test pairs.
        from medsynth.models.clip import retrieval_recall

        retrieval = retrieval_recall(f_test[ti], t_emb, texts,
                                     labels=[classes[int(v)] for v in test.y[ti]])
    info = clip.info
    return {"model": str(clip.folder), "sha256": clip.sha256, "encoder": info.spec.encoder,
            "embed_dim": info.spec.embed_dim, "input_size": info.spec.size,
            "text_encoder": info.text_encoder.name, "trained_step": info.step,
            "train_splits": info.train_splits, "n_train_pairs": info.n_train_pairs,
            "val": info.val, "store": store_path, "n_test_described": len(test_rows),
            "n_test": len(test), "fidelity": fidelity, "alignment": align,
            "retrieval": retrieval,
            "retrieval_reason": None if retrieval is not None else (
                f"{len(test_rows)} real test image(s) have a description in {store_path or 'no store'}; "
                "describe the test split (medsynth describe DATA --out STORE --split test "
                "--resume) and pass that store with --clip-store")}


# ------------------------------------------------------------------------------------ rendering
def _f(v: Any, d: int = 3) -> str:
    from medsynth.evaluate.formatting import fmt

    return fmt(v, d)


def clip_summary_lines(c: dict[str, Any]) -> list[str]:
    """Short terminal lines: CLIP FID per set and the alignment gaps, retrieval recall."""
    ref = c["fidelity"]["reference"]["overall"]
    lines = []
    for name, s in c["fidelity"]["sets"].items():
        a = c["alignment"]["sets"].get(name, {})
        sh = a.get("shuffled") or {}
        lines.append(f"CLIP {name}: FID {_f(s['overall']['fid'], 3)} "
                     f"(real {_f(ref['fid'], 3)}), coverage {_f(s['overall'].get('coverage'), 2)}"
                     f"; alignment matched {_f(a.get('matched'))} vs shuffled "
                     f"{_f(sh.get('mean'))}")
    r = c.get("retrieval")
    if r:
        lines.append(f"CLIP retrieval on real test: image->text R@1 {_f(r['i2t_r1'])} "
                     f"(chance {_f(r['i2t_r1_chance'])}), R@5 {_f(r['i2t_r5'])}; text->image "
                     f"R@1 {_f(r['t2i_r1'])} (chance {_f(r['t2i_r1_chance'])}), R@5 "
                     f"{_f(r['t2i_r5'])}")
    return lines
