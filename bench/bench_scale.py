"""Stage 0 and stage 2 at MPD scale on synthetic data: time and peak memory per phase, and how they grow.

    .venv/bin/python -m bench.bench_scale --sizes 100000,300000 [--work /tmp/bench_scale]

For each size: writes synthetic MPD slices (1,000 playlists per JSON file; ~66 songs per playlist,
Zipf song popularity, 2 songs per playlist in the catalogue, i.e. 2M songs at 1M playlists), then runs
each phase in its own process (peak RSS = that process' ru_maxrss):
  import  = read_mpd + to_frames + write_playlists (prepare_data.py --source=mpd without the vectors)
  vectors = load_playlists + build_song_vectors + quality_check + write_song_vectors
  corpus  = prepare_corpus.main (random 2-level semantic IDs for every song stand in for stage 1)
Targets at 1M: import + corpus < 5 min and < 8 GiB; vectors < 15 min; growth about linear.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine

WORDS = ("chill summer party workout road trip love country rock throwback sad happy vibes jams hits oldies "
         "gym study sleep rap pop indie christmas 2016 90s 80s car dance night feels beach worship mix").split()


def write_mpd(folder: Path, n_playlists: int, seed: int = 0, per_file: int = 1000) -> None:
    rng = np.random.default_rng(seed)
    n_songs = 2 * n_playlists
    weight = 1.0 / np.arange(1, n_songs + 1) ** 0.9  # Zipf-like popularity
    cdf = np.cumsum(weight) / weight.sum()
    snippet = [f'{{"track_uri":"spotify:track:s{i:08d}","track_name":"song {i}","artist_name":"artist {i % 300000}"}}'
               for i in range(n_songs)]
    folder.mkdir(parents=True, exist_ok=True)
    for f0 in range(0, n_playlists, per_file):
        lengths = np.clip(rng.lognormal(3.9, 0.7, per_file).astype(int), 5, 250)  # mean ~66
        songs = np.searchsorted(cdf, rng.random(lengths.sum()))
        parts, pos = [], 0
        for j, n in enumerate(lengths):
            title = " ".join(rng.choice(WORDS, rng.integers(1, 4)))
            tracks = ",".join(snippet[s] for s in songs[pos:pos + n])
            parts.append(f'{{"name":"{title}","pid":{f0 + j},"num_followers":1,"tracks":[{tracks}]}}')
            pos += n
        (folder / f"mpd.slice.{f0}-{f0 + per_file - 1}.json").write_text(
            '{"info":{},"playlists":[' + ",".join(parts) + "]}")


def phase_import(data: Path, mpd: Path) -> dict:
    from playlist_gen.cli import parse_config
    from playlist_gen.data import write_playlists
    from playlist_gen.mpd import read_mpd, to_frames

    cfg = parse_config([f"--data_dir={data}"], "")
    t = {}
    t0 = time.perf_counter()
    tables = read_mpd(mpd, 0, 0)
    t["read_mpd"] = time.perf_counter() - t0
    info, songs, song_info = to_frames(tables)
    t["to_frames"] = time.perf_counter() - t0 - t["read_mpd"]
    del tables
    t1 = time.perf_counter()
    write_playlists(cfg, info, songs, song_info)
    t["write_csv"] = time.perf_counter() - t1
    t["entries"], t["songs"] = len(songs), len(song_info)
    return t


def phase_vectors(data: Path) -> dict:
    from playlist_gen.cli import parse_config
    from playlist_gen.data import load_playlists, write_song_vectors
    from playlist_gen.song_vectors import build_song_vectors, quality_check

    cfg = parse_config([f"--data_dir={data}"], "")
    t = {}
    t0 = time.perf_counter()
    pl = load_playlists(cfg)
    t["load_csv"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, X, _ = build_song_vectors(pl.songs, cfg.vectors, cfg.seed)
    t["build_song_vectors"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    quality_check(ids, X, pl.songs, pl.song_info, cfg.vectors, cfg.seed)
    t["quality_check"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_song_vectors(cfg.song_vectors_path, ids, X, cfg.data.song_id_col)
    t["write_vectors"] = time.perf_counter() - t0
    return t


def phase_corpus(data: Path, out: Path) -> dict:
    import prepare_corpus
    from playlist_gen import manifest
    from playlist_gen.cli import parse_config
    from playlist_gen.data import read_csv_strings
    from playlist_gen.io import write_json
    from playlist_gen.semantic_ids import write_semantic_ids

    argv = [f"--data_dir={data}", f"--output_dir={out}"]
    cfg = parse_config(argv, "")
    ids = read_csv_strings(cfg.song_info_path, {cfg.data.song_id_col: "song_id_col"})[cfg.data.song_id_col]
    codes = np.random.default_rng(0).integers(0, 1024, size=(len(ids), 2))
    write_semantic_ids(cfg.semantic_ids_path, list(ids), codes)
    write_json(cfg.semantic_meta_path, {"method": "fixture", "levels": 2, "codebook_sizes": [1024, 1024], "dim": 100})
    manifest.adopt(cfg)  # record the data and IDs written here, as stages 0 and 1 would have
    t0 = time.perf_counter()
    prepare_corpus.main(argv)
    return {"prepare_corpus": time.perf_counter() - t0}


def work_seconds(t: dict) -> float:
    return sum(v for k, v in t.items() if k not in ("entries", "songs", "peak_gib"))


def run_phase(args: list[str]) -> tuple[dict, float]:
    """One phase in a fresh process: (its timings, wall seconds, peak RSS GiB)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "bench.bench_scale", "--phase", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"phase {args} failed:\n{r.stderr[-3000:]}")
    result = json.loads(r.stdout.strip().splitlines()[-1])
    return result, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,300000")
    p.add_argument("--work", default="/tmp/bench_scale")
    p.add_argument("--phases", default="import,vectors,corpus", help="which phases to run (the others are skipped)")
    p.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        name, *paths = a.phase
        t = {"import": phase_import, "vectors": phase_vectors, "corpus": phase_corpus}[name](*map(Path, paths))
        t["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(t))
        return
    print(machine())
    rows = []
    for n in map(int, a.sizes.split(",")):
        work = Path(a.work) / str(n)
        mpd, data, out = work / "mpd", work / "data", work / "out"
        if not (mpd / "done").exists():
            t0 = time.perf_counter()
            write_mpd(mpd, n)
            (mpd / "done").write_text("")
            print(f"{n:,} playlists: synthetic MPD written in {time.perf_counter() - t0:.0f} s", flush=True)
        res = {}
        for phase, paths in (("import", [data, mpd]), ("vectors", [data]), ("corpus", [data, out])):
            saved = work / f"result_{phase}.json"  # a phase measured earlier is reported, not re-run
            if phase not in a.phases.split(","):
                continue
            if not saved.exists():
                saved.write_text(json.dumps(run_phase([phase, *map(str, paths)]) + (machine(),)))
            *res[phase], where = json.loads(saved.read_text())
            print(n, phase, f"{res[phase][1]:.1f} s wall", json.dumps(res[phase][0]), where, flush=True)
        rows.append((n, res))
    print(machine())
    print("seconds are the phase's own work (process start-up and imports excluded; wall includes them)")
    print("| playlists | entries | songs | import s (wall) | import GiB | vectors s (wall) | vectors GiB "
          "| corpus s (wall) | corpus GiB | import+corpus s |\n|---|---|---|---|---|---|---|---|---|---|")
    for n, res in rows:
        cells = []
        for ph in ("import", "vectors", "corpus"):
            t, wall = res.get(ph, ({}, None))
            cells += [f"{work_seconds(t):.0f} ({wall:.0f})", f"{t['peak_gib']:.2f}"] if wall else ["-", "-"]
        ti = res.get("import", ({},))[0]
        both = (f"{work_seconds(res['import'][0]) + work_seconds(res['corpus'][0]):.0f}"
                if "import" in res and "corpus" in res else "-")
        print(f"| {n:,} | {ti.get('entries', 0):,} | {ti.get('songs', 0):,} | " + " | ".join(cells) + f" | {both} |")
    for (n0, r0), (n1, r1) in zip(rows, rows[1:]):
        grow = {ph: work_seconds(r1[ph][0]) / work_seconds(r0[ph][0]) for ph in r1 if ph in r0}
        print(f"growth {n0:,} -> {n1:,} playlists (x{n1 / n0:.1f}): "
              + ", ".join(f"{ph} x{g:.2f}" for ph, g in grow.items()))
    n, res = rows[-1]
    if "import" in res and "corpus" in res:
        both = work_seconds(res["import"][0]) + work_seconds(res["corpus"][0])
        peak = max(res["import"][0]["peak_gib"], res["corpus"][0]["peak_gib"])
        print(f"{n:,} playlists: import + corpus {both:.0f} s = {both / 300:.2f} x the 300 s target, "
              f"peak {peak:.2f} GiB = {peak / 8:.2f} x the 8 GiB target")
    if "vectors" in res:
        s = work_seconds(res["vectors"][0])
        print(f"{n:,} playlists: song vectors {s:.0f} s = {s / 900:.2f} x the 900 s target")


if __name__ == "__main__":
    main()
