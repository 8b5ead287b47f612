"""Stage 1 check: how the current semantic IDs group songs, and how well each quantiser fits.

Prints, per method with IDs (the current one, plus the other method when both train_rq_kmeans.py
and train_rqvae.py have run, side by side): distinct tuples, songs per tuple, the share of songs
sharing a tuple, the largest clusters with song names, codebook usage and entropy, and the
"Average Cosine Similarity" between each song vector and its reconstruction from its codes. Writes
outputs/collisions_report.json and a histogram of cluster sizes (outputs/cluster_sizes.png).
"""

from playlist_gen.cli import parse_config, run_script, save_config

SECTIONS = ("rqkmeans", "rqvae")  # the config sections --help lists first


def main(argv=None):
    cfg = parse_config(argv, __doc__, SECTIONS)
    from playlist_gen import manifest
    from playlist_gen.collisions import build_reports, format_table, write_report

    reads = manifest.Reads(cfg)
    method_files = [cfg.codebooks_path("rqkmeans"), cfg.codebooks_path("rqvae"), cfg.rqvae_checkpoint_path]
    reads.require("semantic_ids", [cfg.semantic_ids_path, cfg.semantic_meta_path], optional=method_files)
    vectors = manifest.require_vectors(reads)
    reads.require("data", [cfg.song_info_path] if cfg.song_info_path.exists() else [])
    reports = build_reports(cfg, vectors)
    files = [cfg.collisions_report_path, cfg.collisions_png_path]
    manifest.begin(cfg, "collisions", files)
    write_report(cfg, reports)
    print(format_table(reports))
    save_config(cfg, "debug_collisions")
    manifest.finish(cfg, "collisions", files, reads)
    return reports


if __name__ == "__main__":
    run_script(main)
