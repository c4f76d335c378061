"""The weight sync's check, the parts that need no vLLM: the probe both sides score, the tolerance a correct
sync may show, the trainer's log-probs, and the error a failed check raises.

:meth:`rema.rollout.vllm_engine.VLLMEngine.check_weights` scores the probe with vLLM and with the trainer's
model after each sync and compares them (that module's docstring, point 4).
"""

from __future__ import annotations

import torch

from ..models import compute_device

# A fixed probe the sync check scores: a chat-formatted question and a plausible answer (90 SmolLM2 tokens).
PROBE_TEXT = (
    "<|im_start|>user\nNatalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether?<|im_end|>\n<|im_start|>assistant\n"
    "In May she sold 48 / 2 = 24 clips. Altogether she sold 48 + 24 = 72 clips, so the answer is "
    "\\boxed{72}.<|im_end|>\n"
)

# (max, mean) |Δ log-prob| on the probe that a correct sync may show, by the coarser of the dtypes vLLM and the
# trainer's forward compute in. Measured on SmolLM2-135M (bench/rollout_speed.py prints them): fp32 max 3e-5 /
# mean 4e-6; bf16 max 0.28-0.44 / mean 0.03 (a few tokens near ties carry the max, so the mean is the sharper
# gate). The margins are ~30x for fp32 and ~3x for the bf16 mean; a stale or wrong layer moves the mean far more. The
# bf16 max was 1.5 until a correct export failed it: `rema eval --dtype bfloat16` of a model after 24 RL steps gave
# max 1.74 / mean 0.050 on the probe, while the same checkpoint in fp32 passed the fp32 check (a near-tie token
# above the floor below). A shuffled layer gives max 3.8 / mean 0.75: the mean catches it either way.
DEFAULT_SYNC_TOLERANCE = {"float32": (1e-3, 1e-4), "float16": (1.0, 0.05), "bfloat16": (3.0, 0.1)}

# Log-probs below this are compared as this. A token the model gives p < e^-5 (0.7%) barely moves sampling, and
# there 16-bit precision alone is loose: after a sharp cold start (NLL 0.13) the same trainer's probe forward in
# bf16 and in fp32 differed by up to 3.4 (mean 0.08) on tokens near log-prob -25, and a correct sync failed the
# bf16 check (max 1.83). With the floor: bf16 noise max 0.38 / mean 0.026, one layer's weights shuffled
# max 3.8 / mean 0.75, one training step stale max 0.27 / mean 0.015 (that case is the bit-identical check's).
SYNC_LOGP_FLOOR = -5.0


def logprob_gap(served: list[list[float]], trainer: list[list[float]]) -> tuple[float, float]:
    """``(max, mean)`` of ``|served - trainer|`` over every token of every sequence, each log-prob first raised
    to :data:`SYNC_LOGP_FLOOR` (a gap among improbable tokens is precision, not a sync fault)."""
    f = SYNC_LOGP_FLOOR
    diffs = [abs(max(a, f) - max(b, f)) for s, t in zip(served, trainer) for a, b in zip(s, t)]
    return max(diffs), sum(diffs) / len(diffs)


def sync_tolerance_for(vllm_dtype: str, trainer_dtype: str | None = None) -> tuple[float, float]:
    """The post-sync check's (max, mean) tolerance: that of the coarser of vLLM's dtype and the dtype the
    trainer's forward computes in (``trainer_dtype``; None = fp32). Under FSDP's bf16 mixed precision on CUDA
    the trainer's probe forward runs in bf16 even when vLLM serves fp32 (``rollout.vllm_dtype=float32``): an
    fp32 tolerance would fail a correct sync at the engine's start."""
    coarser = max((vllm_dtype, trainer_dtype or "float32"), key=lambda d: DEFAULT_SYNC_TOLERANCE[d][1])
    return DEFAULT_SYNC_TOLERANCE[coarser]


class WeightSyncError(RuntimeError):
    """vLLM's log-probs after a weight sync do not match the trainer's: the sync failed or did nothing."""


@torch.no_grad()
def trainer_logprobs(model, sequences: list[list[int]], compute_dtype: torch.dtype | None = None) -> list[list[float]]:
    """``log_softmax(logits)`` of each token after the first, by a plain forward pass of ``model``; under
    ``torch.autocast`` to ``compute_dtype`` when given (the logits are taken in fp32 either way)."""
    was_training = model.training
    model.eval()
    try:
        device = compute_device(model)
        out = []
        for seq in sequences:
            ids = torch.tensor([seq], device=device)
            with torch.autocast(device.type, dtype=compute_dtype or torch.float32, enabled=compute_dtype is not None):
                logits = model(input_ids=ids).logits[0, :-1].float()  # (T-1, V)
            logp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            out.append(logp.cpu().tolist())
        return out
    finally:
        model.train(was_training)
