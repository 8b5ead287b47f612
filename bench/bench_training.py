"""Training throughput of train_tiger.py's step and its model FLOPs utilisation against the matmul rate.

    .venv/bin/python -m bench.bench_training --data_dir=D --output_dir=O --model_dir=/tmp/x [--tiger.*=...]
    .venv/bin/python -m bench.bench_training ... --bench_compare=64,512    # both cores, side by side

D/O: a corpus made by prepare_corpus.py. Builds the trainer exactly as train_tiger.py does
(playlist_gen.training: tokenizer, default-config T5, Seq2SeqTrainer with its collator and
length-grouped sampler) and trains --bench_steps steps (default 40; the first 5 are not timed).
Model FLOPs per step = 6 x (encoder non-embedding params x source tokens + (decoder non-embedding
+ LM-head params) x target tokens), attention excluded, real (unpadded) tokens of the step's batch.
The fp32 matmul rate (4096^3) is measured before and after in the same process, with the thread count
training uses. Target on CPU: MFU >= 50%. Both are also reported in process CPU time (steps and matmuls
alike), which a machine shared with other jobs disturbs far less than wall time.

--bench_compare=B1,B2,...: for each global batch size B, three runs one after another, each in its own
process(es): one thread; two threads in one process; two processes of one thread under torchrun (data
parallel, B/2 examples each, so every step sees the same B). One table: tokens/s, its ratio to one thread's
at the same B, and MFU against the matmul rate of the cores the run uses (the two processes measure theirs
at the same time and add them).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Subset
from transformers import TrainerCallback, set_seed

from bench.common import machine, matmul_gflops

WARMUP = 5
ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = (("1 thread", 1, 1), ("2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))  # label, processes, threads


class StepTimer(TrainerCallback):
    def __init__(self):
        self.t, self.cpu = [], []

    def on_step_begin(self, args, state, control, **kw):
        self.t.append(time.perf_counter())
        self.cpu.append(time.process_time())

    on_train_end = on_step_begin


class TokenCounter:
    """Wraps the collator: real source/target tokens of every batch, in order."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, features):
        batch = self.collator(features)
        self.batches.append((int(batch["attention_mask"].sum()), int((batch["labels"] != -100).sum())))
        return batch


def param_counts(model) -> tuple[int, int, int]:
    emb = model.shared.weight.numel()
    enc = sum(p.numel() for p in model.encoder.parameters()) - emb
    dec = sum(p.numel() for p in model.decoder.parameters()) - emb
    return enc, dec, model.get_output_embeddings().weight.numel()


def bench_options(argv: list[str]) -> tuple[dict, list[str]]:
    """(--bench_* options, the rest)."""
    ours = {a[2:].split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("--bench_") and "=" in a}
    return ours, [a for a in argv if not a.startswith("--bench_")]


def main() -> None:
    from playlist_gen import checkpoints, examples, manifest, training
    from playlist_gen.cli import parse_config
    from playlist_gen.modeling import build_model, semantic_tokens

    opts, argv = bench_options(sys.argv[1:])
    steps = int(opts.get("bench_steps", 40))
    if "bench_compare" in opts:
        return compare(argv, steps, [int(b) for b in opts["bench_compare"].split(",")])
    cfg = parse_config(argv + [f"--tiger.max_steps={steps}", "--tiger.eval_steps=100000",
                               "--tiger.save_steps=100000", "--tiger.resume=false", "--tiger.logging_steps=100000"])
    tc = cfg.tiger
    corpus_meta, _, train_df, val_df = examples.load_corpus(cfg, manifest.Reads(cfg))
    args = training.training_arguments(cfg)  # sets torch's threads (--tiger.threads) as train_tiger.py does
    print(machine())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # the processes measure their cores' matmul rate at the same time
    mm0, mm0_cpu = matmul_gflops(), matmul_gflops(clock=time.process_time)  # at the thread count training uses
    args.disable_tqdm = True
    tok, _ = checkpoints.shared_tokenizer(cfg, args, list(train_df["title"]), semantic_tokens(corpus_meta),
                                       checkpoints.fingerprint(tc, corpus_meta))
    set_seed(cfg.seed)
    model = build_model(tc, tok)
    train_f = examples.encode_split(tok, train_df, tc, int(corpus_meta["levels"]), cfg.seed)
    trainer = training.make_trainer(model, tok, args, train_f, Subset(train_f, range(8)), tc.early_stopping_patience)
    trainer.data_collator = counter = TokenCounter(trainer.data_collator)
    trainer.add_callback(timer := StepTimer())
    trainer.train()
    mm1, mm1_cpu = matmul_gflops(), matmul_gflops(clock=time.process_time)
    if "bench_json" in opts:
        return report_json(tc, param_counts(model), counter.batches[WARMUP:steps], timer, (mm0 + mm1) / 2)
    report(tc, param_counts(model), counter.batches[WARMUP:steps], timer, (mm0, mm1), (mm0_cpu, mm1_cpu))


def report_json(tc, params, batches, timer, matmul: float) -> None:
    """One JSON line from rank 0: the model FLOPs and tokens of every process's timed steps, rank 0's wall time,
    and the matmul rate of all processes (each measured its own at the same time: the run's cores)."""
    enc, dec, head = params
    totals = torch.tensor([sum(b[0] for b in batches), sum(b[1] for b in batches), matmul], dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    src, tgt, rate = totals.tolist()
    if int(os.environ.get("RANK", "0")) == 0:
        secs = timer.t[-1] - timer.t[WARMUP]
        print("BENCH_JSON " + json.dumps({"batch": tc.batch_size, "src": src, "tgt": tgt, "secs": secs,
                                          "flops": 6 * (enc * src + (dec + head) * tgt), "matmul": rate}))


def compare(argv: list[str], steps: int, batches: list[int]) -> None:
    """Every LAYOUT at every global batch size, one after another, each in fresh processes; one table."""
    print(machine())
    rows = []
    for batch in batches:
        base = None
        for label, procs, threads in LAYOUTS:
            run = ["-m", "bench.bench_training", *argv, f"--bench_steps={steps}", "--bench_json=1",
                   f"--tiger.threads={threads}", f"--tiger.batch_size={batch // procs}"]
            cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                                     if procs > 1 else []), *run]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
            if proc.returncode or line is None:
                sys.exit(f"error: {label} at batch {batch} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
            r = json.loads(line[len("BENCH_JSON "):])
            tps = (r["src"] + r["tgt"]) / r["secs"]
            base = base or tps
            rows.append(f"| {batch} | {label} | {r['secs']:.1f} | {tps:,.0f} | {tps / base:.2f}x "
                        f"| {r['flops'] / r['secs'] / 1e9:.1f} | {r['matmul']:.1f} "
                        f"| {100 * r['flops'] / r['secs'] / 1e9 / r['matmul']:.0f}% |")
            print(rows[-1], flush=True)
    print(machine())
    print("| global batch | layout | timed steps, s | tokens/s (src+tgt) | vs 1 thread | model GFLOP/s "
          "| matmul GFLOP/s of its cores | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def report(tc, params, batches, timer, matmul_wall, matmul_cpu) -> None:
    """Tokens/s and MFU of the timed steps, by wall clock and by process CPU time."""
    enc, dec, head = params
    src, tgt = sum(b[0] for b in batches), sum(b[1] for b in batches)
    flops = 6 * (enc * src + (dec + head) * tgt)
    secs, cpu_secs = timer.t[-1] - timer.t[WARMUP], timer.cpu[-1] - timer.cpu[WARMUP]
    print(machine())
    print(f"params: encoder {enc:,} decoder {dec:,} LM head {head:,}; timed steps {len(batches)}, "
          f"source tokens {src:,}, target tokens {tgt:,}, {secs:.1f} s wall, {cpu_secs:.1f} s CPU")
    print("| model | batch | clock | tokens/s (src+tgt) | model GFLOP/s | matmul GFLOP/s (before/after) | MFU |")
    print("|---|---|---|---|---|---|---|")
    model = f"d_model {tc.d_model}, {tc.num_layers}+{tc.num_decoder_layers} layers, d_ff {tc.d_ff}"
    for clock, t, (m0, m1) in (("wall", secs, matmul_wall), ("CPU", cpu_secs, matmul_cpu)):
        print(f"| {model} | {tc.batch_size} | {clock} | {(src + tgt) / t:,.0f} | {flops / t / 1e9:.1f} "
              f"| {m0:.1f}/{m1:.1f} | {100 * flops / t / 1e9 / ((m0 + m1) / 2):.0f}% |")

if __name__ == "__main__":
    main()
