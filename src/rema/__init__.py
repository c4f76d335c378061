"""rema: Reinforced Meta-thinking Agents (ReMA) — multi-agent RL for meta-thinking LLMs."""

import os as _os

__version__ = "0.1.0"

# oneDNN (PyTorch's CPU matmul library) caches up to 1024 compiled primitives, one per new shape. Every
# micro-batch of an update brings new shapes (its rows' padded width), and each primitive holds ~1 MB
# (measured on this project's CPU: +0.27 GB after 140 shapes, +0.10 GB with a capacity of 16), so over a
# run the cache grew the trainer by ~150 MB per RL step. Within a micro-batch every layer reuses the same
# few dozen shapes, which a capacity of 128 keeps. Set the variable yourself to choose another bound; it is
# read when the first primitive is built, so this holds when rema is imported before any CPU matmul runs.
_os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128")
