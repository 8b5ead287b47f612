"""The GPU paths in one command: each one run, timed and checked, in one table.

    .venv/bin/python -m bench.gpu_check                # on a CUDA machine; the table also goes to bench/RESULTS.md
    .venv/bin/python -m bench.gpu_check --device=cpu   # the dry run: the same steps at tiny sizes, torchrun's aside

Options: --device=auto|cpu|cuda; --gpus=N, processes of the torchrun steps (default: every GPU); --out=PATH, the
markdown file whose "## GPU check" section gets the table (default bench/RESULTS.md on CUDA; the dry run writes only
where told); --workdir=DIR (default: a temporary folder). tests/test_gpu_check.py runs the dry run, so the script
cannot rot on a machine without a GPU. Exit status 1 when a check fails.

Steps, one row each, with a check that can fail:
1. k-means: TorchKMeans (train_rq_kmeans.py's code) on the device and faiss (on its GPUs when it has them) on the
   same vectors from the same start points: seconds, GFLOP/s as a share of the device's fp32 matmul rate; check:
   objective within 1% of faiss'.
2. train_rqvae.py on the device: seconds, validation reconstruction, codes in use (the stage itself refuses
   collapsed IDs).
3. train_rq_kmeans.py on the device: the IDs the later steps use.
4. train_tiger.py in one process, fp32 then bf16 autocast: examples/s, tokens/s, MFU = model FLOPs (6 x (encoder
   params x source tokens + (decoder + LM head) params x target tokens)) per second over the device's bf16 peak (the
   spec sheet's for GPUs named in BF16_PEAK_TFLOPS, else the measured bf16 matmul rate); check: bf16's validation
   loss within 5% of fp32's.
5. train_tiger.py under torchrun --nproc_per_node=N, bf16 (CUDA only; the CPU path, gloo, is
   tests/test_end_to_end.py's): the same numbers; check: validation loss within 5% of one process's.
6. The inference runtime (t5_runtime, the CLI's) against transformers' generate on the device, the same test
   titles, beam search under the cluster trie: ms per title each; check: the same tokens.
7. evaluate_tiger.py in one process, then sharded under torchrun (CUDA only): seconds; check: the same metrics.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BF16_PEAK_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10G": 125}  # dense
SIZES = {
    "full": {"world": [], "kmeans": (200_000, 100, (256, 2048), 20), "rqvae": ["--rqvae.epochs=20"],
             "steps": 400, "model": ["--tiger.ensemble=1"], "titles": 64, "eval": ["--eval.max_playlists=500"]},
    "dry": {"world": ["--demo.n_songs=300", "--demo.n_artists=30", "--demo.n_playlists=240"],
            "kmeans": (4000, 16, (16,), 5), "rqvae": ["--rqvae.epochs=2"], "steps": 12,
            "model": ["--tiger.d_model=32", "--tiger.d_ff=64", "--tiger.num_layers=1", "--tiger.num_decoder_layers=1",
                      "--tiger.num_heads=2", "--tiger.d_kv=16", "--tiger.batch_size=16", "--tiger.sp_vocab_size=320",
                      "--tiger.ensemble=1"],
            "titles": 8, "eval": ["--eval.max_playlists=20", "--eval.shown_policies=sample",
                                  "--recommend.e5_weight=0"]},  # e5 runs on the CPU anyway
}
LOSS_TOLERANCE = 0.05
CPU_TORCHRUN = "CUDA only here (two CPU processes with gloo: tests/test_end_to_end.py)"


@dataclass
class Row:
    step: str
    result: str
    ok: bool | None  # None: not run here, and why is in `result`


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_tflops(device: str, dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def bf16_peak(device: str, n: int) -> tuple[float, str]:
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        for key, tflops in BF16_PEAK_TFLOPS.items():
            if key in name:
                return tflops, f"{name} spec sheet"
    return matmul_tflops(device, torch.bfloat16, n), "measured bf16 matmul"


def kmeans_rows(device: str, size: dict) -> list[Row]:
    from bench.bench_kmeans import clustered
    from playlist_gen.kmeans import FaissKMeans, TorchKMeans

    n, d, ks, iters = size["kmeans"]
    X, rate = clustered(n, d), matmul_tflops(device, torch.float32, 4096 if device != "cpu" else 512)
    rows = []
    for k in ks:
        ours = TorchKMeans(seed=0, device=device).fit(X, k, iters)
        ref = FaissKMeans(seed=0).fit(X, k, iters)
        flop = 2 * n * k * d * iters / 1e12
        ratio = ours.inertia / ref.inertia
        share = 100 * flop / ours.train_s / rate
        rows.append(Row(f"k-means k={k}, {n:,} x {d}", f"ours {ours.train_s:.2f} s ({share:.0f}% of fp32 matmul "
                        f"{rate:.1f} TFLOP/s), faiss {ref.train_s:.2f} s; objective ours/faiss {ratio:.4f}",
                        ratio <= 1.01))
    return rows


def stage(module, argv: list[str]) -> float:
    t0 = time.perf_counter()
    module.main(argv)
    return time.perf_counter() - t0


def torchrun(script: str, argv: list[str], n: int) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", script, *argv]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:5])} {script} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def training_row(cfg, seconds: float, tokens_per_example: tuple[float, int], params, peak) -> tuple[str, float]:
    """The run's throughput and MFU over its training loop's wall time (train_summary.json), evaluations included."""
    summary = json.loads(cfg.train_summary_path.read_text())
    examples = summary["steps"] * cfg.tiger.batch_size * summary["world_size"]
    src, tgt = tokens_per_example
    enc, dec, head = params
    flops = 6 * examples * (enc * src + (dec + head) * tgt)
    secs = summary["train_seconds"]
    text = (f"{summary['steps']} steps, {summary['world_size']} process(es), {summary['precision']} on "
            f"{summary['device']}: {examples / secs:,.0f} examples/s, {examples * (src + tgt) / secs:,.0f} tokens/s, "
            f"MFU {100 * flops / secs / 1e12 / peak[0]:.2f}% of {peak[0]:.3g} TFLOP/s ({peak[1]}); val loss "
            f"{summary['val_loss']:.4f}; stage {seconds:.0f} s")
    return text, summary["val_loss"]


def training_rows(args: list[str], models: Path, size: dict, device: str, gpus: int) -> list[Row]:
    from transformers import T5ForConditionalGeneration

    import train_tiger
    from bench.bench_training import param_counts
    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.cli import parse_config
    from playlist_gen.corpus import read_split
    from playlist_gen.generation import load_generator

    steps = size["steps"]
    common = [*size["model"], f"--tiger.max_steps={steps}", f"--tiger.eval_steps={steps // 2}",
              f"--tiger.save_steps={steps // 2}", "--tiger.resume=false"]
    rows, losses = [], {}
    peak = bf16_peak(device, 4096 if device != "cpu" else 256)
    for precision in ("fp32", "bf16"):
        run = [*args, f"--model_dir={models}_{precision}", *common, f"--tiger.precision={precision}"]
        seconds = stage(train_tiger, run)
        cfg = parse_config(run)
        if precision == "fp32":  # token counts and parameters: the same for every run
            gen = load_generator(cfg, load_catalogue(cfg).clusters, "cpu")
            _, mask = gen.tokenizer.batch(list(read_split(cfg, "train")["title"]), gen.max_source_len, "cpu")
            params = param_counts(T5ForConditionalGeneration.from_pretrained(cfg.final_model_dir))
            tokens = (float(mask.sum(1).float().mean()), gen.levels + 1)
        text, losses[precision] = training_row(cfg, seconds, tokens, params, peak)
        ok = precision == "fp32" or abs(losses["bf16"] / losses["fp32"] - 1) <= LOSS_TOLERANCE
        rows.append(Row(f"train_tiger.py, 1 process, {precision}", text, ok))
    if device.startswith("cuda"):
        run = [*args, f"--model_dir={models}_torchrun", *common, "--tiger.precision=bf16"]
        seconds = torchrun("train_tiger.py", run, gpus)
        text, loss = training_row(parse_config(run), seconds, tokens, params, peak)
        rows.append(Row(f"train_tiger.py, torchrun --nproc_per_node={gpus}, bf16", text,
                        abs(loss / losses["bf16"] - 1) <= LOSS_TOLERANCE))
    else:
        rows.append(Row("train_tiger.py under torchrun", CPU_TORCHRUN, None))
    return rows


def runtime_row(args: list[str], size: dict, device: str) -> Row:
    from transformers import T5ForConditionalGeneration

    from playlist_gen.catalogue import load_catalogue
    from playlist_gen.cli import parse_config
    from playlist_gen.corpus import read_split
    from playlist_gen.generation import load_generator
    from playlist_gen.t5_runtime import beam_search

    cfg = parse_config(args)
    gen = load_generator(cfg, load_catalogue(cfg).clusters, device)
    texts = list(read_split(cfg, "test")["title"])[:size["titles"]]
    ids, mask = gen.tokenizer.batch(texts, gen.max_source_len, device)
    n, beams = 10, 4
    model = T5ForConditionalGeneration.from_pretrained(cfg.final_model_dir).to(device).eval()
    out, ms = {}, {}
    for name in ("ours", "transformers", "ours again"):
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if name.startswith("ours"):
                out[name] = beam_search(gen.runtime, ids, mask, [gen.processor(n)], beams, gen.levels * n + 1)
            else:
                out[name] = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=gen.levels * n + 1,
                                           num_beams=beams, do_sample=False, logits_processor=[gen.processor(n)])
        sync(device)
        ms[name] = 1000 * (time.perf_counter() - t0) / len(texts)
    ours, theirs = out["ours again"].cpu(), out["transformers"].cpu()
    width = theirs.shape[1]  # transformers crops to its longest kept row; ours may run on with padding
    same = ours[:, :width].tolist() == theirs.tolist() and bool((ours[:, width:] == model.config.pad_token_id).all())
    return Row(f"inference runtime vs transformers generate, {len(texts)} titles, {beams} beams, {n} songs",
               f"{ms['ours again']:.1f} vs {ms['transformers']:.1f} ms per title on {device}; "
               f"{'the same tokens' if same else 'DIFFERENT tokens'}", same)


def evaluation_rows(args: list[str], size: dict, device: str, gpus: int) -> list[Row]:
    import evaluate_tiger
    from playlist_gen.cli import parse_config

    run = [*args, "--eval.methods=model,fusion", "--eval.examples=1", *size["eval"]]
    cfg = parse_config(run)
    seconds = stage(evaluate_tiger, run)
    one = json.loads(cfg.metrics_path.read_text())
    rows = [Row("evaluate_tiger.py, 1 process", f"{one['model']['playlists']} playlists in {seconds:.1f} s on "
                f"{device}; model NDCG@100 {one['model']['ndcg@100']:.4f}, fusion {one['fusion']['ndcg@100']:.4f}",
                True)]
    if device.startswith("cuda"):
        seconds = torchrun("evaluate_tiger.py", run, gpus)
        many = json.loads(cfg.metrics_path.read_text())
        same = all(np.allclose([one[m][k] for k in one[m]], [many[m][k] for k in one[m]]) for m in ("model", "fusion"))
        rows.append(Row(f"evaluate_tiger.py, torchrun --nproc_per_node={gpus}", f"{seconds:.1f} s (start-up "
                        f"included); {'the same metrics' if same else 'DIFFERENT metrics'}", same))
    else:
        rows.append(Row("evaluate_tiger.py under torchrun", CPU_TORCHRUN, None))
    return rows


def run_steps(rows: list[Row], work: Path, device: str, size: dict, gpus: int) -> None:
    """Steps 1-7 in order, each appending its rows as it ends."""
    import prepare_corpus
    import prepare_data
    import train_rq_kmeans
    import train_rqvae

    models = work / "models"
    args = [f"--data_dir={work / 'data'}", f"--output_dir={work / 'out'}"]
    rows += kmeans_rows(device, size)
    stage(prepare_data, [*args, "--source=demo", *size["world"]])
    seconds = stage(train_rqvae, [*args, f"--rqvae.device={device}", *size["rqvae"]])
    meta = json.loads((work / "out" / "semantic_ids_meta.json").read_text())
    used = ", ".join(f"{u['used']}/{u['codebook_size']}" for u in meta["usage"])
    rows.append(Row("train_rqvae.py", f"{seconds:.1f} s on {meta['device']}; val reconstruction "
                    f"{meta['best_val_recon']:.4f}; codes used per level {used}", True))
    seconds = stage(train_rq_kmeans, [*args, f"--rqkmeans.device={device}"])
    rows.append(Row("train_rq_kmeans.py", f"{seconds:.1f} s on {device}", True))
    stage(prepare_corpus, args)
    rows += training_rows(args, models, size, device, gpus)
    trained = [*args, f"--model_dir={models}_bf16"]
    rows.append(runtime_row(trained, size, device))
    rows += evaluation_rows(trained, size, device, gpus)


def header(device: str) -> str:
    import faiss

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else "no GPU (dry run)"
    return (f"{when}, {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}), faiss {faiss.__version__} "
            f"({faiss.get_num_gpus()} GPUs), `python -m bench.gpu_check --device={device}`")


def table(rows: list[Row]) -> str:
    lines = ["| step | result | check |", "|---|---|---|"]
    lines += [f"| {r.step} | {r.result} | {'skipped' if r.ok is None else 'ok' if r.ok else 'FAILED'} |" for r in rows]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the file's "## GPU check" section (or append one) with `text`, atomically."""
    from playlist_gen.io import atomic_write

    old = path.read_text(encoding="utf-8") if path.exists() else ""
    start = old.find("\n## GPU check\n")
    end = old.find("\n## ", start + 1) if start >= 0 else -1
    before, after = (old, "") if start < 0 else (old[:start], old[end:] if end >= 0 else "")
    with atomic_write(path) as f:
        f.write(f"{before.rstrip()}\n\n## GPU check\n\n{text}\n{after}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--out", default="")
    p.add_argument("--workdir", default="")
    a = p.parse_args(argv)
    device = "cuda" if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available()) else "cpu"
    size = SIZES["full" if device == "cuda" else "dry"]
    gpus = a.gpus or (torch.cuda.device_count() if device == "cuda" else 1)
    out = Path(a.out) if a.out else (ROOT / "bench" / "RESULTS.md" if device == "cuda" else None)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="gpu_check_"))

    t0, rows = time.perf_counter(), []
    try:
        run_steps(rows, work, device, size, gpus)
    except Exception as e:  # the table still says what ran, and which step failed with what
        traceback.print_exc()
        last = (str(e).strip().splitlines() or [""])[-1][:300]
        rows.append(Row("the next step", f"stopped: {type(e).__name__}: {last}", False))
    text = f"{header(device)}; {time.perf_counter() - t0:.0f} s in all\n\n{table(rows)}"
    print(text)
    if out is not None:
        write_section(out, text)
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
