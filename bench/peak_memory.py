"""Peak memory of a command's whole process tree (the trainer, vLLM's processes, the grader's workers).

Runs the command, samples every process in its tree every ``--every`` seconds, and prints one JSON line:
the peak of the summed RSS (what ``top`` shows; pages shared between processes, such as the torch
libraries every process maps, are counted once per process) and the peak of the summed PSS (each shared
page split between the processes that map it: the tree's real share of the machine's memory), plus the
peak of the largest single process. Example, the demo's first two RL steps:

    python bench/peak_memory.py -- rema train configs/demo.yaml sft.cold_start=false train.steps=2 \\
        train.eval_every=0 log.run_dir=/tmp/mem-run

The command's own output goes to ``--log`` (default: discarded). ``--timeline FILE`` also writes every
sample as a JSON line (seconds since start, RSS and PSS sums): set it beside the run's own timestamps to
see which phase holds the peak.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

import psutil


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def sample(procs: list[psutil.Process]) -> tuple[float, float, float, int]:
    """(RSS sum, PSS sum, largest RSS, processes), GiB."""
    rss = pss = largest = 0.0
    n = 0
    for p in procs:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        largest = max(largest, info.rss)
        n += 1
    return rss / 2**30, pss / 2**30, largest / 2**30, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("--log", default=None, help="file for the command's stdout and stderr")
    ap.add_argument("--label", default="", help="a name for this measurement in the JSON line")
    ap.add_argument("--timeline", default=None, help="file for one JSON line per sample (t_s, rss_gib, pss_gib)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command to measure after --")
    out = open(args.log, "w") if args.log else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    root = psutil.Process(proc.pid)

    def stop(signum, _frame):  # killing the measurement stops what it measures (no orphaned training run)
        proc.send_signal(signum)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for p in tree(root):
                try:
                    p.kill()
                except psutil.Error:
                    pass
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    peak = {"rss_sum_gib": 0.0, "pss_sum_gib": 0.0, "largest_rss_gib": 0.0, "processes": 0}
    timeline = open(args.timeline, "w") if args.timeline else None
    while proc.poll() is None:
        rss, pss, largest, n = sample(tree(root))
        if timeline is not None:
            timeline.write(
                json.dumps(
                    {
                        "t_s": round(time.perf_counter() - t0, 1),
                        "rss_gib": round(rss, 3),
                        "pss_gib": round(pss, 3),
                        "processes": n,
                    }
                )
                + "\n"
            )
            timeline.flush()
        for key, value in (("rss_sum_gib", rss), ("pss_sum_gib", pss), ("largest_rss_gib", largest), ("processes", n)):
            peak[key] = max(peak[key], value)
        time.sleep(args.every)
    print(
        json.dumps(
            {
                "label": args.label,
                "command": " ".join(cmd),
                "rc": proc.returncode,
                "wall_s": round(time.perf_counter() - t0, 1),
                **{k: round(v, 2) if isinstance(v, float) else v for k, v in peak.items()},
            }
        ),
        flush=True,
    )
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
