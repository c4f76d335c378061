"""The model(s) a config names and their generation engines, for the commands that only generate (``rema chat``,
``eval``, ``serve``); ``rema train`` builds its own in :func:`rema.train.policy.build_policies`, with optimizers.

The models are the run's when ``eval.run`` names one (its ``final/``, or the checkpoint ``eval.checkpoint``,
exported to ``RUN/exports/step_N`` on first use: :mod:`rema.runtime.runs`), else ``model.name`` for the MTA
and ``model.ra_name`` (default ``model.name``) for the RA.
"""

from __future__ import annotations

from ..config import Config
from ..rollout import Engine
from .resolve import device_for
from .runs import run_models


def resolve_models(cfg: Config) -> tuple[str, str]:
    """The (MTA, RA) model names or folders the config points at; a run without the asked weights is a
    :class:`~rema.runtime.runs.CheckpointError` naming what it has."""
    e = cfg.eval
    if e.run:
        mta, ra = run_models(e.run, e.checkpoint)
        return str(mta), str(ra)
    return (cfg.model.name, cfg.model.ra_name or cfg.model.name)


def load_engines(cfg: Config) -> dict[str, Engine]:
    """Load the model(s) and wrap them in engines of ``rollout.engine`` (resolved: :func:`~rema.runtime.resolved`):
    ``{"mta": ..., "ra": ...}``, one object twice when both roles share the weights (one model, or a
    single-agent method). Seeded with ``eval.seed`` (the MTA's engine with the seed after it)."""
    import torch

    from ..models import load_model
    from ..rollout import factory

    seed = cfg.eval.seed
    torch.manual_seed(seed)
    device = device_for(cfg.model.device)
    mta_name, ra_name = resolve_models(cfg)
    opts = factory.engine_options(cfg.rollout)
    model, tok = load_model(ra_name, dtype=cfg.model.dtype, device=device, seed=seed)
    pair = cfg.rollout.method == "rema" and mta_name != ra_name
    m_model, m_tok = load_model(mta_name, dtype=cfg.model.dtype, device=device, seed=seed) if pair else (None, None)
    # two vLLM engines on one GPU split vLLM's share, so that the second starts too
    shares = factory.vllm_shares(cfg.rollout, [model, m_model] if pair else [model], device) \
        if cfg.rollout.engine == "vllm" else [None, None]

    def share(s: float | None) -> dict:
        return {} if s is None else {"gpu_memory_utilization": s}

    ra = factory.make_engine(model, tok, engine=cfg.rollout.engine, seed=seed, **opts | share(shares[0]))
    engines = {"ra": ra, "mta": ra}
    if pair:
        engines["mta"] = factory.make_engine(m_model, m_tok, engine=cfg.rollout.engine, seed=seed + 1,
                                             **opts | share(shares[1]))
    return engines
