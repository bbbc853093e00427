"""In-situ hooks of the quench decks (``inputs/kam/quench.in``, ``inputs/abm/quench.in``).

The deck drives the protocol (DESIGN §3); these functions, called through the glasscam plugin
(``insitu module:function key value ...`` and ``fix ID all insitu N module:function``), own the
bookkeeping. Per process, in deck order::

    insitu insitu.quench:setup out ... (all deck parameters)   # once, every rank of the universe
    label next_sample
    insitu insitu.quench:next                                  # sets v_sample, v_seed{A,B,V}
    if "${sample} < 0" then "jump SELF finished"
    clear, build the random system from v_seedA/v_seedB
    insitu insitu.quench:start                                 # checks the system, resets buffers
    minimize, velocity ... ${seedV}, NVT at Thigh for nequil steps, reset_timestep 0
    fix rec all insitu ${nrecord} insitu.quench:record         # energy-temperature record
    run ${nliquid} start 0 stop ${ncool}  ->  insitu insitu.quench:snapshot class liquid
    run ${nglass}  start 0 stop ${ncool}  ->  insitu insitu.quench:snapshot class glass
    jump SELF next_sample
    label finished
    insitu insitu.quench:finish                                # once, every rank of the universe

What each hook does:

* ``setup`` (collective over the universe): parses and checks the parameters; universe rank 0
  creates the store, or validates the existing one against the parameters (a mismatch stops
  every partition with a message naming the field) and lists the samples not yet done, while
  the others wait; then all ranks share that list through a :class:`~insitu.parallel.WorkQueue`.
* ``next`` (collective over the partition): the partition's rank 0 takes the next sample index
  from the queue and broadcasts it; the hook sets the deck's string variables ``sample`` (-1
  when the queue is empty), ``seedA``, ``seedB``, ``seedV``. All three LAMMPS seeds derive from
  the sample's own seed, :func:`sample_seed` (base seed, index), through :func:`lammps_seeds`;
  so with one rank per partition a sample is bit-for-bit the same whatever the number of
  partitions, and a resumed run redoes exactly the missing samples.
* ``record`` (fix, every ``nrecord`` steps of the cooling and at setup): target temperature,
  measured kinetic temperature, potential energy per particle into an in-memory row
  (``cooling/`` in the store: the energy-temperature curve of paper Fig. S6, for checking the
  absence of crystallisation as jumps in E(T)).
* ``snapshot class liquid|glass`` (collective over the partition): gathers positions sorted by
  atom ID (``gather_atoms``; IDs from ``create_atoms`` depend on the rank count, the order is
  by ID whatever it is), wraps them into [0, L), types (LAMMPS 1/2 -> 0=A/1=B), box, potential
  energy per particle and temperature; rank 0 gridizes the frame (:mod:`insitu.gridize`, on the
  float32 positions as stored, so ``image == gridize(positions)`` offline) and buffers it. At
  the glass snapshot the whole sample (both classes + cooling record) is written, ``done`` last
  (:class:`insitu.store.SampleWriter`).
* ``finish`` (collective over the universe): frees the queue.
* ``frame`` (fix, benchmark stress path): gather a frame every ``framestride`` steps; a
  background thread gridizes and writes it (:class:`~insitu.store.FrameWriter`).

Every hook rejects unknown keywords with an error that names the keyword and the hook.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import gridize as _gridize
from . import parallel, schema
from .store import FrameWriter, SampleWriter, Snapshot, prepare_samples_store

# Deck parameters recorded in the store (the name is the deck variable's), with their types.
PARAMETERS: dict[str, type] = {
    "model": str,  # kam | abm
    "nsamples": int,
    "natoms": int,
    "seed": int,  # base seed
    "rate": float,  # cooling rate |dT/dt| in LJ units
    "nequil": int,  # MD steps at Thigh before cooling
    "dt": float,
    "tdamp": float,  # Nose-Hoover damping time
    "fracA": float,  # number fraction of species A (type 1, stored as 0)
    "rho": float,  # number density N / L^2
    "Thigh": float,  # equilibration temperature (4.0)
    "TL": float,  # liquid snapshot temperature
    "TG": float,  # glass snapshot temperature
    "sigmaAA": float,
    "sigmaAB": float,
    "sigmaBB": float,
    "epsAA": float,
    "epsAB": float,
    "epsBB": float,
    "cutoff": float,  # in units of sigma_ij
    "grid": int,  # M
    "channels": int,  # C
    "kernel": str,  # gridization kernel
    "nrecord": int,  # steps between energy-temperature records
    "nliquid": int,  # cooling steps Thigh -> TL
    "nglass": int,  # cooling steps TL -> TG
}
# Keywords that steer the run but are not properties of the samples (not recorded/compared).
RUN_KEYWORDS = ("out", "frames", "framestride")
SEED_RANGE = 2**30 - 1  # LAMMPS' Park-Miller seeds must lie in [1, 2^31 - 2]

# Wall time spent inside each hook of this process (seconds, calls); written as JSON by
# `finish` (universe rank 0) to $GLASSCAM_QUENCH_TIMING if set: the benchmark's self-timing.
TIMING: dict[str, list[float]] = {}


def _timed(func):
    import functools

    @functools.wraps(func)
    def wrapper(lmp, step, **kw):
        t0 = time.perf_counter()
        try:
            return func(lmp, step, **kw)
        finally:
            entry = TIMING.setdefault(func.__name__, [0.0, 0])
            entry[0] += time.perf_counter() - t0
            entry[1] += 1

    return wrapper


# ----------------------------------------------------------------------------------------------
# seeds


def sample_seed(base_seed: int, index: int) -> int:
    """The seed of sample ``index`` of a run with base seed ``base_seed`` (a positive int63)."""
    state = np.random.SeedSequence([int(base_seed), int(index), 0x9A55]).generate_state(
        1, np.uint64
    )
    return int(state[0] >> np.uint64(1))


def lammps_seeds(seed: int) -> tuple[int, int, int]:
    """(seedA, seedB, seedV): create_atoms A, create_atoms B, velocity; all from ``seed``."""
    state = np.random.SeedSequence(int(seed)).generate_state(3, np.uint64)
    return tuple(int(s % np.uint64(SEED_RANGE)) + 1 for s in state)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# parameters


def _unknown(kw: Mapping[str, str], allowed, hook: str) -> None:
    extra = sorted(set(kw) - set(allowed))
    if extra:
        raise TypeError(
            f"insitu.quench:{hook}: unknown keyword(s) {', '.join(map(repr, extra))}; "
            f"known: {', '.join(sorted(allowed)) or '(none)'}"
        )


def parse_parameters(kw: Mapping[str, str]) -> dict[str, Any]:
    """Typed deck parameters from the ``setup`` keywords (strings); checks their consistency."""
    _unknown(kw, (*PARAMETERS, *RUN_KEYWORDS), "setup")
    missing = [k for k in (*PARAMETERS, "out") if k not in kw]
    if missing:
        raise TypeError(f"insitu.quench:setup: missing keyword(s) {', '.join(missing)}")
    params: dict[str, Any] = {}
    for name, typ in PARAMETERS.items():
        text = str(kw[name])
        try:
            params[name] = typ(float(text)) if typ is int and "e" in text.lower() else typ(text)
        except ValueError:
            raise ValueError(
                f"insitu.quench:setup: keyword '{name}' must be {typ.__name__}, got {text!r}"
            ) from None
    p = params
    checks = [
        (p["nsamples"] >= 1, "nsamples must be >= 1"),
        (p["natoms"] >= 2, "natoms must be >= 2"),
        (p["seed"] >= 0, "seed must be >= 0"),
        (p["rate"] > 0, "rate must be > 0"),
        (p["nequil"] >= 0, "nequil must be >= 0"),
        (p["dt"] > 0 and p["tdamp"] > 0, "dt and tdamp must be > 0"),
        (0.0 <= p["fracA"] <= 1.0, "fracA must lie in [0, 1]"),
        (p["Thigh"] > p["TL"] > p["TG"] > 0, "temperatures must satisfy Thigh > TL > TG > 0"),
        (p["channels"] in (1, 2), "channels must be 1 or 2"),
        (p["grid"] >= 1, "grid must be >= 1"),
        (p["kernel"] in _gridize.KERNELS, f"kernel must be one of {_gridize.KERNELS}"),
        (p["nrecord"] >= 1, "nrecord must be >= 1"),
        (p["nliquid"] >= 1 and p["nglass"] >= 1, "nliquid and nglass must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"insitu.quench:setup: {message} (got {_show(p)})")
    # the deck computes the cooling step counts; they must be the ones the rate implies
    for name, t0, t1 in (("nliquid", p["Thigh"], p["TL"]), ("nglass", p["TL"], p["TG"])):
        expected = (t0 - t1) / (p["rate"] * p["dt"])
        if abs(p[name] - expected) > 1.0:
            raise ValueError(
                f"insitu.quench:setup: {name} = {p[name]} steps, but cooling from {t0} to {t1} "
                f"at rate {p['rate']} with dt {p['dt']} takes {expected:.1f} steps"
            )
    # rows at steps 0, nrecord, 2 nrecord, ... and a last one at the end of the cooling (T_G)
    p["ncool"] = -(-(p["nliquid"] + p["nglass"]) // p["nrecord"]) + 1
    p["natomsA"] = int(round(p["fracA"] * p["natoms"]))
    return p


def _show(p: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items() if k in PARAMETERS)


# ----------------------------------------------------------------------------------------------
# per-process state (one LAMMPS instance per process; survives `clear`)


@dataclass
class _State:
    params: dict[str, Any]
    out: str
    queue: parallel.WorkQueue
    writer: SampleWriter | None  # on partition rank 0 only
    todo: int
    sample: int = -1
    seed: int = -1
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    cooling: dict[str, np.ndarray] = field(default_factory=dict)
    written: int = 0
    t_start: float = field(default_factory=time.perf_counter)
    frames: FrameWriter | None = None
    framestride: int = 0


_STATE: _State | None = None


def _state(hook: str) -> _State:
    if _STATE is None:
        raise RuntimeError(
            f"insitu.quench:{hook} called before insitu.quench:setup (the deck must call setup "
            "once, before the sample loop)"
        )
    return _STATE


def _is_root(lmp) -> bool:
    return int(lmp.extract_setting("world_rank")) == 0


def _set_string(lmp, name: str, value: Any) -> None:
    if lmp.set_string_variable(name, str(value)) != 0:
        raise RuntimeError(
            f"cannot set LAMMPS variable '{name}': the deck must define it as a string-style "
            f"variable (variable {name} string ...) and not pass it with -var"
        )


# ----------------------------------------------------------------------------------------------
# hooks


@_timed
def setup(lmp, step: int, **kw: str) -> None:
    """Create/validate the store (universe rank 0) and share the queue of missing samples."""
    global _STATE
    params = parse_parameters(kw)
    out = str(kw["out"])
    uni = parallel.universe()
    if _STATE is not None:  # a second setup in the same process: release the old queue
        _STATE.queue.free()
        _STATE = None
    todo = parallel.on_root(uni, lambda: prepare_samples_store(out, params))
    framestride = int(kw.get("framestride", 0) or 0)
    frames_path = kw.get("frames", "")
    if framestride > 0:
        if not frames_path:
            raise TypeError("insitu.quench:setup: framestride > 0 needs a 'frames' store path")
        per_sample = (params["nliquid"] + params["nglass"]) // framestride + 1
        parallel.on_root(
            uni,
            lambda: FrameWriter.create(
                frames_path,
                params["nsamples"] * per_sample,
                params["channels"],
                params["grid"],
                framestride,
            ),
        )
    queue = parallel.WorkQueue(uni, todo, f"{out}.claims")
    root = _is_root(lmp)
    writer = SampleWriter(out) if root else None
    _STATE = _State(params=params, out=out, queue=queue, writer=writer, todo=len(todo))
    if framestride > 0:
        _STATE.framestride = framestride
        _STATE.frames = (
            FrameWriter(frames_path, params["grid"], params["channels"], params["kernel"])
            if root
            else None
        )
    if uni.Get_rank() == 0:
        done = params["nsamples"] - len(todo)
        print(
            f"insitu.quench: store {out}: {params['nsamples']} samples, {done} already done, "
            f"{len(todo)} to do",
            flush=True,
        )


@_timed
def next(lmp, step: int, **kw: str) -> None:  # noqa: A001 - the deck's verb
    """Take the next sample index for this partition; set v_sample (-1: none), v_seed{A,B,V}."""
    _unknown(kw, (), "next")
    st = _state("next")
    index = st.queue.next(parallel.partition(lmp))
    st.snapshots.clear()
    st.cooling = {}
    if index is None:
        st.sample, st.seed = -1, -1
        _set_string(lmp, "sample", -1)
        return
    st.sample = index
    st.seed = sample_seed(st.params["seed"], index)
    seed_a, seed_b, seed_v = lammps_seeds(st.seed)
    _set_string(lmp, "seedA", seed_a)
    _set_string(lmp, "seedB", seed_b)
    _set_string(lmp, "seedV", seed_v)
    _set_string(lmp, "sample", index)


@_timed
def start(lmp, step: int, **kw: str) -> None:
    """After building the system: check it against the parameters, reset the cooling record."""
    _unknown(kw, (), "start")
    st = _state("start")
    if st.sample < 0:
        raise RuntimeError("insitu.quench:start: no sample taken (call insitu.quench:next first)")
    p = st.params
    natoms = int(lmp.get_natoms())
    if natoms != p["natoms"]:
        raise RuntimeError(
            f"insitu.quench:start: sample {st.sample} has {natoms} atoms, the store expects "
            f"natoms = {p['natoms']} (create_atoms could not place them all? lower its overlap)"
        )
    types = _gather_types(lmp)
    n_a = int(np.count_nonzero(types == 0))
    if n_a != p["natomsA"]:
        raise RuntimeError(
            f"insitu.quench:start: sample {st.sample} has {n_a} A atoms, expected "
            f"round(fracA * natoms) = {p['natomsA']}"
        )
    k = p["ncool"]
    st.cooling = {
        "target_temperature": np.full(k, np.nan),
        "temperature": np.full(k, np.nan),
        "potential_energy": np.full(k, np.nan),
    }
    st.snapshots.clear()


@_timed
def record(lmp, step: int, **kw: str) -> None:
    """Energy-temperature record every ``nrecord`` steps of the cooling (fix insitu)."""
    _unknown(kw, (), "record")
    st = _state("record")
    p = st.params
    if not st.cooling:
        raise RuntimeError("insitu.quench:record: no sample started (call insitu.quench:start)")
    ntot = p["nliquid"] + p["nglass"]
    if step % p["nrecord"] or not 0 <= step <= ntot:
        return  # e.g. the setup call of the second cooling run, between two records
    temperature = float(lmp.get_thermo("temp"))  # collective: every rank calls
    pe = float(lmp.get_thermo("pe"))  # per particle (thermo_modify norm yes)
    _put_record(st, step, temperature, pe)


def _put_record(st: _State, step: int, temperature: float, pe: float) -> None:
    """Row k of the cooling record: step k*nrecord, and the last row for the end step."""
    p = st.params
    ntot = p["nliquid"] + p["nglass"]
    k = p["ncool"] - 1 if step == ntot else step // p["nrecord"]
    st.cooling["target_temperature"][k] = p["Thigh"] + (p["TG"] - p["Thigh"]) * step / ntot
    st.cooling["temperature"][k] = temperature
    st.cooling["potential_energy"][k] = pe


def _gather_types(lmp) -> np.ndarray:
    n = int(lmp.get_natoms())
    t = np.ctypeslib.as_array(lmp.gather_atoms("type", 0, 1)).reshape(n)
    return (t - 1).astype(np.int8)


def gather_frame(lmp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions f4 [N,2] wrapped into [0,L), types i1 [N], box f8 [2]), sorted by atom ID.

    Collective over the partition (``gather_atoms``); every rank gets the arrays.
    """
    n = int(lmp.get_natoms())
    x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(n, 3)[:, :2]
    types = _gather_types(lmp)
    boxlo, boxhi = lmp.extract_box()[:2]
    lo = np.array(boxlo[:2], dtype=np.float64)
    box = np.array(boxhi[:2], dtype=np.float64) - lo
    return wrap_positions(x, lo, box), types, box


def wrap_positions(x: np.ndarray, lo: np.ndarray, box: np.ndarray) -> np.ndarray:
    """float32 positions in [0, L) (also after rounding to float32)."""
    u = np.mod(np.asarray(x, dtype=np.float64) - lo, box)
    u = np.where(u >= box, u - box, u)
    u32 = u.astype(np.float32)
    box32 = box.astype(np.float32)
    u32 = np.where(u32 >= box32, np.float32(0.0), u32)  # rounded up onto L: it is 0 mod L
    return np.ascontiguousarray(u32, dtype=np.float32)


@_timed
def snapshot(lmp, step: int, **kw: str) -> None:
    """Take the liquid or glass snapshot of the current sample; write the sample after glass."""
    _unknown(kw, ("class",), "snapshot")
    st = _state("snapshot")
    cls = kw.get("class", "")
    if cls not in schema.CLASSES:
        raise ValueError(
            f"insitu.quench:snapshot: class must be one of {schema.CLASSES}, got {cls!r}"
        )
    if st.sample < 0 or not st.cooling:
        raise RuntimeError(f"insitu.quench:snapshot: no sample in progress (class {cls})")
    positions, types, box = gather_frame(lmp)  # collective
    temperature = float(lmp.get_thermo("temp"))
    pe = float(lmp.get_thermo("pe"))
    if not _is_root(lmp):
        return
    p = st.params
    if cls == schema.CLASSES[-1]:
        if step != p["nliquid"] + p["nglass"]:
            raise RuntimeError(
                f"insitu.quench:snapshot: the glass snapshot is taken at step {step}, expected "
                f"the end of the cooling (step {p['nliquid'] + p['nglass']})"
            )
        _put_record(st, step, temperature, pe)  # the cooling record ends at T_G
    image = _gridize.gridize(
        positions, types, box, grid=p["grid"], channels=p["channels"], kernel=p["kernel"]
    )
    st.snapshots[cls] = Snapshot(positions, types, box, image, pe, temperature)
    if cls != schema.CLASSES[-1]:
        return
    assert st.writer is not None
    st.writer.write(st.sample, st.seed, st.snapshots, st.cooling)
    st.written += 1
    temps = ", ".join(f"T_{c} {s.temperature:.4g}" for c, s in st.snapshots.items())
    st.snapshots = {}
    elapsed = time.perf_counter() - st.t_start
    print(
        f"insitu.quench: sample {st.sample} written (seed {st.seed}; {temps}; "
        f"{st.written} by this partition in {elapsed:.1f} s)",
        flush=True,
    )


@_timed
def frame(lmp, step: int, **kw: str) -> None:
    """Benchmark stress path: gather the frame; a background thread gridizes and writes it."""
    _unknown(kw, (), "frame")
    st = _state("frame")
    if st.framestride <= 0:
        raise RuntimeError("insitu.quench:frame: setup was not given framestride > 0")
    p = st.params
    positions, types, box = gather_frame(lmp)  # collective
    if not _is_root(lmp) or st.sample < 0 or step % st.framestride:
        return
    per_sample = (p["nliquid"] + p["nglass"]) // st.framestride + 1
    index = st.sample * per_sample + min(step // st.framestride, per_sample - 1)
    assert st.frames is not None
    st.frames.submit(index, positions, types, box)


def finish(lmp, step: int, **kw: str) -> None:
    """End of the sample loop: free the queue (collective over the universe)."""
    global _STATE
    _unknown(kw, (), "finish")
    st = _state("finish")
    st.queue.free()
    if st.frames is not None:
        t0 = time.perf_counter()
        st.frames.close()
        TIMING["frames_drain"] = [time.perf_counter() - t0, 1]
        TIMING["frames_thread_cpu"] = [st.frames.thread_cpu_s, 1]
    uni = parallel.universe()
    total = uni.allreduce(st.written if _is_root(lmp) else 0)
    if uni.Get_rank() == 0:
        print(
            f"insitu.quench: done, {total} samples written in this run into {st.out}",
            flush=True,
        )
        timing_path = os.environ.get("GLASSCAM_QUENCH_TIMING")
        if timing_path:
            with open(timing_path, "w") as fh:
                json.dump({k: {"seconds": v[0], "calls": v[1]} for k, v in TIMING.items()}, fh)
    _STATE = None
