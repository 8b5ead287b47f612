"""Stage 1 check: how the current semantic IDs group songs, and how well each quantiser fits.

Prints, per method with IDs (the current one, plus the other method when both train_rq_kmeans.py
and train_rqvae.py have run, side by side): distinct tuples, songs per tuple, the share of songs
sharing a tuple, the largest clusters with song names, codebook usage and entropy, and the
"Average Cosine Similarity" between each song vector and its reconstruction from its codes. Writes
outputs/collisions_report.json and a histogram of cluster sizes (outputs/cluster_sizes.png).
"""

from playlist_gen.cli import parse_config, run_script, save_config
from playlist_gen.collisions import build_reports, format_table, write_report


def main(argv=None):
    cfg = parse_config(argv, __doc__)
    reports = build_reports(cfg)
    write_report(cfg, reports)
    print(format_table(reports))
    save_config(cfg, "debug_collisions")
    return reports


if __name__ == "__main__":
    run_script(main)
