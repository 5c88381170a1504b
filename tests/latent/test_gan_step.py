"""The autoencoder's GAN step: the discriminator's gradients are those of its own loss only."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from medsynth.imaging.dataset import open_dataset
from medsynth.models.intensity import IntensityMapping
from medsynth.train.autoencoder import _AETrainer
from medsynth.train.data import load_train_data
from tests.latent.conftest import tiny_latent


def test_generator_loss_does_not_reach_discriminator(rgb16: dict[str, Path], tmp_path: Path,
                                                     monkeypatch) -> None:
    cfg = tiny_latent(ae_max_steps=1, ae_adv_weight=0.5, ae_adv_start=0, ae_checkpoint_every=1)
    data = load_train_data(open_dataset(rgb16["ds"]), cfg, progress=False)
    mapping = IntensityMapping.for_data(data.pixels)
    trainer = _AETrainer(data, cfg, tmp_path, mapping, resume=False, progress=False,
                         interrupt_after=None)
    seen: dict[str, object] = {}

    # Record what the discriminator sees (its inputs, its weights) and its gradients at its step.
    def spy_run() -> None:
        opt_d = trainer.opt_d
        step = opt_d.step
        disc = trainer.acc.unwrap_model(trainer.disc)
        forward = disc.forward

        def recording_forward(x: torch.Tensor) -> object:
            if not torch.is_grad_enabled() or not any(p.requires_grad for p in disc.parameters()):
                return forward(x)
            seen.setdefault("inputs", []).append(x.detach().clone())  # type: ignore[union-attr]
            return forward(x)

        def recording_step(*a: object, **k: object) -> object:
            seen["grads"] = [p.grad.detach().clone() for p in disc.parameters()]
            seen["weights"] = copy.deepcopy(disc.state_dict())
            return step(*a, **k)

        disc.forward = recording_forward  # type: ignore[method-assign]
        opt_d.step = recording_step  # type: ignore[method-assign]

    loop = _AETrainer._loop

    def patched_loop(self: _AETrainer, start: int) -> int:
        spy_run()
        return loop(self, start)

    monkeypatch.setattr(_AETrainer, "_loop", patched_loop)
    trainer.run()
    fake, real = seen["inputs"][-2:]  # type: ignore[index]
    # The reference: the discriminator's own loss on the same inputs with the same weights.
    orig = trainer.acc.unwrap_model(trainer.disc)
    del orig.forward  # the spy
    disc = copy.deepcopy(orig)
    disc.load_state_dict(seen["weights"])  # type: ignore[arg-type]
    disc.zero_grad(set_to_none=True)
    loss = 0.5 * (trainer.adv_loss(disc(fake)[-1], target_is_real=False, for_discriminator=True)
                  + trainer.adv_loss(disc(real)[-1], target_is_real=True, for_discriminator=True))
    loss.backward()
    want = [p.grad for p in disc.parameters()]
    got = seen["grads"]
    assert len(got) == len(want)  # type: ignore[arg-type]
    for g, w in zip(got, want, strict=True):  # type: ignore[call-overload]
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
