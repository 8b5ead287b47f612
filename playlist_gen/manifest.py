"""Stage manifests: what each stage read, ran with and wrote, so no stage runs on a half-written or stale set.

Files are written atomically one by one, but a stage writes several; its manifest makes the set one unit:

- `begin(cfg, product, paths)`, just before a stage's first write: the manifest says "unfinished" and lists the
  files about to be written (so a rerun knows they are the project's), and temp files of a killed run go.
- `finish(cfg, product, paths, reads)`, after the last write: the files with size, mtime and SHA-256, what the
  stage read (`Reads`: each input file's hash and the product it came from), the config, and an id (a hash of
  the files' hashes).
- `Reads.require(product, paths)` in a later stage: the product's manifest is complete; its own inputs are still
  what the current upstream manifests record, down the chain (so a corpus made from older IDs, or a model trained
  on another corpus, is refused); and the files read are the ones recorded (content hashes, or with
  `thorough=False` size and mtime, hashing only a file whose stamp differs: the CLI's fast start).

Every refusal is one PipelineError naming the command to re-run. `adopt` records outputs made before manifests
existed (`python -m playlist_gen.manifest --output_dir=... --model_dir=...`).
"""

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

from config import COMMANDS  # product -> the command that makes it (its manifest: Config.manifest_path)

from .io import PipelineError, read_json, write_json

WHAT = {"data": "the data", "semantic_ids": "the semantic IDs", "corpus": "the corpus", "model": "the model",
        "collisions": "the collisions report", "evaluation": "the evaluation"}
CHUNK = 1 << 20  # bytes hashed per read: MPD-scale files are hundreds of MB
ROOTS = ("data_dir", "output_dir", "model_dir")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def file_record(path) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def key_of(cfg, path) -> str:
    """`output_dir/train.tsv`: a file's name relative to the config folder holding it (the innermost one), so
    a manifest stays valid when the folders move together."""
    path = Path(path).resolve()
    best = None
    for root in ROOTS:
        base = Path(getattr(cfg, root)).resolve()
        if path.is_relative_to(base) and (best is None or len(base.parts) > len(best[1].parts)):
            best = (root, base)
    return f"{best[0]}/{path.relative_to(best[1]).as_posix()}" if best else str(path)


def path_of(cfg, key: str) -> Path:
    root, _, rest = key.partition("/")
    return Path(getattr(cfg, root)) / rest if root in ROOTS else Path(key)


def load(cfg, product: str) -> dict | None:
    path = cfg.manifest_path(product)
    if not path.exists():
        return None
    manifest = read_json(path, f"re-run `{COMMANDS[product]}`")
    if not isinstance(manifest, dict) or manifest.get("product") != product:
        raise PipelineError(f"{path}: not a manifest of {WHAT[product]}; re-run `{COMMANDS[product]}`")
    if not well_formed(manifest):
        raise PipelineError(f"{path}: a damaged manifest (keys missing or of the wrong type); re-run "
                            f"`{COMMANDS[product]}`")
    return manifest


def well_formed(manifest: dict) -> bool:
    """The keys and types the checks read: an unfinished manifest's command and files being written; a complete
    one's id, command, files (size, mtime, hash) and inputs (product, hash)."""
    def records(d, keys):
        return isinstance(d, dict) and all(isinstance(r, dict) and keys <= r.keys() for r in d.values())

    if not manifest.get("complete"):
        return isinstance(manifest.get("command"), str) and isinstance(manifest.get("writing", []), list)
    return (isinstance(manifest.get("id"), str) and isinstance(manifest.get("command"), str)
            and records(manifest.get("files"), {"size", "mtime_ns", "sha256"})
            and records(manifest.get("inputs", {}), {"product", "sha256", "size"})
            and isinstance(manifest.get("upstream", {}), dict))


def remove_stray_temps(paths) -> None:
    """Temp files and folders that atomic_write/atomic_dir leave beside `paths` when a run is killed."""
    for p in map(Path, paths):
        if p.parent.is_dir():
            for stray in [*p.parent.glob(f".{p.name}.*.tmp"), p.parent / f".{p.name}.old"]:
                if stray.is_dir():
                    shutil.rmtree(stray, ignore_errors=True)
                elif stray.exists():
                    stray.unlink()


def begin(cfg, product: str, paths, command: str | None = None) -> None:
    """Just before a stage's first write: its manifest becomes "unfinished", listing the files it will write."""
    remove_stray_temps(paths)
    write_json(cfg.manifest_path(product), {"product": product, "complete": False,
                                            "command": command or COMMANDS[product],
                                            "writing": sorted(key_of(cfg, p) for p in paths)})


def _files_of(paths) -> list[Path]:
    """Paths with every folder among them replaced by the files under it."""
    out = []
    for p in map(Path, paths):
        out += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return out


def finish(cfg, product: str, paths, reads: "Reads | None" = None, command: str | None = None, given=(),
           **extra) -> dict:
    """After a stage's last write: its complete manifest, written last. `given`: files among `paths` that the stage
    read but did not write (the user's own: a rerun never overwrites them)."""
    files = {key_of(cfg, p): file_record(p) for p in _files_of(paths)}
    for p in given:
        files[key_of(cfg, p)]["written"] = False
    inputs = reads.inputs if reads else {}
    upstream = reads.upstream if reads else {}
    ident = hashlib.sha256(json.dumps({"product": product, "upstream": upstream,
                                       "files": {k: r["sha256"] for k, r in files.items()}},
                                      sort_keys=True).encode()).hexdigest()[:16]
    manifest = {"product": product, "complete": True, "id": ident, "command": command or COMMANDS[product],
                "upstream": upstream, "inputs": inputs, "files": files, **extra,
                "config": dataclasses.asdict(cfg)}
    write_json(cfg.manifest_path(product), manifest)
    return manifest


def owned(cfg, product: str, path) -> bool:
    """Whether `path` is a file the product's stage wrote (and nobody changed since), by its manifest: then a
    rerun may overwrite it. A file of an unfinished run counts as written."""
    manifest = load(cfg, product)
    if manifest is None:
        return False
    key = key_of(cfg, path)
    if not manifest.get("complete"):
        return key in manifest.get("writing", [])
    record = manifest["files"].get(key)
    return bool(record and record.get("written", True) and _matches(path, record, thorough=False))


def _matches(path, record: dict, thorough: bool) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if st.st_size != record["size"]:
        return False
    if not thorough and st.st_mtime_ns == record["mtime_ns"]:
        return True
    return sha256_file(path) == record["sha256"]


class Reads:
    """What a stage reads from earlier stages, each checked against its manifest; passed to `finish`.

    thorough: compare content hashes (batch stages); false: size and mtime, hashing only on a mismatch (the CLI)."""

    def __init__(self, cfg, thorough: bool = True):
        self.cfg, self.thorough = cfg, thorough
        self.inputs: dict[str, dict] = {}
        self.upstream: dict[str, str] = {}
        self._manifests: dict[str, dict] = {}
        self._chained: set[str] = set()

    def manifest(self, product: str) -> dict:
        """The product's complete manifest (else a PipelineError saying what to run)."""
        if product not in self._manifests:
            manifest = load(self.cfg, product)
            path = self.cfg.manifest_path(product)
            if manifest is None:
                raise PipelineError(f"{path} not found: no finished run made {WHAT[product]} here (or it ran before "
                                    f"manifests existed); run `{COMMANDS[product]}`")
            if not manifest.get("complete"):
                raise PipelineError(f"`{manifest.get('command')}` did not finish, so {WHAT[product]} may be "
                                    f"half-written ({path}); run it again")
            self._manifests[product] = manifest
        return self._manifests[product]

    def _check_chain(self, product: str) -> None:
        """Each input of the product is still what its own product's current manifest records, recursively."""
        if product in self._chained:
            return
        manifest = self.manifest(product)
        for key, rec in manifest.get("inputs", {}).items():
            upstream = self.manifest(rec["product"])
            now = upstream["files"].get(key)
            if now is None or rec["sha256"] not in [now["sha256"], *upstream.get("compatible", {}).get(key, [])]:
                raise PipelineError(self._stale(product, rec["product"], key))
            self._check_chain(rec["product"])
        self._chained.add(product)

    def _stale(self, product: str, upstream: str, key: str) -> str:
        """Why `product` does not go with the current `upstream`: either the folders given belong to different runs
        or the upstream stage ran since. Names only files that exist, and says what rebuilding would replace."""
        here = self.cfg.manifest_path(product).parents[1]
        there = self.cfg.manifest_path(upstream).parents[1]
        read = path_of(self.cfg, key)
        gone = f"{read.name} is gone from {read.parent}" if not read.exists() else f"{read} has changed"
        return (f"{WHAT[product]} in {here} came from other files than {WHAT[upstream]} in {there} ({gone}): either "
                f"these folders belong to different runs (pass --data_dir, --output_dir and --model_dir of one run) or "
                f"`{self.manifest(upstream)['command']}` ran since (then re-run `{self.manifest(product)['command']}`, "
                f"which replaces {WHAT[product]} in {here})")

    def require(self, product: str, paths=(), optional=()) -> dict:
        """The product's manifest, after checking its chain and that `paths` are the files it recorded (and those of
        `optional` that it recorded)."""
        self._check_chain(product)
        manifest = self.manifest(product)
        self.upstream[product] = manifest["id"]
        recorded = [p for p in optional if key_of(self.cfg, p) in manifest["files"]]
        for path in _files_of([*paths, *recorded]):
            key = key_of(self.cfg, path)
            record = manifest["files"].get(key)
            if record is None:
                raise PipelineError(f"{path} is not among the files `{manifest['command']}` recorded in "
                                    f"{self.cfg.manifest_path(product)}; re-run it")
            if key not in self.inputs and not _matches(path, record, self.thorough):
                state = "is missing" if not Path(path).exists() else "changed"
                edited = " (or `python prepare_data.py --source=csv`, to check files you edited)" \
                    if product == "data" and "--source=csv" not in manifest["command"] else ""
                raise PipelineError(f"{path} {state} since `{manifest['command']}` wrote or checked it (it does "
                                    f"not match {self.cfg.manifest_path(product)}); re-run `{manifest['command']}`"
                                    f"{edited}")
            self.inputs[key] = {"product": product, "size": record["size"], "sha256": record["sha256"]}
        return manifest


def extending(cfg, product: str, paths) -> dict:
    """For a stage that extends its own last output, keeping what it held (new songs' semantic IDs, the old ones
    unchanged): the last manifest must be complete and `paths` still its files. Returns, per file, the hashes the
    new version stays compatible with (for `finish(..., compatible=...)`), so what was made from them stays valid."""
    last = load(cfg, product)
    if last is None or not last.get("complete"):
        raise PipelineError(f"no finished {WHAT[product]} to extend in {cfg.manifest_path(product).parent.parent}: "
                            f"run `{COMMANDS[product]}` first")
    for path in paths:
        record = last["files"].get(key_of(cfg, path))
        if record is None or not _matches(path, record, thorough=True):
            raise PipelineError(f"{path} is not the file `{last['command']}` recorded; run `{COMMANDS[product]}` "
                                "again instead of extending it")
    compatible = last.get("compatible", {})
    return {key: [rec["sha256"], *compatible.get(key, [])] for key, rec in last["files"].items()}


def require_vectors(reads: Reads) -> Path:
    """The song-vector file of the current data (the user's own or the built one), checked."""
    vectors = reads.manifest("data").get("vectors")
    if not vectors:
        raise PipelineError(f"{reads.cfg.manifest_path('data')} records no song vectors; run "
                            f"`{COMMANDS['data']}` with vectors (or without song_vectors.csv, to build them)")
    path = path_of(reads.cfg, vectors["file"])
    reads.require("data", [path])
    return path


def _existing(paths) -> list[Path]:
    return [Path(p) for p in paths if Path(p).exists()]


def _adopt_data(cfg, reads: Reads) -> dict | None:
    files = _existing([cfg.playlist_info_path, cfg.playlist_song_path, cfg.song_info_path])
    vectors = next(iter(_existing([cfg.song_vectors_path, cfg.built_vectors_path])), None)
    if not files and vectors is None:
        return None
    source = read_json(cfg.data_report_path, "").get("source", "csv") if cfg.data_report_path.exists() else "csv"
    given = [f for f in files if source == "csv"] + ([vectors] if vectors == cfg.song_vectors_path else [])
    files += [vectors] if vectors else []
    return finish(cfg, "data", files + _existing([cfg.data_report_path]), command=f"{COMMANDS['data']} "
                  f"--source={source}", given=given if source == "csv" else [], source=source, adopted=True,
                  vectors={"file": key_of(cfg, vectors), "built": vectors == cfg.built_vectors_path} if vectors
                  else None)


def _adopt_semantic_ids(cfg, reads: Reads) -> dict | None:
    if not cfg.semantic_meta_path.exists():
        return None
    method = read_json(cfg.semantic_meta_path, "").get("method", "rqkmeans")
    files = _existing([cfg.semantic_ids_path, cfg.semantic_meta_path, cfg.method_ids_path(method),
                       cfg.method_meta_path(method), cfg.codebooks_path(method), cfg.rqvae_checkpoint_path])
    if reads.manifest("data").get("vectors"):
        require_vectors(reads)
    command = "python train_rqvae.py" if method == "rqvae" else COMMANDS["semantic_ids"]
    return finish(cfg, "semantic_ids", files, reads, command, adopted=True)


def _adopt_corpus(cfg, reads: Reads) -> dict | None:
    files = _existing([cfg.split_path(s) for s in ("train", "val", "test")] + [cfg.corpus_meta_path])
    if not cfg.corpus_meta_path.exists():
        return None
    reads.require("semantic_ids", [cfg.semantic_ids_path, cfg.semantic_meta_path])
    reads.require("data", _existing([cfg.playlist_info_path, cfg.playlist_song_path, cfg.song_info_path]))
    return finish(cfg, "corpus", files, reads, adopted=True)


def _adopt_model(cfg, reads: Reads) -> dict | None:
    if not cfg.final_model_dir.is_dir():
        return None
    reads.require("corpus", [cfg.split_path("train"), cfg.split_path("val"), cfg.corpus_meta_path])
    reads.require("semantic_ids", [cfg.semantic_meta_path])
    files = [cfg.final_model_dir, *_existing([cfg.loss_curve_csv_path, cfg.loss_curve_png_path,
                                              cfg.train_summary_path])]
    return finish(cfg, "model", files, reads, adopted=True)


def adopt(cfg) -> list[str]:
    """Manifests for the outputs of stages 0-3 that have none (made before manifests existed), recording the files
    as they are now, each stage's inputs from the stage before: you vouch that they belong together. Returns the
    products adopted."""
    adopted = []
    for product, adopt_one in (("data", _adopt_data), ("semantic_ids", _adopt_semantic_ids),
                               ("corpus", _adopt_corpus), ("model", _adopt_model)):
        if load(cfg, product) is None and adopt_one(cfg, Reads(cfg)) is not None:
            adopted.append(product)
    return adopted


def main(argv=None) -> None:
    """Adopt the outputs of the folders given by --data_dir, --output_dir and --model_dir."""
    from .cli import parse_config

    cfg = parse_config(argv, __doc__)
    adopted = adopt(cfg)
    print(f"recorded manifests for: {', '.join(adopted)}" if adopted else "nothing to adopt: every stage's "
          "outputs have a manifest, or are missing")


if __name__ == "__main__":
    from .cli import run_script

    run_script(main)
