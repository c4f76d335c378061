"""Exporting a trained model: the merged weights (LoRA added in, under the plain transformers names) that vLLM
serves and the export writes, and a ``save_pretrained`` folder written one weight at a time."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from .folders import atomic_save, pretrained_writer


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective: every process calls it in the same order), or ``t``.

    A shard kept off its mesh's device (FSDP's CPU offload keeps them in host memory) is moved to that device
    first, so the all-gather runs there (NCCL takes GPU tensors only); the whole tensor is then on it too."""
    if not isinstance(t, DTensor):
        return t
    mesh, local = t.device_mesh, t.to_local()
    if local.device.type != mesh.device_type:
        t = DTensor.from_local(
            local.to(mesh_device(mesh)), mesh, t.placements, run_check=False, shape=t.shape, stride=t.stride()
        )
    return t.full_tensor()


def mesh_device(mesh) -> torch.device:
    """This process's device of a device mesh: the CPU, or its accelerator's current device (FSDP's choice)."""
    if mesh.device_type == "cpu":
        return torch.device("cpu")
    return torch.device(mesh.device_type, torch.accelerator.current_device_index())


def compute_device(model) -> torch.device:
    """Where ``model``'s forward computes: its parameters' device, or for sharded (FSDP2) parameters their
    mesh's device — under CPU offload the shards sit in host memory and the forward gathers them onto the GPU."""
    p = next(model.parameters())
    mesh = getattr(p, "device_mesh", None)
    return mesh_device(mesh) if mesh is not None else p.device


def is_sharded(model) -> bool:
    """Whether ``model``'s parameters are sharded over processes (FSDP2's DTensors)."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def iter_merged_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The merged model's weights (what vLLM serves, what the export writes) under the plain transformers
    names (LoRA merged, model untouched).

    For a peft model each LoRA layer's weight is ``W + scale * B @ A`` (peft's ``get_delta_weight``), and a
    ``modules_to_save`` copy replaces its original; the model itself is not modified (no merge/unmerge round
    trip, whose float error would accumulate over steps). A merged weight is made only when its turn comes,
    so a consumer that handles one at a time holds one layer's copy, not the whole model's (in fp32, the
    merged linears of SmolLM2-135M are 0.43 GB). Sharded weights (FSDP2) are gathered one at a time the same
    way: a collective, so every process iterates in step. A tied LM head is left out (it is the embedding).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # no peft: nothing can be a LoRA layer
        LoraLayer = ()  # noqa: N806
    lora = {
        f"{name}.weight": module for name, module in base.named_modules() if LoraLayer and isinstance(module, LoraLayer)
    }
    tied = bool(getattr(base.config, "tie_word_embeddings", False))
    for key, value in base.state_dict().items():
        if ".lora_" in key or "lora_magnitude_vector" in key or ".original_module." in key:
            continue
        if tied and key == "lm_head.weight":  # embed_tokens' own tensor: loaders (vLLM, from_pretrained) tie it
            continue
        name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", key.replace(".base_layer.", "."))
        module = lora.get(name)
        yield name, full_tensor(value) if module is None else _merged_weight(module)


def _merged_weight(module) -> torch.Tensor:
    """A LoRA layer's weight with its active adapters added (fp32 when the base is stored in 16 bits).

    A plain adapter (two bias-free ``nn.Linear`` of the weight's dtype, no DoRA or other variant, no
    ``fan_in_fan_out``) is added by one ``addmm`` (``W + scale * B @ A``; peft's ``get_delta_weight`` added
    after gives the same up to fp32 rounding, the same bits at a power-of-two scale), into the fp32 copy when
    the base is kept in 16 bits: no (out × in) temporaries, which cut SmolLM2-135M's merge and cast for a bf16
    sync from 0.50 to 0.11 s on 2 CPU cores. Any other adapter goes through ``get_delta_weight``."""
    weight = module.get_base_layer().weight.detach()
    own = isinstance(weight, DTensor) or weight.dtype in (torch.bfloat16, torch.float16)
    weight = full_tensor(weight)
    if own:  # merge in fp32 (the base may be kept in bf16), in a copy of our own
        weight = weight.float()
    if not module.merged and not module.disable_adapters:
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                continue
            a, b = module.lora_A[adapter], module.lora_B[adapter]
            plain = (
                type(a) is type(b) is torch.nn.Linear
                and a.bias is None
                and b.bias is None
                and adapter not in getattr(module, "lora_variant", {})
                and not getattr(module, "fan_in_fan_out", False)
                and a.weight.dtype == b.weight.dtype == weight.dtype
            )
            scale = float(module.scaling[adapter])
            wb, wa = full_tensor(b.weight.detach()), full_tensor(a.weight.detach())
            if plain and own:
                weight.addmm_(wb, wa, alpha=scale)
            elif plain:  # never in place: ``weight`` is the model's own
                weight = torch.addmm(weight, wb, wa, alpha=scale)
            else:
                weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
            own = True
    return weight


EXPORT_SHARD_MB = 128
"""Largest safetensors shard :func:`export_model` writes for a merged LoRA model (its memory cost)."""


def export_model(
    model,
    tokenizer,
    out_dir: str | Path,
    *,
    merge_lora: bool = True,
    shard_mb: float = EXPORT_SHARD_MB,
    write: bool = True,
) -> Path:
    """Write a ``save_pretrained`` folder that transformers and vLLM can load (LoRA merged unless told not to).

    Weights kept in a lower precision for the update (:func:`store_frozen_weights`) are saved in the dtype
    they were loaded in, like the rest. A LoRA model is merged and written one weight at a time
    (:func:`iter_merged_weights`) into safetensors shards of at most ``shard_mb`` MiB with the usual
    ``model.safetensors.index.json``: the export holds one shard beside the model, not a merged copy of it
    (the copy took 0.5 GB more than the rest of the demo's last step). The model is not modified.

    A sharded model (FSDP2) is written the same way, each weight gathered in turn: every process must call
    this (the gathers are collectives); only the one with ``write=True`` writes the folder.
    """
    import copy

    out = Path(out_dir)
    if is_sharded(model):
        if not write:
            for _ in iter_merged_weights(model):  # take part in every gather
                pass
            return out
        merge_lora = True
    elif not write:
        return out
    if out.exists():
        shutil.rmtree(out)
    if (hasattr(model, "get_base_model") or is_sharded(model)) and merge_lora:

        def write(folder: Path) -> None:
            _write_merged_shards(model, folder, int(shard_mb * 2**20))
            tokenizer.save_pretrained(folder)

        atomic_save(out, write)
        return out
    to_save = model
    if any(hasattr(m, "rema_loaded_dtype") for m in model.modules()):  # adapters only: cast back a copy
        to_save = copy.deepcopy(model)
        for m in to_save.modules():
            if hasattr(m, "rema_loaded_dtype"):
                m.to(m.rema_loaded_dtype)
    atomic_save(out, pretrained_writer(to_save, tokenizer))
    return out


def _write_merged_shards(model, folder: Path, shard_bytes: int) -> None:
    """The weights of :func:`iter_merged_weights` as safetensors shards (``model.safetensors`` when one is
    enough), plus the base model's config and generation config."""
    from safetensors.torch import save_file

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtypes = _loaded_dtypes(base)
    own = {
        t.untyped_storage().data_ptr()
        for t in base.state_dict().values()  # live: addresses stay unique
        if not isinstance(t, DTensor)
    }  # (gathered shards are fresh tensors)
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
    _name_shards(folder, shards, total)
    base.config.save_pretrained(folder)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(folder)


def _loaded_dtypes(base) -> dict[str, torch.dtype]:
    """The weights kept in 16 bits, by name, with the dtype they were loaded in: they are saved in it (merged
    LoRA weights come in fp32)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # no peft: nothing can be a LoRA layer
        LoraLayer = ()  # noqa: N806
    dtypes = {}
    for name, module in base.named_modules():
        if LoraLayer and isinstance(module, LoraLayer):
            layer = module.get_base_layer()
            dtypes[f"{name}.weight"] = getattr(layer, "rema_loaded_dtype", layer.weight.dtype)
        elif hasattr(module, "rema_loaded_dtype") and ".base_layer" not in name:
            dtypes.update({f"{name}.{p}": module.rema_loaded_dtype for p, _ in module.named_parameters(recurse=False)})
    return dtypes


def _name_shards(folder: Path, shards: list[list[str]], total: int) -> None:
    """The written ``shard-<i>.tmp`` files renamed once their number is known (``model.safetensors`` when there
    is one, else ``model-<i>-of-<n>.safetensors`` and the ``model.safetensors.index.json`` that maps each weight
    ``shards`` holds to its file); ``total``: the weights' bytes."""
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for i, shard in enumerate(shards):
        os.rename(folder / f"shard-{i}.tmp", folder / names[i])
        weight_map.update(dict.fromkeys(shard, names[i]))
    if len(shards) > 1:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
        )
