"""rema export and rema eval --checkpoint: any checkpoint of a run as a transformers model (state.pt and FSDP
shards, full fine-tuning and LoRA merged, shared and separate weights)."""

from __future__ import annotations

import json

import torch
from test_train import make

from rema.cli import main
from rema.models import iter_merged_weights
from rema.runtime import export_checkpoint
from rema.train import Trainer

PROBE = torch.tensor([[60, 5, 17, 42, 99, 200, 7, 61]])
"""Token ids whose logits are compared (the tiny model's byte-level vocabulary)."""

BENCH = "synthetic:levels=1:n=3:seed=3"


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROBE).logits.float()


def _run(tmp_path, *overrides, keep: int = 10) -> tuple[Trainer, dict]:
    """A 3-step tiny run saving every step; returns it and each saved step's probe logits per policy."""
    tr = make(tmp_path, "train.steps=3", "train.save_every=1", f"train.keep_checkpoints={keep}", *overrides)
    seen: dict[int, dict[str, torch.Tensor]] = {}
    real_save = tr.save

    def save():
        seen[tr.step] = {p.name: _logits(p.model) for p in tr.policies}  # the trainer's weights at this step
        return real_save()

    tr.save = save
    tr.fit()
    return tr, seen


def test_a_mid_run_checkpoint_exports_the_trainers_weights(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tr, seen = _run(tmp_path)
    assert main(["export", str(tr.run_dir), "--step", "1"]) == 0
    out = tr.run_dir / "exports" / "step_000001"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(_logits(model), seen[1]["shared"])  # full fine-tuning: the same weights, bit for bit
    assert not torch.allclose(seen[1]["shared"], seen[3]["shared"])  # and not the final ones
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and len(tok) == model.config.vocab_size
    assert main(["export", str(tr.run_dir), "--step", "latest"]) == 0  # the run's end: equal to final/
    from safetensors.torch import load_file

    latest, final = (load_file(tr.run_dir / d / "model.safetensors") for d in ("exports/step_000003", "final"))
    assert latest.keys() == final.keys() and all(torch.equal(latest[k], final[k]) for k in final)


def test_lora_with_separate_weights_exports_the_merged_pair(tmp_path):
    from transformers import AutoModelForCausalLM

    tr, seen = _run(tmp_path, "model.lora_r=4", "model.lora_alpha=8", "train.shared_weights=false",
                    "train.switch_freq=1", "algo.ratio_level=token")
    out = export_checkpoint(tr.run_dir, 2, tmp_path / "pair")
    assert sorted(p.name for p in out.iterdir()) == ["mta", "ra"]
    for name in ("mta", "ra"):
        assert not (out / name / "adapter_config.json").exists()  # a plain model: LoRA merged in
        model = AutoModelForCausalLM.from_pretrained(out / name)
        assert not any("lora" in k for k in model.state_dict())
        assert torch.allclose(_logits(model), seen[2][name], atol=1e-5), name
    # step 2 updated the RA (MTA at step 1, RA at step 2): its merged weights moved away from step 1's
    assert not torch.allclose(seen[1]["ra"], seen[2]["ra"], atol=1e-5)


def test_eval_scores_a_checkpoint_through_a_cached_export(tmp_path):
    tr, _ = _run(tmp_path, "train.shared_weights=false", "algo.ratio_level=token")
    args = ["eval", "--run", str(tr.run_dir), "--checkpoint", "step_1", "--bench", BENCH, "--engine", "hf"]
    assert main([*args, "--out", str(tmp_path / "e1")]) == 0
    summary = json.loads((tmp_path / "e1" / "summary.json").read_text())
    assert summary["benchmarks"]["synthetic_levels_1_n_3_seed_3"]["questions"] == 3
    fingerprint = json.loads((tmp_path / "e1" / "eval.json").read_text())["fingerprint"]
    export = tr.run_dir / "exports" / "step_000001"
    assert (fingerprint["mta_model"], fingerprint["ra_model"]) == (str(export / "mta"), str(export / "ra"))
    stamp = (export / "ra" / "REMA_COMPLETE").stat().st_mtime_ns
    assert main([*args, "--out", str(tmp_path / "e2")]) == 0  # a second eval reuses the export
    assert (export / "ra" / "REMA_COMPLETE").stat().st_mtime_ns == stamp


def test_a_missing_step_lists_the_available_ones(tmp_path, capsys):
    tr, _ = _run(tmp_path, "train.health.action=warn", keep=2)  # (a guard that rolls back keeps more)
    capsys.readouterr()
    assert main(["export", str(tr.run_dir), "--step", "1"]) == 2
    assert "no checkpoint of step 1; it has: step_000002, step_000003, final" in capsys.readouterr().err
    for bad in ("step_1", "first"):
        assert main(["eval", "--run", str(tr.run_dir), "--checkpoint", bad, "--bench", BENCH]) == 2
        assert "step_000002, step_000003, final" in capsys.readouterr().err  # rema's one-line errors: stderr


def test_fsdp_shards_export_without_a_process_group(tmp_path):
    """A sharded checkpoint (torch.distributed.checkpoint, train.strategy=fsdp; one process here) is read without
    a process group; LoRA merged; an agent frozen by train.update_agents has its weights there too."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        tr = make(tmp_path, "train.steps=3", "train.save_every=1", "train.keep_checkpoints=10", "train.strategy=fsdp",
                  "model.lora_r=4", "train.shared_weights=false", "train.update_agents=ra", "algo.ratio_level=token")
        assert tr.strategy.sharded
        served: dict[int, dict] = {}
        real_save = tr.save

        def save():
            served[tr.step] = {p.name: {k: v.clone() for k, v in iter_merged_weights(p.served)} for p in tr.policies}
            return real_save()

        tr.save = save
        tr.fit(max_steps=2)
        tr.close()
    finally:
        dist.destroy_process_group()
    assert (tr.run_dir / "checkpoints" / "step_000001" / "shards").is_dir()
    from safetensors.torch import load_file

    out = export_checkpoint(tr.run_dir, 1)
    for name in ("mta", "ra"):
        got = load_file(out / name / "model.safetensors")
        want = {k: v for k, v in served[1][name].items() if k in got}
        assert len(want) == len(got) >= len(served[1][name]) - 1  # the tied LM head is saved once
        assert all(torch.equal(got[k], want[k]) for k in got), name
    assert any(not torch.equal(served[1]["ra"][k], served[2]["ra"][k]) for k in served[1]["ra"])
    assert all(torch.equal(served[1]["mta"][k], served[2]["mta"][k]) for k in served[1]["mta"])
