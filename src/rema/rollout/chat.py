"""Growing a chat in token ids without ever re-tokenizing what was sampled.

A multi-turn agent's context is ``[system, user, assistant, user, assistant, ...]``. Rendering the whole
chat as text and tokenizing it again at every turn silently changes ids (BPE is not a bijection: the
sampled ids for " 12" may come back as a different split), and then the trainer scores tokens the sampler
never produced. :class:`ChatCodec` instead learns, once per tokenizer, the template text that *surrounds*
messages (by rendering sentinel messages through the tokenizer's own chat template) and appends only:

* the sampled ids themselves, untouched;
* the text that closes an assistant turn (unless the sampler already emitted the end-of-turn token);
* the tokens of the next user message with its header and the generation prompt.

So the ids the model saw when sampling turn ``t`` are exactly a prefix of the final training row.
"""

from __future__ import annotations

_SYS, _USER1, _ASSIST, _USER2 = "\x00SYS\x00", "\x00U1\x00", "\x00A1\x00", "\x00U2\x00"


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be split into per-message pieces."""


class ChatCodec:
    """Per-tokenizer pieces of the chat template, learned by rendering sentinel messages."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        render = lambda msgs, gen: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)  # noqa: E731
        base = [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER1}]
        with_a = base + [{"role": "assistant", "content": _ASSIST}]
        full = render(with_a + [{"role": "user", "content": _USER2}], True)
        closed = render(with_a, False)
        if _ASSIST not in closed or _USER2 not in full or not full.startswith(closed.split(_ASSIST)[0]):
            raise ChatTemplateError("chat template does not render messages in order; cannot grow chats by ids")
        # text after the assistant content that closes its turn, e.g. "<|im_end|>\n"
        self.assistant_close = closed.split(_ASSIST, 1)[1]
        after_close = full.split(_ASSIST, 1)[1][len(self.assistant_close) :]
        # "<|im_start|>user\n" + msg + "<|im_end|>\n<|im_start|>assistant\n"
        self.user_prefix, self.user_suffix = after_close.split(_USER2, 1)

    def start(self, system: str | None, user: str) -> list[int]:
        """Ids of the opening context: optional system message, first user message, generation prompt."""
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        # The rendered template already holds every special token (BOS included where the template has one).
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def close_assistant(self, sampled: list[int], eos_ids: set[int]) -> list[int]:
        """Glue ids that end an assistant turn whose sampled ids are ``sampled`` (not trained)."""
        text = self.assistant_close
        if sampled and sampled[-1] in eos_ids:
            eos_text = self.tokenizer.decode([sampled[-1]], skip_special_tokens=False)
            if text.startswith(eos_text):
                text = text[len(eos_text) :]
        return self.encode(text) if text else []

    def user_turn(self, content: str) -> list[int]:
        """Ids of a user message plus the generation prompt for the next assistant turn."""
        return self.encode(self.user_prefix + content + self.user_suffix)
