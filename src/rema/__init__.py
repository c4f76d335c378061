"""rema: Reinforced Meta-thinking Agents (ReMA) — multi-agent RL for meta-thinking LLMs."""

__version__ = "0.1.0"
