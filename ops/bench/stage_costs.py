#!/usr/bin/env python3
"""Each finished stage job of a sweep state: its wall time and peak resident
memory as its worker measured them (kept on the accepted attempt in
state.sqlite), beside the memory the coordinator estimated for it.

    ops/bench/stage_costs.py STATE

Prints a Markdown table (kind, category, worker, seconds, peak MiB, estimate
MiB, estimate / peak), one row per job, in the order the jobs finished.
Attempts from coordinators before schema v7 have no figures ("-")."""
import argparse, os, sqlite3, sys

parser = argparse.ArgumentParser()
parser.add_argument("state")
args = parser.parse_args()
path = os.path.join(args.state, "state.sqlite")
if not os.path.isfile(path):
    sys.exit(f"stage_costs: no {path}")
db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
columns = {row[1] for row in db.execute("PRAGMA table_info(attempt)")}
if "peak_mib" not in columns:
    sys.exit(f"stage_costs: {path} predates attempt costs (schema v7): start psad-coordinator serve on it once to migrate")
rows = db.execute("""
    SELECT job.kind, job.category, attempt.worker, attempt.seconds, attempt.peak_mib, job.memory_mib
    FROM attempt JOIN job ON job.id = attempt.job
    WHERE attempt.outcome = 'done' ORDER BY attempt.ended_at""").fetchall()
print("| stage | category | worker | s | peak MiB | estimate MiB | estimate / peak |")
print("|---|---|---|---:|---:|---:|---:|")
for kind, category, worker, seconds, peak, estimate in rows:
    s = f"{seconds:.1f}" if seconds is not None else "-"
    p = f"{peak:.0f}" if peak is not None else "-"
    ratio = f"{estimate / peak:.1f}" if peak else "-"
    print(f"| {kind} | {category} | {worker} | {s} | {p} | {estimate} | {ratio} |")
