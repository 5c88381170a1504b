"""The shared diffusion objective gives the losses the inline code of train/loop.py and refine
gave before it (reference values computed with the code of commit 89e4809 on the same seeded
batch: the draws, noising, target, min-SNR weights, DPO and RWR losses)."""

from __future__ import annotations

import pytest

T = 1000
# (prediction type, snr_gamma) -> the old train loop's MSE on the fixed batch
TRAIN = {("epsilon", None): 0.5420094132423401, ("epsilon", 5.0): 0.47578373551368713,
         ("v_prediction", None): 0.624842643737793, ("v_prediction", 5.0): 0.33809393644332886,
         ("sample", None): 0.23624210059642792, ("sample", 5.0): 0.34272557497024536,
         ("rflow", None): 2.0009186267852783}
# prediction type -> the old refine's (DPO loss, implicit accuracy, RWR loss)
REFINE = {"epsilon": (1.1343719959259033, 0.5, 0.45313945412635803),
          "v_prediction": (1.083617091178894, 0.5, 0.6004215478897095),
          "sample": (0.922730028629303, 0.75, 0.31643253564834595)}
DROPS = ([True, False, False, True], [True, True, False, False])


def _objective(kind: str, gamma: float | None):
    from medsynth.models.objective import Objective

    return Objective.for_training(
        noise_schedule="rflow" if kind == "rflow" else "ddpm", num_train_timesteps=T,
        beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction" if kind == "rflow"
        else kind, sample_shape=(3, 8, 8), snr_gamma=gamma)


def _model(xt):
    """A fixed stand-in for a network's prediction."""
    import torch

    return 0.5 * xt + 0.1 * torch.sin(3 * xt)


def _reference(xt):
    import torch

    return 0.5 * xt + 0.1 * torch.cos(2 * xt)


@pytest.mark.parametrize(("kind", "gamma"), list(TRAIN))
def test_train_loss_matches_old_code(kind: str, gamma: float | None) -> None:
    import torch

    obj = _objective(kind, gamma)
    g = torch.Generator().manual_seed(1234)
    x0 = torch.rand((4, 3, 8, 8), generator=g) * 2 - 1
    drop_c, drop_t = obj.cfg_dropout(4, g, 0.5, 0.5)
    noise, t = obj.draw(x0.shape, g)
    xt = obj.noisy(x0, noise, t)
    loss = obj.loss(_model(xt), obj.target(x0, noise, t), t)
    assert float(loss) == pytest.approx(TRAIN[(kind, gamma)], rel=1e-5, abs=1e-7)
    assert (drop_c.tolist(), drop_t.tolist()) == DROPS
    assert t.dtype == (torch.float32 if kind == "rflow" else torch.int64)


@pytest.mark.parametrize("kind", list(REFINE))
def test_refine_losses_match_old_code(kind: str) -> None:
    import torch

    from medsynth.refine.losses import dpo_loss, weighted_mse

    obj = _objective(kind, None)
    g = torch.Generator().manual_seed(99)
    xw = torch.rand((4, 3, 8, 8), generator=g) * 2 - 1
    xl = torch.rand((4, 3, 8, 8), generator=g) * 2 - 1
    noise, t = obj.draw(xw.shape, g)
    x0, n2, t2 = torch.cat([xw, xl]), torch.cat([noise, noise]), torch.cat([t, t])
    xt = obj.noisy(x0, n2, t2)
    target = obj.target(x0, n2, t2)
    mw, ml = obj.per_sample_loss(_model(xt), target).chunk(2)
    rw, rl = obj.per_sample_loss(_reference(xt), target).chunk(2)
    loss, _, acc = dpo_loss(mw, ml, rw, rl, 500.0)
    rwr = weighted_mse(obj.per_sample_loss(_model(xt), target)[:4],
                       torch.tensor([0.5, 1.0, 1.5, 1.0]))
    want = REFINE[kind]
    assert float(loss) == pytest.approx(want[0], rel=1e-5, abs=1e-7)
    assert float(acc) == want[1]
    assert float(rwr) == pytest.approx(want[2], rel=1e-5, abs=1e-7)


def test_from_config_reads_the_saved_schedule() -> None:
    from diffusers import DDPMScheduler

    from medsynth.errors import MedsynthError
    from medsynth.models.objective import Objective
    from medsynth.models.rflow import rflow_config

    rf = Objective.from_config(rflow_config(T, (3, 8, 8)), "v_prediction")
    assert rf.rflow and rf.prediction_type == "v_prediction"
    dd = Objective.from_config(dict(DDPMScheduler(num_train_timesteps=50).config), "epsilon")
    assert not dd.rflow and dd.num_train_timesteps == 50
    with pytest.raises(MedsynthError, match="unknown training noise schedule"):
        Objective.from_config({"_class_name": "EulerDiscreteScheduler"}, "epsilon", where="m")
