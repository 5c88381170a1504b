"""The refine objectives, written out: Diffusion-DPO and reward-weighted regression.

Diffusion-DPO (Wallace et al. 2023; as in diffusers' ``examples/research_projects/diffusion_dpo``):
winner and loser of a pair are noised with one noise sample at one timestep; with ``L`` the
per-sample denoising MSE averaged over every non-batch axis,

    model_diff = L_model(winner) - L_model(loser)
    ref_diff   = L_ref(winner)   - L_ref(loser)        (no gradient)
    logits     = ref_diff - model_diff
    loss       = -log sigmoid(beta * logits)            (mean over pairs)
    implicit accuracy = share of pairs with logits > 0 (ties count half)

Reward-weighted regression (RWR, Lee et al. 2023): the plain denoising MSE, each sample
weighted (accepted synthetic images by their reward, real images by 1).

The noising, the target and the per-sample loss ``L`` are the shared diffusion objective's
(:mod:`medsynth.models.objective`), so a model is refined with the schedule it was trained with.
"""

from __future__ import annotations

from typing import Any


def dpo_loss(model_w: Any, model_l: Any, ref_w: Any, ref_l: Any, beta: float
             ) -> tuple[Any, Any, Any]:
    """(loss, logits ``(B,)``, implicit accuracy) from the four per-sample losses ``(B,)``."""
    import torch.nn.functional as F

    model_diff = model_w - model_l
    ref_diff = (ref_w - ref_l).detach()
    logits = ref_diff - model_diff
    loss = -F.logsigmoid(beta * logits).mean()
    d = logits.detach()
    acc = ((d > 0).float() + 0.5 * (d == 0).float()).mean()
    return loss, logits, acc


def weighted_mse(per_sample: Any, weights: Any) -> Any:
    """RWR: ``mean(w_i * L_i)``."""
    return (per_sample * weights.to(per_sample)).mean()
