"""A transformers/torch generation engine: batched, KV-cached, per-sequence limits, stops and temperatures.

We write the decode loop instead of calling ``model.generate`` because the protocol needs, per sequence,
its own token limit, temperature and stop strings, plus the exact log-prob of every sampled token under
``log_softmax(logits / T)``; ``generate`` offers none of these per row. The loop is short:

1. left-pad the prompts, prefill once keeping only the last position's logits;
2. each step: sample one token per unfinished row (explicit ``torch.Generator``), record its log-prob,
   check EOS / stop strings / the row's limit;
3. drop finished rows from the KV cache so late steps only pay for the rows still running.
"""

from __future__ import annotations

import torch

from .engine import Completion, Engine, SamplingParams, mix_seed, sequence_seed, stop_token_ids


def sample_from_logits(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, generator: torch.Generator | None,
    row_generators: list[torch.Generator | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row, by inverse CDF from one uniform per row.

    Args:
        logits: ``(B, V)`` next-token logits, on any device.
        temperature: ``(B,)``, on any device; rows with 0 are greedy.
        top_p: ``(B,)`` nucleus mass per row, on any device.
        generator: a CPU generator. The uniforms come from it and move to the logits' device, so a seed gives
            the same draws on CPU and GPU and an engine's RNG state resumes on either.
        row_generators: per row, a CPU generator of its own (a seeded sequence) or None; a row with one takes its
            uniform from it (the shared draw is made for every row all the same, so unseeded rows are unchanged).
    Returns:
        ``(tokens (B,), logprobs (B,))`` on the logits' device, with logprobs under ``log_softmax(logits / T)``
        (T = 1 when greedy).
    """
    dev = logits.device
    nucleus = bool((top_p < 1).any())
    temperature, top_p = temperature.to(dev), top_p.to(dev)
    logits = logits.float()
    greedy = temperature <= 0
    temp = torch.where(greedy, torch.ones_like(temperature), temperature)
    logp = torch.log_softmax(logits / temp[:, None], dim=-1)  # (B, V)
    probs, order = logp.exp(), None
    if nucleus:
        probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always keep the first token)
        probs = probs.masked_fill((probs.cumsum(-1) - probs) >= top_p[:, None], 0.0)
    cdf = probs.cumsum(-1)  # (B, V), unnormalised after the nucleus cut
    u = torch.rand(len(logits), generator=generator)
    for b, own in enumerate(row_generators or []):
        if own is not None:
            u[b] = torch.rand(1, generator=own)[0]
    u = u.to(dev)
    # the first index whose cdf exceeds u * total: a token of nonzero probability, since u < 1
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=cdf.shape[-1] - 1)
    sampled = (pick if order is None else order.gather(-1, pick)).squeeze(-1)
    tokens = torch.where(greedy, logits.argmax(-1), sampled)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _own_generators(prompts: list[list[int]], params: list[SamplingParams]) -> dict[int, torch.Generator]:
    """Row -> a generator of its own, for the rows whose sampling has a ``seed`` (:func:`sequence_seed`)."""
    return {i: torch.Generator(device="cpu").manual_seed(sequence_seed(p.seed, prompts[i]))
            for i, p in enumerate(params) if p.seed is not None}


class HFEngine(Engine):
    """Batched sampling with a transformers causal LM (the model object is shared with the trainer)."""

    def __init__(self, model, tokenizer, *, seed: int = 0, device: str | torch.device | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.eos_ids = stop_token_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)

    def describe(self) -> str:
        return f"transformers ({self.device}, {next(self.model.parameters()).dtype})".replace("torch.", "")

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def reseed(self, salt: int) -> None:
        self.generator.manual_seed(mix_seed(self.generator.initial_seed(), salt))

    def sync_weights(self, model) -> dict:
        self.model = model  # same object in memory: nothing to copy
        return {}

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[Completion]:
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
        if not prompts:
            return []
        model, dev = self.model, self.device
        was_training = model.training
        model.eval()
        try:
            return self._generate(model, dev, prompts, params)
        finally:
            model.train(was_training)

    def _generate(self, model, dev, prompts, params) -> list[Completion]:
        """Decode every prompt together (left-padded, one KV cache); a row leaves the batch when it finishes."""
        n = len(prompts)
        input_ids, attn, position_ids = _left_padded(prompts, self.pad_id, dev)
        temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32)
        top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)
        own = _own_generators(prompts, params)
        out_ids: list[list[int]] = [[] for _ in range(n)]
        out_logp: list[list[float]] = [[] for _ in range(n)]
        finish: list[tuple[str, object] | None] = [("length", None) if p.max_tokens <= 0 else None for p in params]

        from transformers import DynamicCache

        cache = DynamicCache()
        rows = [i for i in range(n) if finish[i] is None]  # original index of each live batch row
        if not rows:
            return [Completion([], [], "length") for _ in range(n)]
        keep = torch.tensor(rows, dtype=torch.long)
        input_ids, attn, position_ids = input_ids[keep], attn[keep], position_ids[keep]
        out = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids,
                    past_key_values=cache, use_cache=True, logits_to_keep=1)
        next_pos = position_ids[:, -1:] + 1
        while True:
            logits = out.logits[:, -1, :]  # (B_live, V)
            live = torch.tensor(rows, dtype=torch.long)
            tokens, logps = sample_from_logits(logits, temperature[live], top_p[live], self.generator,
                                               [own.get(i) for i in rows] if own else None)
            still = self._record(rows, tokens.tolist(), logps.tolist(), params, out_ids, out_logp, finish)
            if not still:
                break
            sel = torch.tensor(still, dtype=torch.long, device=dev)
            if len(still) < len(rows):
                cache.batch_select_indices(sel)
                attn = attn[sel]
                next_pos = next_pos[sel]
                tokens = tokens.to(dev)[sel]
                rows = [rows[b] for b in still]
            attn = torch.cat([attn, torch.ones((len(rows), 1), dtype=attn.dtype, device=dev)], dim=1)
            out = model(input_ids=tokens.to(dev)[:, None], attention_mask=attn, position_ids=next_pos,
                        past_key_values=cache, use_cache=True)
            next_pos = next_pos + 1
        return [
            Completion(out_ids[i], out_logp[i], finish[i][0], finish[i][1]) for i in range(n)  # type: ignore[index]
        ]

    def _record(self, rows: list[int], tokens: list[int], logps: list[float], params: list[SamplingParams],
                out_ids: list[list[int]], out_logp: list[list[float]], finish: list) -> list[int]:
        """Append each live row's sampled token (``rows[b]``: the prompt index of batch row ``b``) and mark the
        rows it finishes (an end-of-turn token, a stop string, the token limit); returns the batch positions
        that keep going."""
        still: list[int] = []
        for b, (i, tok, lp) in enumerate(zip(rows, tokens, logps)):  # one device sync, by the caller's tolist()
            out_ids[i].append(tok)
            out_logp[i].append(lp)
            if tok in self.eos_ids:
                finish[i] = ("stop", tok)
            elif params[i].stop and (hit := self._stop_hit(out_ids[i], params[i].stop)):
                finish[i] = ("stop", hit)
            elif len(out_ids[i]) >= params[i].max_tokens:
                finish[i] = ("length", None)
            else:
                still.append(b)
        return still

    def _stop_hit(self, ids: list[int], stops: tuple[str, ...]) -> str | None:
        # Decode only a tail wide enough to contain the longest stop string (tokens are >= 1 char).
        tail = self.tokenizer.decode(ids[-(max(len(s) for s in stops) + 2):], skip_special_tokens=False)
        for s in stops:
            if s in tail:
                return s
        return None


def _left_padded(prompts: list[list[int]], pad_id: int, dev) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)``, each (B, T) on ``dev``: the prompts left-padded, so every
    row's next token sits in the last column, with positions that ignore the padding."""
    n, width = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        attn[i, width - len(p):] = 1
    input_ids, attn = input_ids.to(dev), attn.to(dev)
    return input_ids, attn, (attn.cumsum(-1) - 1).clamp(min=0)
