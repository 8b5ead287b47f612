"""The playlist a person is shown: N songs taken from a recommendation (playlist_gen.recommend), the same way in
generate_playlist.py and in evaluate_tiger.py, so what is printed is what is scored.

Policies (`--generate.pick`):
- ranked: the recommendation's top N songs.
- diverse: the top N, at most `max_per_artist` songs of one artist (an artist's later songs wait at the end).
- sample: N songs drawn without replacement from the ranked list, each with weight score^(1 / temperature)
  (Gumbel top-k, seeded per request), at most `max_per_artist` per artist: asking again gives another playlist,
  and temperature -> 0 gives `diverse`.
- cluster: the best song of each cluster first (by score), then the others by score.
- random / popular / weighted: one song from each of the recommendation's best N clusters (a random, the most
  frequent or a count-weighted song of the cluster), then the ranking's next songs: the concept-cluster design,
  most surprise, least accuracy (measured in the README's policy table).
"""

from dataclasses import dataclass

import numpy as np

from config import PICKS, SHOWN

from .catalogue import Catalogue, pick_songs
from .io import PipelineError, png_plot


def candidates(n: int) -> int:
    """Ranked songs a recommendation brings for a playlist of n shown songs (room for the artist cap and clusters)."""
    return max(100, 5 * n)


@dataclass(frozen=True)
class ShowPolicy:
    pick: str = "sample"
    n: int = 20  # songs shown
    max_per_artist: int = 2
    temperature: float = 0.1  # pick=sample

    @classmethod
    def from_config(cls, g, pick: str | None = None) -> "ShowPolicy":
        return cls(pick or g.pick, g.num_songs, g.max_per_artist, g.sample_temperature)


def artist_capped(songs, artist_of, cap: int) -> list[str]:
    """`songs` in order, an artist's songs past the `cap`-th moved to the end (in order); unknown artists uncapped."""
    seen, first, later = {}, [], []
    for s in songs:
        a = artist_of(s)
        n = seen.get(a, 0)
        seen[a] = n + 1
        (first if a == "unknown" or n < cap else later).append(s)
    return first + later


def gumbel_order(songs: list[str], scores, temperature: float, rng) -> list[str]:
    """A seeded draw of the whole list without replacement, P(song first) ~ score^(1/temperature) (the Gumbel top-k
    trick); songs without a positive score (fill) weigh 1e-6 of the best."""
    if not songs:
        return []
    s = np.asarray(scores, dtype=np.float64) if len(scores) == len(songs) else 1.0 / np.arange(1, len(songs) + 1)
    s = np.maximum(s, 1e-6 * max(float(s.max()), 1e-300))
    keys = np.log(s) / temperature + rng.gumbel(size=len(s))
    return [songs[i] for i in np.argsort(-keys, kind="stable")]


def show(rec, catalogue: Catalogue, policy: ShowPolicy, rng, used=frozenset()) -> list[tuple[str, tuple | None]]:
    """(song, cluster) per shown song, at most policy.n, never one of `used` (seed, skipped or already shown songs)."""
    index = catalogue.index
    ranked = [s for s in rec.songs if s not in used]

    def artist(s):
        return index.name(s)[1]

    if policy.pick in PICKS:
        picked = [s for s, _ in pick_songs(rec.clusters[:policy.n], index, policy.pick, rng, used=set(used))]
        taken = set(picked)
        songs = picked[:policy.n] + [s for s in ranked if s not in taken]
    elif policy.pick == "ranked":
        songs = ranked
    elif policy.pick == "diverse":
        songs = artist_capped(ranked, artist, policy.max_per_artist)
    elif policy.pick == "sample":
        scores = [sc for s, sc in zip(rec.songs, rec.song_scores) if s not in used] if rec.song_scores else []
        songs = artist_capped(gumbel_order(ranked, scores, policy.temperature, rng), artist, policy.max_per_artist)
    elif policy.pick == "cluster":
        firsts, seen = [], set()
        for s in ranked:
            c = index.song_cluster.get(s)
            if c is None or c not in seen:
                firsts.append(s)
                seen.add(c)
        taken = set(firsts)
        songs = firsts + [s for s in ranked if s not in taken]
    else:
        raise PipelineError(f"unknown pick {policy.pick!r}; use one of {', '.join(SHOWN)}")
    return [(s, index.song_cluster.get(s)) for s in songs[:policy.n]]


def plot_tradeoff(path, policies: dict, table: dict, method: str, n: int) -> None:
    """The accuracy-diversity frontier of the shown playlist: precision@n against distinct artists, one point per
    --pick policy of `method`, and each evaluated method's shown playlist at the configured policy."""
    key = f"shown_precision@{n}"
    with png_plot(path, (7, 4.5), 110, dict(left=0.1, right=0.83, bottom=0.11, top=0.89)) as ax:  # labels right
        for pick, m in policies.items():
            ax.scatter(m["shown_artists"], m[key], color="tab:blue")
            label = pick + (f" (repeat {m['shown_repeat']:.2f})" if m["shown_repeat"] < 1 else "")
            ax.annotate(label, (m["shown_artists"], m[key]), fontsize=8, xytext=(4, 3), textcoords="offset points")
        for name, m in table.items():
            if key in m and name != method:
                ax.scatter(m["shown_artists"], m[key], color="tab:gray", marker="s")
                ax.annotate(f"{name} (its --pick)", (m["shown_artists"], m[key]), fontsize=8, xytext=(4, -9),
                            textcoords="offset points")
        ax.set(xlabel=f"distinct artists in the {n} songs shown", ylabel=f"precision@{n} of the songs shown",
               title=f"The {n} songs shown: {method} by --pick (blue), other methods (gray)\nrepeat: share of songs "
                     "the same when asked again")
        ax.title.set_fontsize(9)
