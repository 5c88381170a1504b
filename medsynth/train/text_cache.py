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
    """(U, L, D) features of the U distinct texts (row 0 = the null text)."""
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
    elif len(uniq) == 1:
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
    return TextFeatures(ref=ref, hidden=hidden, mask=mask, idx=idx, cut=cut)
