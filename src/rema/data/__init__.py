"""Data for ReMA: problem records, loaders (JSONL/JSON/parquet/Hub), synthetic problems, benchmarks.

from rema.data import resolve_dataset, ProblemSampler
train = resolve_dataset("synthetic:levels=1,2,3:n=2000:seed=0")
evals = resolve_dataset("math500", data_dir="../shared/data")
sampler = ProblemSampler(train, batch_size=8, seed=0)
"""

from .benchmarks import (
    BENCHMARKS,
    BenchmarkSpec,
    held_out_split,
    load_benchmark,
    load_split,
    parse_hf_spec,
    resolve_dataset,
)
from .loaders import ANSWER_FIELDS, QUESTION_FIELDS, load_problems, row_to_problem
from .problems import (
    DataError,
    Problem,
    extract_boxed,
    gsm8k_final_answer,
    judge_problem_from_pair,
    normalize_answer_value,
    parse_level,
    stable_int,
)
from .sampler import ProblemSampler, split_record, stratified_split
from .synthetic import LEVELS, SyntheticSplit, make_problem, synthetic_problems, synthetic_split

__all__ = [
    "ANSWER_FIELDS",
    "BENCHMARKS",
    "LEVELS",
    "QUESTION_FIELDS",
    "BenchmarkSpec",
    "DataError",
    "Problem",
    "ProblemSampler",
    "SyntheticSplit",
    "extract_boxed",
    "gsm8k_final_answer",
    "held_out_split",
    "judge_problem_from_pair",
    "load_benchmark",
    "load_problems",
    "load_split",
    "make_problem",
    "normalize_answer_value",
    "parse_level",
    "parse_hf_spec",
    "resolve_dataset",
    "row_to_problem",
    "split_record",
    "stable_int",
    "stratified_split",
    "synthetic_problems",
    "synthetic_split",
]
