"""A tiny random Llama that vLLM's CPU attention and tensor parallelism over 2 processes accept: head_dim 64
(the built-in tiny model's 16 is not a CPU attention kernel size) and 2 query/key-value heads (each rank of
a 2-way tensor-parallel engine takes one). The built-in tiny tokenizer; written as a model folder.

    python tests/helpers/tp_model.py FOLDER
"""

import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rema.models import load_tokenizer


def write_tp_model(folder: str) -> str:
    tok = load_tokenizer("tiny-random")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    print(write_tp_model(sys.argv[1]))
