"""Stage 4: evaluate the trained title -> semantic-ID model against three baselines on the test split.

Per test playlist the model generates eval.n_clusters clusters (trie-constrained, generate.mode; by
default the median length of the training targets, a typical playlist), one song is picked per cluster
(eval.song_pick) and, with eval.fill_to_k, the list is extended to K songs with the next most popular
songs of the same clusters, round robin: the song-level metrics need K songs, and a cluster's other
songs rank better than clusters generated past the lengths seen in training.
Baselines on the same playlists: popularity (top training songs), title kNN (TF-IDF char 2-4-grams,
eval.knn_neighbors nearest training playlists) and random real clusters; a baseline's clusters are
those of its songs. Metrics: ROUGE-L, BLEU-4 and tuple F1 on semantic IDs (one unit per token);
cluster-expansion precision/recall/F1 and expansion size; R-precision, NDCG@K, Recall@K against the
full real playlist; validity, distinct clusters/artists, catalogue coverage.

Writes metrics.json and evaluation_results.txt (side-by-side examples) in output_dir. Also runs as
`torchrun --nproc_per_node=N evaluate_tiger.py`: test batches are split across ranks and gathered.
"""

import logging
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from playlist_gen import metrics
from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.io import PipelineError, atomic_write, write_json

log = logging.getLogger(__name__)

METHODS = ("model", "popularity", "title_knn", "random_cluster")


class Distributed:
    """Rank, world size and device from torchrun's environment (a single process without it)."""

    def __init__(self, cpu_threads: int = 0):
        from playlist_gen.generation import pick_device

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        self.device = pick_device(int(os.environ.get("LOCAL_RANK", "0")), cpu_threads)
        if self.world > 1:
            import torch
            import torch.distributed as dist

            if self.device.startswith("cuda"):
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.startswith("cuda") else "gloo")

    def gather(self, obj) -> list | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def close(self) -> None:
        """No barrier: nothing runs after rank 0's report, and after an error one could hang."""
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


@dataclass
class EvalData:
    test: list  # (i, glid, model input text, raw title, reference target)
    truth: dict  # glid -> every song of the real playlist
    index: object  # SongIndex
    popularity: object
    knn: object
    artists: dict  # song_id -> artist
    names: dict  # song_id -> name
    catalogue: set  # songs with semantic IDs
    median_target_tokens: int  # of the training split


def load_eval_data(cfg, write_index: bool) -> EvalData:
    """Test playlists (reference targets still as text), their real songs, the song index, the baselines."""
    from playlist_gen.baselines import Popularity, TitleKNN
    from playlist_gen.corpus import read_split
    from playlist_gen.data import load_playlists
    from playlist_gen.generation import load_song_index, training_counts

    playlists = load_playlists(cfg)
    train, test = read_split(cfg, "train"), read_split(cfg, "test")
    if cfg.eval.max_playlists > 0:
        test = test.head(cfg.eval.max_playlists)
    if test.empty:
        raise PipelineError(f"{cfg.split_path('test')} has no playlists; raise --corpus.test_fraction and re-run "
                            "`python prepare_corpus.py`")
    song_lists = playlists.song_lists()
    titles = dict(zip(playlists.info["playlist_id"], playlists.info["title"]))
    popularity = Popularity(training_counts(playlists, train["glid"]))
    train_ids = [g for g in train["glid"] if g in song_lists]
    knn = TitleKNN([titles[g] for g in train_ids], [song_lists[g] for g in train_ids], popularity,
                   cfg.eval.knn_neighbors)
    index = load_song_index(cfg, playlists, write=write_index)
    rows = [(i, g, text, titles.get(g, text), target)
            for i, (g, text, target) in enumerate(zip(test["glid"], test["title"], test["target"]))]
    info = playlists.song_info
    log.info("evaluating on %s test playlists (%s training playlists)", f"{len(rows):,}", f"{len(train_ids):,}")
    return EvalData(rows, {g: song_lists.get(g, []) for _, g, *_ in rows}, index, popularity, knn,
                    dict(zip(info["song_id"], info["artist"])), dict(zip(info["song_id"], info["name"])),
                    set(index.song_cluster), int(np.median([len(t.split()) for t in train["target"]])))


def clusters_of(songs, index, n: int) -> list[tuple]:
    """The first `n` distinct clusters of a song ranking (songs without IDs skipped)."""
    out = {}
    for s in songs:
        t = index.song_cluster.get(s)
        if t is not None:
            out.setdefault(t, None)
            if len(out) == n:
                break
    return list(out)


def from_clusters(tuples, index, pick: str, rng, k: int, fill: bool) -> dict:
    from playlist_gen.generation import fill_from_clusters, pick_songs

    valid = [t for t in tuples if t in index.cluster_songs]
    picked = [s for s, _ in pick_songs(valid, index, pick, rng)]
    return {"tuples": tuples, "ranked": fill_from_clusters(picked, valid, index, k) if fill else picked[:k]}


def run_batch(cfg, data: EvalData, generator, batch: list, b: int, n: int) -> list[dict]:
    """Every method's output for one batch of test playlists, scored."""
    from playlist_gen.baselines import random_clusters

    k, e = cfg.eval.k, cfg.eval
    generated = generator.generate([r[2] for r in batch], cfg.generate, num_songs=n, seed=cfg.seed, batch_offset=b)
    knn_lists = data.knn.recommend_many([r[3] for r in batch], max(k, n) * 3)
    pop = data.popularity.ranked
    pop_out = {"tuples": clusters_of(pop, data.index, n), "ranked": pop[:k]}
    clusters = sorted(data.index.cluster_songs)
    records = []
    for (i, glid, _, title, ref), tuples, knn in zip(batch, generated, knn_lists):
        rng = np.random.default_rng([cfg.seed, i])
        out = {"model": from_clusters(tuples, data.index, e.song_pick, rng, k, e.fill_to_k),
               "popularity": pop_out,
               "title_knn": {"tuples": clusters_of(knn, data.index, n), "ranked": knn[:k]},
               "random_cluster": from_clusters(random_clusters(clusters, n, rng), data.index, e.song_pick, rng,
                                               k, e.fill_to_k)}
        truth = data.truth[glid]
        scores = {m: metrics.playlist_scores(o["tuples"], o["ranked"], ref, truth, data.index, k,
                                             generator.scheme, n, lambda s: data.artists.get(s, "unknown"))
                  for m, o in out.items()}
        records.append({"i": i, "glid": glid, "title": title, "scores": scores,
                        "ranked": {m: o["ranked"] for m, o in out.items()}, "tuples": out["model"]["tuples"]})
    return records


def summarize(records: list[dict], catalogue: set) -> dict:
    table = {}
    for m in METHODS:
        table[m] = metrics.mean_table([r["scores"][m] for r in records])
        table[m]["catalogue_coverage"] = metrics.coverage((r["ranked"][m] for r in records), catalogue)
        table[m]["playlists"] = len(records)
    return table


def format_table(table: dict) -> str:
    keys = list(dict.fromkeys(k for m in table.values() for k in m))
    lines = [f"{'metric':<20}" + "".join(f"{m:>16}" for m in table)]
    for key in keys:
        cells = [table[m].get(key, float("nan")) for m in table]
        lines.append(f"{key:<20}" + "".join(f"{v:>16.0f}" if key == "playlists" else f"{v:>16.4f}" for v in cells))
    return "\n".join(lines)


def write_examples(path, records: list[dict], data: EvalData, n: int, header: str) -> None:
    """Per playlist: title, the real songs and the model's songs, with artists and cluster IDs."""
    def line(j, s, hits):
        t = data.index.song_cluster.get(s)
        cid = "-".join(map(str, t)) if t else "no ID"
        mark = " *" if s in hits else ""
        return f"  {j:>3}. {data.names.get(s, 'unknown')} - {data.artists.get(s, 'unknown')}  [{cid}]{mark}"

    with atomic_write(path) as f:
        f.write(f"{header}\n* = in both lists; [a-b] = the song's cluster (semantic ID)\n")
        for r in records:
            real, gen = data.truth[r["glid"]], r["ranked"]["model"][:n]
            f.write(f"\n=== {r['i'] + 1}. {r['title']}  (playlist {r['glid']}) ===\n")
            f.write(f"real ({len(real)} songs):\n")
            f.writelines(line(j, s, set(gen)) + "\n" for j, s in enumerate(real, 1))
            f.write(f"generated ({len(gen)} songs from {len(r['tuples'])} clusters):\n")
            f.writelines(line(j, s, set(real)) + "\n" for j, s in enumerate(gen, 1))


def main(argv=None):
    cfg = parse_config(argv, __doc__)
    from playlist_gen import tokens
    from playlist_gen.generation import load_generator, require_model

    require_model(cfg)
    dist = Distributed(cfg.generate.cpu_threads)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        data = load_eval_data(cfg, write_index=dist.is_main)
        generator = load_generator(cfg, data.index.cluster_songs, dist.device)
        data.test = [(*r[:4], tokens.decode(r[4], generator.levels, generator.scheme)) for r in data.test]
        n = cfg.eval.n_clusters or max(1, round(data.median_target_tokens / generator.levels))
        bs = cfg.generate.batch_size
        batches = [data.test[j:j + bs] for j in range(0, len(data.test), bs)]
        mine = [b for b in range(len(batches)) if b % dist.world == dist.rank]
        records = []
        for b in tqdm(mine, desc="evaluating", unit="batch", disable=not dist.is_main):
            records += run_batch(cfg, data, generator, batches[b], b, n)
        gathered = dist.gather(records)
        if dist.is_main:
            records = sorted((r for part in gathered for r in part), key=lambda r: r["i"])
            report(cfg, records, data, n)
    finally:
        dist.close()


def report(cfg, records: list[dict], data: EvalData, n: int) -> None:
    table = summarize(records, data.catalogue)
    print(format_table(table))
    write_json(cfg.metrics_path, table)
    g = cfg.generate
    header = (f"model: {g.mode} decoding ({g.num_beams} beams)" if g.mode == "beam" else
              f"model: sampling (temperature {g.temperature}, top-p {g.top_p})")
    header += f", {n} clusters per playlist, songs picked: {cfg.eval.song_pick}"
    write_examples(cfg.evaluation_results_path, records[:cfg.eval.examples], data, n, header)
    save_config(cfg, "evaluate_tiger")
    log.info("wrote %s and %s", cfg.metrics_path, cfg.evaluation_results_path)


if __name__ == "__main__":
    run_script(main)
