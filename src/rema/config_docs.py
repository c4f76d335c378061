"""docs/config.md, rendered from the config's docstrings.

The field docstrings in ``rema.config`` are the single source of truth for what a setting means; this module
renders them as Markdown: one section per config dataclass, one table row per key (key, type, default,
meaning). ``make docs`` writes the file; ``tests/test_docs.py`` fails when the committed file differs.

    python -m rema.config_docs                    # print the Markdown
    python -m rema.config_docs docs/config.md     # write it
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap
from pathlib import Path

from rema.config import Config, field_docs
from rema.config.checks import RANGES
from rema.config.choices import choice_table

HEADER = """\
# Configuration reference

<!-- Generated from the docstrings in src/rema/config/ by `make docs` (python -m rema.config_docs).
     Do not edit by hand: change the docstring, then run `make docs`. -->

Every key below is set in a YAML config (`section:` then `key: value`) or on the command line as a dotted
override, e.g. `rema train configs/demo.yaml algo.clip_eps=0.1 train.steps=20`. An unknown key fails and
names the nearest valid ones. `rema train --help-config` prints the same list with a config's current
values. Defaults are those of the dataclasses; the shipped `configs/*.yaml` override some of them.
"""


def _class_doc(cls) -> str:
    """The class's own docstring (dataclasses invent one from the signature when it has none)."""
    node = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    doc = ast.get_docstring(node)
    return " ".join(doc.split()) if doc else ""


def _value(value) -> str:
    """A default as it is written in YAML or in a dotted override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def _cell(text: str) -> str:
    """Text for one Markdown table cell: reST ``code`` becomes `code`, pipes are escaped."""
    return text.replace("``", "`").replace("|", "\\|")


def _choices(values) -> str:
    """`` One of: `a`, `b`.`` for a key's valid values (``""`` is shown as `""`)."""
    return " One of: " + ", ".join(f"`{_value(v)}`" for v in values) + "."


def _valid(key: str, table: dict) -> str:
    """What a key accepts, after its meaning: its registry's names or its numeric range."""
    return (_cell(_choices(table[key])) if key in table else "") + (
        f" Valid: {_cell(RANGES[key].describe())}." if key in RANGES else ""
    )


def _section(name: str, section, table: dict) -> tuple[str, list[tuple[str, object]]]:
    """One section's Markdown (heading, intro, table) and the nested sections it holds (``train.health``)."""
    cls = type(section)
    docs = field_docs(cls)
    intro = _class_doc(cls)
    intro = f" {intro.replace('``', '`')}" if intro else ""
    parts = [f"## {name}\n", f"`{cls.__name__}` in `rema.config`.{intro}\n"]
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for sf in dataclasses.fields(cls):
        kind = sf.type if isinstance(sf.type, str) else getattr(sf.type, "__name__", str(sf.type))
        value = getattr(section, sf.name)
        key = f"{name}.{sf.name}"
        if dataclasses.is_dataclass(value):
            nested.append((key, value))
            default = f"[{key}](#{name}{sf.name})"  # GitHub's anchor drops the dot
        else:
            default = f"`{_cell(_value(value))}`"
        rows.append(f"| `{key}` | `{_cell(kind)}` | {default} | {_cell(docs.get(sf.name, ''))}{_valid(key, table)} |")
    parts.append("\n".join(rows) + "\n")
    return "\n".join(parts), nested


def render_markdown() -> str:
    """The whole of docs/config.md."""
    defaults = Config()
    table = choice_table(shipped=True)
    parts = [HEADER]
    sections = [(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(Config)]
    parts.append("Sections: " + " · ".join(f"[`{name}`](#{name})" for name, _ in sections) + "\n")
    while sections:
        name, section = sections.pop(0)
        text, nested = _section(name, section, table)
        parts.append(text)
        sections[:0] = nested  # right after its parent
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render_markdown()
    if not argv:
        sys.stdout.write(text)
        return 0
    path = Path(argv[0])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: a failed render never leaves a half-written file
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
