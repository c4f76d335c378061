"""rema plan: the estimates on hand-computed numbers, the activation model against the tensors autograd saves,
parameter counts against real models, and the CPU predictions against measured peaks of real runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from rema.cli import main
from rema.config import load_config
from rema.plan import (
    GIB,
    LAYER_BYTES_PER_TOKEN,
    ModelShape,
    Setup,
    adamw_bytes,
    backbone_activation_bytes,
    grad_bytes,
    head_bytes,
    kv_cache_bytes,
    layer_activation_bytes,
    model_config,
    model_shape,
    plan,
    setup_from_config,
    weight_bytes,
)

SMALL = ModelShape(name="small", hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=100,
                   tied=True, params=100_000, embedding=6_400, head=0, layer_params=40_000, lora_params_per_rank=1_000)


def test_estimates_on_hand_computed_numbers():
    """Each formula, worked by hand for a small config."""
    assert weight_bytes(0, 1000, frozen_bytes=2) == 4000  # fp32 masters
    assert weight_bytes(5000, 100, frozen_bytes=2, shards=2) == (400 + 10000) / 2
    assert grad_bytes(1000, shards=4) == 1000
    assert adamw_bytes(1000) == 8000 and adamw_bytes(1000, models=2, shards=2) == 8000
    # fp32 layer: 128 tokens × (32·64 + 16·128 + 8·32 + 4·4) = 128 × 4368
    assert layer_activation_bytes(128, hidden=64, intermediate=128, kv_width=32, heads=4, mode="fp32") == 128 * 4368
    # 2 layers, 1 checkpointed: its input 128·64·4 + the other's 1000 + one recompute 1000 + final norm 2·128·64·4
    # + backward's 3·128·64·4
    assert backbone_activation_bytes(128, layers=2, checkpointed=1, layer_bytes=1000, hidden=64,
                                     residual_bytes=4) == 32768 + 2000 + 65536 + 98304
    assert backbone_activation_bytes(128, layers=2, checkpointed=0, layer_bytes=1000, hidden=64,
                                     residual_bytes=4) == 2000 + 65536 + 98304
    # LM head over 300 trained positions, V = 100, H = 64, chunks of 256
    assert head_bytes(300, vocab=100, hidden=64, trained_head=True, low_precision=True) == 300 * 64 * 4 + 24 * 256 * 100
    assert head_bytes(300, vocab=100, hidden=64, trained_head=False, low_precision=True) == \
        300 * 64 * 4 + 10 * 256 * 100 + 2 * 300 * 100
    assert head_bytes(100, vocab=100, hidden=64, trained_head=False, low_precision=False) == 100 * 64 * 4 + 4 * 100 * 100
    assert kv_cache_bytes(3, 10, layers=2, kv_width=32, dtype_bytes=4) == 3 * 10 * 2 * 2 * 32 * 4


def test_plan_sums_its_lines_by_phase():
    """Full fine-tuning in fp32 on 2 CPU processes (ddp): persistent lines + the largest phase, by hand."""
    s = Setup(processes=2, micro_batch_tokens=128, rollout_sequences=4, max_context=50, runtime_gib=0.5)
    p = plan(SMALL, s)
    lines = {x.component: x.gib * GIB for x in p.lines}
    assert lines["weights"] == 400_000 and lines["gradients"] == 400_000 and lines["optimizer state"] == 800_000
    assert lines["all-reduce buffer"] == 400_000
    assert lines["KV cache (transformers engine)"] == 4 * 50 * 2 * 2 * 32 * 4
    update = lines["activations"] + lines["LM head"]
    assert lines["activations"] == backbone_activation_bytes(128, layers=2, checkpointed=0, hidden=64, residual_bytes=4,
                                                             layer_bytes=128 * 4368)
    assert p.peak_phase == "update"  # 0.13 MB of activations + gradients beat the all-reduce buffer + gradients
    assert p.peak_gib * GIB == pytest.approx(0.5 * GIB + 400_000 + 800_000 + 400_000 + update)
    # FSDP over 2: the state halves, no all-reduce buffer, two layers and the root gathered (fp32 here)
    f = {x.component: x.gib * GIB for x in plan(SMALL, Setup(**{**s.__dict__, "strategy": "fsdp"})).lines}
    assert f["weights"] == 200_000 and f["optimizer state"] == 400_000 and "all-reduce buffer" not in f
    assert f["gathered layers"] == (2 * 40_000 + 6_400) * 4
    # LoRA r=8: 8000 trainable fp32 + 100k frozen at model dtype (fp32 compute), no KL copy even with kl_coef
    lo = {x.component: x.gib * GIB for x in plan(SMALL, Setup(**{**s.__dict__, "lora_r": 8, "kl_ref": True})).lines}
    assert lo["weights"] == 4 * 8000 + 4 * 100_000 and lo["optimizer state"] == 8 * 8000 and "KL reference" not in lo
    # full fine-tuning with kl_coef > 0: a frozen copy; separate weights: two models, two optimizers
    two = {x.component: x.gib * GIB for x in plan(SMALL, Setup(**{**s.__dict__, "kl_ref": True, "models": 2})).lines}
    assert two["KL reference"] == 2 * 400_000 and two["weights"] == 800_000 and two["optimizer state"] == 1_600_000
    assert two["gradients"] == 400_000  # only the updated agent's


def test_gpu_vllm_share_and_fit():
    """On a GPU vLLM takes its share of the device (weights + KV), and the verdict compares with the device."""
    s = Setup(device="cuda", device_gib=1.0, engine="vllm", vllm_gpu_memory_utilization=0.25, runtime_gib=0.0,
              micro_batch_tokens=128)
    p = plan(SMALL, s)
    lines = {x.component: x.gib for x in p.lines}
    assert lines["vLLM weights"] * GIB == 100_000 * 2
    assert lines["vLLM weights"] + lines["vLLM KV cache + workspace"] == pytest.approx(0.25)
    assert p.fits is True
    assert p.peak_gib < 0.3
    # rollout.vllm_sleep: vLLM's share is held in the rollout only (level 1 parks its weights in host memory)
    asleep = plan(SMALL, Setup(**{**s.__dict__, "vllm_sleep": 1, "micro_batch_tokens": 65536}))
    awake = plan(SMALL, Setup(**{**s.__dict__, "micro_batch_tokens": 65536}))
    assert asleep.peak_phase == "update" and asleep.peak_gib == pytest.approx(awake.peak_gib - 0.25)
    assert [x.component for x in asleep.host_lines] == ["vLLM weights"]
    assert plan(SMALL, Setup(**{**s.__dict__, "runtime_gib": 0.8})).fits is False  # 0.8 + the 0.25 share > 1


def test_sharded_vllm_keeps_no_engine_copy_and_tensor_parallel_splits_its_weights():
    """Under FSDP vLLM is synced one gathered weight at a time: no unsharded copy, only the largest weight in
    fp32 plus its bf16 cast while syncing (the transformers engine keeps its replica); a k-way tensor-parallel
    engine holds 1/k of vLLM's weights on each process, with the same share of the GPU."""
    s = Setup(processes=4, strategy="fsdp", device="cuda", device_gib=1.0, engine="vllm",
              vllm_gpu_memory_utilization=0.25, runtime_gib=0.0, micro_batch_tokens=128)
    lines = {x.component: x for x in plan(SMALL, s).lines}
    assert "engine replica" not in lines
    assert lines["weight sync"].gib * GIB == 128 * 64 * (4 + 2) and lines["weight sync"].phases == ("sync",)
    hf = {x.component: x.gib * GIB for x in plan(SMALL, Setup(**{**s.__dict__, "engine": "hf"})).lines}
    assert hf["engine replica"] == 100_000 * 4 and "weight sync" not in hf
    tp = {x.component: x.gib for x in plan(SMALL, Setup(**{**s.__dict__, "vllm_tp": 2})).lines}
    assert tp["vLLM weights"] * GIB == 100_000 * 2 / 2
    assert tp["vLLM weights"] + tp["vLLM KV cache + workspace"] == pytest.approx(0.25)
    cfg = load_config(None, ["rollout.vllm_tensor_parallel_size=2"])
    assert setup_from_config(cfg, gpus=4, gpu_mem_gib=80).vllm_tp == 2


def _saved_bytes_per_layer(mode: str, tokens: int = 128, **dims) -> float:
    """Bytes autograd saves for one decoder layer of a random Llama: (2 layers - 1 layer) / tokens, weights and
    (under autocast) their bf16 casts left out."""
    from transformers import LlamaConfig, LlamaForCausalLM

    totals = []
    for layers in (1, 2):
        cfg = LlamaConfig(vocab_size=97, num_hidden_layers=layers, attn_implementation="sdpa", **dims)
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if mode == "bf16" else torch.float32)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t, params=params, seen=seen):
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                seen[st.data_ptr()] = st.nbytes()
            return t

        ids = torch.randint(0, 97, (2, tokens // 2))
        with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
              torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast")):
            model.model(input_ids=ids, use_cache=False)
        casts = 2 * sum(p.numel() for p in model.model.layers.parameters() if p.dim() == 2) if mode == "autocast" else 0
        totals.append(sum(seen.values()) - casts)
    return totals[1] - totals[0]


@pytest.mark.parametrize("mode", sorted(LAYER_BYTES_PER_TOKEN))
@pytest.mark.parametrize("dims", [{"hidden_size": 128, "intermediate_size": 352, "num_attention_heads": 4,
                                       "num_key_value_heads": 2},
                                  {"hidden_size": 192, "intermediate_size": 256, "num_attention_heads": 6,
                                       "num_key_value_heads": 6}])
def test_layer_activations_match_what_autograd_saves(mode, dims):
    """The per-layer formula against the tensors a real decoder layer saves for the backward (within 3%)."""
    tokens = 128
    measured = _saved_bytes_per_layer(mode, tokens, **dims)
    head_dim = dims["hidden_size"] // dims["num_attention_heads"]
    predicted = layer_activation_bytes(tokens, hidden=dims["hidden_size"], intermediate=dims["intermediate_size"],
                                       kv_width=dims["num_key_value_heads"] * head_dim,
                                       heads=dims["num_attention_heads"], mode=mode)
    assert predicted == pytest.approx(measured, rel=0.03)


def test_shapes_count_parameters_exactly():
    """Meta-device counts equal a real model's; LoRA's count equals peft's trainable parameters."""
    from rema.models import LoraSpec, load_model

    shape = model_shape(model_config("tiny-random"), "tiny-random")
    model, _ = load_model("tiny-random")
    assert shape.params == sum(p.numel() for p in model.parameters())
    lora, _ = load_model("tiny-random", lora=LoraSpec(r=4))
    assert 4 * shape.lora_params_per_rank == sum(p.numel() for p in lora.parameters() if p.requires_grad)


@pytest.mark.parametrize("name,params", [
    ("meta-llama/Llama-3.1-8B-Instruct", 8_030_261_248),
    ("meta-llama/Meta-Llama-3-8B-Instruct", 8_030_261_248),
    ("Llama-3-8B-Instruct", 8_030_261_248),
    ("meta-llama/Llama-3.2-1B-Instruct", 1_235_814_400),
    ("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512),
    ("Qwen/Qwen2.5-1.5B-Instruct", 1_543_714_304),
    ("smollm2-135m", 134_515_008),
])
def test_paper_models_answer_offline(name, params, monkeypatch):
    """The shipped shapes give the published parameter counts with the Hub unreachable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_shape(model_config(name), name).params == params


def test_cli_plan_json(capsys):
    """`rema plan CONFIG --gpus 8 --gpu-mem 80 --json` for the paper's 8B config: full fine-tuning under ddp does
    not fit an 80 GiB GPU, and the changes it proposes do."""
    assert main(["plan", "configs/rema_multi_turn_30x512.yaml", "rollout.engine=vllm", "--gpus", "8", "--gpu-mem", "80",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 8_030_261_248 and out["fits"] is False
    assert out["alternatives"]["train.strategy=fsdp"]["fits"] is True
    assert main(["plan", "configs/rema_multi_turn_30x512.yaml", "model.lora_r=16", "rollout.engine=vllm", "--gpus", "8", "--gpu-mem", "80",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is True


# Peak resident memory per process of real 2-step CPU runs (rollout.engine=hf), measured on 2 cores of an Intel Xeon
# with AVX-512 BF16 and AMX (23 GiB) at commit c008be9, 2026-12-05: the largest `perf/peak_rss_gb/<phase>` over both
# steps in <run_dir>/metrics.jsonl (on 2 processes the ranks' mean). Each from (docs/results.md, 2026-12-05):
#   rema train configs/demo.yaml rollout.engine=hf sft.cold_start=false train.steps=2 log.tensorboard=false \
#       data.eval=null log.progress=false model.name=M [overrides below] (+ train.lr=1e-5 with lora_r=0)
#   torchrun --nproc_per_node 2 -m rema.cli train <the same>          (2 processes)
SMOL = ("train.questions_per_step=2", "rollout.max_tokens_per_turn=32")
MEASURED_PEAK_GIB = {
    # (model, processes, overrides): GiB
    ("tiny-random", 1, ()): 0.750,  # calibrates CPU_RUNTIME_GIB (the model's own tensors are < 10 MB)
    ("tiny-random", 2, ()): 0.643,
    ("smollm2-135m", 1, SMOL): 1.445,  # LoRA r=16 (the demo's), bf16 autocast
    ("smollm2-135m", 1, (*SMOL, "model.lora_r=0")): 3.546,  # full fine-tuning: fp32 masters + AdamW
    ("smollm2-135m", 2, (*SMOL, "model.lora_r=0")): 3.511,
}


@pytest.mark.parametrize("key", list(MEASURED_PEAK_GIB), ids=lambda k: f"{k[0]}-{k[1]}p-{len(k[2])}")
def test_cpu_predictions_match_measured_peaks(key):
    """The CPU plan of each measured run predicts its peak within ±20%."""
    name, procs, extra = key
    cfg = load_config("configs/demo.yaml", ["rollout.engine=hf", "sft.cold_start=false", f"model.name={name}", *extra])
    p = plan(model_shape(model_config(name), name), setup_from_config(cfg, gpus=procs, native_bf16_cpu=True))
    assert p.peak_gib == pytest.approx(MEASURED_PEAK_GIB[key], rel=0.20)


BIG = ModelShape(name="8b-like", hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, head_dim=128,
                 vocab=128256, tied=False, params=8_030_261_248, embedding=525_336_576, head=525_336_576,
                 layer_params=218_112_000, lora_params_per_rank=20_971_520)


def test_vllm_takes_its_share_of_the_reported_total_and_must_start():
    """A GPU sold as 80 GB reports 79.19 GiB, and vLLM's share is of that; each engine must find its share free
    when it starts (vLLM's request_memory), given what the trainer already holds."""
    cfg = load_config(None, ["rollout.engine=vllm", "model.name=meta-llama/Llama-3.1-8B-Instruct"])
    s = setup_from_config(cfg, gpus=8, gpu_mem_gib=80)
    assert s.device_gib == 79.19 and setup_from_config(cfg, gpus=8, gpu_mem_gib=75.5).device_gib == 75.5
    ddp = plan(BIG, replace(s, engine="vllm"))  # full fp32 masters (30 GiB) + runtime leave 48 GiB: 0.5 starts
    lines = {x.component: x.gib for x in ddp.lines}
    assert lines["vLLM weights"] + lines["vLLM KV cache + workspace"] == pytest.approx(0.5 * 79.19)
    assert ddp.problems == []
    greedy = plan(BIG, replace(s, vllm_gpu_memory_utilization=0.7))  # 55.4 GiB asked, 48.2 free
    assert len(greedy.problems) == 1 and "would not start" in greedy.problems[0] and greedy.works is False


def test_two_engines_split_the_share_and_one_sleeps():
    """Separate weights: two engines whose shares add up to vllm_gpu_memory_utilization; under DDP the trainer's
    two fp32 models leave too little for even the first (named), under FSDP both start; with vllm_sleep one
    engine per process sleeps and, woken for the sync, counts there."""
    s = Setup(processes=8, device="cuda", device_gib=79.19, engine="vllm", models=2, bf16=True, model_dtype_bytes=2,
              checkpoint_share=1.0, vllm_max_model_len=4096)
    ddp = plan(BIG, s)
    assert [p.split(" would")[0] for p in ddp.problems] == ["vLLM engine 1 of 2"]
    fsdp = plan(BIG, replace(s, strategy="fsdp"))
    assert fsdp.problems == [] and any("split rollout.vllm_gpu_memory_utilization" in n for n in fsdp.notes)
    lines = {x.component: x for x in fsdp.lines}
    assert lines["vLLM weights"].gib == pytest.approx(2 * BIG.params * 2 / GIB)
    assert lines["vLLM weights"].gib + lines["vLLM KV cache + workspace"].gib == pytest.approx(0.5 * 79.19)
    asleep = plan(BIG, replace(s, strategy="fsdp", vllm_sleep=1))
    sleeping = {x.component: x for x in asleep.lines}["vLLM weights (the sleeping engine)"]
    assert sleeping.phases == ("rollout", "sync") and sleeping.gib == pytest.approx(BIG.params * 2 / GIB)
    assert {x.component: x for x in asleep.lines}["vLLM weights (the awake engine)"].phases == ()
    assert asleep.peak_phase == "sync"  # the engine is awake again, and the largest weight is being gathered
    assert any("one engine per process" in n for n in asleep.notes)
    two = plan(BIG, replace(s, strategy="fsdp", vllm_sleep=2, optimizers=1))
    assert any("syncs it again each step" in n for n in two.notes)


def test_the_kv_cache_floor_and_a_given_kv_cache():
    """What the share leaves after weights and workspace must hold one max_model_len sequence, else the plan
    names vLLM's error; rollout.vllm_kv_cache_gib replaces what the share leaves."""
    s = Setup(processes=8, strategy="fsdp", device="cuda", device_gib=79.19, engine="vllm", bf16=True,
              vllm_gpu_memory_utilization=0.2, vllm_max_model_len=32768)
    p = plan(BIG, s)  # 15.8 GiB share - 15 GiB weights - 5 GiB workspace (32k tokens profiled, CUDA graphs) < 0
    assert p.problems == ['vLLM would stop at its start: "No available memory for the cache blocks"']
    p = plan(BIG, replace(s, vllm_gpu_memory_utilization=0.28))  # 2.2 GiB of KV, one 32k sequence needs 4 GiB
    assert len(p.problems) == 1 and "max seq len (32768), (4.00 GiB KV cache is needed" in p.problems[0]
    ok = plan(BIG, replace(s, vllm_gpu_memory_utilization=0.32))
    assert ok.problems == []
    given = {x.component: x.gib for x in plan(BIG, replace(s, vllm_kv_cache_gib=6.0)).lines}
    from rema.rollout.vllm_memory import workspace_bytes

    workspace = workspace_bytes(hidden=4096, intermediate=14336, vocab=128256, batched_tokens=32768, dtype_bytes=2,
                                eager=False)
    assert given["vLLM KV cache + workspace"] == pytest.approx(6.0 + workspace / GIB)


@pytest.mark.parametrize("config", ["rema_single_turn_math", "rema_actions", "rema_judge", "rema_frozen_mta"])
def test_cli_names_what_would_stop_the_paper_configs_before_a_gpu_is_rented(config, capsys):
    """Separate weights under DDP on 8 × 80 GB: the plan says it does not fit and that vLLM would not start."""
    assert main(["plan", f"configs/{config}.yaml", "rollout.engine=vllm", "--gpus", "8", "--gpu-mem", "80", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["capacity_gib"] == 79.19 and out["works"] is False
    assert "would not start" in out["verdict"] and out["problems"]
    assert any("split rollout.vllm_gpu_memory_utilization" in n for n in out["notes"])
