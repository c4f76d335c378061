"""docs/extending.md's worked examples, registered from outside the package as a user would (in this module),
each trained for one step on the tiny model through ``rema train``'s own front door (``rema.cli.main``)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch

from rema.algos import ADVANTAGE_ESTIMATORS
from rema.cli import main
from rema.config import ConfigError, load_config
from rema.prompts import PROMPT_SETS
from rema.rewards.tasks import TASKS
from rema.rewards.terms import TERMS

CALLS = {"median_baseline": 0, "truncation": 0, "word": 0}  # how often training called each extension


def register_examples():
    """The three worked examples of docs/extending.md, registered as a user's module registers them (the doc shows
    this body at module level). A function here only so that the registrations can be undone after this module's
    tests: other test modules check the built-in registries."""
    # example: a new advantage estimator
    import torch

    from rema.algos import broadcast_to_tokens, register_advantage_estimator

    @register_advantage_estimator("median_baseline")
    @torch.no_grad()
    def median_baseline(
        rewards, group_ids, mask, turn_ids, *, eps=1e-6, gamma=1.0, kl=None, kl_coef=0.0, all_reduce=None
    ):
        """A = R - the median reward of the row's group (a baseline one lucky sample cannot move)."""
        if gamma != 1.0 or kl_coef != 0.0:
            raise ValueError("median_baseline is episode-level: use algo.gamma=1 and algo.kl_in_reward=false")
        baseline = torch.zeros_like(rewards)  # (N,)
        for g in group_ids.unique():
            members = group_ids == g
            baseline[members] = rewards[members].median()
        adv = broadcast_to_tokens(rewards - baseline, mask)  # (N, T), 0 on untrained tokens
        trained = mask.bool()
        return adv, {"adv_mean": adv[trained].mean() if trained.any() else adv.new_zeros(())}

    # example: a new reward term
    from rema.rewards.terms import register_term

    @register_term("truncation")
    def truncation(ep, agent, *, penalty):
        """``penalty`` times the share of ``agent``'s messages that were cut at ``rollout.max_tokens_per_turn``."""
        turns = ep.turns_of(agent)
        share = sum(t.truncated for t in turns) / len(turns) if turns else 0.0
        return penalty * share, {"truncated_share": share, "truncation": penalty * share}

    # example: a new task
    import re

    from rema.prompts import PromptSet, register_prompt_set
    from rema.rewards.tasks import register_task

    register_prompt_set(
        PromptSet(
            "rema-word",
            mta="You are the meta-thinker in a team of two. Plan how to find the one-word answer to the question: "
            "what is asked, what to recall, how to check it. Never give the answer yourself.",
            ra="You are the solver in a team of two. Follow the meta-thinker's plan, think briefly, then end with "
            "a line 'Answer: <one word>'.",
        )
    )

    answer_line = re.compile(r"answer:\s*([A-Za-z][A-Za-z-]*)", re.IGNORECASE)

    @register_task("word")
    def grade_word(responses, answers, cfg):
        """1 when the last 'Answer: <word>' line names the reference word (case-insensitive), else 0."""
        graded = []
        for text, gold in zip(responses, answers):
            found = answer_line.findall(text)
            guess = found[-1] if found else None
            correct = float(guess is not None and guess.lower() == gold.strip().lower())
            graded.append((correct, {"correct": correct, "answer_found": float(guess is not None)}, guess))
        return graded

    # end of the examples
    return median_baseline, truncation, grade_word


def _count(name, fn):
    """Wrap a registered extension so the tests can see that training called it."""

    def counted(*args, **kwargs):
        CALLS[name] += 1
        return fn(*args, **kwargs)

    return counted


REGISTRIES = {"median_baseline": ADVANTAGE_ESTIMATORS, "truncation": TERMS, "word": TASKS, "rema-word": PROMPT_SETS}


@pytest.fixture(scope="module", autouse=True)
def examples():
    """Register the examples for this module's tests, counting their calls; unregister them afterwards."""
    fns = dict(zip(("median_baseline", "truncation", "word"), register_examples()))
    for name, fn in fns.items():
        REGISTRIES[name][name] = _count(name, fn)
    yield fns
    for name, registry in REGISTRIES.items():
        del registry[name]


BASE = """\
model: {name: tiny-random}
rollout: {mode: single_turn, max_tokens_per_turn: 8, samples_per_question: 4, engine: hf}
train: {steps: 1, questions_per_step: 2, lr: 1.0e-3, eval_every: 0, save_every: 0, autocast: "off"}
data: {train: "synthetic:levels=1:n=20:seed=0:word=0", eval: null}
log: {progress: false, tensorboard: false}
"""

CAPITALS = [
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Chile", "Santiago"),
    ("Norway", "Oslo"),
]


def rema_train(tmp_path: Path, *overrides: str) -> int:
    """``rema train BASE overrides...`` in-process, the run in ``tmp_path/run``; returns the exit code."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "base.yaml"
    config.write_text(BASE)
    return main(["train", str(config), f"log.run_dir={tmp_path / 'run'}", *overrides])


def train_one_step(tmp_path: Path, *overrides: str) -> dict:
    """``rema train BASE overrides...`` in-process; returns the step's metrics record."""
    assert rema_train(tmp_path, *overrides) == 0
    run = tmp_path / "run"
    [record] = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(line).get("step") == 1
    ]
    return record


def test_a_registered_advantage_estimator_trains_a_step(tmp_path):
    before = CALLS["median_baseline"]
    record = train_one_step(tmp_path, "algo.advantage=median_baseline")
    assert CALLS["median_baseline"] == before + 1
    assert "adv/adv_mean" in record and record["stats/optimizer_steps"] == 1
    assert load_config(None, ["algo.advantage=median_baseline"]).algo.advantage == "median_baseline"


def test_the_median_baseline_is_what_it_says(examples):
    rewards = torch.tensor([1.0, 0.0, 0.0, 5.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    mask = torch.ones(6, 2)
    adv, _ = examples["median_baseline"](rewards, groups, mask, torch.zeros(6, 2, dtype=torch.long))
    assert adv[:, 0].tolist() == [1.0, 0.0, 0.0, 4.0, 0.0, 0.0]


def test_a_registered_reward_term_is_added_to_each_agents_reward(tmp_path, capsys):
    before = CALLS["truncation"]
    record = train_one_step(tmp_path, "reward.extra_terms={truncation: -0.5}")
    assert CALLS["truncation"] > before
    for agent in ("mta", "ra"):  # 8 tokens per message: the tiny model's messages are cut
        share = record[f"train/reward_parts/{agent}/truncated_share"]
        assert share > 0 and record[f"train/reward_parts/{agent}/truncation"] == pytest.approx(-0.5 * share)
    assert rema_train(tmp_path / "typo", "reward.extra_terms={truncatoin: -0.5}") == 2
    assert "error: reward.extra_terms: no reward term 'truncatoin'" in capsys.readouterr().err


def test_a_registered_task_trains_a_step_with_its_prompts_data_and_grader(tmp_path, examples):
    data = tmp_path / "capitals.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"What is the capital of {country}?", "answer": city}) + "\n"
            for country, city in CAPITALS
        )
    )
    before = CALLS["word"]
    record = train_one_step(tmp_path, "rollout.task=word", "rollout.prompts=rema-word", f"data.train={data}")
    assert CALLS["word"] == before + 1
    assert "train/reward_parts/ra/answer_found" in record and record["stats/optimizer_steps"] == 1
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["prompts"]["name"] == "rema-word" and meta["prompts"]["mta"].startswith("You are the meta-thinker")
    grade_word = examples["word"]
    assert grade_word(["so... Answer: paris", "Answer: Rome. No wait, Answer: Milan"], ["Paris", "Rome"], None) == [
        (1.0, {"correct": 1.0, "answer_found": 1.0}, "paris"),
        (0.0, {"correct": 0.0, "answer_found": 1.0}, "Milan"),
    ]


def test_unregistered_names_fail_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="algo.advantage='nope' is not valid"):
        load_config(None, ["algo.advantage=nope"])
    with pytest.raises(ConfigError, match="rollout.prompts='nope' is not a registered prompt set"):
        load_config(None, ["rollout.prompts=nope"])
    with pytest.raises(ConfigError, match="has an MTA prompt but rollout.method=vrp"):
        load_config(None, ["rollout.prompts=rema-word", "rollout.method=vrp"])
    with pytest.raises(ConfigError, match="rollout.task='nope' is not a registered task"):
        from rema.train import Trainer

        Trainer(load_config(None, ["model.name=tiny-random", "rollout.task=nope", "data.eval=null"]), tmp_path / "run")


def test_the_docs_examples_are_the_code_tested_here():
    """Every Python block of docs/extending.md that starts with ``# example:`` is, verbatim, code this module
    registers (``register_examples``, whose body the doc shows at module level)."""
    import inspect

    def normalised(code: str) -> str:  # blank lines as a module has them vs a function body
        return re.sub(r"\n{3,}", "\n\n", code.strip())

    doc = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    body = textwrap.dedent(inspect.getsource(register_examples).split('"""', 2)[2].split("\n", 1)[1])
    examples = [b for b in re.findall(r"```python\n(.*?)```", doc, re.DOTALL) if b.startswith("# example:")]
    assert len(examples) == 3
    for block in examples:
        assert normalised(block) in normalised(body), block[:80]
