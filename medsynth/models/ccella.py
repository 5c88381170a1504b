"""CCELLA mode: the class predicted from the report conditions the denoiser (train and generate).

CCELLA (arXiv 2506.10230) gives its UNet the class *predicted from the report*, not the label: a
class head reads the text features, the UNet's class input is the softmax of its logits, and
the loss adds a (focal) classification loss on those logits against the true class. Here:

- :class:`TextClassHead`: MLP on the text features averaged over the real tokens (padding
  masked out) -> class logits;
- :func:`text_class_probabilities`: ``softmax(logits / temperature)``, given to the denoiser's
  class embedding as probabilities (``probs @ embedding``, so a one-hot vector is exactly the
  class id's embedding). CCELLA multiplies the softmax by 100 before its class MLP; medsynth's
  class embedding is linear in the probabilities, so no scale is needed and ``temperature``
  sharpens (< 1) or flattens (> 1) the prediction instead;
- :func:`class_loss`: focal loss (gamma 2, as CCELLA) or cross-entropy.

Images without a report (no description, or its text dropped for classifier-free guidance)
get the one-hot of their class; a dropped class gets the null class, whatever the text. So at
sampling time the class input is either the requested class (one-hot) or the text head's
prediction, and both are inputs the model saw in training.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

TEXT_CLASS_HEAD_FILE = "text_class_head.safetensors"
CLASS_LOSSES = ("focal", "ce")


def pool_text(hidden: Any, mask: Any) -> Any:
    """``(B, L, D)`` token features -> ``(B, D)``: the mean over real tokens (mask 1)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class TextClassHead(nn.Module):
    """Class logits from pooled text features (CCELLA's report -> class head)."""

    def __init__(self, text_dim: int, n_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.text_dim, self.n_classes, self.hidden = int(text_dim), int(n_classes), int(hidden)
        self.mlp = nn.Sequential(nn.Linear(self.text_dim, self.hidden), nn.SiLU(),
                                 nn.Linear(self.hidden, self.n_classes))

    def forward(self, hidden: Any, mask: Any) -> Any:
        return self.mlp(pool_text(hidden.float(), mask))


def text_class_probabilities(head: Any, hidden: Any, mask: Any, temperature: float = 1.0) -> Any:
    """``softmax(head(text) / temperature)`` over the real classes ``(B, n_classes)``."""
    return (head(hidden, mask) / float(temperature)).softmax(-1)


def class_inputs(probs: Any, labels: Any, has_text: Any, drop_class: Any, null_class: int) -> Any:
    """The denoiser's class input in training: text-predicted probabilities where there is a
    report, the one-hot label where there is none, the null class where the class is dropped.

    Returns ``(B, n_classes + 1)`` (last column = null class).
    """
    import torch
    import torch.nn.functional as F

    onehot = F.one_hot(labels, null_class + 1).to(probs.dtype)
    out = torch.where(has_text[:, None], F.pad(probs, (0, 1)), onehot)
    null = torch.zeros_like(out)
    null[:, null_class] = 1.0
    return torch.where(drop_class[:, None], null, out)


def sampling_class_input(head: Any, class_ids: list[int], hidden: Any, mask: Any,
                         n_classes: int, temperature: float = 1.0,
                         source: list[str] | None = None) -> Any:
    """Class probabilities ``(B, n_classes)`` for sampling a CCELLA-mode model.

    Per image, ``source`` ``"text"`` takes the text head's prediction, ``"class"`` the one-hot of
    the requested class; the default is the text where the image has one (a non-zero text
    feature: the null text is all zeros), else the class.
    """
    import torch

    onehot = torch.nn.functional.one_hot(torch.as_tensor(list(class_ids)), n_classes).float()
    if source is None:
        has_text = (hidden.detach().float().abs().flatten(1).sum(1) > 0).cpu()
        source = ["text" if bool(t) else "class" for t in has_text]
    if not any(s == "text" for s in source):
        return onehot
    dev = next(head.parameters()).device
    with torch.no_grad():
        probs = text_class_probabilities(head, hidden.to(dev).float(), mask.to(dev),
                                         temperature).float().cpu()
    use = torch.tensor([s == "text" for s in source])
    return torch.where(use[:, None], probs, onehot)


def class_loss(logits: Any, labels: Any, kind: str = "focal", gamma: float = 2.0,
               weights: Any = None) -> Any:
    """Focal loss ``(1 - p_y)^gamma * CE`` (kind ``focal``) or cross-entropy (``ce``), averaged
    over the rows with ``weights`` 1 (all rows when None); 0 when no row counts."""
    import torch
    import torch.nn.functional as F

    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    if kind == "focal":
        p = torch.exp(-ce)
        ce = (1.0 - p) ** gamma * ce
    elif kind != "ce":
        raise ValueError(f"unknown class loss {kind!r}; choose from {', '.join(CLASS_LOSSES)}")
    if weights is None:
        return ce.mean()
    w = weights.to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp(min=1.0)


def save_text_head(path: Any, head: TextClassHead) -> None:
    """Weights + shape (safetensors metadata) of a head, atomically."""
    from safetensors.torch import save

    from medsynth.artifacts import atomic_write_bytes

    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    meta = {"text_dim": str(head.text_dim), "n_classes": str(head.n_classes),
            "hidden": str(head.hidden)}
    atomic_write_bytes(path, save(state, metadata=meta))


def load_text_head(path: Any) -> TextClassHead:
    """The head saved by :func:`save_text_head`, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from medsynth.errors import MedsynthError

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        head = TextClassHead(int(meta["text_dim"]), int(meta["n_classes"]),
                             int(meta.get("hidden", 128)))
        head.load_state_dict(load_file(str(path)))
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise MedsynthError(f"{path}: cannot load the text class head ({e})") from e
    return head.eval().requires_grad_(False)
