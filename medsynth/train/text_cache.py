"""Training's text features: every distinct description encoded once, cached on disk.

The cache (``checkpoints/cache/text_KEY.safetensors`` + ``.json``) is keyed by the encoder
settings and the sorted distinct texts, so a resumed run (or a rerun on the same data) reads it
instead of loading the encoder. Row 0 is the null text (the empty description); class-only
training (no description) needs only the encoder's width, not the encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from medsynth.artifacts import atomic_write_bytes, atomic_write_text
from medsynth.models.text_encoder import TextEncoderRef
from medsynth.ui import console


@dataclasses.dataclass
class TextFeatures:
    """The encoded descriptions of a training set."""

    ref: TextEncoderRef
    """The encoder as resolved (hidden size, kind, model type filled in)."""
    hidden: Any
    """(U, L, D) features of the U distinct texts (row 0 = the null text); held as
    :class:`PackedTokens` (indexing gives the dense rows)."""
    mask: Any
    """(U, L) attention mask."""
    idx: Any
    """(N,) long: each training image's row (0 = no description)."""
    cut: dict[str, Any] | None
    """How many descriptions were cut at the encoder's token window (None: none encoded)."""


def encoder_ref(cfg: Any) -> TextEncoderRef:
    return TextEncoderRef(name=cfg.text_encoder, kind=cfg.text_encoder_kind, layer=cfg.text_layer,
                          max_tokens=cfg.max_text_tokens, long_text=cfg.long_text,
                          chunk_overlap=cfg.text_chunk_overlap, max_chunks=cfg.max_text_chunks)


def text_features(cfg: Any, texts: list[str], cache_dir: Path) -> TextFeatures:
    """Encode the distinct ``texts`` of the training images (cached in ``cache_dir``)."""
    import torch
    from safetensors.torch import load_file, save

    ref = encoder_ref(cfg)
    uniq = [""] + sorted({t for t in texts if t})
    key = hashlib.sha256(json.dumps([ref.to_dict(), uniq]).encode()).hexdigest()[:16]
    cache = cache_dir / f"text_{key}.safetensors"
    meta_path = cache.with_suffix(".json")
    cut: dict[str, Any] | None = None  # descriptions cut at the encoder's token window
    if cache.is_file() and meta_path.is_file():
        t = load_file(str(cache))
        hidden, mask = t["hidden"], t["mask"]
        meta = json.loads(meta_path.read_text())
        ref, cut = TextEncoderRef.from_dict(meta), meta.get("text_cut")
    elif len(uniq) == 1 and ref.kind != "clip":  # (CLIP's null text is CLIP(""))
        # Class-only training: only the encoder's width is needed, not the encoder itself.
        from transformers import AutoConfig

        from medsynth.models.text_encoder import _is_decoder, null_text, resolve_text_encoder

        conf = AutoConfig.from_pretrained(resolve_text_encoder(cfg.text_encoder))
        ref.hidden_size = int(getattr(conf, "hidden_size", 0) or getattr(conf, "n_embd", 0))
        ref.model_type = str(getattr(conf, "model_type", ""))
        if ref.kind == "auto":
            ref.kind = "decoder" if _is_decoder(conf) else "encoder"
        hidden, mask = null_text(1, ref.hidden_size)
    else:
        from medsynth.models.text_encoder import TextEncoder

        console.print(f"encoding {len(uniq) - 1} distinct descriptions with {cfg.text_encoder}")
        enc = TextEncoder(ref)
        hidden, mask = enc.encode(uniq)  # warns once when descriptions are cut
        counts = dict(zip(uniq, enc.token_counts(uniq), strict=True))
        long = {u for u, n in counts.items() if n > enc.capacity}
        cut = {"texts": len(long), "images": sum(1 for t in texts if t in long),
               "max_tokens": int(enc.capacity), "longest_tokens": max(counts.values()),
               "long_text": ref.long_text}
        ref = enc.ref
        del enc
    if not cache.is_file():
        atomic_write_bytes(cache, save({"hidden": hidden.contiguous(), "mask": mask.contiguous()}))
        atomic_write_text(meta_path, json.dumps({**ref.to_dict(), "text_cut": cut}))
    index = {t: i for i, t in enumerate(uniq)}
    idx = torch.tensor([index[t] for t in texts], dtype=torch.long)
    return TextFeatures(ref=ref, hidden=PackedTokens.pack(hidden, mask), mask=mask, idx=idx,
                        cut=cut)


class PackedTokens:
    """(U, L, D) token features held as their real tokens only: one (T, D) block and each row's
    length, so each rank's host copy grows with the tokens, not with U x the longest text
    (descriptions are mostly far shorter than the token window). ``packed[idx]`` (long tensor,
    list, int or slice) gives the dense zero-padded ``(B, L, D)`` rows, bitwise what was packed.

    Only for right-padded rows with zeros after the real tokens (medsynth's encoders; CLIP's
    all-ones mask packs nothing away); :meth:`pack` keeps any other tensor dense. Not fp16: that
    would change the features the UNet sees (not measured), packing does not.
    """

    def __init__(self, data: Any, lengths: Any, length: int) -> None:
        import torch

        self.data, self.lengths, self.length = data, lengths, int(length)
        self.offsets = torch.cumsum(lengths, 0) - lengths
        self.shape = (len(lengths), self.length, int(data.shape[1]))
        self.dtype = data.dtype

    @classmethod
    def pack(cls, hidden: Any, mask: Any) -> Any:
        """``hidden`` packed, or ``hidden`` itself where packing would not give it back."""
        import torch

        keep = mask.bool()
        lengths = keep.sum(1)
        prefix = torch.arange(hidden.shape[1])[None] < lengths[:, None]
        if hidden.ndim != 3 or not torch.equal(keep, prefix) or bool(hidden[~keep].any()):
            return hidden
        return cls(hidden[keep].contiguous(), lengths, hidden.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> Any:
        import torch

        if isinstance(idx, slice):
            idx = torch.arange(len(self))[idx]
        one = isinstance(idx, int)
        idx = torch.as_tensor([idx] if one else idx, dtype=torch.long)
        n = self.lengths[idx]
        pos = torch.arange(self.length)[None]
        valid = pos < n[:, None]
        rows = self.data[(self.offsets[idx][:, None] + pos).clamp(max=max(len(self.data) - 1, 0))]
        out = torch.where(valid[..., None], rows, torch.zeros((), dtype=self.dtype))
        return out[0] if one else out

    def dense(self) -> Any:
        """All rows, (U, L, D)."""
        return self[:]
