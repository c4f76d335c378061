"""Rollout: episode records, the MTA/RA protocol, and generation engines."""

from .chat import ChatCodec
from .engine import Completion, Engine, SamplingParams
from .episode import END_CODES, AgentView, Episode, Turn
from .hf_engine import HFEngine
from .protocol import parse_action, rollout

__all__ = [
    "AgentView",
    "ChatCodec",
    "Completion",
    "END_CODES",
    "Engine",
    "Episode",
    "HFEngine",
    "SamplingParams",
    "Turn",
    "parse_action",
    "rollout",
]
