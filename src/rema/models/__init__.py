"""Models: loading (Hub id, local path, the embedded SmolLM2 GGUF, tiny-random), low-precision storage of
frozen weights, training-time changes, LoRA's fused layers, and export.

- :mod:`.loading`: ``load_model`` / ``load_tokenizer`` and the names they understand; ``LoraSpec``.
- :mod:`.lora`: a fused forward/backward for peft's LoRA linear layers (``load_model`` switches them on).
- :mod:`.low_precision`: ``store_frozen_weights`` keeps a LoRA model's frozen base in bf16; ``native_bf16``;
  ``set_training_dtypes`` (fp32 master weights).
- :mod:`.surgery`: activation checkpointing, compiled decoder layers, a layer's FLOPs balance.
- :mod:`.export`: the merged weights (what vLLM serves) and ``export_model``.
- :mod:`.folders`: writing a model folder atomically.
"""

from .export import EXPORT_SHARD_MB, compute_device, export_model, iter_merged_weights
from .loading import (
                      CHATML_TEMPLATE,
                      DTYPES,
                      EMBEDDED_NAME,
                      TINY_NAME,
                      LoraSpec,
                      ModelNotFoundError,
                      cache_dir,
                      describe,
                      load_model,
                      load_tokenizer,
                      locate_embedded_gguf,
                      materialize_embedded,
                      resolve_path,
)
from .low_precision import keep_trainable_fp32, native_bf16, set_training_dtypes, store_frozen_weights
from .surgery import compile_decoder_layers, enable_checkpointing, has_cpp_compiler, linear_per_attention

__all__ = ["CHATML_TEMPLATE", "DTYPES", "EMBEDDED_NAME", "EXPORT_SHARD_MB", "TINY_NAME", "LoraSpec",
           "ModelNotFoundError", "cache_dir", "compile_decoder_layers", "compute_device", "describe",
           "enable_checkpointing", "export_model",
           "has_cpp_compiler", "iter_merged_weights", "linear_per_attention", "load_model", "load_tokenizer",
           "keep_trainable_fp32", "locate_embedded_gguf", "materialize_embedded", "native_bf16", "resolve_path",
           "set_training_dtypes", "store_frozen_weights"]
