"""A transformers engine whose samples do not depend on how a batch is split across processes, so one
process and several draw the same episodes at temperature 1 (real, distinct samples within a group).

Each row is sampled alone, its generator seeded from its prompt's ids and how many identical prompts came
before it in the call (the G samples of a question share a prompt and are generated in one call)."""

import zlib
from collections import Counter

from rema.rollout.hf_engine import HFEngine


class SplitInvariantEngine(HFEngine):
    def generate(self, prompts, params):
        seen: Counter = Counter()
        out = []
        for prompt, p in zip(prompts, params):
            key = tuple(prompt)
            self.generator.manual_seed(zlib.crc32(repr(key).encode()) * 64 + seen[key])
            seen[key] += 1
            out += super().generate([prompt], [p])
        return out


def upper_share(ep) -> float:
    """A reward that depends on what the RA wrote: the share of its last reply's ids that are 'A'..'Z'."""
    ids = ep.turns_of("ra")[-1].token_ids
    return sum(64 <= t <= 89 for t in ids) / max(len(ids), 1)


def make_engine(model, tokenizer, seed):
    return SplitInvariantEngine(model, tokenizer, seed=seed)
