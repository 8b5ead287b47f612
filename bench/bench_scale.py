"""Every stage at MPD scale on synthetic data: time, peak memory and throughput per phase, and how they grow.

    .venv/bin/python -m bench.bench_scale --sizes 100000,300000,1000000 [--work /tmp/bench_scale] [--phases ...]

For each size: writes synthetic MPD slices (1,000 playlists per JSON file; ~62 songs per playlist,
Zipf song popularity, 2 songs per playlist in the catalogue, i.e. 2M songs at 1M playlists), then runs
each phase in its own process (peak RSS = that process' ru_maxrss):
  import  = read_mpd + to_frames + write_playlists (prepare_data.py --source=mpd without the vectors)
  vectors = load_playlists + build_song_vectors + quality_check + write_song_vectors
  ids     = train_rq_kmeans.main on those vectors (the default 2 levels, codebooks sized by the song count)
  corpus  = prepare_corpus.main on those IDs
  train   = train_tiger.main, one model (--tiger.ensemble=1), --train_steps steps with one validation at the end:
            examples/s and tokens/s of the steps after the first 5, the projected time of one epoch
  eval    = evaluate_tiger.main on --eval_titles test titles, --eval_methods, the default shown playlist
  serve_M = generate_playlist.py's PlaylistService with --recommend.method=M (fusion, model, title_knn,
            cooccurrence): start-up (python start to ready, imports included), the first playlist, then
            --requests playlists for test titles alone and with 5 seed songs (song ids) each, p50 and p95
Targets at 1M on 2 cores: peak memory <= 16 GiB per stage; a playlist <= 1 s warm (title alone and with seeds);
start-up <= 10 s; growth about linear.
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
    from playlist_gen import manifest

    manifest.adopt(cfg)  # record the data written here, as prepare_data.py does
    return t


def stage_argv(data: Path, out: Path, models: Path | None = None) -> list[str]:
    return [f"--data_dir={data}", f"--output_dir={out}"] + ([f"--model_dir={models}"] if models else [])


def phase_ids(data: Path, out: Path) -> dict:
    import train_rq_kmeans
    from playlist_gen.io import read_json

    t0 = time.perf_counter()
    train_rq_kmeans.main(stage_argv(data, out))
    meta = read_json(out / "semantic_ids_meta.json", "")
    return {"train_rq_kmeans": time.perf_counter() - t0, "codebooks": meta.get("codebook_sizes")}


def phase_corpus(data: Path, out: Path) -> dict:
    import prepare_corpus

    t0 = time.perf_counter()
    prepare_corpus.main(stage_argv(data, out))
    return {"prepare_corpus": time.perf_counter() - t0}


class StepClock:
    """A TrainerCallback (built on first use) timing each step's end, and the tokens of each batch."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                clock.ends.append(time.perf_counter())

        self.callback, self.ends, self.tokens, self.examples = Callback(), [], [], 0


def phase_train(data: Path, out: Path, models: Path, steps: str) -> dict:
    import train_tiger
    from playlist_gen import training
    from playlist_gen.io import read_json

    clock, make_trainer = StepClock(), training.make_trainer

    def timed_trainer(*args, **kw):  # train_tiger.py's trainer, its steps timed and its batches counted
        trainer = make_trainer(*args, **kw)
        clock.examples = len(trainer.train_dataset)  # one per training entry (the tuples objective)
        collate = trainer.data_collator

        def counting(features):
            batch = collate(features)
            clock.tokens.append((len(features), int(batch["attention_mask"].sum()),
                                 int((batch["labels"] != -100).sum())))
            return batch

        trainer.data_collator = counting
        trainer.add_callback(clock.callback)
        return trainer

    training.make_trainer = timed_trainer
    n = int(steps)
    t0 = time.perf_counter()
    train_tiger.main(stage_argv(data, out, models) + ["--tiger.ensemble=1", f"--tiger.max_steps={n}",
                                                     f"--tiger.eval_steps={n}", f"--tiger.save_steps={n}"])
    total = time.perf_counter() - t0
    timed = clock.ends[-1] - clock.ends[WARMUP - 1]
    batches = clock.tokens[WARMUP:n]  # the batches of the timed steps (the collator also served validation)
    examples, tokens = sum(b[0] for b in batches), sum(b[1] + b[2] for b in batches)
    summary = read_json(out / "train_summary.json", "")
    entries = clock.examples
    return {"train_tiger": total, "timed_steps": n - WARMUP, "step_seconds": timed / (n - WARMUP),
            "examples_per_s": examples / timed, "tokens_per_s": tokens / timed, "train_entries": entries,
            "epoch_hours": entries / (examples / timed) / 3600 if entries else None,
            "train_seconds": summary["train_seconds"], "val_playlists": summary["val_playlists"]}


def phase_eval(data: Path, out: Path, models: Path, titles: str, methods: str) -> dict:
    import evaluate_tiger
    from playlist_gen.io import read_json

    t0 = time.perf_counter()
    evaluate_tiger.main(stage_argv(data, out, models) + [f"--eval.max_playlists={titles}", f"--eval.methods={methods}",
                                                        "--eval.shown_policies=sample"])
    seconds = time.perf_counter() - t0
    metrics = read_json(out / "metrics.json", "")
    return {"evaluate_tiger": seconds, "titles": int(titles), "titles_per_s": int(titles) / seconds,
            "ndcg@100": {m: metrics.get(m, {}).get("ndcg@100") for m in methods.split(",")}}


def phase_serve(data: Path, out: Path, models: Path, method: str, requests: str, started: str) -> dict:
    import pandas as pd

    from playlist_gen.cli import parse_config
    from playlist_gen.service import PlaylistService

    cfg = parse_config(stage_argv(data, out, models) + [f"--recommend.method={method}"], "")
    test = pd.read_csv(out / "test.tsv", sep="\t", dtype=str, keep_default_na=False)
    service = PlaylistService(cfg)
    ready = time.time() - float(started)  # from the python process' start: imports and loading
    t0 = time.perf_counter()
    first = service.create(test["title"][0])
    t = {"start_up": ready, "first_playlist": time.perf_counter() - t0}
    catalogue = service.maker.catalogue
    n = int(requests)
    for kind in ("title", "seeds"):
        lat = []
        for i in range(1, n + 1):
            title = test["title"][i % len(test)]
            seeds = []
            if kind == "seeds":  # 5 songs of another test playlist (by id, as a client picks them from search)
                songs = service.create(test["title"][(i + 7) % len(test)]).songs
                seeds = [x.id for x in songs[:5]] or [x.id for x in first.songs[:5]]
            a = time.perf_counter()
            service.create(title, seed_songs=seeds)
            lat.append(time.perf_counter() - a)
        t[f"{kind}_p50"], t[f"{kind}_p95"] = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
    t["songs"] = len(catalogue.songs)
    return t


PHASES = {"import": phase_import, "vectors": phase_vectors, "ids": phase_ids, "corpus": phase_corpus,
          "train": phase_train, "eval": phase_eval, "serve": phase_serve}
SERVED = ("fusion", "model", "title_knn", "cooccurrence")
WARMUP = 5


def work_seconds(t: dict) -> float:
    keys = ("read_mpd", "to_frames", "write_csv", "load_csv", "build_song_vectors", "quality_check", "write_vectors",
            "train_rq_kmeans", "prepare_corpus", "train_tiger", "evaluate_tiger", "start_up")
    return sum(t[k] for k in keys if k in t)


def run_phase(args: list[str]) -> tuple[dict, float]:
    """One phase in a fresh process: (its timings and peak RSS GiB, wall seconds)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "bench.bench_scale", "--phase", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"phase {args} failed:\n{r.stderr[-3000:]}")
    result = json.loads(r.stdout.strip().splitlines()[-1])
    return result, wall


def phase_args(phase: str, work: Path, a) -> list[str]:
    mpd, data, out, models = work / "mpd", work / "data", work / "out", work / "models"
    if phase.startswith("serve_"):
        return ["serve", data, out, models, phase[len("serve_"):], a.requests, "STARTED"]
    return {"import": ["import", data, mpd], "vectors": ["vectors", data], "ids": ["ids", data, out],
            "corpus": ["corpus", data, out], "train": ["train", data, out, models, a.train_steps],
            "eval": ["eval", data, out, models, a.eval_titles, a.eval_methods]}[phase]


def measure(n: int, a) -> dict:
    work = Path(a.work) / str(n)
    if not (work / "mpd" / "done").exists():
        t0 = time.perf_counter()
        write_mpd(work / "mpd", n)
        (work / "mpd" / "done").write_text("")
        print(f"{n:,} playlists: synthetic MPD written in {time.perf_counter() - t0:.0f} s", flush=True)
    res = {}
    for phase in ["import", "vectors", "ids", "corpus", "train", "eval", *(f"serve_{m}" for m in SERVED)]:
        saved = work / f"result_{phase}.json"  # a phase measured earlier is reported, not re-run
        if phase.split("_")[0] not in a.phases.split(","):
            continue
        if not saved.exists():
            args = [str(x) for x in phase_args(phase, work, a)]
            saved.write_text(json.dumps(run_phase([x if x != "STARTED" else str(time.time()) for x in args])
                                        + (machine(),)))
        *res[phase], where = json.loads(saved.read_text())
        print(n, phase, f"{res[phase][1]:.1f} s wall", json.dumps(res[phase][0]), where, flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,300000")
    p.add_argument("--work", default="/tmp/bench_scale")
    p.add_argument("--phases", default="import,vectors,ids,corpus,train,eval,serve",
                   help="which phases to run (the others are skipped)")
    p.add_argument("--train_steps", default="300")
    p.add_argument("--eval_titles", default="10000")
    p.add_argument("--eval_methods", default="model,fusion,title_knn,popularity")
    p.add_argument("--requests", default="20", help="serve: requests per kind (title alone, with seed songs)")
    p.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        name, *rest = a.phase
        t = PHASES[name](*[Path(x) if "/" in x else x for x in rest])
        t["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(t))
        return
    print(machine())
    rows = [(n, measure(n, a)) for n in map(int, a.sizes.split(","))]
    report(rows)


def report(rows: list[tuple[int, dict]]) -> None:
    print(machine())
    sizes = [n for n, _ in rows]
    print("seconds: the phase's own work (python start-up and imports excluded; serve: included); GiB: peak RSS")
    print("| phase | " + " | ".join(f"{n:,}: s | GiB" for n in sizes) + " | growth (s) per step |")
    print("|---|" + "---|---|" * len(sizes) + "---|")
    phases = list(dict.fromkeys(ph for _, res in rows for ph in res))
    for ph in phases:
        cells, secs = [], []
        for _, res in rows:
            t = res.get(ph, ({}, None))[0]
            secs.append(work_seconds(t) if t else None)
            cells += [f"{secs[-1]:.0f}" if t else "-", f"{t['peak_gib']:.2f}" if t else "-"]
        growth = [f"x{b / x:.2f} (x{n1 / n0:.1f} playlists)" for (x, b, n0, n1) in
                  zip(secs, secs[1:], sizes, sizes[1:]) if x and b]
        print(f"| {ph} | " + " | ".join(cells) + " | " + ", ".join(growth) + " |")
    for n, res in rows:
        if "train" in res:
            t = res["train"][0]
            print(f"{n:,} train: {t['step_seconds'] * 1000:.0f} ms/step, {t['examples_per_s']:,.0f} examples/s, "
                  f"{t['tokens_per_s']:,.0f} tokens/s; one epoch ({t['train_entries']:,} entries) "
                  f"~{t['epoch_hours'] or 0:.1f} h")
        if "eval" in res:
            t = res["eval"][0]
            print(f"{n:,} eval: {t['titles']:,} titles at {t['titles_per_s']:.1f}/s; NDCG@100 {t['ndcg@100']}")
        for m in SERVED:
            if f"serve_{m}" in res:
                t = res[f"serve_{m}"][0]
                print(f"{n:,} serve {m}: start-up {t['start_up']:.1f} s, first playlist {t['first_playlist']:.2f} s, "
                      f"title p50/p95 {t['title_p50'] * 1000:.0f}/{t['title_p95'] * 1000:.0f} ms, "
                      f"5 seeds p50/p95 {t['seeds_p50'] * 1000:.0f}/{t['seeds_p95'] * 1000:.0f} ms, "
                      f"{t['peak_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
