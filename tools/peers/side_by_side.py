#!/usr/bin/env python3
"""The benchmark's W1-W4 side by side with PyTorch and JAX on this machine: for each
measurement, `cargo run --release --example bench` (one run) and then the peers
(`workloads.py`), alternated round after round, so that every ratio is taken from
measurements made a minute or two apart on the same machine in the same state. On a shared
machine a figure moves by 1.3x or more from one minute to the next; a ratio taken in
one round moves far less.

Prints one JSON line per round and measurement (ours: the lean replay's median; each
peer's median; the ratio of ours to the faster peer), then one `summary` line per
measurement: the medians over the rounds, and the ratio of our median to the faster
peer's median.

Usage (the peers in a virtual environment of their own):
    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch==2.15.0 'jax[cpu]==0.10.2' numpy
    cargo build --release --example bench
    /tmp/peers/bin/python tools/peers/side_by_side.py [--rounds 3] [--only 'W3 S 1' ...]

A measurement is `WORKLOAD SIZE THREADS`; with one thread, both sides run pinned to
the first core (`taskset -c 0`), as the bench's one-thread peers were measured.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
ALL = [
    "W1 S 1", "W2 S 1", "W3 S 1", "W1 M 1", "W2 M 1", "W3 M 1",
    "W1 S 2", "W2 S 2", "W3 S 2", "W1 M 2", "W2 M 2", "W3 M 2",
    "W4 - 2", "W1 L 2", "W2 L 2", "W3 L 2",
]


def json_lines(out, what):
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit(f"{what} printed no result")
    return lines


def faster_peer(got):
    """(milliseconds, name) of the faster peer in `got` (ours excluded)."""
    return min((v, k) for k, v in got.items() if k != "ours")


def ours(bench, w, size, threads, pin):
    out = subprocess.run(
        pin + [bench, "--workload", w, "--size", size, "--threads", threads, "--runs", "1"],
        capture_output=True, text=True, check=True,
    ).stdout
    lean = [d for d in json_lines(out, "bench") if d.get("mode") == "lean-replay" and "summary" not in d]
    return lean[0]["median_ms"]


def peer(name, w, size, threads, pin):
    out = subprocess.run(
        pin + [sys.executable, os.path.join(HERE, "workloads.py"), name, w, size, threads],
        capture_output=True, text=True, check=True,
    ).stdout
    return json_lines(out, name)[-1]["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="measurements, e.g. 'W1 M 2'")
    ap.add_argument("--bench", default=os.path.join(ROOT, "target", "release", "examples", "bench"))
    args = ap.parse_args()
    todo = [m.split() for m in (args.only or ALL)]
    rows = {}
    for rnd in range(1, args.rounds + 1):
        for w, size, threads in todo:
            pin = ["taskset", "-c", "0"] if threads == "1" else []
            got = {"ours": ours(args.bench, w, size, threads, pin), "torch": peer("torch", w, size, threads, pin)}
            if w != "W4":
                got["jax"] = peer("jax", w, size, threads, pin)
            fastest = faster_peer(got)
            line = {"round": rnd, "workload": w, "size": size, "threads": int(threads), **got,
                    "fastest_peer": fastest[1], "ratio": round(got["ours"] / fastest[0], 3)}
            print(json.dumps(line), flush=True)
            rows.setdefault((w, size, threads), []).append(got)
    for (w, size, threads), got in rows.items():
        med = {k: statistics.median(g[k] for g in got) for k in got[0]}
        fastest = faster_peer(med)
        line = {"summary": True, "workload": w, "size": size, "threads": int(threads),
                **{k: round(v, 4) for k, v in med.items()}, "fastest_peer": fastest[1],
                "ratio": round(med["ours"] / fastest[0], 3),
                "round_ratios": [round(g["ours"] / faster_peer(g)[0], 3) for g in got]}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
