"""A tiny LLaVA with random weights, built and saved locally in seconds (no download).

CLIP vision tower (2 layers, 32 px, patch 8) + Llama text model (2 layers, hidden 32), a
word-level tokenizer trained on the spot with ``tokenizers``, a chat template and a
``LlavaProcessor``. Its answers are gibberish, which exercises the re-ask and failure paths;
"yes" and "no" are single tokens of its vocabulary (yes/no probabilities).
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] in ['image', 'image_url'] %}<image> "
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

CORPUS = [
    "a brown lesion with an irregular border and two colours",
    '{ "diameter_mm": 6.5, "asymmetry": 1, "border": "regular", "colors": [ "light_brown" ] }',
    "summary step locate shape size border colours structures none uncertain not_visible",
    "system user assistant the image shows skin lung heart opacity left right lower upper",
    "answer with yes or no",
]


def build_tiny_llava(path: Path, seed: int = 0) -> Path:
    """Save a random tiny LLaVA (model + processor) to ``path``; returns ``path``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.train_from_iterator(CORPUS * 4, trainers.WordLevelTrainer(special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens={"image_token": "<image>"})
    fast.chat_template = CHAT_TEMPLATE
    size, patch = 32, 8
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=size, patch_size=patch,
                              projection_dim=32)
    text = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=4096, pad_token_id=fast.pad_token_id,
                       bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text,
                      image_token_index=fast.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default", vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = fast.pad_token_id
    model.generation_config.eos_token_id = fast.eos_token_id
    improc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    proc = LlavaProcessor(image_processor=improc, tokenizer=fast, patch_size=patch,
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                          num_additional_image_tokens=1)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path
