"""Training under load: the demo training's step time with and without one other busy process on the machine, for
each thread policy, side by side in one run.

    .venv/bin/python -m bench.bench_threads [--steps=40] [--only=SUBSTRING]

Builds a 600-playlist demo corpus in a temporary folder, then times `train_tiger.py --tiger.max_steps=N` (default
model, seconds per step after the first checkpoint-free steps, taken from the Trainer's own train_runtime) as a
subprocess, on the idle machine and beside a pure-Python busy loop (best of REPEATS each), for: 2 threads with OpenMP's
default waits, spinning (ACTIVE), sleeping (PASSIVE), and 1 thread. Prints
seconds per step and the slow-down under load.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {"2 threads, OpenMP's default waits": ({}, 2),
            "2 threads, OMP_WAIT_POLICY=ACTIVE (spin)": ({"OMP_WAIT_POLICY": "ACTIVE"}, 2),
            "2 threads, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
            "2 threads, GOMP_SPINCOUNT=10000": ({"GOMP_SPINCOUNT": "10000"}, 2),
            "2 threads, GOMP_SPINCOUNT=1000": ({"GOMP_SPINCOUNT": "1000"}, 2),
            "1 thread": ({}, 1)}
REPEATS = 2  # best of
BUSY = "while True: pass"


def step_seconds(args: list[str], env_extra: dict, threads: int, steps: int, busy: bool, timeout: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    other = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        cmd = [sys.executable, "train_tiger.py", *args, "--tiger.ensemble=1", f"--tiger.threads={threads}",
               f"--tiger.max_steps={steps}", f"--tiger.eval_steps={steps}", f"--tiger.save_steps={steps}",
               "--tiger.resume=false"]
        subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return float("inf")
    finally:
        if other:
            other.kill()
    summary = json.loads((Path(args[1].split("=", 1)[1]) / "train_summary.json").read_text())
    return summary["train_seconds"] / steps


def main() -> None:
    steps = int(next((a.split("=")[1] for a in sys.argv[1:] if a.startswith("--steps=")), 30))
    tmp = Path(tempfile.mkdtemp())
    args = [f"--data_dir={tmp / 'data'}", f"--output_dir={tmp / 'out'}", f"--model_dir={tmp / 'models'}"]
    for script, extra in (("prepare_data.py", ["--source=demo", "--demo.n_playlists=600", "--demo.n_songs=540",
                                               "--demo.n_artists=54"]),
                          ("train_rq_kmeans.py", []), ("prepare_corpus.py", [])):
        subprocess.run([sys.executable, script, *args, *extra], cwd=ROOT, capture_output=True, check=True)
    print(f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}; {steps} steps of the default model, demo corpus")
    print(f"{'policy':40s} {'idle s/step':>12s} {'loaded s/step':>14s} {'slow-down':>10s}")
    only = next((a.split("=")[1] for a in sys.argv[1:] if a.startswith("--only=")), "")
    for name, (env_extra, threads) in POLICIES.items():
        if only and only not in name:
            continue
        idle = min(step_seconds(args, env_extra, threads, steps, False, 600) for _ in range(REPEATS))
        limit = int(max(60, 20 * idle * steps))
        loaded = min(step_seconds(args, env_extra, threads, steps, True, limit) for _ in range(REPEATS))
        shown = f"{loaded:14.3f}" if loaded != float("inf") else f"{'> ' + str(limit) + ' s':>14s}"
        print(f"{name:40s} {idle:12.3f} {shown} {loaded / idle:9.1f}x")


if __name__ == "__main__":
    main()
