"""TrainConfig: keys grouped in sections, flat in YAML, dicts, keyword arguments and reading."""

from __future__ import annotations

import pytest

from medsynth.errors import BadUsageError
from medsynth.recipe import Section
from medsynth.train.config import TrainConfig


def test_flat_keys_and_sections_are_the_same_values() -> None:
    cfg = TrainConfig(max_steps=7, ae_lr=1e-3, autoencoder="ae", p_drop_text=0.2)
    assert cfg.optim.max_steps == cfg.max_steps == 7
    assert cfg.ae.lr == cfg.ae_lr == 1e-3
    assert cfg.latent and cfg.ae.latent  # autoencoder implies latent
    assert cfg.conditioning.p_drop_text == 0.2
    d = cfg.to_dict()
    assert list(d) == TrainConfig.keys() and d["ae_lr"] == 1e-3 and "ae" not in d
    assert TrainConfig.from_dict(d) == cfg
    assert TrainConfig(optim={"max_steps": 3}, batch_size=2).optim.batch_size == 2
    assert cfg.replace(max_steps=9, lr=None).max_steps == 9  # None: option not given


def test_every_key_is_documented_and_in_one_section() -> None:
    seen: list[str] = []
    for name in TrainConfig.sections:
        section = TrainConfig.model_fields[name].annotation
        assert isinstance(section, type) and issubclass(section, Section)
        for f in section.model_fields.values():
            assert f.description, f
        seen.extend(k for k, w in TrainConfig._flat.items() if w[0] == name)
    assert sorted(seen) == sorted(TrainConfig.keys()) and len(seen) == len(set(seen))


@pytest.mark.parametrize("bad, message", [
    ({"max_steps": True}, "max_steps = True is not valid"),  # a bool is not a number
    ({"lr": "1e-3"}, "lr = '1e-3' is not valid"),  # YAML reads 1e-3 without a dot as text
    ({"splits": "train"}, "splits = 'train' is not valid"),
    ({"ae_lr": 0}, "ae_lr must be > 0"),
    ({"optim": {"bogus": 1}}, "unknown key"),
    ({"bogus": 1, "other": 2}, r"unknown key\(s\) \['bogus', 'other'\]"),
])
def test_one_line_errors_name_the_flat_key(bad: dict, message: str) -> None:
    with pytest.raises(BadUsageError, match=message) as e:
        TrainConfig.from_dict(bad, source="r.yaml")
    assert e.value.message.startswith("r.yaml: train config: ") and "\n" not in e.value.message
