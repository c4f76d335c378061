"""Tests for rema.data: loaders, field mapping, answer extraction, synthetic problems, registry, sampler.

All fast (no network): small files are written to tmp_path, the Hub path is exercised by replacing
`datasets.load_dataset`, and the shared benchmark files are used when they are present beside the repo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rema.data import (
    BENCHMARKS,
    LEVELS,
    DataError,
    Problem,
    ProblemSampler,
    extract_boxed,
    gsm8k_final_answer,
    load_benchmark,
    load_problems,
    normalize_answer_value,
    parse_level,
    resolve_dataset,
    stratified_split,
    synthetic_problems,
    synthetic_split,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --- answer extraction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{5}$.", "5"),
        (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"first \boxed{1} then \boxed{\sqrt{\frac{a}{b}}}", r"\sqrt{\frac{a}{b}}"),  # last box wins
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"answer is $\boxed 2$.", "2"),  # brace-less form used by a few MATH solutions
        (r"\fbox{7}", "7"),
        (r"\boxed{}", ""),
        (r"no box here", None),
        (r"\boxed{unclosed", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
        ("so 1,080 in all\n#### 1,080", "1080"),
        ("#### 1,000,000 ", "1000000"),
        ("#### -3", "-3"),
        ("no marker", None),
    ],
)
def test_gsm8k_final_answer(text: str, expected: str | None) -> None:
    assert gsm8k_final_answer(text) == expected


def test_normalize_answer_value_and_parse_level() -> None:
    assert normalize_answer_value(27.0) == "27"
    assert normalize_answer_value(2.5) == "2.5"
    assert normalize_answer_value(["$\\frac{1}{2}$"]) == "\\frac{1}{2}"  # OlympiadBench final_answer list
    assert normalize_answer_value(["1", "2"]) == "1, 2"
    assert normalize_answer_value("x\n#### 3,500") == "3500"
    assert normalize_answer_value(" \\boxed{4} ", mode="raw") == "\\boxed{4}"
    with pytest.raises(DataError, match="unknown answer_format"):
        normalize_answer_value("1", mode="nope")
    assert [parse_level(v) for v in ("Level 3", 4, "5", "Level ?", None, 2.0)] == [3, 4, 5, None, None, 2]


def test_problem_record_is_frozen_and_copies_meta() -> None:
    meta = {"level": 2}
    p = Problem(id="x", question="What is 1 + 1?", answer="2", meta=meta)
    meta["level"] = 99
    assert p.level == 2  # the caller's dict is not aliased
    with pytest.raises(AttributeError):
        p.answer = "3"  # type: ignore[misc]
    assert Problem.from_dict(p.to_dict()) == p
    hash(p)  # usable as a dict key despite the dict-valued meta
    with pytest.raises(DataError, match="non-empty"):
        Problem(id="x", question="  ", answer="1")
    with pytest.raises(DataError, match="'A' or 'B'"):
        Problem(id="j", question="q", answer="C", prompt="q", response_a="a", response_b="b", label="C")


# --- file formats and field mapping ---------------------------------------------------------------------


MATH_ROWS = [
    {"problem": "What is $1+1$?", "solution": "Clearly $\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
    {
        "problem": "Simplify $\\frac{2}{4}$.",
        "solution": "It is $\\boxed{\\frac{1}{2}}$.",
        "level": "Level 3",
        "type": "Prealgebra",
    },
    {"problem": "Odd one.", "solution": "$\\boxed{5}$", "level": "Level ?", "type": "Algebra"},
]


def test_jsonl_math_solution_boxed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "math.jsonl", [*MATH_ROWS[:1], "", *MATH_ROWS[1:]])  # blank line skipped
    problems = load_problems(path)
    assert [p.answer for p in problems] == ["2", "\\frac{1}{2}", "5"]
    assert [p.level for p in problems] == [1, 3, None]
    assert problems[2].meta["level_raw"] == "Level ?"
    assert problems[1].meta["subject"] == "Prealgebra"
    assert problems[1].meta["solution"] == MATH_ROWS[1]["solution"]  # worked solution kept for SFT/viewers
    assert problems[0].meta["source"] == "math"
    assert problems[0].id == "math/0"
    assert [p.id for p in load_problems(path, levels=(3,))] == ["math/1"]
    assert len(load_problems(path, limit=2)) == 2


def test_json_list_and_data_wrapper(tmp_path: Path) -> None:
    rows = [{"question": "Q1", "answer": 3, "id": "a"}, {"question": "Q2", "answer": "x\n#### 1,200", "id": "b"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
    for name in ("list.json", "wrapped.json"):
        problems = load_problems(name, data_dir=tmp_path, id_prefix="")
        assert [(p.id, p.question, p.answer) for p in problems] == [("a", "Q1", "3"), ("b", "Q2", "1200")]
    (tmp_path / "bad.json").write_text(json.dumps({"rows": rows}))
    with pytest.raises(DataError, match="expected a list of objects"):
        load_problems(tmp_path / "bad.json")


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{"prompt": f"What is {i} + 1?", "final_answer": i + 1, "idx": i} for i in range(5)])
    pq.write_table(table, tmp_path / "t.parquet")
    problems = load_problems(tmp_path / "t.parquet", limit=3)
    assert [(p.id, p.answer) for p in problems] == [("t/0", "1"), ("t/1", "2"), ("t/2", "3")]


def test_explicit_field_mapping(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "custom.jsonl", [{"q": "Two plus two?", "gold": "4", "key": "k1", "difficulty": 2}])
    (p,) = load_problems(path, question_field="q", answer_field="gold", id_field="key", id_prefix="c:")
    assert (p.id, p.question, p.answer, p.level) == ("c:k1", "Two plus two?", "4", 2)
    assert "q" not in p.meta and "gold" not in p.meta


def test_parse_hf_spec() -> None:
    from rema.data import DataError, parse_hf_spec

    assert parse_hf_spec("hf:openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    assert parse_hf_spec("hf:GAIR/LIMO") == ("GAIR/LIMO", None, None)
    assert parse_hf_spec("hf:a/b::validation", "train") == ("a/b", None, "validation")
    assert parse_hf_spec("hf:a/b:cfg", "train") == ("a/b", "cfg", "train")  # the caller's default split
    for bad in ("hf:", "hf:a/b:c:d:e", "gsm8k"):
        with pytest.raises(DataError, match=r"expected hf:owner/name\[:config\]\[:split\]"):
            parse_hf_spec(bad)


def test_field_mapping_reaches_files_with_split_options(tmp_path: Path) -> None:
    """data.question_field / data.answer_field apply to a file whether or not it carries a held-out split."""
    from rema.data import load_split

    path = tmp_path / "custom.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 1?", "target": str(i + 1)}) + "\n" for i in range(10))
    )
    fields = {"question_field": "prompt", "answer_field": "target"}
    whole = load_split(str(path), **fields)
    train = load_split(f"{path}:split=train:heldout=3:seed=0", **fields)
    held = load_split(f"{path}:split=heldout:heldout=3:seed=0", **fields)
    assert len(whole) == 10 and (len(train), len(held)) == (7, 3)
    assert {p.question for p in train} | {p.question for p in held} == {p.question for p in whole}
    assert all(p.answer == str(int(p.question.split()[2]) + 1) for p in held)


def test_saved_dataset_dir(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"question": "A?", "answer": "1"}]),
            "test": datasets.Dataset.from_list([{"question": "B?", "answer": "2"}, {"question": "C?", "answer": "3"}]),
        }
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    assert [p.answer for p in load_problems(tmp_path / "saved", split="test")] == ["2", "3"]
    with pytest.raises(DataError, match="several splits"):
        load_problems(tmp_path / "saved")


# --- malformed data fails fast with file:line ------------------------------------------------------------


def test_missing_answer_names_file_line_and_fix(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b", "text": "2"}])
    with pytest.raises(DataError) as e:
        load_problems(path)
    msg = str(e.value)
    assert f"{path}:2:" in msg and "available: problem, text" in msg and "answer_field=" in msg

    path = write_jsonl(tmp_path / "y.jsonl", [{"problem": "a", "solution": "s"}])
    with pytest.raises(
        DataError,
        match=r"y\.jsonl:1: missing field 'answer' \(available: problem, solution\); "
        r"pass answer_field=",
    ):
        load_problems(path, answer_field="answer")
    with pytest.raises(DataError, match=r"y\.jsonl:1: no \\boxed\{\} in field 'solution'"):
        load_problems(path)


def test_bad_json_and_empty_question(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "b.jsonl", [{"problem": "a", "answer": "1"}, "", '{"problem": "b", "answer": 2'])
    with pytest.raises(DataError, match=r"b\.jsonl:3: invalid JSON"):
        load_problems(path)
    path = write_jsonl(tmp_path / "e.jsonl", [{"problem": "  ", "answer": "1"}])
    with pytest.raises(DataError, match=r"e\.jsonl:1: empty question in field 'problem'"):
        load_problems(path)
    path = write_jsonl(tmp_path / "n.jsonl", [[1, 2]])
    with pytest.raises(DataError, match=r"n\.jsonl:1: expected a JSON object"):
        load_problems(path)
    (tmp_path / "broken.json").write_text('[\n{"problem": "a",\n "answer": }\n]')
    with pytest.raises(DataError, match=r"broken\.json:3: invalid JSON"):
        load_problems(tmp_path / "broken.json")
    with pytest.raises(DataError, match="file not found"):
        load_problems(tmp_path / "missing.jsonl")


# --- judge task -----------------------------------------------------------------------------------------


def test_judge_rows(tmp_path: Path) -> None:
    pairs = [{"id": i, "prompt": f"p{i}", "chosen": f"good{i}", "rejected": f"bad{i}"} for i in range(40)]
    problems = load_problems(write_jsonl(tmp_path / "rb.jsonl", pairs))
    assert all(p.is_judge for p in problems)
    for p in problems:
        good = p.response_a if p.label == "A" else p.response_b
        assert good.startswith("good") and p.answer == p.label and p.question == p.prompt
    n_a = sum(p.label == "A" for p in problems)
    assert 10 <= n_a <= 30  # both positions used, so "always A" cannot score well
    assert [p.label for p in load_problems(tmp_path / "rb.jsonl")] == [p.label for p in problems]  # stable

    ab = [{"prompt": "q", "response_a": "x", "response_b": "y", "label": "[[B]]"}]
    (p,) = load_problems(write_jsonl(tmp_path / "ab.jsonl", ab))
    assert (p.label, p.response_b) == ("B", "y")
    with pytest.raises(DataError, match="must be 'A' or 'B'"):
        load_problems(write_jsonl(tmp_path / "ab2.jsonl", [{**ab[0], "label": "C"}]))


# --- Hugging Face Hub path (load_dataset replaced) -----------------------------------------------------


class FakeHub:
    """Stands in for `datasets.load_dataset`, recording calls and serving in-memory tables per id."""

    def __init__(self, tables: dict[str, dict[str, list[dict]]]) -> None:
        self.tables = tables
        self.calls: list[tuple] = []

    def __call__(self, path, name=None, split=None, revision=None, **kw):
        import datasets

        self.calls.append((path, name, split, revision))
        if path not in self.tables:
            raise FileNotFoundError(f"Dataset '{path}' doesn't exist on the Hub")
        splits = {k: datasets.Dataset.from_list(v) for k, v in self.tables[path].items()}
        return splits[split] if split is not None else datasets.DatasetDict(splits)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    datasets = pytest.importorskip("datasets")
    hub = FakeHub(
        {
            "openai/gsm8k": {
                "test": [{"question": "Q?", "answer": "steps <<1+1=2>>\n#### 1,234"}],
                "train": [{"question": "T?", "answer": "#### 5"}],
            },
            "HuggingFaceH4/MATH-500": {"test": [{"problem": "Shared?", "answer": "1", "level": 4}]},
            "DigitalLearningGmbH/MATH-lighteval": {
                "test": [
                    {"problem": "Shared?", "solution": "$\\boxed{1}$", "level": "Level 4", "type": "Algebra"},
                    {
                        "problem": "Only test?",
                        "solution": "$\\boxed{\\frac{3}{4}}$",
                        "level": "Level 5",
                        "type": "Algebra",
                    },
                ]
            },
        }
    )
    monkeypatch.setattr(datasets, "load_dataset", hub)
    return hub


def test_hub_loading(fake_hub: FakeHub) -> None:
    (p,) = load_problems("openai/gsm8k", config="main", split="test", revision="abc")
    assert (p.question, p.answer, p.id) == ("Q?", "1234", "gsm8k/0")
    assert "#### 1,234" in p.meta["solution"]
    assert fake_hub.calls[-1] == ("openai/gsm8k", "main", "test", "abc")

    (p,) = load_benchmark("gsm8k")
    assert fake_hub.calls[-1][:3] == ("openai/gsm8k", "main", "test") and p.id == "gsm8k/0"
    assert [q.answer for q in resolve_dataset("hf:openai/gsm8k:main:train")] == ["5"]
    with pytest.raises(DataError, match="several splits"):
        load_problems("openai/gsm8k")
    with pytest.raises(DataError, match="hf:no/such"):
        load_problems("no/such", split="test")


def test_hub_exclusion_and_levels(fake_hub: FakeHub) -> None:
    problems = load_benchmark("math_test4500")  # Hub copy minus the MATH-500 problems
    assert [(p.question, p.answer, p.level) for p in problems] == [("Only test?", "\\frac{3}{4}", 5)]
    assert load_benchmark("math_test4500", levels=(4,)) == []
    with pytest.raises(DataError, match="no difficulty levels"):
        load_benchmark("gsm8k", levels=(1,))


# --- synthetic problems ---------------------------------------------------------------------------------


def test_synthetic_answers_are_exact_per_level() -> None:
    for level in LEVELS:
        for word in (True, False):
            for p in synthetic_problems(150, levels=(level,), seed=3, word_problems=word):
                assert p.level == level and p.meta["source"] == "synthetic"
                assert int(p.answer) == eval(p.meta["expression"]) > 0
                ops = p.meta["operands"]
                for v in ops.values():
                    assert str(v) in p.question
                if not word:
                    assert p.question == f"What is {p.meta['expression'].replace('*', '×')}?"
                if level == 1:
                    assert ops["a"] <= 9 and ops["b"] <= 9 and p.meta["op"] == "add"
                if level == 2:
                    assert 10 <= ops["a"] <= 99 and ops["b"] <= 9 and p.meta["op"] in ("add", "sub")
                if level == 3:
                    assert ops["a"] <= 9 and ops["b"] <= 9 and p.meta["op"] == "mul"
                if level == 5:
                    assert 10 <= ops["a"] <= 99 and ops["b"] <= 9 and p.meta["op"] == "mul"
    assert synthetic_problems(1, levels=(1,), word_problems=False)[0].question.startswith("What is ")


def test_synthetic_word_templates_vary_and_levels_cycle() -> None:
    problems = synthetic_problems(300, levels=(1, 2, 3), seed=0)
    assert [p.level for p in problems[:6]] == [1, 2, 3, 1, 2, 3]
    assert len({p.meta["template"] for p in problems if p.meta["op"] == "add"}) >= 3
    mixed = synthetic_problems(200, levels=(1,), seed=0, word_problems=0.5)
    n_plain = sum(p.meta["template"] == "plain" for p in mixed)
    assert 50 < n_plain < 150
    with pytest.raises(DataError, match="unknown synthetic level"):
        synthetic_problems(3, levels=(7,))


def test_synthetic_deterministic_across_processes() -> None:
    a = [p.to_dict() for p in synthetic_problems(50, levels=(1, 4, 6), seed=7)]
    assert a == [p.to_dict() for p in synthetic_problems(50, levels=(1, 4, 6), seed=7)]
    assert a != [p.to_dict() for p in synthetic_problems(50, levels=(1, 4, 6), seed=8)]
    code = "from rema.data import synthetic_problems as s; print([p.id for p in s(50, levels=(1, 4, 6), seed=7)])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str-hash salt must not matter
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([p["id"] for p in a])


def test_synthetic_split_heldout_fixed_and_disjoint() -> None:
    split = synthetic_split((1, 2, 3), n_train=600, n_heldout_per_level=40, seed=0)
    assert len(split.train) == 600 and sorted(split.heldout) == [1, 2, 3]
    held_q = {p.question for ps in split.heldout.values() for p in ps}
    assert len(held_q) == 120  # distinct within the held-out set
    assert not held_q & {p.question for p in split.train}
    assert all(p.level == lv and p.meta["split"] == "heldout" for lv, ps in split.heldout.items() for p in ps)
    # Fixed: another n_train or extra levels leave a level's held-out set unchanged; more extends it.
    other = synthetic_split((3, 1, 5), n_train=10, n_heldout_per_level=50, seed=0)
    assert other.heldout[1][:40] == split.heldout[1] and other.heldout[3][:40] == split.heldout[3]

    strict = synthetic_split((1,), n_train=100, n_heldout_per_level=30, seed=0, disjoint_by="expression")
    held_e = {p.meta["expression"] for p in strict.heldout[1]}
    assert len(held_e) == 30 and not held_e & {p.meta["expression"] for p in strict.train}
    with pytest.raises(DataError, match="distinct problems"):  # only 81 one-digit sums exist
        synthetic_split((1,), n_train=1, n_heldout_per_level=90, seed=0, word_problems=False)


# --- registry and resolve_dataset ----------------------------------------------------------------------


def test_registry_contents() -> None:
    for name in (
        "gsm8k",
        "math500",
        "aime24",
        "amc23",
        "math_train",
        "math_test4500",
        "gaokao2023en",
        "minerva_math",
        "olympiadbench",
    ):
        spec = BENCHMARKS[name]
        assert spec.file.endswith(".jsonl") and spec.hf_id
    assert BENCHMARKS["gsm8k"].file == "gsm8k_test.jsonl" and BENCHMARKS["gsm8k"].hf_config == "main"
    assert BENCHMARKS["math500"].level_field == "level"
    with pytest.raises(DataError, match="known: "):
        load_benchmark("nope")


def test_missing_local_benchmark_file_says_what_to_get(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_benchmark("minerva_math", data_dir=tmp_path)
    msg = str(e.value)
    assert "minerva_math.jsonl" in msg and str(tmp_path) in msg and "math-ai/minervamath" in msg


def test_resolve_dataset_forms(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "mine.jsonl", [{"problem": f"P{i}", "answer": str(i), "level": i % 3 + 1} for i in range(9)])
    assert len(resolve_dataset("mine.jsonl", tmp_path)) == 9
    assert len(resolve_dataset(str(tmp_path / "mine.jsonl"), limit=4)) == 4

    syn = resolve_dataset("synthetic:levels=1,2,3:n=30:seed=0")
    assert [p.to_dict() for p in syn] == [p.to_dict() for p in synthetic_problems(30, levels=(1, 2, 3), seed=0)]
    plain = resolve_dataset("synthetic:levels=4-6:n=6:seed=1:word=0")
    assert [p.level for p in plain] == [4, 5, 6, 4, 5, 6] and all(p.question.startswith("What is") for p in plain)
    held = resolve_dataset("synthetic:levels=1,2:split=heldout:heldout=20:seed=0")
    train = resolve_dataset("synthetic:levels=1,2:split=train:n=100:heldout=20:seed=0")
    assert len(held) == 40 and len(train) == 100
    assert not {p.question for p in held} & {p.question for p in train}
    for bad in ("synthetic:levels=1:bogus=2", "synthetic:n", "hf:", "definitely-not-a-dataset", "gsm8k:foo=1"):
        with pytest.raises(DataError):
            resolve_dataset(bad, tmp_path)


# --- the shared benchmark files ------------------------------------------------------------------------


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "math500_test.jsonl").is_file():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


def test_registry_resolves_shared_files(shared_data: Path) -> None:
    expected = {"gsm8k": 1319, "math500": 500, "aime24": 30, "amc23": 40}
    for name, count in expected.items():
        problems = load_benchmark(name, data_dir=shared_data)
        assert len(problems) == count and all(p.question and p.answer for p in problems)
        assert problems[0].id.startswith(f"{name}/") and problems[0].meta["source"] == name
    math500 = resolve_dataset("math500:levels=5", shared_data)
    assert len(math500) == 134 and {p.level for p in math500} == {5}
    assert load_benchmark("gsm8k", data_dir=shared_data)[0].answer == "18"
    assert len(resolve_dataset("aime24:limit=5", shared_data)) == 5
    # The boxed extractor reproduces MATH-500's stored answers from its solutions.
    from_solution = load_problems("math500_test.jsonl", data_dir=shared_data, answer_field="solution")
    assert [p.answer for p in from_solution] == [p.answer for p in load_benchmark("math500", data_dir=shared_data)]


def test_math12k_levels_3_to_5(shared_data: Path) -> None:
    if not (shared_data / "math_train.jsonl").is_file():
        pytest.skip("math_train.jsonl not present")
    problems = load_benchmark("math12k", data_dir=shared_data, levels=(3, 4, 5))
    assert 8000 < len(problems) < 9500 and {p.level for p in problems} == {3, 4, 5}


# --- sampler --------------------------------------------------------------------------------------------


def _problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"Q{i}", answer=str(i), meta={"subset": "ab"[i % 3 == 0]}) for i in range(n)]


def test_sampler_epochs_cover_every_problem() -> None:
    problems = _problems(10)
    sampler = ProblemSampler(problems, batch_size=4, seed=0)
    seen = [p.id for _ in range(5) for p in sampler.next_batch()]  # 20 draws = exactly two epochs
    assert sorted(seen[:10]) == sorted(seen[10:]) == sorted(p.id for p in problems)
    assert seen[:10] != seen[10:]  # reshuffled each epoch
    assert sampler.batches_per_epoch == 3 and sampler.epoch == 1 and sampler.position == 10
    assert [p.id for p in ProblemSampler(problems, 4, seed=0).next_batch()] == seen[:4]
    with pytest.raises(DataError):
        ProblemSampler([], 2)


def test_sampler_resume_is_exact() -> None:
    problems = _problems(13)
    reference = ProblemSampler(problems, batch_size=5, seed=42)
    full = [[p.id for p in reference.next_batch()] for _ in range(12)]

    first = ProblemSampler(problems, batch_size=5, seed=42)
    for _ in range(7):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as JSON
    resumed = ProblemSampler(problems, batch_size=5, seed=42)
    resumed.load_state_dict(state)
    assert [[p.id for p in resumed.next_batch()] for _ in range(5)] == full[7:]

    with pytest.raises(DataError, match="seed"):
        ProblemSampler(problems, 5, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match="different dataset"):
        ProblemSampler(problems[:-1], 5, seed=42).load_state_dict(state)


def test_stratified_split() -> None:
    problems = _problems(30)  # subset "b" for 10 problems, "a" for 20
    train, test = stratified_split(problems, 9, key="subset", seed=0)
    assert len(test) == 9 and len(train) == 21
    assert sum(p.meta["subset"] == "b" for p in test) == 3
    assert not {p.id for p in train} & {p.id for p in test}
    assert stratified_split(problems, 9, key="subset", seed=0) == (train, test)
