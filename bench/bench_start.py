"""Start-up of the playlist service on a run's folders: python start to a ready PlaylistService, then the first
playlist, in fresh processes, alternating starts with the page cache dropped ("cold": the run's files read from disk;
root only, `--cold=false` elsewhere) and right after one ("warm").

    .venv/bin/python -m bench.bench_start --run=/tmp/bench_scale/1000000 [--starts=4] [--method=fusion]

`--run` holds data/, out/ and models/ as bench.bench_scale lays them out. Issue 18's target at 1M: start-up <= 10 s.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine


def start_once(run: str, method: str, started: float) -> dict:
    """In the child process: the service loaded from `run`, timed from the process start (`started`)."""
    import resource

    from playlist_gen.cli import parse_config
    from playlist_gen.service import PlaylistService

    cfg = parse_config([f"--data_dir={run}/data", f"--output_dir={run}/out", f"--model_dir={run}/models",
                        f"--recommend.method={method}"], "")
    service = PlaylistService(cfg)
    ready = time.time() - started
    t0 = time.perf_counter()
    service.create("summer road trip")
    return {"ready_s": ready, "first_playlist_s": time.perf_counter() - t0,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--method", default="fusion")
    p.add_argument("--starts", type=int, default=4, help="starts of each kind")
    p.add_argument("--cold", default="true", choices=["true", "false"])
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(start_once(a.child[0], a.child[1], float(a.child[2]))))
        return
    print(machine())
    kinds = ["cold", "warm"] if a.cold == "true" else ["warm"]
    rows = {k: [] for k in kinds}
    for _ in range(a.starts):
        for kind in kinds:
            if kind == "cold":
                drop_page_cache()
            r = subprocess.run([sys.executable, "-m", "bench.bench_start", "--run", a.run, "--child", a.run, a.method,
                                str(time.time())], capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"the service did not start:\n{r.stderr[-3000:]}")
            rows[kind].append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(kind, json.dumps(rows[kind][-1]), flush=True)
    print(f"| {a.method} at {a.run} | start-up s (each start) | first playlist s | peak GiB |")
    print("|---|---|---|---|")
    for kind, rs in rows.items():
        print(f"| {kind} | " + ", ".join(f"{r['ready_s']:.1f}" for r in rs) + " | "
              + ", ".join(f"{r['first_playlist_s']:.2f}" for r in rs) + f" | {max(r['peak_gib'] for r in rs):.2f} |")


if __name__ == "__main__":
    main()
