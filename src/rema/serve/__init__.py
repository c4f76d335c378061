"""``rema serve``: a trained pair (or any model) behind an OpenAI-compatible HTTP API.

- :mod:`.api`: the chat-completions schema: requests validated into :class:`~.api.ChatRequest`, episodes
  rendered as responses and stream chunks (pure functions);
- :mod:`.batcher`: the asyncio batcher: requests queue, one loop runs each batch's dialogue in a worker thread;
- :mod:`.service`: the model side: the config, the engines, the dialogue of a batch (``rema.rollout.rollout``);
- :mod:`.app`: the FastAPI app (``/v1/models``, ``/v1/chat/completions``, ``/health``);
- :mod:`.command`: the ``rema serve`` command (``add_serve_command``).

FastAPI and uvicorn are an optional extra (``pip install 'rema[serve]'``); only :mod:`.app` and the command's
run import them. See docs/serve.md.
"""

from .command import add_serve_command

__all__ = ["add_serve_command"]
