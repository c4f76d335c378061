"""Property tests (hypothesis): random overrides, random YAML trees and malformed data rows thrown at
``load_config`` and the data loaders give a valid config (or data) or the loader's own one-line error naming
where, never another exception."""

from __future__ import annotations

import json
import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rema.cli import one_line  # noqa: E402
from rema.config import Config, ConfigError, load_config  # noqa: E402
from rema.config.files import _all_keys  # noqa: E402
from rema.data import DataError, load_problems, resolve_dataset  # noqa: E402
from rema.data.dialogues import DialogueError, load_dialogues  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = _all_keys(Config)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12), st.sampled_from(["grpo", "turn", "token", "cosine", "bf16", "hf", "self",
                                                             "float16", "multi_turn", "judge", "", "null", "[]"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=2))
raw_values = st.one_of(values.map(json.dumps), st.text(string.printable, max_size=16),
                       st.sampled_from(["a: b", "[1, 2", "{", "- x", "!!python/object:os.system", ".nan", "1e400"]))
keys = st.one_of(st.sampled_from(KEYS), st.text(string.ascii_letters + "._", max_size=16))


def _assert_one_line(err: Exception) -> None:
    assert one_line(err) and "\n" not in str(err).strip(), repr(err)


@SETTINGS
@given(pairs=st.lists(st.tuples(keys, raw_values), max_size=6))
def test_random_overrides_give_a_config_or_a_one_line_error(pairs):
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(None, overrides)
    except ConfigError as err:
        _assert_one_line(err)
    else:
        assert isinstance(cfg, Config)


trees = st.dictionaries(st.sampled_from(sorted({k.split(".")[0] for k in KEYS}) + ["nonsense", "1"]),
                        st.one_of(values, st.dictionaries(st.sampled_from(sorted({k.split(".")[1] for k in KEYS})),
                                                          values, max_size=4)), max_size=4)


@SETTINGS
@given(tree=trees)
def test_random_yaml_files_give_a_config_or_a_one_line_error(tree, tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    try:
        load_config(path)
    except ConfigError as err:
        _assert_one_line(err)


FIELDS = ["problem", "question", "prompt", "answer", "final_answer", "solution", "id", "level", "chosen", "rejected",
          "response_a", "response_b", "label", "subject"]
rows = st.one_of(st.dictionaries(st.sampled_from(FIELDS), values, max_size=6), values)
lines = st.one_of(rows.map(json.dumps), st.text(max_size=20), st.binary(max_size=12).map(lambda b: b.decode("latin-1")))


@SETTINGS
@given(content=st.lists(lines, min_size=1, max_size=6), task=st.sampled_from(["auto", "math", "judge"]))
def test_malformed_rows_give_problems_or_an_error_naming_the_line(content, task, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes("\n".join(content).encode("utf-8", "surrogatepass"))
    try:
        problems = load_problems(path, task=task)
    except DataError as err:
        assert str(err).startswith(str(path)), err
    else:
        assert all(p.question for p in problems)


@SETTINGS
@given(data=st.binary(max_size=40))
def test_arbitrary_bytes_as_a_json_or_jsonl_file(data, tmp_path):
    for name in ("x.jsonl", "x.json", "x.parquet"):
        path = tmp_path / name
        path.write_bytes(data)
        try:
            load_problems(path)
        except DataError as err:
            assert str(err).startswith(str(path)), err


turns = st.lists(st.one_of(st.fixed_dictionaries({"agent": st.sampled_from(["mta", "ra", "x"]),
                                                   "text": st.text(max_size=8)}), values), max_size=5)
dialogue_rows = st.one_of(st.fixed_dictionaries({"question": st.one_of(st.text(max_size=6), values), "turns": turns},
                                                optional={"answer": values, "id": values, "meta": values,
                                                          "prompt": values, "response_a": values,
                                                          "response_b": values}), values)


@SETTINGS
@given(content=st.lists(dialogue_rows.map(json.dumps), min_size=1, max_size=4), two_agents=st.booleans(),
       multi_turn=st.booleans())
def test_malformed_dialogues_give_dialogues_or_an_error_naming_the_line(content, two_agents, multi_turn, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(content), encoding="utf-8")
    try:
        dialogues = load_dialogues(path, two_agents=two_agents, multi_turn=multi_turn, max_turns=3)
    except DialogueError as err:
        assert str(err).startswith(str(path)), err
    else:
        assert all(isinstance(d.meta, dict) and d.turns for d in dialogues)


specs = st.one_of(
    st.builds(lambda opts: "synthetic" + "".join(f":{k}={v}" for k, v in opts),
              st.lists(st.tuples(st.sampled_from(["levels", "n", "seed", "word", "split", "heldout", "limit", "x"]),
                                 st.one_of(st.integers(-3, 30).map(str), st.sampled_from(["1,2", "3-5", "a", "", "0.5",
                                                                                           "train", "heldout"]))),
                       max_size=4)),
    st.text(string.ascii_letters + ":=,./-", max_size=20).filter(lambda s: not s.startswith("hf:")),
)


@SETTINGS
@given(spec=specs)
def test_random_data_specs_give_problems_or_a_data_error(spec, tmp_path, monkeypatch):
    from rema.data import BENCHMARKS

    monkeypatch.chdir(tmp_path)  # no spec can name a file of the repository
    if spec.split(":", 1)[0] in BENCHMARKS:  # those would download
        return
    try:
        resolve_dataset(spec)
    except DataError as err:
        _assert_one_line(err)
