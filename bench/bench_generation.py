"""Generation speed: constrained vs unconstrained on the same model and titles, and the CLI's latency.

    .venv/bin/python -m bench.bench_generation --data_dir=D --output_dir=O --model_dir=M [--bench_n=64]

D/O/M: a finished pipeline run (prepare_data .. train_tiger). Part 1 times
`PlaylistGenerator.generate` (evaluate_tiger.py's call: batched beam search with the KV cache,
generate.* as configured, generate.cpu_threads torch threads as evaluate_tiger.py sets them, 50 songs)
on the first bench_n test titles, with the trie constraint and without it, in one process: one untimed
warm-up run of each on 4 titles (first-call allocations, lazy init), then alternating twice and keeping
the faster run of each.
Part 2 starts `generate_playlist.py --title` as a subprocess (time to its first playlist) and then
pipes 4 titles into one process (time between playlists). Targets: constraints cost <= 15%;
first playlist within 3 s of start, a later one within 1 s.
"""

import subprocess
import sys
import time
from dataclasses import replace

from bench.common import machine


def generation_rates(argv, n: int, rounds: int = 2) -> dict:
    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.cli import parse_config
    from playlist_gen.corpus import read_split
    from playlist_gen.device import resolve_device
    from playlist_gen.generation import load_generator

    cfg = parse_config(argv, __doc__)
    if cfg.generate.mode == "rank":  # this part times sequence decoding
        cfg.generate.mode = "beam"
    gen = load_generator(cfg, load_catalogue(cfg).clusters, resolve_device("auto", 0, cfg.generate.cpu_threads))
    titles = list(read_split(cfg, "test")["title"])[:n]
    songs = 50
    for constrained in (True, False):  # warm-up, not timed
        gen.generate(titles[:4], replace(cfg.generate, constrained=constrained), num_songs=songs)
    best = {}
    existing = set(gen.trie.clusters)
    for _ in range(rounds):
        for constrained in (True, False):
            g = replace(cfg.generate, constrained=constrained)
            t0 = time.perf_counter()
            out = gen.generate(titles, g, num_songs=songs)
            s = time.perf_counter() - t0
            valid = sum(t in existing for row in out for t in row) / max(1, sum(len(row) for row in out))
            if s < best.get(constrained, (float("inf"),))[0]:
                best[constrained] = (s, valid)
            print(f"{'constrained' if constrained else 'unconstrained'}: {len(titles)} playlists in {s:.2f}s "
                  f"({len(titles) / s:.2f}/s), valid tuples {valid:.1%}", flush=True)
    return {"n": len(titles), "g": cfg.generate, **{k: v for k, v in best.items()}}


def cli_latency(argv) -> tuple[float, list[float]]:
    """Seconds from start to the first playlist (--title), and from title to playlist for later piped titles."""
    cmd = [sys.executable, "generate_playlist.py", *argv]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--generate.title=chill vibes"], check=True, capture_output=True)
    first = time.perf_counter() - t0
    titles = ["workout", "深夜emo", "road trip", "sleep"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    latency = []
    for title in titles:
        t_sent = time.perf_counter()
        proc.stdin.write(title + "\n")
        proc.stdin.flush()
        while not proc.stdout.readline().startswith("🎵"):
            pass
        latency.append(time.perf_counter() - t_sent)
    proc.stdin.close()
    proc.wait()
    return first, latency[1:]  # the first piped title includes loading


def main() -> None:
    argv = [a for a in sys.argv[1:] if not a.startswith("--bench_n=")]
    n = int(next((a.split("=")[1] for a in sys.argv[1:] if a.startswith("--bench_n=")), 64))
    print(machine())
    r = generation_rates(argv, n)
    first, later = cli_latency(argv)
    print(machine())
    (tc, vc), (tu, vu) = r[True], r[False]
    g = r["g"]
    print(f"| playlists | mode | constrained /s | unconstrained /s | valid c/u | constraint cost | CLI first s "
          f"| CLI later s (max) |\n|---|---|---|---|---|---|---|---|\n"
          f"| {r['n']} x 50 songs | {g.mode} {g.num_beams} beams, batch {g.batch_size} | {r['n'] / tc:.2f} "
          f"| {r['n'] / tu:.2f} | {vc:.0%}/{vu:.0%} | {100 * (tc / tu - 1):+.0f}% | {first:.2f} | {max(later):.2f} |")


if __name__ == "__main__":
    main()
