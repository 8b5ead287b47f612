"""Stage 4: score every recommender on the same held-out playlists: the model, its fusion with title kNN, and
the baselines popularity, title kNN and random clusters (`--eval.methods`, playlist_gen.recommend).

Each test playlist's input text (its normalised title, plus tags where the corpus has them) becomes one request
for K songs and eval.n_clusters clusters (0: the median number of distinct clusters of a training playlist).
Metrics per method, averaged over playlists: R-precision, NDCG@K and Recall@K against every song of the real
playlist (RecSys Challenge 2018); cluster-expansion precision/recall/F1 and expansion size; ROUGE-L, BLEU-4 and
tuple F1 on semantic IDs; validity, distinct clusters/artists, catalogue coverage.

Writes metrics.json and evaluation_results.txt (side-by-side examples of recommend.method) in output_dir. Also
runs as `torchrun --nproc_per_node=N evaluate_tiger.py`: request batches are split across ranks and gathered.
"""

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from config import EvalConfig
from playlist_gen import metrics, shown
from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.io import PipelineError, atomic_write, write_json

log = logging.getLogger(__name__)


@dataclass
class Playlist:
    i: int
    glid: str
    text: str  # the model input: normalised title (+ extra columns)
    title: str  # as the user wrote it
    reference: list  # the clusters of the songs to find, in order
    truth: list  # every song to find (the real playlist after its seed songs), with or without a semantic ID
    seeds: tuple = ()  # the first eval.seed_songs songs, given


def load_test_playlists(cfg, playlists, index) -> list[Playlist]:
    """The playlists of eval.split; with eval.seed_songs = K, their first K songs are given and the rest are to be
    found (playlists of K songs or fewer are left out, and counted)."""
    from playlist_gen.corpus import read_split
    from playlist_gen.text import EXTRA_SEPARATOR

    split = read_split(cfg, cfg.eval.split)
    if cfg.eval.max_playlists > 0:
        split = split.head(cfg.eval.max_playlists)
    song_lists = playlists.song_lists(only=set(split["glid"]))
    titles = dict(zip(playlists.info["playlist_id"], playlists.info["title"]))
    k = cfg.eval.seed_songs
    out = []
    for g, text in zip(split["glid"], split["title"]):
        songs = song_lists.get(g, [])
        text = text.split(EXTRA_SEPARATOR, 1)[0] if cfg.eval.title_only else text
        if len(songs) > k:
            rest = songs[k:]
            reference = [index.song_cluster[s] for s in rest if s in index.song_cluster]
            out.append(Playlist(len(out), g, text, titles.get(g, text), reference, rest, tuple(songs[:k])))
    if len(out) < len(split):
        log.info("%s of %s playlists have at most %d songs: left out (nothing to find after the seed songs)",
                 f"{len(split) - len(out):,}", f"{len(split):,}", k)
    if not out:
        raise PipelineError(f"{cfg.split_path(cfg.eval.split)} has no playlists with more than {k} songs; raise "
                            "--corpus.test_fraction and re-run `python prepare_corpus.py`, or lower --eval.seed_songs")
    return out


def typical_clusters(catalogue) -> int:
    """The median number of distinct clusters in a training playlist: a typical playlist's breadth."""
    per_playlist = [len(set(catalogue.cluster[c][catalogue.cluster[c] >= 0])) for c in catalogue.train_codes]
    return max(1, int(np.median(per_playlist))) if per_playlist else 1


def score_batch(cfg, recommenders: dict, batch: list[Playlist], n: int, catalogue, scheme: str, artist_of) -> list:
    """Every method's recommendation per playlist, scored as a ranked list (K songs, n clusters; top_*: its first
    --num_songs) and as the playlist generate_playlist.py would show (shown_*: its --pick, --num_songs and a
    per-playlist seed); the shown playlist of recommend.method also under every policy of eval.shown_policies."""
    from playlist_gen.recommend import Request

    g = cfg.generate
    seeds = [int(np.random.SeedSequence([cfg.seed, p.i]).generate_state(1)[0]) for p in batch]
    k = max(cfg.eval.k, shown.candidates(g.num_songs))  # the CLI's list; metrics @K read its first K
    requests = [Request(p.text, k, max(n, g.num_songs), seed, p.seeds) for p, seed in zip(batch, seeds)]
    outputs = {name: r.recommend(requests) for name, r in recommenders.items()}
    default = shown.ShowPolicy.from_config(g)
    policies = [shown.ShowPolicy.from_config(g, pick) for pick in cfg.eval.shown_policies.split(",")]
    records = []
    for j, p in enumerate(batch):
        scores, printed = {}, {}
        for name, out in outputs.items():
            rec = out[j]
            scores[name] = metrics.playlist_scores(rec.clusters[:n], rec.songs[:cfg.eval.k], p.reference, p.truth,
                                                   catalogue.index, cfg.eval.k, scheme, n, artist_of)
            printed[name] = shown_playlist(rec, catalogue, default, seeds[j], p.seeds)
            scores[name].update(shown_metrics(printed[name], p.truth, g.num_songs, catalogue, artist_of))
            top = shown_metrics(rec.songs[:g.num_songs], p.truth, g.num_songs, catalogue, artist_of)  # its top N
            scores[name].update({f"top_{key[6:]}": top[key] for key in (f"shown_precision@{g.num_songs}",
                                                                         "shown_artists")})
        by_policy = {}
        if cfg.recommend.method in outputs:
            rec = outputs[cfg.recommend.method][j]
            for policy in policies:
                first = printed[cfg.recommend.method] if policy == default else \
                    shown_playlist(rec, catalogue, policy, seeds[j], p.seeds)
                again = shown_playlist(rec, catalogue, policy, seeds[j] + 1, p.seeds)
                by_policy[policy.pick] = shown_metrics(first, p.truth, g.num_songs, catalogue, artist_of)
                by_policy[policy.pick]["shown_repeat"] = metrics.overlap(first, again)
        records.append({"i": p.i, "glid": p.glid, "title": p.title, "truth": p.truth, "scores": scores,
                        "policies": by_policy, "shown": printed,
                        "songs": {name: out[j].songs[:cfg.eval.k] for name, out in outputs.items()},
                        "clusters": {name: out[j].clusters[:n] for name, out in outputs.items()}})
    return records


def shown_playlist(rec, catalogue, policy, seed: int, seed_songs) -> list[str]:
    """The songs generate_playlist.py prints for this recommendation (playlist_gen.shown), seeded per playlist."""
    return [s for s, _ in shown.show(rec, catalogue, policy, np.random.default_rng(seed), frozenset(seed_songs))]


def shown_metrics(songs, truth, n: int, catalogue, artist_of) -> dict:
    return metrics.shown_scores(songs, truth, n, artist_of, catalogue.index.song_cluster.get,
                                lambda s: int(catalogue.pop_rank[catalogue.code[s]]))


def summarize(records: list[dict], methods, catalogue: set) -> dict:
    table = {}
    for m in methods:
        table[m] = metrics.mean_table([r["scores"][m] for r in records])
        table[m]["catalogue_coverage"] = metrics.coverage((r["songs"][m] for r in records), catalogue)
        table[m]["shown_coverage"] = metrics.coverage((r["shown"][m] for r in records), catalogue)
        table[m]["playlists"] = len(records)
    return table


def summarize_policies(records: list[dict]) -> dict:
    """policy -> mean shown-playlist metrics of recommend.method (empty when it was not evaluated)."""
    policies = records[0]["policies"] if records else {}
    return {p: metrics.mean_table([r["policies"][p] for r in records]) for p in policies}


def format_table(table: dict) -> str:
    keys = list(dict.fromkeys(k for m in table.values() for k in m))
    lines = [f"{'metric':<20}" + "".join(f"{m:>16}" for m in table)]
    for key in keys:
        cells = [table[m].get(key, float("nan")) for m in table]
        lines.append(f"{key:<20}" + "".join(f"{v:>16.0f}" if key == "playlists" else f"{v:>16.4f}" for v in cells))
    return "\n".join(lines)


def write_examples(path, records: list[dict], index, method: str, header: str) -> None:
    """Per playlist: title, the real songs and the songs the method's playlist shows, with artists and clusters."""
    def line(j, s, hits):
        t = index.song_cluster.get(s)
        name, artist = index.name(s)
        return f"  {j:>3}. {name} - {artist}  [{'-'.join(map(str, t)) if t else 'no ID'}]{' *' if s in hits else ''}"

    with atomic_write(path) as f:
        f.write(f"{header}\n* = in both lists; [a-b] = the song's cluster (semantic ID)\n")
        for r in records:
            real, gen = r["truth"], r["shown"][method]
            f.write(f"\n=== {r['i'] + 1}. {r['title']}  (playlist {r['glid']}) ===\nreal ({len(real)} songs):\n")
            f.writelines(line(j, s, set(gen)) + "\n" for j, s in enumerate(real, 1))
            f.write(f"{method} ({len(gen)} songs from {len(r['clusters'][method])} clusters):\n")
            f.writelines(line(j, s, set(real)) + "\n" for j, s in enumerate(gen, 1))


SECTIONS = ("eval", "recommend", "generate")  # the config sections --help lists first


def main(argv=None):
    cfg = parse_config(argv, __doc__, SECTIONS)
    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.corpus import read_corpus_meta
    from playlist_gen.data import load_playlists
    from playlist_gen.device import Distributed
    from playlist_gen.factory import load_recommenders
    from playlist_gen.generation import require_model

    methods = [m.strip() for m in cfg.eval.methods.split(",") if m.strip()]
    if cfg.eval.seed_songs and "cooccurrence" not in methods and cfg.eval.methods == EvalConfig.methods:
        methods.append("cooccurrence")  # with seed songs, the standard continuation baseline belongs in the table
    if {"model", "fusion"} & set(methods):
        require_model(cfg)
    reads = require_inputs(cfg, {"model", "fusion"} & set(methods))
    dist = Distributed("auto", cfg.generate.cpu_threads)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        with dist.main_first():  # the song index is built once, by rank 0
            playlists = load_playlists(cfg)
            catalogue = load_catalogue(cfg, playlists, write=dist.is_main)
        recommenders = load_recommenders(cfg, methods, dist.device, cfg.eval.song_pick, catalogue,
                                         write_index=dist.is_main)  # e5: every rank embeds a share of new titles
        scheme = read_corpus_meta(cfg)["token_scheme"]
        test = load_test_playlists(cfg, playlists, catalogue.index)
        for recommender in recommenders.values():  # e5: the test titles' embeddings, cached for a re-run
            recommender.prepare([p.text for p in test])
        n = cfg.eval.n_clusters or typical_clusters(catalogue)
        log.info("evaluating %s on %s %s playlists (%s training playlists), %d clusters each, %d seed songs given",
                 ", ".join(methods), f"{len(test):,}", cfg.eval.split, f"{len(catalogue.train_codes):,}", n,
                 cfg.eval.seed_songs)
        artists = dict(zip(playlists.song_info["song_id"], playlists.song_info["artist"]))
        bs = cfg.generate.batch_size
        batches = [test[j:j + bs] for j in range(0, len(test), bs)][dist.rank::dist.world]
        records = []
        for batch in tqdm(batches, desc="evaluating", unit="batch", disable=not dist.is_main):
            records += score_batch(cfg, recommenders, batch, n, catalogue, scheme, lambda s: artists.get(s, "?"))
        gathered = dist.gather(records)
        if dist.is_main:
            records = sorted((r for part in gathered for r in part), key=lambda r: r["i"])
            report(cfg, methods, records, catalogue, n, reads)
    finally:
        dist.close()


def require_inputs(cfg, model: bool):
    """Everything evaluated, checked against its manifest: the model (trained on the current corpus and IDs), the
    corpus, the IDs and the playlists."""
    from playlist_gen import manifest
    from playlist_gen.generation import trained_members

    reads = manifest.Reads(cfg)
    if model:
        reads.require("model", [cfg.final_model_dir, *trained_members(cfg)])
    reads.require("corpus", [cfg.split_path(cfg.eval.split), cfg.split_path("train"), cfg.corpus_meta_path])
    reads.require("semantic_ids", [cfg.semantic_ids_path, cfg.semantic_meta_path])
    reads.require("data", [cfg.playlist_info_path, cfg.playlist_song_path, cfg.song_info_path])
    return reads


def report(cfg, methods, records: list[dict], catalogue, n: int, reads) -> None:
    from playlist_gen import manifest

    table = summarize(records, methods, set(catalogue.index.song_cluster))
    policies = summarize_policies(records)
    print(format_table(table))
    if policies:
        print(f"\nthe shown playlist of {cfg.recommend.method} ({cfg.generate.num_songs} songs) by --pick:")
        print(format_table(policies))
    files = [cfg.metrics_path, cfg.evaluation_results_path, cfg.shown_tradeoff_path]
    manifest.begin(cfg, "evaluation", files)
    write_json(cfg.metrics_path, {**table, "shown_policies": policies} if policies else table)
    shown.plot_tradeoff(cfg.shown_tradeoff_path, policies, table, cfg.recommend.method, cfg.generate.num_songs)
    example = cfg.recommend.method if cfg.recommend.method in methods else methods[0]
    header = (f"{example}: the {cfg.generate.num_songs} songs generate_playlist.py shows (--pick="
              f"{cfg.generate.pick}); decoding {cfg.generate.mode}, {n} clusters per playlist, K={cfg.eval.k}, "
              f"fusion weight {cfg.recommend.fusion_weight}")
    write_examples(cfg.evaluation_results_path, records[:cfg.eval.examples], catalogue.index, example, header)
    save_config(cfg, "evaluate_tiger")
    manifest.finish(cfg, "evaluation", files, reads)
    log.info("wrote %s and %s", cfg.metrics_path, cfg.evaluation_results_path)


if __name__ == "__main__":
    run_script(main)
