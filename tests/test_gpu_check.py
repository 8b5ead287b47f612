"""bench/gpu_check.py's dry run on the CPU: every step but the torchrun ones runs at tiny sizes, so the GPU script
cannot rot on machines without a GPU (on CUDA the same code runs at full size)."""

from bench import gpu_check


def test_the_gpu_check_dry_run_runs_every_step_and_replaces_its_section(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\n## GPU check\n\nold table\n\n## Training\n\nkept\n")
    assert gpu_check.main(["--device=cpu", f"--workdir={tmp_path / 'w'}", f"--out={out}"]) == 0
    text = out.read_text()
    assert "old table" not in text and text.count("## GPU check") == 1 and text.endswith("## Training\n\nkept\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    steps = [row.split(" | ")[0][2:] for row in rows]
    assert [s.split(",")[0].split(" ")[0] for s in steps] == [
        "k-means", "train_rqvae.py", "train_rq_kmeans.py", "train_tiger.py", "train_tiger.py", "train_tiger.py",
        "inference", "evaluate_tiger.py", "evaluate_tiger.py"]
    assert all(row.endswith(("| ok |", "| skipped |")) for row in rows), rows
    assert "the same tokens" in text and "bf16 on cpu" in text and "FAILED" not in text
    assert "no GPU (dry run)" in capsys.readouterr().out


def test_a_failing_step_is_a_failed_row_and_exit_status_1(tmp_path, monkeypatch):
    def broken(*a):
        raise RuntimeError("faiss said no\nfor this reason")

    monkeypatch.setattr(gpu_check, "kmeans_rows", broken)
    assert gpu_check.main(["--device=cpu", f"--workdir={tmp_path}", f"--out={tmp_path / 'r.md'}"]) == 1
    assert "| the next step | stopped: RuntimeError: for this reason | FAILED |" in (tmp_path / "r.md").read_text()
