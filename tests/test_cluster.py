"""A real cluster engine (issue 15): the indicators stage on dask-mpi under the venv's MPICH
gives the serial result bit for bit; `--scheduler slurm` builds a dask-jobqueue SLURMCluster
whose job script is checked without submitting anything."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import zarr
from conftest import BIN, MPIRUN

from glasscam.testing import synthetic_samples_store

GLASSCAM = str(BIN / "glasscam")


@pytest.mark.mpi
def test_indicators_on_dask_mpi_equal_serial(tmp_path):
    samples = tmp_path / "s.zarr"
    synthetic_samples_store(samples, nsamples=12, natoms=64, grid=8)
    common = ["indicators", "--samples", str(samples), "--system", "kam"]
    subprocess.run([GLASSCAM, *common, "--out", str(tmp_path / "serial.zarr"), "--scheduler",
                    "serial"], check=True, capture_output=True)
    proc = subprocess.run([MPIRUN, "-np", "4", GLASSCAM, *common, "--out",
                           str(tmp_path / "mpi.zarr"), "--scheduler", "mpi",
                           "--samples-per-task", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(mpi)" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    a = zarr.open_group(str(tmp_path / "serial.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "mpi.zarr"), mode="r")
    assert b.attrs["provenance"]["scheduler"] == "mpi"
    for cls in ("liquid", "glass"):
        for name in ("voronoi", "ttop", "done", "checksum"):
            assert np.array_equal(a[f"{cls}/{name}"][...], b[f"{cls}/{name}"][...]), name


@pytest.mark.mpi
def test_dask_mpi_with_too_few_ranks_is_refused(tmp_path):
    samples = tmp_path / "s.zarr"
    synthetic_samples_store(samples, nsamples=3, natoms=32, grid=8)
    proc = subprocess.run([MPIRUN, "-np", "2", GLASSCAM, "indicators", "--samples", str(samples),
                           "--out", str(tmp_path / "o.zarr"), "--scheduler", "mpi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "at least 3 MPI ranks" in proc.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_slurm_job_script_from_options_without_submitting(tmp_path):
    proc = subprocess.run([GLASSCAM, "indicators", "--samples", str(tmp_path / "any.zarr"),
                           "--out", str(tmp_path / "o.zarr"), "--scheduler", "slurm",
                           "--cluster-dry-run", "--cluster-cores", "8", "--cluster-memory",
                           "32GB", "--cluster-walltime", "01:30:00", "--cluster-queue", "short",
                           "--cluster-account", "proj42"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    for line in ("#SBATCH -p short", "#SBATCH -A proj42", "#SBATCH --cpus-per-task=8",
                 "#SBATCH -t 01:30:00", "#SBATCH --mem=30G", "--nworkers 8",
                 "export OMP_NUM_THREADS=1"):
        assert line in script, line
    assert "dask_worker" in script and not (tmp_path / "o.zarr").exists()
