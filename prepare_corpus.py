"""Stage 2: turn playlists into (title -> semantic-ID sequence) pairs and write seeded train/val/test splits.

Reads the playlists (data_dir) and the semantic IDs of stage 1 (output_dir), writes train.tsv, val.tsv,
test.tsv (columns glid, title, target) and corpus_meta.json with the counts, the token scheme and the
codebook sizes later stages read.
"""

import logging

from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.io import PipelineError, write_json

log = logging.getLogger(__name__)

SECTIONS = ("corpus",)  # the config sections --help lists first


def main(argv=None):
    cfg = parse_config(argv, __doc__, SECTIONS)
    import pandas as pd

    from playlist_gen import corpus, manifest
    from playlist_gen.data import load_playlists
    from playlist_gen.semantic_ids import load_semantic_ids

    cc = cfg.corpus
    reads = manifest.Reads(cfg)
    reads.require("semantic_ids", [cfg.semantic_ids_path, cfg.semantic_meta_path])
    reads.require("data", [cfg.playlist_info_path, cfg.playlist_song_path])  # (song names and counts shape no
    # target: new songs added later leave the corpus valid)
    song_to_ids, id_meta = load_semantic_ids(cfg)
    playlists = load_playlists(cfg)
    corpus.check_vector_split(cfg)
    labels = corpus.split_labels_for(playlists.info, cc, cfg.seed)
    pairs, counts = corpus.build_pairs(playlists, song_to_ids, cc, cfg.seed, labels)
    labels = labels[pairs["row"].to_numpy()]
    sizes = {split: int((labels == split).sum()) for split in corpus.SPLITS}
    if sizes["train"] == 0 or (cc.val_fraction > 0 and sizes["val"] == 0):
        raise PipelineError(f"splits {sizes} leave no training or validation playlists ({len(pairs):,} playlists "
                            "kept); check the data, --corpus.min_songs and the split fractions")
    liked, feedback = feedback_playlists(cfg, song_to_ids)
    files = [*(cfg.split_path(split) for split in (*corpus.SPLITS, corpus.SEEDED)), cfg.corpus_meta_path,
             cfg.feedback_playlists_path]
    manifest.begin(cfg, "corpus", files)
    for split in corpus.SPLITS:
        rows = pairs[labels == split]
        corpus.write_split(cfg.split_path(split), pd.concat([rows, liked]) if split == "train" else rows)
    write_json(cfg.feedback_playlists_path, feedback["songs"])  # always written: no stale file of an earlier run
    seeded = corpus.continuation_rows(pairs[labels == "train"], cc, int(id_meta["levels"]), cfg.seed)
    corpus.write_split(cfg.split_path(corpus.SEEDED), seeded)  # always written: no stale file from an earlier run
    sizes[corpus.SEEDED], sizes["feedback"] = len(seeded), len(liked)
    corpus.log_counts(counts, sizes)
    write_json(cfg.corpus_meta_path, corpus.corpus_meta(cc, counts, sizes, id_meta, cfg.seed))
    save_config(cfg, "prepare_corpus")
    manifest.finish(cfg, "corpus", files, reads, feedback={k: v for k, v in feedback.items() if k != "songs"})
    log.info("wrote %s and %s", ", ".join(str(cfg.split_path(s)) for s in corpus.SPLITS), cfg.corpus_meta_path)


def feedback_playlists(cfg, song_to_ids):
    """--corpus.feedback: listeners' liked playlists as training rows (playlist_gen.corpus.feedback_rows), and what
    the manifest records of the log read (its hash, the playlists taken)."""
    import pandas as pd

    from playlist_gen import corpus, manifest
    from playlist_gen.feedback_log import liked_playlists
    from playlist_gen.io import require_file

    if not cfg.corpus.feedback:
        return pd.DataFrame(columns=list(corpus.COLUMNS)), {"songs": {"liked": {}, "skipped": {}}}
    path = require_file(cfg.corpus.feedback, "give the feedback.db that generate_playlist.py --serve (or its prompt) "
                                             "wrote")
    liked = liked_playlists(path)
    rows, songs = corpus.feedback_rows(liked, song_to_ids, cfg.corpus, cfg.corpus.token_scheme)
    log.info("feedback: %s served playlists with likes, %s of them training playlists (%s liked songs, %s skipped)",
             f"{len(liked):,}", f"{len(rows):,}", f"{sum(map(len, songs['liked'].values())):,}",
             f"{sum(map(len, songs['skipped'].values())):,}")
    return rows, {"songs": songs, "file": str(path), "sha256": manifest.sha256_file(path), "playlists": len(rows)}


if __name__ == "__main__":
    run_script(main)
