"""KL to a frozen reference policy, per token (reduce it with ``aggregate``).

How we depart from / choose among the paper and the authors' code (https://github.com/ziyuwan/ReMA-public):

1. KL uses Schulman's low-variance k3 estimator (docs/design.md §4): ``exp(ref - logp) - (ref - logp) - 1``,
   an unbiased, always non-negative estimate of KL(pi || pi_ref) from tokens sampled by pi. The
   authors' code clamps the *result* to [-10, 10]; we clamp the log-ratio to ±``log_ratio_clamp``
   (20) before ``exp`` instead, which keeps it finite without flattening moderate values. ``kl_k1``
   (``logp - ref``) is provided for KL-in-reward (REINFORCE++), where the unbiased per-token k1 is usual.
2. Both return per-token tensors with 0 on untrained tokens; normalisation is ``aggregate``'s job.
3. The policy's entropy is not here: it needs the full (K, V) logits, which only exist chunk by chunk
   inside ``rema.train.logprobs.token_logprobs(..., with_entropy=True)``, so it is computed there.

Shapes: B rows, T tokens. ``mask`` is 1 on trained tokens.
"""

from __future__ import annotations

import torch

__all__ = ["kl_k1", "kl_k3"]


def _check(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> None:
    if not (logp.shape == ref_logp.shape == mask.shape):
        raise ValueError(
            "logp, ref_logp and mask must share a shape; "
            f"got {tuple(logp.shape)}, {tuple(ref_logp.shape)}, {tuple(mask.shape)}"
        )


def kl_k3(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, *, log_ratio_clamp: float = 20.0
) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): ``exp(d) - d - 1`` with ``d = ref_logp - logp``.

    Args:
        logp: (B, T) float log-probs of the sampled tokens under the trained policy (with grad).
        ref_logp: (B, T) float log-probs under the frozen reference (treated as constants).
        mask: (B, T), 1 on trained tokens.
        log_ratio_clamp: ``d`` is clamped to [-c, c] before ``exp`` (gradient is 0 beyond it).

    Returns:
        (B, T) per-token KL estimates (>= 0), 0 on untrained tokens.
    """
    _check(logp, ref_logp, mask)
    m = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    d = torch.where(m, ref_logp.detach().to(logp.dtype) - logp, zero).clamp(-log_ratio_clamp, log_ratio_clamp)
    return torch.where(m, torch.expm1(d) - d, zero)  # expm1(d) - d == exp(d) - d - 1, exact near d = 0


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(pi || pi_ref): ``logp - ref_logp`` (unbiased, can be negative).

    Args:
        logp: (B, T), ref_logp: (B, T), mask: (B, T) as in :func:`kl_k3`.

    Returns:
        (B, T), 0 on untrained tokens.
    """
    _check(logp, ref_logp, mask)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(mask.bool(), logp - ref_logp.detach().to(logp.dtype), zero)
