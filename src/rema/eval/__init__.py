"""Evaluation and reporting (scoring and summarising episodes, shared with training, is ``rema.scoring``).

Modules:
    bench_runner  ``rema eval``: models × method × benchmarks, chunked, resumable, judge tasks in both orders
    records       per-question records (records/<bench>.jsonl) and summaries recomputed from them
    metrics       pass@k, maj@k, judge swap consistency (pure functions)
    tables        per-eval tables (terminal / Markdown / CSV) and ``rema compare`` (paper Table 1 layout)
    report        ``rema report``: training-curve PNGs
    html          the self-contained HTML dialogue browser (template in html_template)
    commands      argparse wiring of eval / compare / report
    export_cmd    ``rema export``: a run's checkpoint as model folders (``rema.runtime.runs``)

The models and engines an eval runs come from :mod:`rema.runtime`; nothing here imports another command.
"""
