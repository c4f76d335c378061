"""The trainer on the tiny random model: learning, exact resume, Ctrl-C, NaN guard, weight switching."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch
from helpers.recording import RecordingOptimizer

from rema.config import load_config
from rema.prompts import PromptSet
from rema.train import Trainer, TrainingDiverged

SHORT_PROMPTS = PromptSet("test", "plan", "solve")  # short system prompts keep tiny-model rows small


def upper_share(ep) -> float:
    """A trivially learnable reward: the share of the RA's final reply that is upper-case letters."""
    ids = ep.turns_of("ra")[-1].token_ids
    return sum(64 <= t <= 89 for t in ids) / max(len(ids), 1)  # byte-level ids of 'A'..'Z'


def tiny_cfg(tmp_path, *overrides):
    return load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=single_turn",
            "rollout.max_tokens_per_turn=8",
            "rollout.max_turns=2",
            "rollout.samples_per_question=4",
            "train.questions_per_step=4",
            "train.steps=4",
            "train.lr=1e-2",
            "data.train=synthetic:levels=1:n=40:seed=0:word=0",
            "data.eval=null",
            "train.eval_every=0",
            "reward.mask_unfinished=false",
            f"log.run_dir={tmp_path / 'run'}",
            "log.progress=false",
            "log.tensorboard=false",
            "train.save_every=2",
            "train.autocast=off",
            *overrides,
        ],
    )


def make(tmp_path, *overrides, **kw) -> Trainer:
    return Trainer(
        tiny_cfg(tmp_path, *overrides), correctness_fn=kw.pop("reward", upper_share), prompts=SHORT_PROMPTS, **kw
    )


LEARNING = {
    "grpo-token-single": ["algo.ratio_level=token", "algo.agg=token"],
    "grpo-turn-multi": ["rollout.mode=multi_turn", "algo.ratio_level=turn"],
    "reinforce_pp-turn-multi": ["rollout.mode=multi_turn", "algo.advantage=reinforce_pp"],
    "grpo-separate-weights": ["train.shared_weights=false", "train.switch_freq=1", "algo.ratio_level=token"],
    "grpo-turn-multi-bf16": ["rollout.mode=multi_turn", "algo.ratio_level=turn", "train.autocast=bf16"],
}


@pytest.mark.parametrize("name", LEARNING)
def test_mean_reward_rises(tmp_path, name):
    # separate weights update the RA every other step; multi-turn rows spread the signal over two turns
    steps = 16 if name == "grpo-token-single" else 24
    tr = make(tmp_path, f"train.steps={steps}", "train.save_every=1000", "train.sample_every=0", *LEARNING[name])
    rewards = []
    for _ in range(steps):
        rewards.append(tr.train_step()["train/reward/ra"])
        tr.step += 1
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.2, f"{name}: reward {first:.2f} -> {last:.2f}: {rewards}"


def _metrics(run_dir):
    drop = ("time/", "perf/")
    return [
        {k: v for k, v in json.loads(line).items() if not k.startswith(drop)}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    a = make(tmp_path / "a", "rollout.mode=multi_turn")
    a.fit()
    b = make(tmp_path / "b", "rollout.mode=multi_turn")
    b.fit(max_steps=2)
    assert (b.run_dir / "checkpoints" / "step_000002" / "state.pt").is_file()
    del b
    cfg = load_config(tmp_path / "b" / "run" / "config.yaml")
    c = Trainer(cfg, tmp_path / "b" / "run", resume=True, correctness_fn=upper_share, prompts=SHORT_PROMPTS)
    assert c.step == 2
    c.fit()
    assert _metrics(a.run_dir) == _metrics(c.run_dir)
    for (n, p), (_, q) in zip(a.policies[0].model.named_parameters(), c.policies[0].model.named_parameters()):
        assert torch.equal(p, q), n
    assert (c.run_dir / "final" / "config.json").is_file()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_finishes_the_step_and_saves(tmp_path, sig):
    holder = {}

    def reward(ep):
        if holder["tr"].step == 1 and not holder["tr"].stop_requested:
            os.kill(os.getpid(), sig)  # a real signal, delivered during step 2's scoring
        return upper_share(ep)

    tr = make(tmp_path, "train.save_every=100", reward=reward)
    holder["tr"] = tr
    tr.fit()
    assert tr.step == 2
    assert (tr.run_dir / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert len((tr.run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_non_finite_loss_skips_updates_then_stops(tmp_path, monkeypatch):
    import rema.train.update as update_mod

    real = update_mod.policy_loss

    def nan_loss(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(update_mod, "policy_loss", nan_loss)
    tr = make(tmp_path, "train.nan_patience=2", "train.steps=10")
    before = [p.detach().clone() for p in tr.policies[0].model.parameters()]
    with pytest.raises(TrainingDiverged, match="2 steps in a row"):
        tr.fit()
    assert tr.step == 1  # the first bad step is logged, the second stops the run
    assert json.loads((tr.run_dir / "metrics.jsonl").read_text().splitlines()[0])["stats/skipped_updates"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before, tr.policies[0].model.parameters()))


def test_separate_weights_update_one_agent_at_a_time_mta_first(tmp_path):
    tr = make(tmp_path, "train.shared_weights=false", "train.switch_freq=2", "algo.ratio_level=token")
    assert [p.name for p in tr.policies] == ["mta", "ra"]
    updated = []
    for _ in range(4):
        snap = {p.name: [q.detach().clone() for q in p.model.parameters()] for p in tr.policies}
        tr.train_step()
        tr.step += 1
        updated.append(
            sorted(
                p.name
                for p in tr.policies
                if not all(torch.equal(a, b) for a, b in zip(snap[p.name], p.model.parameters()))
            )
        )
    assert updated == [["mta"], ["mta"], ["ra"], ["ra"]]


def first_step_gradient(tr: Trainer) -> tuple[torch.Tensor, dict]:
    """The gradient the first RL step's optimizer step would apply (recorded, not applied), and the metrics."""
    pol = tr.policies[0]
    pol.optimizer = RecordingOptimizer(p for p in pol.model.parameters() if p.requires_grad)
    metrics = tr.train_step()
    return torch.cat([g.flatten() for g in pol.optimizer.grads[0]]), metrics


@pytest.mark.parametrize("agg,level", [("token", "token"), ("turn", "turn"), ("trajectory", "turn")])
def test_micro_batches_accumulate_to_the_full_batch_gradient(tmp_path, monkeypatch, agg, level):
    import rema.train.update as update_mod

    plans = []
    plan = update_mod.plan_micro_batches
    monkeypatch.setattr(update_mod, "plan_micro_batches", lambda *a, **k: plans.append(plan(*a, **k)) or plans[-1])
    grads, micro = {}, {}
    for budget in (10**9, 64):  # one micro-batch vs one row per micro-batch
        tr = make(
            tmp_path / str(budget),
            "rollout.mode=multi_turn",
            f"algo.agg={agg}",
            f"algo.ratio_level={level}",
            f"train.micro_batch_tokens={budget}",
            "train.seed=3",
        )
        grads[budget], _ = first_step_gradient(tr)
        micro[budget] = len(plans[-1])
    assert micro[10**9] == 1 and micro[64] > 4  # the budgets really split the batch differently
    assert grads[10**9].norm() > 0
    assert torch.allclose(grads[10**9], grads[64], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["model.lora_r=4", "algo.kl_coef=0.1"],
        ["model.lora_r=4", "algo.kl_coef=0.1", "algo.kl_in_reward=true", "algo.advantage=reinforce_pp"],
    ],
)
def test_shared_prefix_packing_gives_the_unpacked_update(tmp_path, monkeypatch, extra):
    """train.share_prefix packs each group's rows around their common prompt; the gradient (policy loss, KL to
    the adapter-free base in the loss or in the reward) is the one of the unpacked rows."""
    import rema.train.update as update_mod

    plans = []
    plan = update_mod.plan_micro_batches
    monkeypatch.setattr(update_mod, "plan_micro_batches", lambda *a, **k: plans.append(plan(*a, **k)) or plans[-1])
    grads = {}
    for share in ("false", "true"):
        tr = make(tmp_path / share, "rollout.mode=multi_turn", f"train.share_prefix={share}", "train.seed=3", *extra)
        grads[share], _ = first_step_gradient(tr)
        largest = max(len(u) for micro in plans[-1] for u in micro)
        assert largest == 1 if share == "false" else largest > 2  # groups of 4 samples shared their prompt
    assert grads["false"].norm() > 0
    assert torch.allclose(grads["false"], grads["true"], atol=1e-6, rtol=1e-4)


def test_bf16_autocast_update_follows_the_fp32_gradient(tmp_path):
    grads = {}
    for mode in ("off", "bf16"):
        tr = make(tmp_path / mode, "rollout.mode=multi_turn", f"train.autocast={mode}", "train.seed=3")
        assert tr.bf16 == (mode == "bf16")
        grads[mode], stats = first_step_gradient(tr)
        assert stats["check/update_bf16"] == float(mode == "bf16")
    assert grads["off"].norm() > 0
    assert not torch.equal(grads["off"], grads["bf16"])  # bf16 really ran
    assert torch.nn.functional.cosine_similarity(grads["off"], grads["bf16"], dim=0) > 0.99


def test_lora_with_kl_uses_the_base_as_reference(tmp_path):
    tr = make(tmp_path, "model.lora_r=4", "algo.kl_coef=0.1", "train.lr=5e-2", "rollout.mode=multi_turn")
    assert tr.policies[0].ref is None  # no second copy: the adapter is switched off instead
    m1 = tr.train_step()
    tr.step += 1
    m2 = tr.train_step()
    assert m1["stats/kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at 0: policy == base
    assert m2["stats/kl"] > 0


def test_export_loads_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tr = make(tmp_path, "train.steps=1", "model.lora_r=4")
    tr.fit()
    final = tr.run_dir / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.chat_template and model.config.vocab_size == len(tok)
    meta = json.loads((tr.run_dir / "meta.json").read_text())
    assert meta["prompts"]["version"] and meta["prompts"]["name"] == "test"


def test_export_streams_merged_shards_equal_to_peft_merge(tmp_path):
    """The export writes the merged LoRA model shard by shard (no merged copy of the whole model): what
    transformers loads back equals peft's merge_and_unload, bf16-kept bases saved in fp32 again."""
    import copy

    from transformers import AutoModelForCausalLM

    from rema.models import LoraSpec, export_model, load_model, store_frozen_weights

    model, tok = load_model("tiny-random", lora=LoraSpec(r=4, alpha=8), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(3))
    assert store_frozen_weights(model, torch.bfloat16) > 0
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "rema_loaded_dtype"):
            m.to(m.rema_loaded_dtype)
    ref = ref.merge_and_unload().state_dict()
    out = export_model(model, tok, tmp_path / "final", shard_mb=0.05)
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(shards) > 2 and set(index["weight_map"].values()) == {s.name for s in shards}
    assert not list(out.glob("*.tmp")) and (out / "REMA_COMPLETE").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert set(loaded) == set(ref)
    for key, value in ref.items():
        assert loaded[key].dtype == torch.float32 and torch.allclose(loaded[key], value, atol=1e-6), key
    assert any("lora_A" in n for n, _ in model.named_parameters())  # the trained model is left as it was


def test_lora_with_bf16_update_keeps_frozen_weights_in_bf16(tmp_path):
    tr = make(tmp_path, "model.lora_r=4", "train.autocast=bf16", "train.lr=5e-2", "rollout.mode=multi_turn")
    model = tr.policies[0].model
    assert {p.dtype for n, p in model.named_parameters() if "base_layer" in n} == {torch.bfloat16}
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    m = tr.train_step()  # rollout (the transformers engine, fp32 callers) and a bf16 update
    assert m["check/update_bf16"] == 1.0 and math.isfinite(m["loss/policy"])
    assert m["perf/peak_rss_gb"] > 0 and m["perf/peak_rss_gb/update"] > 0  # the run's peak and the phase's
    assert any(not torch.equal(a, p) for a, p in zip(before, (p for p in model.parameters() if p.requires_grad)))


@pytest.mark.slow  # inductor compiles C++
def test_compiled_layers_train_and_the_transformers_engine_still_generates(tmp_path):
    """``train.compile``: the decoder layers run compiled in the update and in the transformers engine's
    generation (KV cache, no grad) alike; the step trains."""
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    tr = make(
        tmp_path,
        "model.lora_r=4",
        "train.autocast=bf16",
        "train.lr=5e-2",
        "rollout.mode=multi_turn",
        "train.compile=true",
    )
    model = tr.policies[0].model
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    m = tr.train_step()
    assert counters["stats"]["unique_graphs"] > graphs
    assert math.isfinite(m["loss/policy"]) and m["train/episodes"] == 16
    assert any(not torch.equal(a, p) for a, p in zip(before, (p for p in model.parameters() if p.requires_grad)))


_HEAP_SCRIPT = r"""
import sys, torch
from rema.train.memory import update_heap

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

def freed_mb():
    temps = [torch.ones(4 * 2**18) for _ in range(8)]  # 8 x 4 MiB temporaries ...
    pin = torch.ones(1024)  # ... below a small live tensor, as in an update
    before = rss_mb()
    del temps
    return before - rss_mb()

big = torch.ones(30 * 2**18)  # 30 MiB, mapped; freeing it raises glibc's own threshold to 30 MiB
del big
if sys.argv[1] == "update":
    with update_heap(4, torch.device("cpu")):
        print(freed_mb())
    print(freed_mb())  # after the update: the threshold is back at glibc's ceiling
else:
    print(freed_mb())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux only")
def test_update_heap_returns_freed_temporaries_to_the_os():
    """With glibc's self-raising threshold, freed temporaries stay in the heap; in the update (``update_heap``,
    train.malloc_mmap_threshold_mb) they go back to the OS when freed, which keeps the update's peak down;
    after it, generation gets the heap back."""
    import subprocess
    import sys

    def freed_mb(mode):
        out = subprocess.run([sys.executable, "-c", _HEAP_SCRIPT, mode], capture_output=True, text=True, check=True)
        return [float(x) for x in out.stdout.split()]

    inside, after = freed_mb("update")
    assert inside > 28  # the 32 MiB of temporaries came back
    assert after < 4
    assert freed_mb("default")[0] < 4  # without it they stay with glibc


def test_rema_bounds_onednn_primitive_cache():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    code = "import os, rema; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "128"
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "7"  # the user's choice wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "7"


def test_bf16_weights_train_through_fp32_master_weights(tmp_path):
    """``model.dtype=bfloat16`` with full fine-tuning keeps fp32 master weights: at lr 1e-6 one step moves
    (nearly) every weight by AdamW's ~lr, as the fp32-loaded run does; applied to the bf16 weights themselves
    the same step would round away (bf16 resolves ~0.4% of a weight, the step is ~0.005%)."""
    moved, low = {}, None
    for dtype in ("float32", "bfloat16"):
        tr = make(
            tmp_path / dtype,
            f"model.dtype={dtype}",
            "train.lr=1e-6",
            "train.autocast=bf16",
            "rollout.mode=multi_turn",
            "train.seed=3",
        )
        params = list(tr.policies[0].model.parameters())
        assert {p.dtype for p in params} == {torch.float32}  # trained parameters are fp32 masters
        before = [p.detach().clone() for p in params]
        tr.train_step()
        moved[dtype] = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)])
        if dtype == "bfloat16":
            low = torch.cat([b.flatten() for b in before]).to(torch.bfloat16)  # exactly the loaded bf16 values
    for dtype, delta in moved.items():
        assert (delta != 0).float().mean() > 0.95, dtype
        assert delta.abs().median() == pytest.approx(1e-6, rel=0.2), dtype  # Adam's first step: ~lr per weight
    assert torch.nn.functional.cosine_similarity(moved["float32"], moved["bfloat16"], dim=0) > 0.5
    unchanged = ((low.float() + moved["bfloat16"]).to(torch.bfloat16) == low).float().mean()
    assert unchanged > 0.9  # plain bf16 AdamW: the update is lost (but for weights near 0)


def test_phase_timer_adds_up_repeated_phases():
    from rema.train.metrics import PhaseTimer

    timer = PhaseTimer()
    for name in ("rollout", "update", "update"):
        with timer.phase(name):
            sum(range(10_000))
    first = timer.seconds["update"]
    with timer.phase("update"):
        sum(range(10_000))
    m = timer.metrics()
    assert m["time/update"] > first > 0 and m["time/step"] >= m["time/rollout"] + m["time/update"]
    assert {"perf/peak_rss_gb/rollout", "perf/peak_rss_gb/update"} <= m.keys()
