"""The Hub-only benchmarks of the paper's evaluation (Gaokao2023-en, Minerva-math, OlympiadBench) load with their
registry ids, splits and columns.

The fixture rows in tests/data are hand-written in each source's schema: ``hub_*.jsonl`` as the Hub copies serve
them, ``qwen_eval/*.jsonl`` as the Qwen2.5-Math evaluation files (``evaluation/data/<name>/test.jsonl``) that
serve as local copies. Only the download is replaced: `datasets.load_dataset(hub id, config, split)` returns the
fixture read by `datasets`' own JSON builder, and everything after it (split choice, field mapping, answer
normalisation, ids, levels) runs as it does on the Hub's data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rema.data import BENCHMARKS, load_benchmark, resolve_dataset

DATA = Path(__file__).resolve().parent / "data"

SERVED = {
    ("MARIO-Math-Reasoning/Gaokao2023-Math-En", None, "train"): "hub_gaokao2023en.jsonl",
    ("math-ai/minervamath", None, "test"): "hub_minervamath.jsonl",
    ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"): "hub_olympiadbench.jsonl",
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple]:
    """`datasets.load_dataset` serving the fixtures for exactly the (id, config, split) above; returns the calls."""
    datasets = pytest.importorskip("datasets")
    real_load = datasets.load_dataset
    calls: list[tuple] = []

    def download(path, name=None, split=None, revision=None, **kwargs):
        calls.append((path, name, split))
        if (path, name, split) not in SERVED:
            raise FileNotFoundError(f"no such dataset/config/split on this fake Hub: {(path, name, split)}")
        return real_load(
            "json",
            data_files=str(DATA / SERVED[path, name, split]),
            split="train",
            cache_dir=str(tmp_path / "hf-cache"),
        )

    monkeypatch.setattr(datasets, "load_dataset", download)
    return calls


def test_gaokao2023en_from_the_hub(hub: list[tuple]) -> None:
    problems = load_benchmark("gaokao2023en")
    assert hub == [("MARIO-Math-Reasoning/Gaokao2023-Math-En", None, "train")]
    # `$` delimiters go, inner ones too (Qwen2.5-Math: answer.replace("$", "")); several answers stay one string
    assert [p.answer for p in problems] == ["\\{x|1\\leq x<3\\}", "24", "2 or -2", "3, 7"]
    assert problems[0].question.startswith("Given sets $A=")
    # rows without an `id` (the Beijing/national-exam part) are numbered by row; the rest keep theirs
    assert [p.id for p in problems] == [
        "gaokao2023en/0",
        "gaokao2023en/1",
        "gaokao2023en/PurpleMeet2023_7",
        "gaokao2023en/042023ACTZ18_3",
    ]
    assert problems[2].meta["lang"] == "en" and problems[2].meta["sourcename"] == "PurpleMeet2023"
    assert problems[0].meta["source"] == "gaokao2023en" and problems[0].level is None


def test_minerva_math_from_the_hub(hub: list[tuple]) -> None:
    problems = load_benchmark("minerva_math", limit=1)
    assert hub == [("math-ai/minervamath", None, "test")]
    assert [(p.id, p.answer) for p in problems] == [("minerva_math/0", "2")]
    assert [p.answer for p in resolve_dataset("minerva_math")] == ["2", "3e8"]


def test_olympiadbench_from_the_hub(hub: list[tuple]) -> None:
    problems = load_benchmark("olympiadbench")
    assert hub == [("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")]
    # `final_answer` is a list of one string: that string, `$` removed ("$1$,$2$" is a two-value answer)
    assert [(p.id, p.answer) for p in problems] == [
        ("olympiadbench/2001", "12"),
        ("olympiadbench/2002", "1,2"),
        ("olympiadbench/2003", "2"),
    ]
    p = problems[1]
    assert p.question.startswith("Find all pairs of positive integers")
    assert p.meta["solution"] == ["Only $a=1$ and $b=2$."] and p.meta["is_multiple_answer"] is True
    # `difficulty` is "Competition" for every row: no numeric level, the raw value is kept
    assert p.level is None and p.meta["level_raw"] == "Competition" and p.meta["subject"] == "Math"
    assert problems[2].meta["unit"] == "cm^2"


def test_local_copies_in_the_qwen_evaluation_schema(hub: list[tuple]) -> None:
    """With data_dir the registry reads Qwen2.5-Math's files (renamed to the registry's file names) and never
    touches the Hub: Minerva's answer is the box of its `solution`, OlympiadBench's the list `final_answer`."""
    folder = DATA / "qwen_eval"
    gaokao = load_benchmark("gaokao2023en", data_dir=folder)
    minerva = load_benchmark("minerva_math", data_dir=folder)
    olympiad = load_benchmark("olympiadbench", data_dir=folder)
    assert hub == []
    assert [p.answer for p in gaokao] == ["\\{x|1\\leq x<3\\}", "24"]
    assert [(p.id, p.answer) for p in minerva] == [("minerva_math/0", "2"), ("minerva_math/1", "\\frac{3}{2}")]
    assert minerva[1].meta["solution"].endswith("\\boxed{\\frac{3}{2}} \\]")
    assert minerva[0].meta["type"].startswith("Introduction to Optics")
    assert [(p.id, p.answer) for p in olympiad] == [("olympiadbench/2001", "12"), ("olympiadbench/2002", "1,2")]
    # the same problems whichever copy they come from
    hub_rows = load_benchmark("olympiadbench", limit=2)
    assert [(p.id, p.question, p.answer) for p in hub_rows] == [(p.id, p.question, p.answer) for p in olympiad]


def test_registry_names_the_sources() -> None:
    for name in ("gaokao2023en", "minerva_math", "olympiadbench"):
        assert "Qwen2.5-Math evaluation/data/" in BENCHMARKS[name].description
    assert BENCHMARKS["olympiadbench"].alt_hf_ids == ("math-ai/olympiadbench",)
