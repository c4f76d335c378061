"""The documentation stays true: docs/config.md matches the config's docstrings, the README stays a short
guide that names every shipped config, and every relative link in the README and docs/ resolves."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from rema.config import Config
from rema.config_docs import render_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 300


def test_config_md_matches_the_docstrings():
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == render_markdown(), (
        "docs/config.md is out of date with the docstrings in src/rema/config/sections.py: run `make docs` "
        "(python -m rema.config_docs docs/config.md) and commit the result"
    )


def test_config_md_lists_every_key():
    text = render_markdown()
    cfg = Config()
    keys = [f"{f.name}.{sf.name}" for f in dataclasses.fields(cfg) for sf in dataclasses.fields(getattr(cfg, f.name))]
    missing = [key for key in keys if f"| `{key}` |" not in text]
    assert not missing, f"keys without a row in docs/config.md: {missing}"


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): dated measurements belong in "
        "docs/results.md, details in docs/"
    )
    text = "\n".join(lines)
    for command in ("make demo", "make test"):
        assert command in text


def test_readme_names_every_shipped_config():
    text = README.read_text()
    configs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").glob("*.yaml"))
    assert configs, "no configs/*.yaml found"
    missing = [c for c in configs if c not in text]
    assert not missing, f"README.md does not mention {missing} (add them to its configs table)"


def test_relative_links_resolve():
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for doc in [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in link.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            path = target.split("#", 1)[0]
            if not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, f"links to missing files: {broken}"
