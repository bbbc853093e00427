"""In-situ hooks of the quench decks (``inputs/kam/quench.in``, ``inputs/abm/quench.in``).

The deck drives the protocol (DESIGN §3); these functions, called through the glasscam plugin
(``insitu module:function key value ...`` and ``fix ID all insitu N module:function``), own the
bookkeeping. Per process, in deck order::

    insitu glasscam.insitu.quench:setup out ... (all deck parameters)   # once, every rank of the
    universe
    label next_sample
    insitu glasscam.insitu.quench:next                                  # sets v_sample,
    v_seed{A,B,V}
    if "${sample} < 0" then "jump SELF finished"
    clear, build the random system from v_seedA/v_seedB
    insitu glasscam.insitu.quench:start                                 # checks the system, resets
    buffers
    minimize, velocity ... ${seedV}, NVT at Thigh for nequil steps, reset_timestep 0
    fix rec all insitu ${nrecord} glasscam.insitu.quench:record         # energy-temperature record
    run ${nliquid} start 0 stop ${ncool}  ->  insitu glasscam.insitu.quench:snapshot class liquid
    run ${nglass}  start 0 stop ${ncool}  ->  insitu glasscam.insitu.quench:snapshot class glass
    jump SELF next_sample
    label finished
    insitu glasscam.insitu.quench:finish                                # once, every rank of the
    universe

What each hook does:

* ``setup`` (collective over the universe): parses and checks the parameters; universe rank 0
  takes the store's lock (:mod:`glasscam.insitu.lock`: a second launch on the same store is
  refused at once, naming this one) and creates the store, or grows it (more samples asked
  for), or verifies it (damaged samples are redone) and validates the existing one against
  the parameters (a mismatch stops every partition with a message naming the field) and lists
  the samples not yet done, while the others wait; then all ranks share that list through a
  :class:`~glasscam.insitu.parallel.WorkQueue`.
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
  energy per particle and temperature; rank 0 gridizes the frame (:mod:`glasscam.insitu.gridize`,
  on the
  float32 positions as stored, so ``image == gridize(positions)`` offline) and buffers it. At
  the glass snapshot the whole sample (both classes + cooling record) is written, ``done`` last
  (:class:`glasscam.insitu.store.SampleWriter`).
* ``finish`` (collective over the universe): frees the queue.

P(glass) along the cooling (off unless ``setup`` gets ``cnn DIR``, deck variables ``cnn``,
``livestride`` (default ``nrecord``; a multiple of it), ``livedevice``, ``livethreads``): the
trained network's P(glass) and the temperature every ``livestride`` steps of each sample's
cooling, in ``<out without .zarr>.live.zarr`` (:mod:`glasscam.insitu.live`): ``setup`` checks
the model and creates that store, ``record`` takes the rows (a gather and a forward pass),
the glass ``snapshot`` writes them just before the sample itself. These keywords are not
sample parameters: the samples store and every sample are the same with or without them.

The model (potential, default composition, density and temperatures) comes from the model
table, :mod:`glasscam.insitu.systems`: the deck names it (``model kam``) and
``glasscam.insitu.systems:define`` / ``:potential`` turn it into deck variables and
``pair_coeff`` lines; ``setup`` records the table's potential in the store.

Every hook follows :mod:`glasscam.insitu.deck`: unknown keywords are errors naming the keyword
and the hook, values are parsed exactly, errors are :class:`~glasscam.insitu.deck.InputError`.
Benchmark instrumentation (timing, a frame stress path) lives in ``benchmarks/``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from glasscam.insitu import deck, parallel, schema, systems
from glasscam.insitu.gridize import KERNELS, gridize
from glasscam.insitu.lock import OutputLock
from glasscam.insitu.store import SampleWriter, Snapshot, prepare_samples_store

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
    "grid": int,  # M
    "channels": int,  # C
    "kernel": str,  # gridization kernel
    "nrecord": int,  # steps between energy-temperature records
}
# The deck's per-atom potential energy compute, gathered at each snapshot (samples/2)
PARTICLE_ENERGY = "peatom"
# Keywords that steer the run but are not properties of the samples (not recorded/compared);
# cnn, livestride, livedevice, livethreads: P(glass) along the cooling (glasscam.insitu.live)
RUN_KEYWORDS = ("out",)
LIVE_KEYWORDS = ("cnn", "livestride", "livedevice", "livethreads")
SEED_RANGE = 2**30 - 1  # LAMMPS' Park-Miller seeds must lie in [1, 2^31 - 2]
# The CNN sees the grid through three 'same' 3x3 convolutions and a dense head: fewer pixels
# than this leave nothing to learn (and the deck's arithmetic breaks for grid < 1).
MIN_GRID = 4


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


def _where(hook: str) -> str:
    return f"glasscam.insitu.quench:{hook}"


def _no_keywords(kw: Mapping[str, str], hook: str) -> None:
    deck.parse_keywords(kw, {}, _where(hook))


def parse_parameters(kw: Mapping[str, str]) -> dict[str, Any]:
    """Typed deck parameters from the ``setup`` keywords (strings); checks their consistency.

    The potential is not a keyword: it is the model table's (:mod:`glasscam.insitu.systems`),
    recorded in the returned parameters so that a store says which potential made it.
    """
    where = _where("setup")
    p = deck.parse_keywords(kw, {**PARAMETERS, "out": str}, where,
                            required=(*PARAMETERS, "out"))
    p.pop("out")
    system = systems.get(p["model"], "model", where)
    p["model"] = system.name
    deck.check(
        [
            (p["nsamples"] >= 1, f"nsamples must be >= 1, got {p['nsamples']}"),
            (p["natoms"] >= 2, f"natoms must be >= 2, got {p['natoms']}"),
            (p["seed"] >= 0, f"seed must be >= 0, got {p['seed']}"),
            (p["rate"] > 0, f"rate must be > 0, got {p['rate']}"),
            (p["nequil"] >= 0, f"nequil must be >= 0, got {p['nequil']}"),
            (p["dt"] > 0 and p["tdamp"] > 0, "dt and tdamp must be > 0"),
            (0.0 <= p["fracA"] <= 1.0, f"fracA must lie in [0, 1], got {p['fracA']}"),
            (p["rho"] > 0, f"rho must be > 0, got {p['rho']}"),
            (p["Thigh"] > p["TL"] > p["TG"] > 0,
             f"temperatures must satisfy Thigh > TL > TG > 0, got Thigh={p['Thigh']}, "
             f"TL={p['TL']}, TG={p['TG']}"),
            (p["channels"] in (1, 2), f"channels must be 1 or 2, got {p['channels']}"),
            (p["grid"] >= MIN_GRID,
             f"grid must be >= {MIN_GRID} pixels (the CNN needs an image), got {p['grid']}"),
            (p["kernel"] in KERNELS, f"kernel must be one of {KERNELS}, got {p['kernel']!r}"),
            (p["nrecord"] >= 1, f"nrecord must be >= 1, got {p['nrecord']}"),
        ],
        where,
    )
    # cooling steps Thigh -> TL (liquid snapshot) and TL -> TG (glass snapshot) at the rate
    for name, t0, t1 in (("nliquid", p["Thigh"], p["TL"]), ("nglass", p["TL"], p["TG"])):
        p[name] = int(math.floor((t0 - t1) / (p["rate"] * p["dt"]) + 0.5))
        if p[name] < 1:
            raise deck.InputError(
                f"{where}: cooling from {t0} to {t1} at rate {p['rate']} with dt {p['dt']} "
                f"takes {p[name]} steps; lower 'rate'"
            )
    p.update(system.potential_parameters())
    # rows at steps 0, nrecord, 2 nrecord, ... and a last one at the end of the cooling (T_G)
    p["ncool"] = -(-(p["nliquid"] + p["nglass"]) // p["nrecord"]) + 1
    p["natomsA"] = int(math.floor(p["fracA"] * p["natoms"] + 0.5))
    return p


def deck_values(p: Mapping[str, Any]) -> dict[str, Any]:
    """What the deck needs from the parameters: box edge, species counts, cooling steps."""
    return {
        "L": repr(math.sqrt(p["natoms"] / p["rho"])),  # repr: LAMMPS reads back the same double
        "nA": p["natomsA"],
        "nB": p["natoms"] - p["natomsA"],
        "nliquid": p["nliquid"],
        "nglass": p["nglass"],
        "ncool": p["nliquid"] + p["nglass"],
    }


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
    ramp: Any = None  # glasscam.insitu.live.Ramp: P(glass) along the cooling, or None


_STATE: _State | None = None
_LOCK: OutputLock | None = None  # the store's lock, held by universe rank 0 from setup to finish


def _state(hook: str) -> _State:
    if _STATE is None:
        raise RuntimeError(
            f"{_where(hook)} called before glasscam.insitu.quench:setup (the deck must call "
            "setup once, before the sample loop)"
        )
    return _STATE


def _is_root(lmp) -> bool:
    return int(lmp.extract_setting("world_rank")) == 0


# ----------------------------------------------------------------------------------------------
# hooks


def setup(lmp, step: int, **kw: str) -> None:
    """Create/validate the store (universe rank 0) and share the queue of missing samples."""
    global _STATE
    live_kw = {k: kw[k] for k in LIVE_KEYWORDS if k in kw}
    kw = {k: v for k, v in kw.items() if k not in LIVE_KEYWORDS}
    deck.check_variables(_where("setup"))
    params = parse_parameters(kw)
    out = str(kw["out"])
    uni = parallel.universe()
    if _STATE is not None:  # a second setup in the same process: release the old queue
        _STATE.queue.free()
        if _STATE.ramp is not None:
            _STATE.ramp.close()
        _STATE = None

    def prepare() -> list[int]:
        global _LOCK
        if _LOCK is not None:  # left by an earlier run in this process that stopped early
            _LOCK.release()
        # one launch per store: a second is refused at once, naming this one
        _LOCK = OutputLock(out, what="samples store").acquire()
        return prepare_samples_store(
            out, params, log=lambda msg: print(f"glasscam quench: {msg}", flush=True))

    ramp = None
    if any(str(live_kw.get(k, "")).strip().lower() not in ("", "none")
           for k in ("cnn", "livestride")):
        from glasscam.insitu import live

        ramp = live.ramp_start(lmp, params, live_kw, out)  # before any store is touched
    todo = parallel.on_root(uni, prepare)
    for name, value in deck_values(params).items():
        deck.set_variable(lmp, name, value)
    queue = parallel.WorkQueue(uni, todo, f"{out}.claims")
    writer = SampleWriter(out) if _is_root(lmp) else None
    _STATE = _State(params=params, out=out, queue=queue, writer=writer, todo=len(todo),
                    ramp=ramp)
    if uni.Get_rank() == 0:
        done = params["nsamples"] - len(todo)
        print(
            f"glasscam quench: store {out}: {params['nsamples']} samples of model "
            f"{params['model']}, {done} already done, {len(todo)} to do",
            flush=True,
        )


def next(lmp, step: int, **kw: str) -> None:  # noqa: A001 - the deck's verb
    """Take the next sample index for this partition; set v_sample (-1: none), v_seed{A,B,V}."""
    _no_keywords(kw, "next")
    st = _state("next")
    index = st.queue.next(parallel.partition(lmp))
    st.snapshots.clear()
    st.cooling = {}
    if index is None:
        st.sample, st.seed = -1, -1
        deck.set_variable(lmp, "sample", -1)
        return
    st.sample = index
    st.seed = sample_seed(st.params["seed"], index)
    seed_a, seed_b, seed_v = lammps_seeds(st.seed)
    deck.set_variable(lmp, "seedA", seed_a)
    deck.set_variable(lmp, "seedB", seed_b)
    deck.set_variable(lmp, "seedV", seed_v)
    deck.set_variable(lmp, "sample", index)


def start(lmp, step: int, **kw: str) -> None:
    """After building the system: check it against the parameters, reset the cooling record."""
    _no_keywords(kw, "start")
    st = _state("start")
    if st.sample < 0:
        raise RuntimeError(f"{_where('start')}: no sample taken (call quench:next first)")
    p = st.params
    natoms = int(lmp.get_natoms())
    if natoms != p["natoms"]:
        raise RuntimeError(
            f"{_where('start')}: sample {st.sample} has {natoms} atoms, the store expects "
            f"natoms = {p['natoms']} (create_atoms could not place them all? lower its overlap)"
        )
    part = parallel.partition(lmp)
    frame = deck.gather(lmp, part)

    def count_a() -> int:
        return int(np.count_nonzero(frame.types == 0))

    n_a = parallel.on_root(part, count_a)
    if n_a != p["natomsA"]:
        raise RuntimeError(
            f"{_where('start')}: sample {st.sample} has {n_a} A atoms, expected "
            f"round(fracA * natoms) = {p['natomsA']}"
        )
    k = p["ncool"]
    st.cooling = {
        "target_temperature": np.full(k, np.nan),
        "temperature": np.full(k, np.nan),
        "potential_energy": np.full(k, np.nan),
    }
    st.snapshots.clear()


def record(lmp, step: int, **kw: str) -> None:
    """Energy-temperature record every ``nrecord`` steps of the cooling (fix insitu)."""
    _no_keywords(kw, "record")
    st = _state("record")
    p = st.params
    if not st.cooling:
        raise RuntimeError(f"{_where('record')}: no sample started (call quench:start)")
    ntot = p["nliquid"] + p["nglass"]
    if step % p["nrecord"] or not 0 <= step <= ntot:
        return  # e.g. the setup call of the second cooling run, between two records
    temperature = float(lmp.get_thermo("temp"))  # collective: every rank calls
    pe = float(lmp.get_thermo("pe"))  # per particle (thermo_modify norm yes)
    _put_record(st, step, temperature, pe)
    if st.ramp is not None:
        from glasscam.insitu import live

        live.ramp_row(lmp, st.ramp, st.sample, step, temperature)  # collective


def _put_record(st: _State, step: int, temperature: float, pe: float) -> None:
    """Row k of the cooling record: step k*nrecord, and the last row for the end step."""
    p = st.params
    ntot = p["nliquid"] + p["nglass"]
    k = p["ncool"] - 1 if step == ntot else step // p["nrecord"]
    st.cooling["target_temperature"][k] = p["Thigh"] + (p["TG"] - p["Thigh"]) * step / ntot
    st.cooling["temperature"][k] = temperature
    st.cooling["potential_energy"][k] = pe


def snapshot(lmp, step: int, **kw: str) -> None:
    """Take the liquid or glass snapshot of the current sample; write the sample after glass."""
    where = _where("snapshot")
    cls = deck.parse_keywords(kw, {"class": str}, where, required=("class",))["class"]
    st = _state("snapshot")
    if cls not in schema.CLASSES:
        raise deck.InputError(f"{where}: class must be one of {schema.CLASSES}, got {cls!r}")
    if st.sample < 0 or not st.cooling:
        raise RuntimeError(f"{where}: no sample in progress (class {cls})")
    frame = deck.gather(lmp, parallel.partition(lmp), computes=(PARTICLE_ENERGY,))  # collective
    temperature = float(lmp.get_thermo("temp"))
    pe = float(lmp.get_thermo("pe"))
    if frame is None:  # not the partition's rank 0
        return
    p = st.params
    if cls == schema.CLASSES[-1]:
        if step != p["nliquid"] + p["nglass"]:
            raise RuntimeError(
                f"{where}: the glass snapshot is taken at step {step}, expected the end of the "
                f"cooling (step {p['nliquid'] + p['nglass']})"
            )
        _put_record(st, step, temperature, pe)  # the cooling record ends at T_G
    positions = deck.wrap_float32(frame.positions, frame.box)
    image = gridize(
        positions, frame.types, frame.box, grid=p["grid"], channels=p["channels"],
        kernel=p["kernel"],
    )
    st.snapshots[cls] = Snapshot(
        positions, frame.types, frame.box, image, pe,
        frame.computes[PARTICLE_ENERGY].astype(np.float32), temperature,
    )
    if cls != schema.CLASSES[-1]:
        return
    assert st.writer is not None
    if st.ramp is not None:  # first: a sample marked done always has its ramp rows
        from glasscam.insitu import live

        live.ramp_write(st.ramp, st.sample)
    st.writer.write(st.sample, st.seed, st.snapshots, st.cooling)
    st.written += 1
    temps = ", ".join(f"T_{c} {s.temperature:.4g}" for c, s in st.snapshots.items())
    st.snapshots = {}
    elapsed = time.perf_counter() - st.t_start
    print(
        f"glasscam quench: sample {st.sample} written (seed {st.seed}; {temps}; "
        f"{st.written} by this partition in {elapsed:.1f} s)",
        flush=True,
    )


def finish(lmp, step: int, **kw: str) -> None:
    """End of the sample loop: free the queue (collective over the universe)."""
    global _STATE
    _no_keywords(kw, "finish")
    st = _state("finish")
    st.queue.free()
    if st.ramp is not None:
        st.ramp.close()
    uni = parallel.universe()
    total = uni.allreduce(st.written if _is_root(lmp) else 0)
    if uni.Get_rank() == 0 and _LOCK is not None:
        _LOCK.release()
    if uni.Get_rank() == 0:
        print(
            f"glasscam quench: done, {total} samples written in this run into {st.out}",
            flush=True,
        )
    _STATE = None
