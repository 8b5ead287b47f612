"""The built-in demo world: songs, artists and themed playlists with titles that describe them.

Artists belong to a genre and favour two moods; a song's vector is its genre factor + mood
factor + an artist offset + noise, so songs of one (genre, mood) cell lie close together.
A playlist has a theme (a mood, a genre or both); most of its songs come from that theme with a
Zipf-like popularity skew, an `off_theme` share from anywhere. Its title is drawn from several
templates of the theme's Chinese/English phrases and emoji, so titles vary but say what the
songs are ("安静的纯音乐", "workout hits", "深夜emo 🌙"). Everything is seeded.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .io import PipelineError

log = logging.getLogger(__name__)

# genre -> (Chinese phrases, English phrases)
GENRES = {
    "pop": (["流行", "华语流行", "流行金曲"], ["pop", "pop hits", "mandopop"]),
    "rock": (["摇滚", "独立摇滚", "乐队"], ["rock", "indie rock", "alt rock"]),
    "hiphop": (["说唱", "嘻哈", "饶舌"], ["hip hop", "rap", "trap"]),
    "electronic": (["电音", "电子", "蹦迪"], ["edm", "electronic", "house"]),
    "piano": (["纯音乐", "钢琴曲", "轻音乐"], ["piano", "instrumental", "classical"]),
    "jazz": (["爵士", "爵士乐", "布鲁斯"], ["jazz", "lofi jazz", "bossa nova"]),
    "folk": (["民谣", "吉他弹唱", "校园民谣"], ["folk", "acoustic", "singer songwriter"]),
    "rnb": (["节奏布鲁斯", "灵魂乐", "R&B"], ["r&b", "soul", "neo soul"]),
}

# mood -> (Chinese adjectives, English adjectives, Chinese scenes, English scenes, emoji)
MOODS = {
    "calm": (["安静的", "放松", "治愈系"], ["chill", "calm", "relaxing"],
             ["周末咖啡馆", "午后阳光", "睡前听"], ["sunday morning", "study session", "coffee shop"], ["🍃", "☕"]),
    "happy": (["快乐", "元气满满的", "开心"], ["happy", "feel good", "sunny"],
              ["夏日海边", "周末出游", "好心情"], ["summer road trip", "good vibes only", "beach day"], ["☀️", "😊"]),
    "sad": (["伤感", "emo", "失恋"], ["sad", "heartbreak", "crying"],
            ["深夜emo", "一个人的夜晚", "下雨天"], ["rainy day", "sad hours", "breakup"], ["💔", "🥀"]),
    "energetic": (["燃", "运动", "热血"], ["workout", "gym", "pump up"],
                  ["健身房必备", "跑步歌单", "燃脂"], ["workout hits", "running mix", "beast mode"], ["🔥", "💪"]),
    "romantic": (["甜蜜", "恋爱", "浪漫"], ["love", "romantic", "sweet"],
                 ["情人节", "恋爱的感觉", "告白"], ["date night", "wedding songs", "crush"], ["❤️", "🌹"]),
    "dreamy": (["微醺", "梦幻", "迷幻"], ["dreamy", "late night", "midnight"],
               ["城市夜色", "深夜电台", "星空下"], ["night drive", "midnight city", "stargazing"], ["🌙", "✨"]),
}

# templates per theme kind; {mz}/{me} mood adjective, {sz}/{se} mood scene, {gz}/{ge} genre phrase, {e} emoji
TEMPLATES = {
    "both": ["{mz}{gz}", "{me} {ge}", "{me} {ge} {e}", "{mz}{ge}", "{sz}·{gz}", "{se} {ge}", "{gz} | {sz}",
             "{ge} for {se}", "{mz}的{gz}歌单"],
    "mood": ["{sz}", "{se}", "{sz} {e}", "{mz}{e}", "{me} vibes", "{me} songs {e}", "{mz}歌单", "{se} playlist"],
    "genre": ["{gz}精选", "best of {ge}", "{ge} hits", "{gz}歌单", "{ge} essentials", "经典{gz}", "{ge} {e}"],
}
GENRE_EMOJI = ["🎵", "🎧", "🎶"]
SUFFIXES = ["", "", "", "", " 2024", " vol.2", "!!", "（持续更新）", " mix", " ~"]

WORDS_EN = (["Golden", "Midnight", "Silent", "Electric", "Broken", "Wild", "Blue", "Paper", "Neon", "Summer",
             "Velvet", "Lonely", "Crystal", "Hollow", "Burning", "Faded"],
            ["Heart", "Rain", "City", "Dreams", "Fire", "Road", "Sky", "Ocean", "Lights", "Echo", "Letters",
             "Garden", "Shadows", "Waves", "Mirror", "Horizon"])
WORDS_ZH = (["夏天", "晚风", "星空", "海边", "月光", "城市", "旧时光", "远方", "心跳", "雨夜", "秋天", "街角"],
            ["的风", "之歌", "里的你", "未眠", "的约定", "物语", "", "回忆"])
SURNAMES = list("周林陈王李张吴许蔡邓孙杨")
GIVEN = list("一子小晓雨杰琳伦然安宇欣")
FIRST_EN = ["Lily", "Max", "Nora", "Leo", "Ivy", "Sam", "Mia", "Jay", "Zoe", "Kai", "Ada", "Finn"]


@dataclass
class DemoWorld:
    info: pd.DataFrame  # playlist_id, title, tags, theme
    songs: pd.DataFrame  # playlist_id, song_id in playlist order
    song_info: pd.DataFrame  # song_id, name, artist, genre, mood
    song_ids: list[str]
    vectors: np.ndarray  # float32 (n_songs, dim), aligned with song_ids


def _unit_rows(rng, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _artist_names(rng, n: int, zh_share: np.ndarray) -> list[str]:
    names, seen = [], set()
    for i in range(n):
        for attempt in range(100):
            if rng.random() < zh_share[i]:
                name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN, size=rng.integers(1, 3)))
            else:
                pick = rng.integers(3)
                noun = rng.choice(WORDS_EN[1])
                band = f"The {noun}" if noun.endswith("s") else f"The {noun}s"  # "The Waves", not "The Wavess"
                name = [band, f"{rng.choice(FIRST_EN)} {noun}", f"{rng.choice(WORDS_EN[0])} {noun}"][pick]
            if attempt > 50:
                name += f" {i}"
            if name not in seen:
                break
        seen.add(name)
        names.append(name)
    return names


def _song_name(rng, zh: bool) -> str:
    if zh:
        return rng.choice(WORDS_ZH[0]) + rng.choice(WORDS_ZH[1])
    return f"{rng.choice(WORDS_EN[0])} {rng.choice(WORDS_EN[1])}"


def _name_variants(name: str):
    """Other names of the same kind, in a fixed order starting after `name` (every word pair, then numbered)."""
    for first, second in (WORDS_ZH, WORDS_EN):
        pairs = [f"{a}{b}" if first is WORDS_ZH[0] else f"{a} {b}" for a in first for b in second]
        if name in pairs:
            start = pairs.index(name)
            yield from pairs[start + 1:] + pairs[:start]
            break
    yield from (f"{name} {i}" for i in range(2, 10**6))


def distinct_names(names: list[str], artists: list[str]) -> list[str]:
    """Song names made unique per artist, so no two songs print as the same `name - artist`. Deterministic and
    without drawing random numbers: the rest of the seeded world (playlists, vectors) stays as it was."""
    taken, out = set(), []
    for name, artist in zip(names, artists):
        if (name, artist) in taken:
            name = next(v for v in _name_variants(name) if (v, artist) not in taken)
        taken.add((name, artist))
        out.append(name)
    return out


def make_songs(cfg, rng) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Song table (with genre, mood, popularity) and vectors; returns (song_info, vectors, popularity)."""
    d = cfg.demo
    genres, moods = list(GENRES), list(MOODS)
    artist_genre = rng.integers(len(genres), size=d.n_artists)
    artist_moods = np.array([rng.choice(len(moods), size=2, replace=False) for _ in range(d.n_artists)])
    zh_share = np.where(np.isin(artist_genre, [genres.index("pop"), genres.index("folk")]), 0.7, 0.25)
    artist_names = _artist_names(rng, d.n_artists, zh_share)

    artist_weight = 1.0 / np.arange(1, d.n_artists + 1) ** 0.5  # some artists release more songs
    artist = rng.choice(d.n_artists, size=d.n_songs, p=artist_weight / artist_weight.sum())
    favoured = rng.random(d.n_songs) < 0.7
    mood = np.where(favoured, artist_moods[artist, rng.integers(2, size=d.n_songs)],
                    rng.integers(len(moods), size=d.n_songs))
    genre = artist_genre[artist]

    G, M = _unit_rows(rng, len(genres), d.dim), _unit_rows(rng, len(moods), d.dim)
    A = _unit_rows(rng, d.n_artists, d.dim)
    noise = rng.standard_normal((d.n_songs, d.dim)) / np.sqrt(d.dim)
    X = 1.0 * G[genre] + 0.8 * M[mood] + 0.5 * A[artist] + d.noise * noise

    cell = genre * len(moods) + mood
    popularity = np.empty(d.n_songs)
    for c in np.unique(cell):  # Zipf-like: every cell has its own hits
        members = rng.permutation(np.flatnonzero(cell == c))
        popularity[members] = 1.0 / np.arange(1, len(members) + 1) ** d.zipf
    names = [_song_name(rng, rng.random() < zh_share[a]) for a in artist]
    artists = [artist_names[a] for a in artist]
    song_info = pd.DataFrame({
        "song_id": [f"{i:06d}" for i in range(d.n_songs)],
        "name": distinct_names(names, artists),
        "artist": artists,
        "genre": [genres[g] for g in genre],
        "mood": [moods[m] for m in mood],
    })
    return song_info, X.astype(np.float32), popularity


def _fill(template: str, rng, mood: str | None, genre: str | None) -> str:
    parts = {}
    if mood:
        mz, me, sz, se, emoji = MOODS[mood]
        parts.update(mz=rng.choice(mz), me=rng.choice(me), sz=rng.choice(sz), se=rng.choice(se), e=rng.choice(emoji))
    if genre:
        gz, ge = GENRES[genre]
        parts.update(gz=rng.choice(gz), ge=rng.choice(ge))
        parts.setdefault("e", rng.choice(GENRE_EMOJI))
    return (template.format(**parts) + rng.choice(SUFFIXES)).strip()


def make_title(rng, mood: str | None, genre: str | None) -> str:
    kind = "both" if mood and genre else "mood" if mood else "genre"
    return _fill(rng.choice(TEMPLATES[kind]), rng, mood, genre)


def _themes(song_info: pd.DataFrame, min_cell: int) -> list[tuple[str | None, str | None, np.ndarray]]:
    """Every theme (mood, genre, member song indices) with enough songs."""
    themes = []
    for m in MOODS:
        themes.append((m, None, np.flatnonzero(song_info["mood"].to_numpy() == m)))
    for g in GENRES:
        themes.append((None, g, np.flatnonzero(song_info["genre"].to_numpy() == g)))
    for m in MOODS:
        for g in GENRES:
            members = np.flatnonzero((song_info["mood"].to_numpy() == m) & (song_info["genre"].to_numpy() == g))
            themes.append((m, g, members))
    return [t for t in themes if len(t[2]) >= min_cell]


def _pick(rng, candidates: np.ndarray, weights: np.ndarray, k: int, exclude=()) -> list[int]:
    mask = ~np.isin(candidates, list(exclude))
    candidates, weights = candidates[mask], weights[mask]
    k = min(k, len(candidates))
    return rng.choice(candidates, size=k, replace=False, p=weights / weights.sum()).tolist()


def make_playlists(cfg, rng, song_info: pd.DataFrame, popularity: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    d = cfg.demo
    themes = _themes(song_info, min_cell=d.min_songs)
    if not themes or not 1 <= d.min_songs <= d.max_songs:
        raise PipelineError(f"demo world: need 1 <= --demo.min_songs <= --demo.max_songs and enough songs per theme "
                            f"(got {d.n_songs} songs, min_songs {d.min_songs}, max_songs {d.max_songs})")
    kinds = np.array([0 if m and g else 1 if m else 2 for m, g, _ in themes])
    kind_share = np.array([0.6, 0.2, 0.2])  # both / mood only / genre only
    theme_p = kind_share[kinds] / np.bincount(kinds, minlength=3)[kinds]
    all_songs = np.arange(len(song_info))
    rows, playlist_col, song_col = [], [], []
    for i, t in enumerate(rng.choice(len(themes), size=d.n_playlists, p=theme_p / theme_p.sum())):
        mood, genre, members = themes[t]
        n = int(rng.integers(d.min_songs, d.max_songs + 1))
        n_off = int(rng.binomial(n, d.off_theme))
        chosen = _pick(rng, members, popularity[members], n - n_off)
        chosen += _pick(rng, all_songs, popularity, n_off, exclude=chosen)
        chosen = rng.permutation(chosen).tolist()
        pid = f"{i:05d}"
        rows.append((pid, make_title(rng, mood, genre), ",".join(x for x in (mood, genre) if x),
                     f"{mood or '*'}/{genre or '*'}"))
        playlist_col += [pid] * len(chosen)
        song_col += song_info["song_id"].to_numpy()[chosen].tolist()
    info = pd.DataFrame(rows, columns=["playlist_id", "title", "tags", "theme"])
    songs = pd.DataFrame({"playlist_id": playlist_col, "song_id": song_col})
    return info, songs


def make_demo_world(cfg) -> DemoWorld:
    """The whole demo world from cfg.seed and cfg.demo."""
    rng = np.random.default_rng(cfg.seed)
    song_info, X, popularity = make_songs(cfg, rng)
    info, songs = make_playlists(cfg, rng, song_info, popularity)
    log.info("demo world: %s songs by %s artists, %s playlists, %s entries, %s distinct titles",
             f"{len(song_info):,}", f"{song_info['artist'].nunique():,}", f"{len(info):,}", f"{len(songs):,}",
             f"{info['title'].nunique():,}")
    return DemoWorld(info=info, songs=songs, song_info=song_info, song_ids=song_info["song_id"].tolist(), vectors=X)
