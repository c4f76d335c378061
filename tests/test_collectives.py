"""rema's own collectives are right on NCCL, proven on CPU (rema.train.distributed).

NCCL takes tensors on the GPU only. These tests emulate that on CPU (helpers/accelerator.py): the ``meta``
device plays the GPU, and a collective given a tensor elsewhere raises NCCL's error. A process group of two
comes from torch's fake backend (this process is rank 0; the other rank's contributions are not simulated:
the gloo tests in test_distributed.py check the numbers), so the tests run in one process, in seconds.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from helpers.accelerator import ACCELERATOR, EmulatedAccelerator
from rema.config import load_config
from rema.models import load_model
from rema.train.batch import Rows
from rema.train.distributed import Dist, process_group_backend
from rema.train.sft import sft_train
from rema.train.strategy import Strategy
from rema.train.update import Forward, update_policy


@pytest.fixture
def two_ranks(monkeypatch):
    """A process group of two (torch's fake backend, this process rank 0) and ``WORLD_SIZE=2``."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    monkeypatch.setenv("WORLD_SIZE", "2")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    yield
    dist.destroy_process_group()


def test_the_process_group_carries_cuda_tensors_on_nccl_and_cpu_ones_on_gloo(monkeypatch):
    """On a GPU the group is ``cuda:nccl,cpu:gloo`` with the configured timeout, on this process's GPU."""
    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.update(kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.update(set_device=d))
    d = Dist(torch.device("cuda", 1), timeout_min=90)
    assert calls == {"backend": "cuda:nccl,cpu:gloo", "timeout": timedelta(minutes=90),
                     "set_device": torch.device("cuda", 1)}
    assert d.rank == 1 and d.device == torch.device("cuda", 1)
    assert process_group_backend("cpu") == "gloo"


def test_dist_sends_every_tensor_through_the_communication_device(two_ranks):
    """Counts built on the CPU, gradients wherever they are: each collective gets them on the accelerator,
    and the caller gets the result back where its tensor was."""
    with EmulatedAccelerator() as acc:
        d = Dist(ACCELERATOR)
        assert d.enabled
        assert d.sum_value(3) == 3.0 and d.all_max(2.5) == 2.5  # the fake peer adds nothing
        t = torch.tensor([1.0, 2.0])
        assert d.sum_(t) is t and t.tolist() == [1.0, 2.0]
        p = torch.nn.Parameter(torch.zeros(3))
        p.grad = torch.ones(3)
        d.sum_grads_([p])
        assert p.grad.tolist() == [1.0, 1.0, 1.0] and p.grad.device.type == "cpu"
        with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
            dist.all_reduce(torch.tensor(1.0))  # the emulation refuses what NCCL refuses
    assert acc.checked == 4 and acc.rejected == 1


def _rows(n: int = 4) -> Rows:
    """Hand-made rows of the tiny model: 2 groups × 2 samples, prompts of 3 tokens, answers of 2-3."""
    ids = [[5, 6, 7, 40 + i, 41 + i, 42][:5 + i % 2] for i in range(n)]
    mask = [[0, 0, 0] + [1] * (len(x) - 3) for x in ids]
    return Rows(input_ids=ids, mask=mask, sampler_logp=[[0.0] * len(x) for x in ids], turn_ids=[[0] * len(x) for x in ids],
                agent=["ra"] * n, group=[(f"q{i // 2}", "ra") for i in range(n)], reward=[float(i % 2) for i in range(n)],
                episode_index=list(range(n)))


@pytest.mark.parametrize("advantage", ["grpo", "reinforce_pp"])
def test_the_update_and_the_cold_start_collectives_run_on_an_nccl_like_group(two_ranks, advantage):
    """The update (unit counts, the non-finite flag, the row count, REINFORCE++'s batch moments, the gradient
    sum) and the SFT step (token count, loss) pass only accelerator tensors to collectives."""
    cfg = load_config(None, ["model.name=tiny-random", f"algo.advantage={advantage}", "algo.agg=token",
                             "algo.ratio_level=token", "train.micro_batch_tokens=64"])
    model, tok = load_model("tiny-random")
    with EmulatedAccelerator() as acc:
        strategy = Strategy(Dist(ACCELERATOR))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        out = update_policy(model, opt, _rows(), algo=cfg.algo, train=cfg.train, fwd=Forward(torch.device("cpu")),
                            pad_id=tok.pad_token_id, step=0, strategy=strategy)
        sft = sft_train(model, _rows(), opt, epochs=1, batch_dialogues=4, micro_batch_tokens=64,
                        pad_id=tok.pad_token_id, device=torch.device("cpu"), strategy=strategy)
    assert out["stats/optimizer_steps"] == 1.0 and out["train/rows"] == 4.0
    assert sft["sft/steps"] == 1.0 and acc.rejected == 0 and acc.checked >= 6
