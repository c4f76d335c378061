"""Data parallel: two CPU processes (gloo) give the same gradient as one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).parent / "helpers" / "ddp_step.py"
HELPERS = Path(__file__).parent / "helpers"


def _run(tmp_path: Path, procs: int, *args: str) -> dict:
    out = tmp_path / f"grads{procs}.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                     "--master_port", str(29500 + os.getpid() % 1000)]
    subprocess.run([*launcher, str(WORKER), str(out), str(tmp_path / f"run{procs}"), *args],
                   check=True, env=env, timeout=600)
    return torch.load(out)


@pytest.mark.parametrize("advantage,agg,ratio_level,strategy", [("grpo", "trajectory", "turn", "ddp"),
                                                                ("reinforce_pp", "token", "token", "ddp"),
                                                                ("grpo", "trajectory", "turn", "fsdp"),
                                                                ("reinforce_pp", "token", "token", "fsdp")])
def test_two_processes_match_one(tmp_path, advantage, agg, ratio_level, strategy):
    """The gradient of one step and the batch-wide metrics: two processes (each half the questions; under fsdp
    each half the parameters too) give what one process gives on the whole batch."""
    one = _run(tmp_path, 1, advantage, agg, ratio_level)
    two = _run(tmp_path, 2, advantage, agg, ratio_level, f"train.strategy={strategy}")
    assert one["rows"] == two["rows"]  # the same global batch, split across ranks
    assert all(g.abs().max() > 1e-6 for g in one["grads"])  # every parameter gets a real gradient
    for g1, g2 in zip(one["grads"], two["grads"]):
        assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-4)
    assert two["metrics"]["dist/param_shard_frac"] == pytest.approx(0.5 if strategy == "fsdp" else 1.0, abs=0.01)
    for key in ("train/acc", "train/reward/mta", "train/reward/ra", "train/episodes", "adv/reward_mean",
                "adv/adv_mean", "adv/adv_std"):  # REINFORCE++: the whitened advantages' moments, not the returns'
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-5, abs=1e-6), key
    if advantage == "reinforce_pp":  # whitened over the whole batch's tokens: mean 0 (the returns' is not)
        assert abs(two["metrics"]["adv/adv_mean"]) < 1e-5 < abs(two["metrics"]["adv/return_mean"])


def test_cold_start_two_processes_match_one(tmp_path):
    """SFT under data parallelism: each rank takes its share of a batch of dialogues (5 here, uneven), the loss
    is normalised by the global token count, and the summed gradient equals one process's."""
    import json

    def turns(a, b):
        return [{"agent": "mta", "text": f"Add {a} and {b}."}, {"agent": "ra", "text": f"{a} + {b} = {a + b}."},
                {"agent": "mta", "text": "Good. [FINISH]"}, {"agent": "ra", "text": f"\\boxed{{{a + b}}}" * (1 + a % 3)}]
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b), "turns": turns(a, b)}) + "\n"
                            for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9)]))
    runs = {}
    for procs in (1, 2):
        out = tmp_path / f"sft{procs}.pt"
        launcher = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                                        str(29600 + os.getpid() % 1000)] if procs > 1 else [])
        subprocess.run([*launcher, str(WORKER.parent / "ddp_sft.py"), str(out), str(tmp_path / f"run{procs}"), str(path)],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        runs[procs] = torch.load(out)
    assert runs[1]["rows"] == runs[2]["rows"] == 10
    assert any(g.abs().sum() > 0 for g in runs[1]["grads"])
    for g1, g2 in zip(runs[1]["grads"], runs[2]["grads"]):
        assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-4)


def _train(tmp_path: Path, name: str, procs: int, steps: int, strategy: str, resume: bool = False, *extra: str) -> Path:
    run = tmp_path / name
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
                                    str(29700 + os.getpid() % 1000)] if procs > 1 else [])
    subprocess.run([*launcher, str(WORKER.parent / "fsdp_train.py"), str(run), str(steps), strategy,
                    *(["resume"] if resume else []), *extra], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   timeout=600)
    return run


def _metrics(run: Path) -> list[dict]:
    import json

    drop = ("time/", "perf/", "sync/")
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(drop)}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_fsdp_two_processes_train_like_one_resume_exactly_and_export(tmp_path):
    """train.strategy=fsdp on two gloo processes: each holds half of the parameters, three steps of full
    fine-tuning (AdamW) end at the weights one process reaches (|Δw| <= 1e-5 + 1e-4 |w|), the same metrics,
    a run killed after its first step and resumed from the sharded checkpoint repeats the uninterrupted run
    exactly, and the export loads with transformers."""
    from transformers import AutoModelForCausalLM

    one = _train(tmp_path, "one", 1, 3, "ddp")
    two = _train(tmp_path, "two", 2, 3, "fsdp")
    m1, m2 = _metrics(one), _metrics(two)
    assert [m["dist/param_shard_frac"] for m in m2] == pytest.approx([0.5] * 3, abs=0.01)
    assert [m["dist/param_shard_frac"] for m in m1] == [1.0] * 3
    for a, b in zip(m1, m2):
        for key in ("train/acc", "train/reward/ra", "train/rows", "train/episodes", "adv/adv_mean", "adv/adv_std",
                    "loss/policy"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert (two / "checkpoints" / "step_000003" / "shards").is_dir()
    from rema.models import load_model

    w1 = AutoModelForCausalLM.from_pretrained(one / "final").state_dict()
    w2 = AutoModelForCausalLM.from_pretrained(two / "final").state_dict()
    start = load_model("tiny-random", seed=0)[0].state_dict()
    for key, value in w1.items():
        assert (value - start[key]).abs().max() > 1e-4, key  # every tensor trained
        assert torch.allclose(w2[key], value, atol=1e-5, rtol=1e-4), key

    cut = _train(tmp_path, "cut", 2, 1, "fsdp")
    _train(tmp_path, "cut", 2, 3, "fsdp", resume=True)
    assert _metrics(cut) == m2
    w3 = AutoModelForCausalLM.from_pretrained(cut / "final").state_dict()
    assert all(torch.equal(w3[k], w2[k]) for k in w2)

    from rema.runtime import export_checkpoint  # the shards of two processes, read by one without a group

    w4 = AutoModelForCausalLM.from_pretrained(export_checkpoint(two, 3)).state_dict()
    assert all(torch.equal(w4[k], w2[k]) for k in w2)



def test_fsdp_kl_reference_is_sharded_before_it_has_memory(tmp_path):
    """Full fine-tuning with a KL term under FSDP: the reference is built as a weightless (meta) copy, sharded
    like the model, and filled shard by shard: no process ever holds a whole copy; it equals the model it
    copies (the first step's KL term is 0) and each process holds half of it."""
    out = tmp_path / "ref.pt"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(29650 + os.getpid() % 1000), str(HELPERS / "fsdp_reference.py"), str(out), str(tmp_path / "run")],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    got = torch.load(out)
    assert got["seen"] == [["cpu"], ["meta"]]  # the model, then the reference's skeleton
    assert got["equal"] and got["frac"] == pytest.approx(0.5, abs=0.01)
    assert abs(got["kl"]) < 1e-6


def test_fsdp_lora_resumes_exactly_from_adapter_shards(tmp_path):
    """LoRA under FSDP: the sharded checkpoint holds the adapters and their optimizer state only (the frozen base
    comes from the model again), and a resumed run repeats the uninterrupted one."""
    lora = ("model.lora_r=4", "model.lora_alpha=8", "train.lr=1e-2")
    whole = _train(tmp_path, "whole", 2, 2, "fsdp", False, *lora)
    cut = _train(tmp_path, "cut", 2, 1, "fsdp", False, *lora)
    _train(tmp_path, "cut", 2, 2, "fsdp", True)
    assert _metrics(cut) == _metrics(whole)
    assert _metrics(whole)[-1]["loss/policy"] != 0.0


def test_an_accelerate_fsdp_config_shards_the_cli_run(tmp_path):
    """``accelerate launch --config_file configs/accelerate/fsdp2.yaml -m rema.cli train ...``: accelerate turns the
    file's FSDP section into environment variables for its processes (computed here by accelerate's own code;
    on GPUs it launches with them, on CPU ``--cpu`` drops them), and the CLI run they reach trains sharded."""
    import json

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    from rema.train.strategy import launcher_overrides

    root = Path(__file__).resolve().parents[1]
    args = launch_command_parser().parse_args(["--config_file", str(root / "configs/accelerate/fsdp2.yaml"),
                                               "--num_processes", "2", "-m", "rema.cli", "train"])
    env = {k: v for k, v in prepare_multi_gpu_env(_validate_launch_command(args)[0]).items() if "FSDP" in k}
    assert launcher_overrides(env) == ["train.strategy=fsdp", "model.gradient_checkpointing=true"]
    assert launcher_overrides({**env, "FSDP_OFFLOAD_PARAMS": "true"})[1] == "train.fsdp_cpu_offload=true"
    assert launcher_overrides({}) == []
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(29800 + os.getpid() % 1000), "-m", "rema.cli", "train", str(root / "configs/demo.yaml"),
                    "model.name=tiny-random", "rollout.engine=hf", "sft.cold_start=false", "train.steps=1",
                    "data.eval=null", "log.progress=false", "log.tensorboard=false", f"log.run_dir={run}"],
                   check=True, env={**os.environ, **env, "OMP_NUM_THREADS": "1"}, timeout=600)
    [record] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["dist/param_shard_frac"] == pytest.approx(0.5, abs=0.01)
    assert "strategy: fsdp" in (run / "config.yaml").read_text()  # saved, so --resume shards again


@pytest.mark.slow  # the embedded model, two vLLM engines
def test_vllm_one_engine_per_process_under_fsdp(tmp_path):
    """Two processes, each with its own vLLM engine inside the job's process group (``external_launcher``),
    training sharded: vLLM starts on placeholder weights and every sync streams the weights to it gathered
    from the shards one tensor at a time (no unsharded copy of the model is kept), and the post-sync check
    (vLLM's log-probs against the trainer's) passes on both ranks."""
    pytest.importorskip("vllm")
    import json

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(29900 + os.getpid() % 1000), "-m", "rema.cli", "train", str(root / "configs/demo.yaml"),
         "sft.cold_start=false", "train.steps=1", "train.questions_per_step=2", "rollout.samples_per_question=2",
         "data.eval=null", "rollout.engine=vllm", "rollout.vllm_enforce_eager=true", "rollout.vllm_kv_cache_gib=0.25",
         "train.strategy=fsdp", "log.progress=false", "log.tensorboard=false", f"log.run_dir={run}"],
        env={**os.environ, "REMA_ENGINE": "vllm"}, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "external_launcher executor" in " ".join(out.stderr.split())  # the console wraps long lines
    [record] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["dist/param_shard_frac"] == pytest.approx(0.5, abs=0.01)
    assert record["train/episodes"] == 4 and record["sync/sync_reload_s"] > 0 and "sync/gather_s" not in record
    assert record["sync/sync_check_max_abs_diff"] < 1.5 and record["check/sampler_logp_abs_diff"] < 0.1
    assert (run / "final" / "config.json").is_file()


@pytest.mark.slow  # two processes, one vLLM engine spanning both (tensor parallel)
def test_vllm_tensor_parallel_across_two_processes(tmp_path):
    """``rollout.vllm_tensor_parallel_size=2`` under FSDP on 2 CPU processes: one vLLM engine spans both
    (each holds half of every layer), the ranks bring different questions (3 over 2 ranks) and generate
    together; the updates move the weights, every sync streams the gathered shards into the engine and the
    post-sync check passes, the held-out eval runs, and the export loads with transformers."""
    pytest.importorskip("vllm")
    import json

    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(HELPERS))
    from tp_model import write_tp_model

    model_dir = write_tp_model(str(tmp_path / "model"))
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(29700 + os.getpid() % 100), str(HELPERS / "tp_train.py"), str(run), model_dir],
        env={**os.environ, "REMA_ENGINE": "vllm", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "tensor parallel over 2 processes" in out.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("train/episodes")]
    assert [r["train/episodes"] for r in steps] == [12, 12]  # 3 questions x 4 samples, over both ranks
    assert steps[-1]["sync/sync_check_trainer_moved"] > 0  # the update moved the weights; vLLM followed
    assert all(r["sync/sync_check_max_abs_diff"] < 0.1 and r["check/sampler_logp_abs_diff"] < 0.1 for r in steps)
    assert "eval/acc" in records[-1]
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    assert model.config.head_dim == 64
