"""The playlist service under load: cold start to the first answer, then latency and throughput with 1, 8 and 32
concurrent clients, errors, and the server's peak memory, side by side in one run.

    .venv/bin/python -m bench.bench_service --data_dir=D --output_dir=O --model_dir=M [--requests=64]

Starts `generate_playlist.py --serve` on the run's folders (its feedback log in a temporary file, so the run's own
log is untouched) and, per concurrency level, sends `--requests` playlist requests (POST /playlists with the titles
of the run's test split, 20 songs, the default recommender and pick) from that many client threads, each request
followed by one like (POST /playlists/{id}/feedback, timed apart). Prints p50/p99 per request, requests per
second and errors; the server's peak resident memory is read from /proc at the end. Targets on the 2-core machine:
p99 <= 150 ms for one client, no errors at 32 clients, the first answer <= 3 s after start.
"""

import csv
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 8, 32)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def run_level(base: str, titles: list[str], clients: int, requests: int) -> dict:
    make, like, errors = [], [], []
    lock, jobs = threading.Lock(), iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                n = next(jobs, None)
            if n is None:
                return
            try:
                t0 = time.perf_counter()
                pid = post(f"{base}/playlists", {"title": titles[n % len(titles)]})["id"]
                t1 = time.perf_counter()
                post(f"{base}/playlists/{pid}/feedback", {"like": [1]})
                t2 = time.perf_counter()
                with lock:
                    make.append(t1 - t0)
                    like.append(t2 - t1)
            except Exception as e:  # counted, never fatal
                with lock:
                    errors.append(repr(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "p50_ms": 1000 * percentile(make, 0.5),
            "p99_ms": 1000 * percentile(make, 0.99), "feedback_p50_ms": 1000 * percentile(like, 0.5),
            "playlists_per_s": len(make) / wall, "errors": len(errors), "first_error": errors[0] if errors else ""}


def main() -> None:
    requests = int(next((a.split("=")[1] for a in sys.argv[1:] if a.startswith("--requests=")), 64))
    argv = [a for a in sys.argv[1:] if not a.startswith("--requests=")]
    out = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--output_dir=")))
    with open(out / "test.tsv", encoding="utf-8", newline="") as f:
        titles = [row["title"] for row in csv.DictReader(f, delimiter="\t")][:500]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Path(tempfile.mkdtemp()) / "feedback.db"
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "generate_playlist.py", *argv, "--serve", f"--port={port}",
                               f"--generate.feedback_db={db}"], cwd=ROOT, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                post(f"{base}/playlists", {"title": titles[0]})
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(server.stderr.read().decode()[-2000:])
                time.sleep(0.02)
        first = time.perf_counter() - t0
        print(f"first playlist answered {first:.2f} s after the service was started")
        print(f"{'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'like p50 ms':>11} {'playlists/s':>11} "
              f"{'errors':>6}")
        for clients in LEVELS:
            r = run_level(base, titles, clients, requests)
            print(f"{r['clients']:>7} {r['requests']:>8} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} "
                  f"{r['feedback_p50_ms']:>11.0f} {r['playlists_per_s']:>11.1f} {r['errors']:>6} {r['first_error']}")
        status = Path(f"/proc/{server.pid}/status").read_text()
        peak = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
        print(f"server peak memory {int(peak) / 1024:.0f} MiB")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
