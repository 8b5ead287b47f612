"""One config for every stage of the pipeline.

Each stage script builds a `Config`, applies dotted overrides from the command line
(`--rqkmeans.vocab_size=256 --output_dir=runs/run1`, see `playlist_gen.cli`) and reads
the paths it needs from the properties below, so every file name is defined once, here.
"""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DataConfig:
    """Stage 0 (prepare_data.py) and the four input files every later stage reads."""

    source: str = "csv"  # demo | mpd | csv
    path: str = ""  # --source=mpd: one .json/.json.gz MPD slice or a folder of them
    mpd_max_playlists: int = 0  # 0 = every playlist found under `path`
    workers: int = 0  # processes parsing MPD files in parallel; 0 = one per CPU (at most 8)
    song_vectors_file: str = "song_vectors.csv"
    playlist_info_file: str = "gen_playlist_info.csv"
    playlist_song_file: str = "gen_playlist_song.csv"
    song_info_file: str = "gen_song_info.csv"
    playlist_id_col: str = "glid"  # in gen_playlist_info.csv
    title_col: str = "listname"  # in gen_playlist_info.csv
    ps_playlist_col: str = "special_gid"  # in gen_playlist_song.csv
    ps_song_col: str = "mixsongid"  # in gen_playlist_song.csv
    song_id_col: str = "mixsongid"  # in gen_song_info.csv
    song_name_col: str = "songname"  # in gen_song_info.csv
    artist_col: str = "singername"  # in gen_song_info.csv


@dataclass
class DemoConfig:
    """The built-in, seeded demo world (prepare_data.py --source=demo)."""

    n_songs: int = 3000
    n_artists: int = 240
    n_playlists: int = 2400
    dim: int = 32  # song vector dimension
    min_songs: int = 8  # songs per playlist, inclusive range
    max_songs: int = 30
    off_theme: float = 0.1  # share of a playlist's songs drawn from outside its theme
    noise: float = 0.35  # per-song noise around its genre/mood factors
    zipf: float = 1.0  # popularity exponent within a (genre, mood) cell: weight 1 / rank**zipf


@dataclass
class VectorsConfig:
    """Song vectors from playlist co-occurrence, built when song_vectors.csv is absent."""

    dim: int = 100
    min_count: int = 2  # a song needs this many playlist occurrences to get a vector
    method: str = "sqrtlen"  # sqrtlen | bm25 | tfidf | binary (weighting of the song x playlist SVD) | ppmi
    alpha: float = 0.5  # vector = U * S**alpha of the truncated SVD
    svd_iter: int = 5  # power iterations of the randomized SVD
    quality_min_count: int = 5  # songs with at least this many occurrences enter the quality check
    quality_sample: int = 2000  # songs sampled for the quality check


@dataclass
class RQKMeansConfig:
    """Stage 1, train_rq_kmeans.py: residual k-means, one codebook per level."""

    levels: int = 2
    vocab_size: int = 0  # codes per level; 0 = auto, (n_songs / 2) ** (1 / levels) as a multiple of 8
    n_iter: int = 20
    backend: str = "auto"  # auto (own torch k-means, GPU when present) | torch | faiss
    device: str = "auto"  # auto | cpu | cuda (torch backend; faiss uses its GPUs when it has any)
    normalize: bool = True  # L2-normalise song vectors first (cosine geometry)
    assign_only: bool = False  # only give IDs to songs added since training, with the saved codebooks


@dataclass
class RQVAEConfig:
    """Stage 1, train_rqvae.py: a residual-quantised autoencoder."""

    levels: int = 2
    vocab_size: int = 0  # codes per level; 0 = auto, as rqkmeans.vocab_size
    latent_dim: int = 32
    hidden_dims: str = "256,128"  # encoder MLP widths; the decoder mirrors them
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    beta: float = 0.25  # commitment loss weight
    val_fraction: float = 0.1
    dead_code_steps: int = 50  # re-seed codes unused for this many steps
    normalize: bool = True
    device: str = "auto"  # auto | cpu | cuda
    assign_only: bool = False  # only give IDs to songs added since training, with the saved encoder


@dataclass
class CorpusConfig:
    """Stage 2, prepare_corpus.py: title -> semantic-ID sequence pairs."""

    extra_columns: str = "auto"  # playlist columns appended to the title: auto (tags when present) | none | a,b
    normalize: bool = True  # input text: normalised titles (text.normalize_title); false: only whitespace cleaned
    order: str = "original"  # original | sorted | shuffled
    token_scheme: str = "level"  # level (<a_12><b_7>) | shared (the original's <id_N>)
    max_songs: int = 0  # 0 = every song with an ID; else the first max_songs (never splitting a tuple)
    min_songs: int = 1  # playlists with fewer songs with IDs are dropped and counted
    collapse_repeats: bool = False  # collapse consecutive songs of one cluster
    split: str = "grouped"  # grouped (by normalised title) | random
    val_fraction: float = 0.05
    test_fraction: float = 0.1
    train_fraction: float = 1.0  # learning curves: keep this seeded share of the training playlists
    continuation: int = 0  # extra examples per training playlist: title + its first k songs -> the rest
    seed_counts: str = "0,1,5,10,25"  # continuation: the k drawn per example (RecSys Challenge 2018 categories)


@dataclass
class TigerConfig:
    """Stage 3, train_tiger.py: the T5 title -> semantic-ID model."""

    model_name: str = "scratch"  # scratch | a local path to a pretrained T5
    sp_vocab_size: int = 2000  # SentencePiece vocabulary (scratch), capped by what the titles allow
    lowercase: bool = True  # scratch tokenizer folds case ("Chill" = "chill")
    cjk_chars: bool = True  # scratch tokenizer: each Chinese/Japanese/Korean character is one word
    d_model: int = 128
    d_ff: int = 512
    num_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    d_kv: int = 32
    feed_forward_proj: str = "relu"  # relu | gated-gelu (T5 v1.1)
    tie_embeddings: bool = True
    dropout: float = 0.1
    input_dropout: float = 0.0  # drop each title token of a training example with this probability (unseen wordings)
    max_source_len: int = 128  # input tokens: title, extra columns (NetEase titles with tags: median 40)
    objective: str = "tuples"  # tuples (each entry: title -> its cluster) | sets (random subsets) | sequence (in order)
    set_size: int = 20  # objective=sets: clusters per example
    sets_per_playlist: int = 8  # objective=sets: examples per playlist per epoch
    max_target_songs: int = 50  # objective=sequence: the first songs of each playlist
    index_pairs: bool = False  # also train song `name artist` -> its cluster, artist -> their clusters (as in DSI)
    batch_size: int = 64  # per device
    lr: float = 2e-3
    lr_scheduler: str = "linear"  # any transformers scheduler name
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    epochs: float = 3.0  # with the linear schedule; early stopping may end sooner
    max_steps: int = -1  # > 0 overrides epochs
    grad_clip: float = 1.0
    eval_steps: int = 500
    save_steps: int = 500  # a multiple of eval_steps
    save_total_limit: int = 2
    logging_steps: int = 50
    early_stopping_patience: int = 5  # evaluations without a better val loss
    precision: str = "auto"  # auto (bf16 where supported, else fp32) | fp32 | bf16; never fp16
    num_workers: int = 0
    threads: int = 0  # torch CPU threads per process; 0 = torch's default, or 1 when the CPU is already busy
    resume: bool = True  # continue from the last complete checkpoint; false deletes the checkpoints


@dataclass
class RecommendConfig:
    """The recommender generate_playlist.py uses, and settings every recommender shares (playlist_gen.recommend)."""

    method: str = "fusion"  # model | fusion (model + title kNN) | popularity | title_knn | random_cluster
    fusion: str = "product"  # product (P_model^w * P_kNN^(1-w), each floored) | mixture (w P_model + (1-w) P_kNN)
    fusion_weight: float = 0.4  # w above: the model's share
    fusion_floor: float = 0.01  # product: each distribution + this share of its maximum (a song one of them missed)
    popularity_weight: float = 0.0  # fusion: this share of the mixture goes to training popularity instead
    knn_text: str = "input"  # title kNN reads: input (the model's input text, tags included) | title
    knn_neighbors: int = 50  # title kNN: training playlists that vote
    song_smoothing: float = 0.5  # P(song | cluster) from training counts + this
    fill_to_k: bool = True  # beam/sample decoding, random clusters: extend the list with the clusters' other songs


@dataclass
class HSTUConfig:
    """The sequential baseline (playlist_gen.sequential, method hstu): torch-rechub's HSTUModel over song ids."""

    d_model: int = 64
    heads: int = 2
    layers: int = 2
    max_len: int = 50  # songs of context
    dropout: float = 0.2
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    min_count: int = 2  # songs in at least this many training playlists are the model's vocabulary


@dataclass
class GenerateConfig:
    """Generation, shared by evaluate_tiger.py and generate_playlist.py."""

    title: str = ""  # generate_playlist.py one-shot title
    extra_text: str = ""  # appended to the title as the extra columns were in training (NetEase tags)
    num_songs: int = 20
    mode: str = "rank"  # rank (every cluster scored by P(cluster | title)) | beam | sample (a generated sequence)
    num_beams: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    pick: str = "random"  # random | popular | weighted
    no_repeat_cluster: bool = True
    constrained: bool = True
    explain: bool = False
    batch_size: int = 32
    cpu_threads: int = 1  # torch threads for generation on CPU; 1 is fastest for its small matmuls; 0 = torch's default


@dataclass
class EvalConfig:
    """Stage 4, evaluate_tiger.py."""

    methods: str = "model,fusion,popularity,title_knn,random_cluster"  # compared in one run, on the same playlists
    split: str = "test"  # test | val
    seed_songs: int = 0  # continuation: the first K songs of each playlist are given, scored on the rest
    k: int = 100  # NDCG@K, Recall@K
    n_clusters: int = 0  # clusters per test playlist, every method alike; 0 = median distinct clusters in training
    song_pick: str = "popular"  # cluster -> song (beam/sample decoding, random clusters): popular | random | weighted
    max_playlists: int = 0  # 0 = the whole test split
    examples: int = 50  # playlists written to evaluation_results.txt


@dataclass
class Config:
    data_dir: str = "data"
    output_dir: str = "outputs"
    model_dir: str = "models"
    seed: int = 42
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
    def data_report_path(self) -> Path:
        return Path(self.data_dir) / "data_report.json"

    # ---- stage 1: semantic IDs (output_dir) ----
    def method_dir(self, method: str) -> Path:
        """Per-method copy of the IDs, so debug_collisions.py can compare methods."""
        return Path(self.output_dir) / "semantic_ids" / method

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
    def corpus_meta_path(self) -> Path:
        return Path(self.output_dir) / "corpus_meta.json"

    # ---- stage 3: model ----
    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.model_dir) / "tiger_checkpoints"

    @property
    def final_model_dir(self) -> Path:
        return Path(self.model_dir) / "tiger_final"

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
    def song_index_path(self) -> Path:
        """Cluster -> songs by popularity, names, artists: a cache so generate_playlist.py starts fast."""
        return Path(self.output_dir) / "song_index.json"

    @property
    def hstu_path(self) -> Path:
        """The sequential baseline, trained by evaluate_tiger.py when asked for (cached)."""
        return Path(self.output_dir) / "baselines" / "hstu.pt"

    def config_path(self, stage: str) -> Path:
        """Where a stage saves the resolved config it ran with."""
        return Path(self.output_dir) / "configs" / f"{stage}.json"
