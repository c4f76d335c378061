"""What a first run on GPUs goes through, proven on CPU: vLLM's start condition and sleep-mode allocator
mocked as vLLM 0.32 implements them, a fake engine that discards its weights in level-2 sleep, the post-sync
check's tolerance and device, tensor-parallel arguments, and model loading straight onto the device.

:class:`FakeLLM` replaces ``vllm.LLM`` inside :class:`rema.rollout.vllm_engine.VLLMEngine` and keeps a ledger of
one GPU's memory: it refuses to start unless ``gpu_memory_utilization × total`` is free
(``vllm/v1/worker/utils.py``, ``request_memory``), takes that much, and lets one engine per process use
sleep mode (``vllm/v1/worker/gpu_worker.py``: "CuMem allocator can only be used for one instance per process").
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rema.config import load_config
from rema.prompts import PromptSet
from rema.rollout.engine import Completion
from rema.rollout.hf_engine import HFEngine
from rema.rollout.vllm_memory import GIB, VLLMMemoryError, check_start, engine_shares, kv_floor_error

SHORT_PROMPTS = PromptSet("test", "plan", "solve")


class Ledger:
    """One GPU's memory: ``total`` bytes, ``used`` by the trainer and the engines so far."""

    def __init__(self, total_gib: float, used_gib: float):
        self.total, self.used = total_gib * GIB, used_gib * GIB

    def memory(self, device=None) -> tuple[float, float]:
        return self.total - self.used, self.total


class InprocClient(SimpleNamespace):
    """vLLM's in-process engine core, by name (VLLMEngine reads ``type(...).__name__``)."""

    def shutdown(self):
        pass


class FakeLLM:
    """``vllm.LLM`` as far as starting, sleeping and weight reloads go (see the module docstring)."""

    ledger: Ledger
    cumem_usage = 0  # bytes in vLLM's sleep-mode allocator of this process
    started: list = []

    def __init__(self, **kw):
        total = self.ledger.total
        want = math.ceil(kw["gpu_memory_utilization"] * total)
        free = total - self.ledger.used
        if free < want:
            raise ValueError(
                f"Free memory on device ({free / GIB:.1f}/{total / GIB:.1f} GiB) on startup is less "
                f"than desired GPU memory utilization ({kw['gpu_memory_utilization']})"
            )
        if kw.get("enable_sleep_mode"):
            assert FakeLLM.cumem_usage == 0, "CuMem allocator can only be used for one instance per process."
            FakeLLM.cumem_usage += want
        self.ledger.used += want
        self.kw, self.held, self.asleep = kw, want, False
        self.weights = "placeholder" if kw.get("load_format") == "dummy" else "written"
        self.llm_engine = SimpleNamespace(engine_core=InprocClient())
        FakeLLM.started.append(self)

    def sleep(self, level: int):
        self.ledger.used -= self.held
        self.asleep = True
        if level == 2:
            self.weights = None  # discarded

    def wake_up(self):
        self.ledger.used += self.held
        self.asleep = False

    def collective_rpc(self, name, kwargs=None):
        assert name == "rema_reload_weights"
        for _ in kwargs.get("tensors", ()):
            pass
        self.weights = "synced"
        return [[]]

    def reset_prefix_cache(self) -> bool:
        return True

    def generate(self, prompts, params, use_tqdm=False):
        assert self.weights is not None and not self.asleep, "generating without weights"
        out = SimpleNamespace(
            token_ids=[1], logprobs=[{1: SimpleNamespace(logprob=-0.5)}], finish_reason="length", stop_reason=None
        )
        return [SimpleNamespace(outputs=[out]) for _ in prompts]


@pytest.fixture
def gpu(monkeypatch):
    """vLLM on an emulated 80 GiB GPU whose trainer already holds 30 GiB; returns the ledger."""
    pytest.importorskip("vllm")
    import rema.rollout.factory as factory
    import rema.rollout.vllm_engine as vllm_engine
    import rema.rollout.vllm_worker as vllm_worker

    ledger = Ledger(80, 30)
    FakeLLM.ledger, FakeLLM.cumem_usage, FakeLLM.started = ledger, 0, []
    monkeypatch.setattr(vllm_engine, "LLM", FakeLLM)
    monkeypatch.setattr(vllm_engine, "_is_cpu_platform", lambda: False)
    monkeypatch.setattr(vllm_engine, "_sleep_mode_available", lambda: True)
    monkeypatch.setattr(vllm_engine, "_current_cuda_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(vllm_engine, "device_memory", ledger.memory)
    monkeypatch.setattr(factory, "device_memory", ledger.memory)
    monkeypatch.setattr(vllm_engine.VLLMEngine, "check_weights", lambda self, model, *a, **k: {})
    monkeypatch.setattr(vllm_worker, "_sleeper", None)
    return ledger


def _policies(tmp_path, *overrides):
    from rema.train.policy import build_policies

    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.engine=vllm",
            "rollout.vllm_enforce_eager=true",
            "train.shared_weights=false",
            f"log.run_dir={tmp_path}",
            *overrides,
        ],
    )
    return build_policies(cfg, ("mta", "ra"), torch.device("cpu"), bf16=False)


def test_separate_weights_split_vllms_share_so_both_engines_start(gpu, tmp_path):
    """Two engines in one process: each asks for its weights plus half of what the configured share leaves,
    so the second still finds its share free (with 0.5 each it would not: 80 - 30 - 40 < 40 GiB)."""
    policies = _policies(tmp_path, "rollout.vllm_gpu_memory_utilization=0.5")
    asked = [llm.kw["gpu_memory_utilization"] for llm in FakeLLM.started]
    assert len(asked) == 2 and sum(asked) == pytest.approx(0.5) and asked[0] == pytest.approx(asked[1])
    assert gpu.used == pytest.approx((30 + 40) * GIB, rel=1e-6)
    for p in policies:
        p.engine.close()


def test_a_share_that_cannot_start_fails_naming_the_key_before_vllm_starts(gpu, tmp_path):
    with pytest.raises(VLLMMemoryError, match="rollout.vllm_gpu_memory_utilization"):  # 56 GiB asked, 50 free
        _policies(tmp_path, "train.shared_weights=true", "rollout.vllm_gpu_memory_utilization=0.7")
    assert FakeLLM.started == []


def test_only_one_engine_per_process_uses_sleep_mode(gpu, tmp_path):
    """vLLM's sleep-mode allocator allows one instance per process: the MTA's engine sleeps, the RA's stays
    awake (warned), and both start."""
    with pytest.warns(UserWarning, match="one engine per process"):
        policies = _policies(tmp_path, "rollout.vllm_sleep=1")
    assert [p.engine.sleep_level for p in policies] == [1, 0]
    assert [bool(llm.kw.get("enable_sleep_mode")) for llm in FakeLLM.started] == [True, False]
    for p in policies:
        p.engine.close()


def test_level_2_sleep_leaves_the_engine_unable_to_generate_until_it_is_synced(gpu, tmp_path):
    from rema.rollout.engine import SamplingParams
    from rema.rollout.vllm_engine import WeightSyncError

    [pol] = _policies(tmp_path, "train.shared_weights=true", "rollout.vllm_sleep=2")
    engine, params = pol.engine, [SamplingParams(max_tokens=1)]
    assert engine.generate([[1, 2]], params)[0].token_ids == [1]
    engine.release_memory()
    assert engine.needs_sync and FakeLLM.started[0].weights is None
    with pytest.raises(WeightSyncError, match="level 2"):
        engine.generate([[1, 2]], params)
    engine.sync_weights(pol.model)
    assert not engine.needs_sync and engine.generate([[1, 2]], params)[0].token_ids == [1]
    engine.close()


def test_tensor_parallel_engines_run_without_vllms_custom_all_reduce(gpu):
    from rema.models import load_model
    from rema.rollout.vllm_engine import VLLMEngine

    model, tok = load_model("tiny-random")
    engine = VLLMEngine(model, tok, enforce_eager=True, tensor_parallel_size=2)
    assert FakeLLM.started[0].kw["disable_custom_all_reduce"] is True
    engine.close()


def test_the_sync_check_tolerance_follows_the_trainers_forward_dtype(gpu):
    """vLLM in fp32 beside a trainer whose forward runs in bf16 (FSDP's mixed precision on CUDA) is checked at
    bf16's tolerance: at fp32's a correct sync fails at the engine's start."""
    from rema.models import load_model
    from rema.rollout.vllm_engine import VLLMEngine, sync_tolerance_for
    from rema.train.distributed import Dist
    from rema.train.strategy import FSDP

    assert FSDP(Dist(), torch.device("cuda"), bf16=True).forward_dtype == "bfloat16"
    assert FSDP(Dist(), torch.device("cpu"), bf16=True).forward_dtype is None  # autocast over fp32 shards
    model, tok = load_model("tiny-random")
    engine = VLLMEngine(model, tok, dtype="float32", enforce_eager=True, trainer_dtype="bfloat16")
    assert (engine.sync_tolerance, engine.sync_mean_tolerance) == sync_tolerance_for("bfloat16") == (3.0, 0.1)
    assert sync_tolerance_for("float32") == (1e-3, 1e-4)
    engine.close()


class ForgetfulEngine(HFEngine):
    """A transformers engine that sleeps like vLLM at level 2: after ``release_memory`` it has no weights and
    refuses to generate until synced."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lost = False
        self.syncs = 0

    @property
    def needs_sync(self) -> bool:
        return self.lost

    def release_memory(self) -> dict:
        self.lost = True
        return {}

    def sync_weights(self, model) -> dict:
        self.lost, self.syncs = False, self.syncs + 1
        return super().sync_weights(model)

    def generate(self, prompts, params) -> list[Completion]:
        assert not self.lost, "generating from discarded weights"
        return super().generate(prompts, params)


@pytest.mark.parametrize("freeze", ["train.update_agents=ra", "train.switch_freq=1"])
def test_a_frozen_or_inactive_agents_engine_is_given_its_weights_back_after_level_2_sleep(tmp_path, freeze):
    """Separate weights: only the updated agent's engine is synced after the update; the other one (frozen by
    train.update_agents, or inactive this step) is re-synced because its sleep discarded its weights."""
    from rema.train import Trainer

    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=single_turn",
            "rollout.max_tokens_per_turn=4",
            "rollout.samples_per_question=2",
            "train.questions_per_step=2",
            "train.steps=2",
            "train.shared_weights=false",
            "data.train=synthetic:levels=1:n=8:seed=0:word=0",
            "data.eval=null",
            "train.eval_every=0",
            "reward.mask_unfinished=false",
            f"log.run_dir={tmp_path / 'run'}",
            "log.progress=false",
            "log.tensorboard=false",
            "train.save_every=0",
            "train.autocast=off",
            freeze,
        ],
    )
    tr = Trainer(
        cfg,
        correctness_fn=lambda ep: 0.5,
        prompts=SHORT_PROMPTS,
        engine_factory=lambda model, tok, seed: ForgetfulEngine(model, tok, seed=seed),
    )
    metrics = []
    try:
        for _ in range(2):
            metrics.append(tr.train_step())
            tr.step += 1
    finally:
        tr.close()
    assert all(p.engine.syncs == 2 for p in tr.policies)  # each engine synced once per step
    resynced = {k.split("/")[1] for m in metrics for k in m if k.startswith("resync/")}
    assert resynced == ({"mta"} if "update_agents" in freeze else {"mta", "ra"})


def test_the_sync_check_ignores_gaps_among_improbable_tokens():
    """log-probs below the floor (-5) are compared as the floor: 16-bit noise on a token of log-prob -25 is not a
    sync fault, a probable token made improbable is."""
    from rema.rollout.sync_check import SYNC_LOGP_FLOOR, logprob_gap

    assert SYNC_LOGP_FLOOR == -5.0
    served, trainer = [[-0.5, -25.0, -7.0], [-1.0]], [[-1.0, -21.6, -4.0], [-1.0]]
    # gaps: 0.5, 0 (both below the floor), 1 (-5 vs -4), 0
    assert logprob_gap(served, trainer) == (1.0, pytest.approx(1.5 / 4))
    assert logprob_gap([[-0.1]], [[-9.0]]) == (pytest.approx(4.9), pytest.approx(4.9))


def test_engine_shares_and_the_start_condition():
    shares = engine_shares(0.5, [16 * GIB, 4 * GIB], 80 * GIB)
    assert sum(shares) == pytest.approx(0.5) and shares[0] - shares[1] == pytest.approx(12 / 80)
    with pytest.raises(VLLMMemoryError, match="less than its 2 engines' weights"):
        engine_shares(0.2, [16 * GIB, 16 * GIB], 80 * GIB)
    check_start(40 * GIB, 80 * GIB, 0.5)
    with pytest.raises(VLLMMemoryError, match="39.9 GiB are free"):
        check_start(39.9 * GIB, 80 * GIB, 0.5)
    assert kv_floor_error(0, max_model_len=4096, per_token=1) == "No available memory for the cache blocks"
    assert "max seq len (4096)" in kv_floor_error(GIB, max_model_len=4096, per_token=2**19)
    assert kv_floor_error(3 * GIB, max_model_len=4096, per_token=2**19) is None


def test_sharded_parameters_compute_on_their_meshs_device(monkeypatch):
    """Under FSDP's CPU offload a parameter's shard sits in host memory while the forward runs on the GPU:
    the post-sync check computes where the forward does."""
    from rema.models import compute_device

    monkeypatch.setattr(torch.accelerator, "current_device_index", lambda: 3)
    offloaded = SimpleNamespace(device=torch.device("cpu"), device_mesh=SimpleNamespace(device_type="cuda"))
    assert compute_device(SimpleNamespace(parameters=lambda: iter([offloaded]))) == torch.device("cuda", 3)
    plain = torch.nn.Linear(2, 2)
    assert compute_device(plain) == torch.device("cpu")


def test_a_model_is_read_straight_onto_its_accelerator(monkeypatch, tmp_path):
    """On a GPU the checkpoint's tensors go to the device as they are read (device_map), not into a whole
    model in host memory first; on CPU loading is unchanged."""
    import transformers

    from rema.models import load_model

    calls = []

    class Loaded(torch.nn.Module):
        def to(self, *a, **k):
            calls.append(("to", a))
            return self

    def from_pretrained(path, **kw):
        calls.append(("from_pretrained", kw))
        return Loaded()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    load_model("org/model", dtype="bfloat16", device="cuda:1", tokenizer=object())
    assert calls[0] == ("from_pretrained", {"dtype": torch.bfloat16, "device_map": {"": torch.device("cuda", 1)}})
    calls.clear()
    load_model("org/model", device="cpu", tokenizer=object())
    assert calls[0] == ("from_pretrained", {"dtype": torch.float32})
