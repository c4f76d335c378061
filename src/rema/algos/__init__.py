"""The learning algorithm as pure tensor functions: advantages, policy loss, aggregation, KL.

How we depart from / choose among the paper and the authors' code (https://github.com/ziyuwan/ReMA-public;
details in each module, the whole list in docs/design.md §9):

1. Advantage estimators (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp``) share one signature and are
   looked up by name with :func:`get_advantage_estimator` (:mod:`rema.algos.advantages`).
2. REINFORCE++ puts the shared episode reward on the last trained token of *every* turn and resets
   the return at turn boundaries; with gamma = 1 every trained token's return is the episode reward.
3. The policy loss offers token- and turn-level ratios, the turn ratio as geometric (the authors' code,
   default) or arithmetic (paper) mean; the log-ratio clamp is symmetric (:mod:`rema.algos.policy_loss`).
4. One :func:`aggregate` owns normalisation (``token`` / ``turn`` / ``trajectory``); ``trajectory``
   averages over rows that have a trained token only.
5. ``sft_nll`` is the cold start's token-mean NLL over a role's own messages.
6. ``approx_kl`` and the reference KL both use the non-negative k3 estimator (:mod:`rema.algos.regularizers`).

Every tensor argument is ``(B, T)`` unless stated (B rows = one agent's trajectory of one episode each,
T tokens); ``mask`` is 1 on the tokens that row's agent sampled and 0 elsewhere; ``turn_ids`` numbers
the turns within a row. Nothing here mutates its inputs or holds state.
"""

from rema.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    ESTIMATOR_INFO,
    AdvantageFn,
    EstimatorInfo,
    broadcast_to_tokens,
    dr_grpo_advantages,
    get_advantage_estimator,
    grpo,
    grpo_advantages,
    register_advantage_estimator,
    reinforce_pp_advantages,
    reinforce_pp_returns,
    rloo,
    rloo_advantages,
)
from rema.algos.policy_loss import AGG_MODES, RATIO_LEVELS, RATIO_MEANS, aggregate, policy_loss, ppo_surrogate, sft_nll
from rema.algos.regularizers import kl_k1, kl_k3
from rema.algos.segments import (
    TurnIndex,
    masked_mean,
    masked_sum,
    masked_whiten,
    segment_mean,
    segment_sum,
    turn_index,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "AdvantageFn",
    "ESTIMATOR_INFO",
    "EstimatorInfo",
    "RATIO_LEVELS",
    "RATIO_MEANS",
    "TurnIndex",
    "aggregate",
    "broadcast_to_tokens",
    "dr_grpo_advantages",
    "get_advantage_estimator",
    "grpo",
    "grpo_advantages",
    "kl_k1",
    "kl_k3",
    "masked_mean",
    "masked_sum",
    "masked_whiten",
    "policy_loss",
    "ppo_surrogate",
    "register_advantage_estimator",
    "reinforce_pp_advantages",
    "reinforce_pp_returns",
    "rloo",
    "rloo_advantages",
    "segment_mean",
    "sft_nll",
    "segment_sum",
    "turn_index",
]
