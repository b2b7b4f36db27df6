#!/usr/bin/env python3
"""Each finished stage job of a sweep state: its wall time and peak resident
memory as the worker measured them ("stage finished" lines in the worker
logs), beside the memory the coordinator estimated for it (explain).

    ops/bench/stage_costs.py STATE [--bin .build/release]

Prints a Markdown table (kind, category, seconds, peak MiB, estimate MiB,
estimate / peak), one row per job, in the order the jobs finished."""
import argparse, glob, json, os, re, subprocess, sys

parser = argparse.ArgumentParser()
parser.add_argument("state")
parser.add_argument("--bin", default=".build/release")
args = parser.parse_args()
if not os.path.isdir(args.state):
    sys.exit(f"stage_costs: no state directory {args.state}")
line = re.compile(r"^(\S+) .*key=([0-9a-f]+) .*peak MiB=(\S+) seconds=(\S+) stage=(\S+) .*stage finished")
rows = []
for log in sorted(glob.glob(os.path.join(args.state, "worker-*.log"))):
    for text in open(log, encoding="utf-8", errors="replace"):
        m = line.match(text)
        if m and "ok=true" in text:
            rows.append((m.group(1), m.group(2), m.group(5), float(m.group(4)), m.group(3)))
rows.sort()
print("| stage | category | s | peak MiB | estimate MiB | estimate / peak |")
print("|---|---|---:|---:|---:|---:|")
for _, key, stage, seconds, peak in rows:
    e = json.loads(subprocess.run([os.path.join(args.bin, "psad-coordinator"), "explain", key, "--json", "--state", args.state],
                                  check=True, capture_output=True, text=True).stdout)
    ratio = f"{e['memoryMiB'] / float(peak):.1f}" if peak != "unknown" else "-"
    print(f"| {stage} | {e['category']} | {seconds:.1f} | {peak} | {e['memoryMiB']} | {ratio} |")
