"""How judge accuracy is broken down: what the judge-task benchmarks call their parts, and the family each
part counts toward (``acc/family_<F>`` in :mod:`rema.scoring`, ``family`` in ``rema eval``'s records).

Judge rows keep their benchmark's part name in ``meta["subset"]``: RewardBench's ``subset`` column
(``alpacaeval-easy``, ``hep-python``, ...) and JudgeBench's ``source`` column (``mmlu-pro-law``,
``livebench-math``, ...; the loader moves it to ``subset``). Evaluations report accuracy per *family*:

* JudgeBench: ``mmlu-pro`` (its 14 ``mmlu-pro-<subject>`` sources), ``livebench-reasoning``,
  ``livebench-math`` and ``livecodebench``, as in the JudgeBench paper's table (knowledge, reasoning, math,
  coding);
* RewardBench: its four sections, ``chat``, ``chat-hard``, ``safety`` and ``reasoning``, from the subset name
  (the grouping of the RewardBench paper and dataset card);
* any other part name is its own family.
"""

from __future__ import annotations

__all__ = ["REWARDBENCH_SECTIONS", "judge_family"]

REWARDBENCH_SECTIONS: dict[str, tuple[str, ...]] = {
    "chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "chat-hard": (
        "mt-bench-hard",
        "llmbar-natural",
        "llmbar-adver-neighbor",
        "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut",
        "llmbar-adver-manual",
    ),
    "safety": (
        "refusals-dangerous",
        "refusals-offensive",
        "xstest-should-refuse",
        "xstest-should-respond",
        "donotanswer",
    ),
    "reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
"""RewardBench section -> its subsets."""

_SECTION_OF = {subset: section for section, subsets in REWARDBENCH_SECTIONS.items() for subset in subsets}


def judge_family(subset: object) -> str | None:
    """The family a judge row's part belongs to (None when the row names no part).

    >>> judge_family("mmlu-pro-law"), judge_family("livecodebench"), judge_family("hep-rust")
    ('mmlu-pro', 'livecodebench', 'reasoning')
    """
    if subset is None or str(subset).strip() == "":
        return None
    name = str(subset).strip()
    if name.startswith("mmlu-pro"):
        return "mmlu-pro"
    return _SECTION_OF.get(name, name)
