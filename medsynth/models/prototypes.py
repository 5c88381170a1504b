"""Prototype Condition Mechanism (VAP-Diffusion): keep test-time text embeddings near training ones.

A test-time description can combine attributes that never occurred together in training, so
its text-encoder features may fall where the denoiser never saw a condition. This module keeps,
per class ``c``, a bank of ``K`` prototype token vectors ``P_c`` (``K x D``): the k-means
medoids of all real (unmasked) token features of the training descriptions of class ``c`` (k-means,
then each centre replaced by its nearest real training token, so prototypes are seen tokens).

Exact form. For a text of class ``c`` with token features ``h_1..h_L`` (``D`` each), every real
token is replaced by

    a_i   = softmax_k( cos(h_i, P_c[k]) / tau )        (attention over the class prototypes)
    p_i   = sum_k a_i[k] * P_c[k]                       (its prototype reconstruction)
    h'_i  = (1 - s) * h_i + s * p_i

``s`` = ``prototype_strength`` in ``[0, 1]`` (the knob: 0 = off, 1 = every token is a convex
combination of training tokens; with a small ``tau`` it is the nearest training token);
``tau`` = ``prototype_temperature`` (small = snap to the nearest prototype). Defaults: K = 64,
s = 0.8, tau = 0.01; :func:`in_distribution` is the measurement (docs/train.md). The null
text (all-zero token) and padding are left untouched. Training uses the raw features; the
mechanism acts at sampling time (``ModelBundle.encode_text(texts, classes)``).
"""

from __future__ import annotations

from typing import Any

PROTOTYPE_FILE = "prototypes.safetensors"


def kmeans(x: Any, k: int, *, iters: int = 25, seed: int = 0) -> Any:
    """Seeded k-means (k-means++ init) of rows of ``x`` ``[N, D]`` -> centroids ``[min(k, N), D]``."""
    import torch

    x = x.float()
    n = x.shape[0]
    if n <= k:
        return x.clone()
    g = torch.Generator().manual_seed(seed)
    centers = [x[int(torch.randint(n, (1,), generator=g))]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        idx = int(torch.multinomial(probs, 1, generator=g))
        centers.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    c = torch.stack(centers)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        new = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=c.shape[0]).unsqueeze(1).float()
        keep = counts.squeeze(1) > 0
        new[keep] = new[keep] / counts[keep]
        new[~keep] = c[~keep]  # an empty cluster keeps its centre
        if torch.allclose(new, c):
            break
        c = new
    return c


def medoids(x: Any, centers: Any) -> Any:
    """The row of ``x`` nearest to each centre (prototypes are then real training tokens)."""
    import torch

    return x[torch.cdist(centers.float(), x.float()).argmin(1)].clone()


def build_prototypes(hidden: Any, mask: Any, labels: Any, n_classes: int, k: int,
                     seed: int = 0) -> dict[int, Any]:
    """Per-class prototype banks from training features ``[N, L, D]``, mask ``[N, L]``, labels ``[N]``.

    Null texts (all-zero tokens) are ignored; a class without any description has no bank.
    """
    out: dict[int, Any] = {}
    for c in range(n_classes):
        sel = labels == c
        if not bool(sel.any()):
            continue
        toks = hidden[sel][mask[sel].bool()]
        toks = toks[toks.abs().sum(1) > 0]
        if toks.shape[0] == 0:
            continue
        out[c] = medoids(toks, kmeans(toks, k, seed=seed + c))
    return out


def apply_prototypes(hidden: Any, mask: Any, classes: list[int] | Any, banks: dict[int, Any],
                     strength: float, temperature: float) -> Any:
    """Pull each real token of ``hidden`` ``[B, L, D]`` toward its class's prototypes (see module doc)."""
    import torch
    import torch.nn.functional as F

    if strength <= 0:
        return hidden
    out = hidden.clone()
    for i, c in enumerate([int(c) for c in classes]):
        bank = banks.get(c)
        if bank is None:
            continue
        bank = bank.to(hidden.device, hidden.dtype)
        real = mask[i].bool() & (hidden[i].abs().sum(-1) > 0)
        if not bool(real.any()):
            continue
        h = hidden[i][real]
        att = torch.softmax(F.normalize(h, dim=-1) @ F.normalize(bank, dim=-1).T / temperature, -1)
        out[i][real] = (1 - strength) * h + strength * (att @ bank)
    return out


def save_prototypes(path: Any, banks: dict[int, Any], classes: list[str]) -> None:
    """Write the banks to ``prototypes.safetensors`` (one tensor per class, keyed by class id)."""
    from safetensors.torch import save

    from medsynth.artifacts import atomic_write_bytes

    tensors = {f"class_{c}": b.contiguous().float() for c, b in banks.items()}
    meta = {f"class_{c}": classes[c] for c in banks}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_prototypes(path: Any) -> dict[int, Any]:
    from safetensors.torch import load_file

    return {int(k.split("_", 1)[1]): v for k, v in load_file(str(path)).items()}


def in_distribution(query: Any, query_mask: Any, query_classes: list[int] | Any, train: Any,
                    train_mask: Any, train_labels: Any, quantile: float = 0.95) -> Any:
    """Per query text: is it inside its class's training distribution? (bool tensor ``[B]``)

    Criterion (token level, what cross-attention sees): every real token of the query lies
    within the class's ``quantile`` of leave-one-out nearest-neighbour distances among the
    training tokens of that class. Returns ``(inside [B] bool, worst_ratio [B])`` where
    ``worst_ratio`` = the query's largest token distance / that threshold.
    """
    import torch

    toks: dict[int, Any] = {}
    thr: dict[int, Any] = {}
    for c in sorted({int(c) for c in query_classes}):
        sel = train_labels == c
        t = train[sel][train_mask[sel].bool()]
        t = t[t.abs().sum(1) > 0]
        d = torch.cdist(t, t)
        d.fill_diagonal_(float("inf"))
        toks[c] = t
        thr[c] = torch.quantile(d.min(1).values, quantile)
    inside, ratio = [], []
    for i, c in enumerate(int(c) for c in query_classes):
        q = query[i][query_mask[i].bool()]
        q = q[q.abs().sum(1) > 0]
        worst = torch.cdist(q, toks[c]).min(1).values.max() if q.shape[0] else torch.tensor(0.0)
        ratio.append(float(worst / thr[c]))
        inside.append(bool(worst <= thr[c]))
    return torch.tensor(inside), torch.tensor(ratio)
