"""Model shapes from a model's config alone: dimensions and exact parameter counts of a causal LM built on the
``meta`` device (no weights read). ``rema plan`` sizes memory from them; the paper's models ship their
``config.json`` in ``rema/assets/model_shapes/`` so the answer needs no network."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SHAPES_DIR = Path(__file__).resolve().parents[1] / "assets" / "model_shapes"
"""config.json files of the paper's models (and the embedded SmolLM2), so ``rema plan`` answers offline."""


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs from a model: its dimensions and exact parameter counts (from the meta device)."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    params: int
    """All parameters (a tied embedding counted once)."""
    embedding: int
    """Input embedding parameters."""
    head: int
    """LM head parameters that are not the embedding (0 when tied)."""
    layer_params: int
    """Parameters of one decoder layer."""
    lora_params_per_rank: int
    """LoRA parameters per unit of rank: Σ (in + out) over the linear layers LoRA wraps (all of a decoder
    layer's projections, ``rema.models.LoraSpec.target_modules``)."""

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


def _shipped_shapes() -> dict[str, Path]:
    """Shipped shape files by lower-cased Hub id and by lower-cased model name (the id's last part)."""
    out: dict[str, Path] = {}
    for path in sorted(SHAPES_DIR.glob("*.json")):
        hub = json.loads(path.read_text()).get("_name_or_path", path.stem)
        out[hub.lower()] = out[hub.split("/")[-1].lower()] = path
    return out


def model_config(name: str):
    """The transformers config of ``name`` without any weights: ``tiny-random`` (built in-process), the
    embedded ``smollm2-135m`` and the paper's models (shipped shapes), a local folder (its config.json), or a
    Hub id (its config.json only)."""
    from transformers import AutoConfig

    from .loading import EMBEDDED_NAME, TINY_NAME

    if name == TINY_NAME:
        return _tiny_config()
    shipped = _shipped_shapes()
    key = "smollm2-135m-instruct" if name == EMBEDDED_NAME else name.lower().rstrip("/")
    if os.path.isdir(name):
        return AutoConfig.from_pretrained(name)
    for candidate in (key, key.split("/")[-1], key.split("/")[-1].replace("meta-llama-3-", "llama-3-")):
        if candidate in shipped:
            return AutoConfig.from_pretrained(shipped[candidate])
        if "meta-" + candidate in shipped:
            return AutoConfig.from_pretrained(shipped["meta-" + candidate])
    from .loading import ModelNotFoundError

    try:
        return AutoConfig.from_pretrained(name)
    except OSError as err:
        raise ModelNotFoundError(
            f"no config for '{name}': not a shipped shape ({', '.join(sorted({p.stem for p in shipped.values()}))}), "
            f"a local folder, nor a Hub id reachable now ({err})") from err


def _tiny_config():
    """The tiny-random model's config, as ``rema.models.loading`` builds it (its tokenizer sets the vocab)."""
    import torch

    from .loading import _tiny_model, _tiny_tokenizer

    with torch.device("meta"):
        return _tiny_model(_tiny_tokenizer()).config


def model_shape(config, name: str = "", lora_targets: tuple[str, ...] | None = None) -> ModelShape:
    """Dimensions and exact parameter counts of a causal LM built from ``config`` on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    from .loading import LoraSpec

    targets = lora_targets or LoraSpec().target_modules
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layer = backbone.layers[0]
    lora = sum(m.in_features + m.out_features for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets)
    heads = config.num_attention_heads
    return ModelShape(
        name=name or getattr(config, "_name_or_path", "") or type(model).__name__,
        hidden=config.hidden_size, intermediate=config.intermediate_size, layers=config.num_hidden_layers,
        heads=heads, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads, vocab=config.vocab_size,
        tied=tied, params=sum(p.numel() for p in model.parameters()), embedding=emb.weight.numel(),
        head=0 if tied or head is None else head.weight.numel(),
        layer_params=sum(p.numel() for p in layer.parameters()), lora_params_per_rank=lora)
