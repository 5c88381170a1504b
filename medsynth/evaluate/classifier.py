"""The downstream classifier: a MONAI 2D network trained with early stopping on real val.

``small`` (the CPU default) is ``monai.networks.nets.Classifier`` with three strided residual
conv blocks (~50 k parameters); ``resnet10/18/34``, ``densenet121`` and ``efficientnet-b0``
are the MONAI networks of those names, randomly initialised (nothing is downloaded).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda when present, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_classifier(name: str, channels: int, n_classes: int, size: int,
                     spatial_dims: int = 2) -> Any:
    """A randomly initialised MONAI classifier for (channels, size, size[, size]) inputs.

    Volumes (``spatial_dims=3``): ``small`` is a MONAI ResNet with one basic block per stage
    and 8-64 planes (about 0.4 M parameters, CPU-friendly); the named networks are their 3D
    versions.
    """
    from monai.networks import nets

    if spatial_dims == 3:
        if name == "small":
            return nets.ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[8, 16, 32, 64],
                               spatial_dims=3, n_input_channels=channels, num_classes=n_classes,
                               conv1_t_size=5, conv1_t_stride=2)
        if name in ("resnet10", "resnet18", "resnet34"):
            return getattr(nets, name)(spatial_dims=3, n_input_channels=channels,
                                       num_classes=n_classes)
        if name == "densenet121":
            return nets.DenseNet121(spatial_dims=3, in_channels=channels, out_channels=n_classes)
        raise ValueError(f"classifier {name!r} has no 3D version (small, resnet10/18/34, "
                         "densenet121)")
    if name == "small":
        return nets.Classifier(in_shape=(channels, size, size), classes=n_classes,
                               channels=(16, 32, 64), strides=(2, 2, 2), num_res_units=1,
                               dropout=0.1)
    if name in ("resnet10", "resnet18", "resnet34"):
        return getattr(nets, name)(spatial_dims=2, n_input_channels=channels,
                                   num_classes=n_classes)
    if name == "densenet121":
        return nets.DenseNet121(spatial_dims=2, in_channels=channels, out_channels=n_classes)
    if name == "efficientnet-b0":
        return nets.EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2,
                                   in_channels=channels, num_classes=n_classes)
    raise ValueError(f"unknown classifier {name!r}")


@dataclasses.dataclass
class TrainResult:
    """A trained classifier and how its training went."""

    model: Any
    epochs: int
    """Epochs actually run (early stopping may end training sooner)."""
    best_epoch: int
    """Epoch whose weights were kept (lowest val loss)."""
    best_val_loss: float
    seconds: float


def _augment(x: Any, flips: bool | tuple[bool, bool], gen: Any) -> Any:
    """Random horizontal / vertical flips, each only where allowed (``(h, v)``)."""
    import torch

    hflip, vflip = (flips, flips) if isinstance(flips, bool) else flips
    if not (hflip or vflip):
        return x
    n = x.shape[0]
    h = torch.rand(n, generator=gen) < 0.5
    v = torch.rand(n, generator=gen) < 0.5
    x = x.clone()
    if hflip:
        x[h] = x[h].flip(-1)
    if vflip:
        x[v] = x[v].flip(-2)
    return x


def train_classifier(
    name: str, x: Any, y: Any, x_val: Any, y_val: Any, *, n_classes: int, seed: int,
    epochs: int = 20, patience: int = 5, batch_size: int = 32, lr: float = 1e-3,
    flips: bool | tuple[bool, bool] = False, device: str = "cpu", augment: Any = None,
) -> TrainResult:
    """Train a fresh classifier on ``(x, y)``; keep the weights with the lowest val loss.

    ``flips``: (horizontal, vertical) random flips allowed for the data's modality
    (:func:`medsynth.imaging.modality.allowed_flips`). The loss is class-weighted cross-entropy (inverse class frequency of the training set), so a
    class that synthetic data over- or under-represents does not dominate. On CUDA the forward
    pass runs under bf16 autocast. ``augment`` (batch -> batch, e.g.
    :func:`medsynth.evaluate.baselines.augmenter`) is applied to every training batch after the
    flips.
    """
    import time

    import torch
    import torch.nn.functional as F

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    model = build_classifier(name, int(x.shape[1]), n_classes, int(x.shape[-1]),
                             spatial_dims=x.ndim - 2).to(dev)
    counts = torch.bincount(y, minlength=n_classes).float()
    weight = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)),
                         torch.zeros_like(counts)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    amp = dev.type == "cuda"
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2 and len(order) > 1:
                continue  # BatchNorm needs two samples
            xb = _augment(x[idx], flips, gen)
            if augment is not None:
                xb = augment(xb)
            xb = xb.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(xb).float(), y[idx].to(dev), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val_loss = evaluate_loss(model, x_val, y_val, device=device, batch_size=batch_size * 4)
        if val_loss < best[0] - 1e-4:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= patience > 0:
            break
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model=model, epochs=epoch, best_epoch=best[1], best_val_loss=best[0],
                       seconds=time.perf_counter() - t0)


def predict_proba(model: Any, x: Any, *, device: str = "cpu", batch_size: int = 128) -> Any:
    """Softmax class probabilities (N, K) on the CPU."""
    import torch

    dev = torch.device(device)
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(x[i:i + batch_size].to(dev))
            out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def evaluate_loss(model: Any, x: Any, y: Any, *, device: str = "cpu", batch_size: int = 128
                  ) -> float:
    """Mean (unweighted) cross-entropy of ``model`` on ``(x, y)``."""
    import torch

    if len(y) == 0:
        return 0.0
    p = predict_proba(model, x, device=device, batch_size=batch_size)
    return float(torch.nn.functional.nll_loss(torch.log(p.clamp_min(1e-8)), y).item())
