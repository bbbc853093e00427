"""Friendly in a batch job (issue 15): plain progress lines when stdout is not a terminal,
SIGTERM says what was kept and that the same command resumes, `glasscam status`, stage logs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import BIN
from glasscam.analysis.cli.progress import PlainProgress

from glasscam.testing import synthetic_samples_store

GLASSCAM = str(BIN / "glasscam")


def test_plain_progress_lines_cadence_rate_and_eta():
    lines: list[str] = []
    bar = PlainProgress(echo=lines.append, interval=3600)
    task = bar.add_task("samples", total=10)
    for _ in range(9):
        bar.advance(task)
    assert lines == []  # nothing before the interval, the end, or new info
    bar.update(task, info="loss 0.5")
    assert len(lines) == 1 and "9/10 (90 %)" in lines[0] and "loss 0.5" in lines[0]
    assert re.search(r"ETA 0:0\d", lines[0])
    bar.advance(task)  # completion always prints
    assert len(lines) == 2 and "10/10 (100 %)" in lines[1] and "ETA -" in lines[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prog") / "s.zarr"
    synthetic_samples_store(path, nsamples=40, natoms=64, grid=8)
    return path


def test_train_piped_prints_a_line_per_epoch(store, tmp_path):
    proc = subprocess.run(
        f"{GLASSCAM} train --samples {store} --out {tmp_path / 'm'} --epochs 3 --batch-size 8 "
        "--conv-channels 2,2,2 --fc-width 4 --threads 1 --device cpu | cat",
        shell=True, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    epochs = [ln for ln in proc.stdout.splitlines() if ln.startswith("epochs ")]
    assert [re.search(r"epochs\s+(\d)/3", ln).group(1) for ln in epochs] == ["1", "2", "3"]
    assert all("val " in ln for ln in epochs)  # the epoch's numbers are on its line


def test_sigterm_says_what_was_kept_and_the_same_command_resumes(store, tmp_path):
    out = tmp_path / "ind.zarr"
    argv = [GLASSCAM, "indicators", "--samples", str(store), "--out", str(out), "--system",
            "kam", "--scheduler", "serial", "--samples-per-task", "1"]
    env = {**os.environ, "GLASSCAM_PROGRESS_INTERVAL": "0"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "liquid" / "done" / "c").is_dir() and \
                len(os.listdir(out / "liquid" / "done" / "c")) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in stderr
    assert f"every sample marked done in {out}" in stderr
    assert "Run the same command to resume" in stderr and "--samples-per-task 1" in stderr
    assert "indicators: samples" in stdout  # plain progress lines when piped
    root = zarr.open_group(str(out), mode="r")
    kept = int(np.asarray(root["liquid/done"][:]).sum())
    assert 3 <= kept < 40
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    root = zarr.open_group(str(out), mode="r")
    assert root["liquid/done"][:].all() and root["glass/done"][:].all()
    verify = subprocess.run([GLASSCAM, "verify", str(out)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout


def test_status_of_a_half_finished_run_and_stage_logs(tmp_path):
    from conftest import INPUTS

    preset = tmp_path / "small.toml"
    text = (INPUTS / "presets" / "tiny.toml").read_text()
    preset.write_text(text.replace("nsamples = 64", "nsamples = 8"))
    run = tmp_path / "run"
    proc = subprocess.run([GLASSCAM, "run", "--preset", str(preset), "--out", str(run),
                           "--stage", "quench", "--stage", "indicators"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    status = subprocess.run([GLASSCAM, "status", str(run)], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    lines = {ln.split()[0]: ln for ln in status.stdout.splitlines()[3:] if ln.startswith("  ")
             and ln.split()[0] in ("quench", "propensity", "train", "gradcam", "indicators",
                                   "correlate", "report")}
    assert "done" in lines["quench"] and "8/8 samples" in lines["quench"]
    assert "done" in lines["indicators"] and "16 samples done" in lines["indicators"]
    for stage in ("propensity", "train", "gradcam", "correlate", "report"):
        assert "pending" in lines[stage]
    assert "pending: propensity, train, gradcam, correlate, report" in status.stdout
    assert "last log line" in status.stdout
    # the analysis stage's own output is in logs/, progress lines included
    log = (run / "logs" / "indicators.log").read_text()
    assert "indicators: samples" in log and "$ " in log
    assert (run / "logs" / "quench.stdout").exists()
    bad = subprocess.run([GLASSCAM, "status", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no run.json" in bad.stderr
