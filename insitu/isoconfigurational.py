"""In-situ isoconfigurational dynamic propensity (paper §3.5, §4.3; DESIGN §4 propensity.zarr).

One command runs the isoconfigurational ensembles of C glass configurations (``-var
configurations M`` = the first M done glass samples of the test split, or a list ``3,7,9`` of
sample indices; ``-var sample i`` = the list ``i``), Ns replicas each, into one
``glasscam.propensity/2`` store. Hooks for the ``insitu`` command of glasscam's LAMMPS plugin,
called as ``function(lmp, step, **kw)`` on every rank of a partition. The decks
``inputs/{kam,abm}/propensity.in`` call them in this order::

    insitu glasscam.insitu.isoconfigurational:setup key value ...   # all partitions at once
    label replica_loop
      clear
      insitu glasscam.insitu.isoconfigurational:next_replica        # dynamic queue -> ${replica},
                                                                    # ${configuration}, ${vseed}
      if "${replica} < 0" then "jump SELF replicas_done"
      (units, atom_style ...)
      insitu glasscam.insitu.isoconfigurational:load                # reference glass of the
                                                                    # configuration -> box + atoms
      (potential, velocity create ${temp} ${vseed}, fix nvt, optional dump)
      insitu glasscam.insitu.isoconfigurational:run_replica         # log-spaced `run N upto`
                                                                    # segments + CRD
      jump SELF replica_loop
    label replicas_done
    insitu glasscam.insitu.isoconfigurational:finish                # leftovers, summary

Why segments instead of ``fix insitu N``: the output steps are log-spaced, and a fix called
every step to test "is this an output step?" costs a Python call per step (≈150 µs, tens of
percent of an N = 2000 step). ``run S_k upto pre no post no`` between outputs costs nothing per
step and only a minimal setup per output (K ≈ 30–100 per replica).

Replica ``s`` of configuration ``c`` always starts from a fresh LAMMPS state (``clear``, atoms
created from the reference with IDs 1..N) with velocities ``velocity all create T seed dist
gaussian mom yes rot no loop geom``, seed = :func:`replica_seed` (base seed, the
configuration's *sample index*, s), and a fresh Nosé–Hoover thermostat, so its trajectory is a
function of (reference, T, seed, ranks per partition) only — not of which partition ran it, when,
or which other configurations the command runs. This is what makes a resumed run equal to an
uninterrupted one, and the store of configurations [0, 2] agree with the store of [2] on sample 2.

Work: the tasks (c, s) not yet done go into one dynamic queue (the file-claim
:class:`glasscam.insitu.parallel.WorkQueue`), pilots (s = 0) of every configuration first.

δ-target stop (``-var delta_stop X``; default none = every replica runs to ``nsteps``):
``steps`` stays the common log-spaced candidate grid up to ``nsteps`` (then the maximum), and
every replica of configuration c ends on the same output, ``stop[c]``:

* the pilot (s = 0) runs output by output until its own δ_0(k) = mean over particles of its
  |CRD| (the float64 mean of the stored float32 row) is ≥ X, or to the last output; that k is
  ``stop[c]``, written to the store before the pilot's ``done``;
* any other replica of c, after computing its output k, continues only if the pilot is known to
  continue past k: ``stop[c]`` is known and > k, or the pilot's stored row ``crd[c, 0, k]`` has
  δ_0(k) < X. Otherwise it waits, polling those two small chunks (2 ms, growing to 0.5 s).
  Non-pilots thus run concurrently with their pilot, a little behind it, and stop exactly at
  ``stop[c]`` without ever running past it. Pilots come first in the queue and never wait, so
  nothing deadlocks; Zarr's local store writes chunks atomically (write + rename), so a poll
  sees a row either complete or absent.
* ``reached[c]`` records whether the *ensemble* δ reached the target: delta[c, stop[c]] ≥ X.

Without a target, ``stop[c]`` = K − 1 is written at creation. Accumulation: each partition
root writes its replicas' rows ``crd[c, s, k, :]`` (its own chunks); once every replica of c is
done, the partition that completed it (elected by an ``O_EXCL`` claim file) re-reads the float32
rows of c in replica order and writes ``propensity[c]``, ``reached[c]`` and ``delta[c]``
(delta last; outputs beyond ``stop[c]`` stay NaN). The float64 sums in replica order are the
offline ``propensity_from_crd`` of the same rows, bit for bit, whatever order replicas finished
in. ``finish`` writes whatever a killed run left un-finalised (universe rank 0).

Memory per rank: O(N) for the gather, the references of the C configurations (C·N·3 float64),
the cages of the configurations this partition ran, K·N float64 while finalising one
configuration; nothing is buffered per output.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from glasscam.insitu import cage, deck, parallel, systems
from glasscam.insitu.deck import InputError
from glasscam.insitu.geometry import wrap
from glasscam.insitu.schema import (
    PROPENSITY_SCHEMA,
    SAMPLES_SCHEMA,
    SPLITS,
    SchemaError,
    create_propensity_store,
    open_propensity_store,
    open_samples_store,
)

REQUIRED = ("samples", "nreplicas", "temp", "nsteps", "out")
WHERE = "propensity deck"

# deck variable -> type, and the defaults of the optional ones
KEYWORDS: dict[str, type] = {
    "model": str, "samples": str, "class": str, "sample": int, "configurations": str,
    "nreplicas": int, "temp": float, "nsteps": int, "noutputs": int, "first": int,
    "dt": float, "seed": int, "tdamp": float, "cage": str, "cage_factor": float, "out": str,
    "dump": str, "delta_stop": float,
}
DEFAULTS: dict[str, object] = {
    "class": "glass", "noutputs": 32, "first": 1, "dt": 0.005, "seed": 1, "tdamp": 0.5,
    "cage": "voronoi", "cage_factor": cage.DEFAULT_CUTOFF_FACTOR, "dump": "none",
}
STOP_RULE = (
    "pilot replica 0 of each configuration runs until its own delta (mean |CRD| over particles) "
    ">= delta_stop or to the last output: that output is stop[c]; every replica of c ends at "
    "stop[c]; reached[c] = ensemble delta[c, stop[c]] >= delta_stop"
)

PropensityInputError = InputError  # the hooks' one input-error class (glasscam.insitu.deck)


# ------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class Selection:
    """The configurations a command asks for, before the samples store resolves them."""

    variable: str  # the deck variable that chose them: 'configurations' or 'sample'
    count: int | None = None  # the first `count` done glass samples of the test split
    indices: tuple[int, ...] | None = None  # explicit sample indices


def parse_selection(kw: dict[str, str]) -> Selection:
    """``configurations`` (M or a comma list) or ``sample`` (one index); not both."""
    absent = ("", "none")
    conf = str(kw.get("configurations", "")).strip()
    sample = str(kw.get("sample", "")).strip()
    has_conf, has_sample = conf.lower() not in absent, sample.lower() not in absent
    if has_conf and has_sample:
        raise InputError(
            f"{WHERE}: variables 'sample' ({sample}) and 'configurations' ({conf}) are both "
            "set; set one ('sample i' is 'configurations i,')"
        )
    if not (has_conf or has_sample):
        raise InputError(
            f"{WHERE}: required variable(s) not set: configurations (or sample) "
            "(pass -var configurations M or -var configurations i,j,k)"
        )
    if has_sample:
        i = deck.exact_int(sample, "sample", WHERE)
        if i < 0:
            raise InputError(f"{WHERE}: variable 'sample' must be >= 0, got {i}")
        return Selection("sample", indices=(i,))
    if "," not in conf:
        m = deck.exact_int(conf, "configurations", WHERE)
        if m < 1:
            raise InputError(
                f"{WHERE}: variable 'configurations' must be a count >= 1 or a comma-separated "
                f"list of sample indices, got {conf!r}"
            )
        return Selection("configurations", count=m)
    items = [x.strip() for x in conf.split(",")]
    if any(not x for x in items[:-1]) or not any(items):
        raise InputError(
            f"{WHERE}: variable 'configurations' = {conf!r}: an empty item in the list of "
            "sample indices"
        )
    idx = tuple(deck.exact_int(x, "configurations", WHERE) for x in items if x)
    bad = [i for i in idx if i < 0]
    dup = sorted({i for i in idx if idx.count(i) > 1})
    deck.check(
        [
            (not bad, f"variable 'configurations': sample indices must be >= 0, got {bad}"),
            (not dup, f"variable 'configurations': sample index(es) {dup} listed twice"),
        ],
        WHERE,
    )
    return Selection("configurations", indices=idx)


def parse_parameters(kw: dict[str, str]) -> dict[str, Any]:
    """Deck strings -> typed parameters, with clear errors naming the deck variable.

    ``configurations`` is a :class:`Selection` here; :func:`read_references` resolves it into
    the list of sample indices that the store records.
    """
    p = deck.parse_keywords(kw, KEYWORDS, WHERE, required=("model", *REQUIRED),
                            defaults=DEFAULTS)
    p.pop("dump")
    p.pop("sample", None)
    p["configurations"] = parse_selection(kw)
    p["delta_stop"] = p.get("delta_stop")
    p["model"] = systems.get(p["model"], "model", WHERE).name
    p["samples"] = os.path.abspath(p["samples"])
    p["out"] = os.path.abspath(p["out"])
    deck.check(
        [
            (p["temp"] > 0, f"variable 'temp' must be > 0, got {p['temp']}"),
            (p["nreplicas"] >= 1, f"variable 'nreplicas' must be >= 1, got {p['nreplicas']}"),
            (p["nsteps"] >= 1, f"variable 'nsteps' must be >= 1, got {p['nsteps']}"),
            (p["dt"] > 0, f"variable 'dt' must be > 0, got {p['dt']}"),
            (p["class"] == "glass",
             f"class must be 'glass' (the isoconfigurational ensemble starts from a glass "
             f"configuration, paper §4.3), got {p['class']!r}"),
            (p["cage"] in cage.CAGE_KINDS,
             f"variable 'cage' must be one of {cage.CAGE_KINDS}, got {p['cage']!r}"),
            (p["seed"] >= 0, f"variable 'seed' must be >= 0, got {p['seed']}"),
            (p["delta_stop"] is None or p["delta_stop"] > 0,
             f"variable 'delta_stop' must be > 0 (or none), got {p['delta_stop']}"),
        ],
        WHERE,
    )
    try:
        cage.log_steps(p["nsteps"], p["noutputs"], p["first"])
    except ValueError as err:
        raise InputError(f"{WHERE}: noutputs/first/nsteps: {err}") from None
    return p


def replica_seed(base: int, sample: int, replica: int) -> int:
    """The LAMMPS velocity seed (in [1, 2^31 − 1)) of replica ``replica`` of the configuration
    that is sample ``sample`` of the samples store: independent of the other configurations a
    command runs, so adding configurations later changes none of the existing ones."""
    ss = np.random.SeedSequence([int(base), int(sample), int(replica), 0xC4D, 2])
    return int(ss.generate_state(1, dtype=np.uint32)[0] % (2**31 - 2)) + 1


def cage_definition(p: dict[str, Any]) -> str:
    if p["cage"] == "voronoi":
        return "voronoi: i and its Voronoi neighbours at t=0 (periodic 2D Delaunay dual)"
    return f"cutoff: i and all j with r_ij < {p['cage_factor']:g} sigma_ij at t=0"


def _open_samples(p: dict[str, Any]):
    where = p["samples"]
    if not os.path.exists(where):
        raise PropensityInputError(f"{where}: samples store does not exist (variable 'samples')")
    try:
        root = open_samples_store(where, mode="r")
    except FileNotFoundError as err:
        raise PropensityInputError(str(err)) from None
    except SchemaError as err:
        raise PropensityInputError(f"not a {SAMPLES_SCHEMA} store: {err}") from None
    # the samples must come from the potential this deck runs (the model table's)
    systems.check_potential(
        dict(root.attrs["parameters"]), systems.get(p["model"]), where, "samples store"
    )
    return root


def resolve_selection(sel: Selection, root, cls: str, where: str) -> list[int]:
    """Sample indices of ``sel`` in the samples store ``root`` (validated: in range, done)."""
    done = np.asarray(root[cls]["done"][:], dtype=bool)
    nsamples = done.shape[0]
    if sel.count is not None:
        test = np.flatnonzero((np.asarray(root["split"][:]) == SPLITS["test"]) & done)
        if sel.count > test.size:
            raise PropensityInputError(
                f"{where}: variable 'configurations' = {sel.count} asks for the first "
                f"{sel.count} done {cls} samples of the test split, which has {test.size} "
                f"({test.tolist()[:20]}); use a smaller count or a list of sample indices"
            )
        return [int(i) for i in test[: sel.count]]
    out = []
    for s in sel.indices or ():
        if not 0 <= s < nsamples:
            raise PropensityInputError(
                f"{where}: sample index {s} out of range: '{cls}/done' has {nsamples} samples "
                f"(variable '{sel.variable}')"
            )
        if not done[s]:
            raise PropensityInputError(
                f"{where}: sample {s} is not done ('{cls}/done'[{s}] is False): the quench has "
                f"not finished it (variable '{sel.variable}')"
            )
        out.append(int(s))
    return out


def _read_one(group, s: int, cls: str, where: str) -> dict[str, np.ndarray]:
    pos = np.asarray(group["positions"][s], dtype=np.float64)
    types = np.asarray(group["types"][s], dtype=np.int64)
    box = np.asarray(group["box"][s], dtype=np.float64)
    if not (np.isfinite(pos).all() and np.isfinite(box).all() and (box > 0).all()):
        raise PropensityInputError(f"{where}: '{cls}/positions' or 'box' of sample {s} is not "
                                   "finite")
    if types.min() < 0 or types.max() > 1:
        raise PropensityInputError(f"{where}: '{cls}/types' of sample {s} is not in {{0, 1}}")
    # wrap in float64 into [0, L): what LAMMPS will hold at t = 0
    return {"positions": wrap(pos, box), "types": types, "box": box}


def read_references(p: dict[str, Any]) -> tuple[list[int], dict[str, np.ndarray]]:
    """(sample indices, references) of the configurations of ``p`` (read-only, validated).

    ``references``: ``positions`` f8 [C, N, 2] (wrapped into [0, L)), ``types`` i8 [C, N],
    ``box`` f8 [C, 2]. ``p["configurations"]`` is a :class:`Selection` or a list of indices.
    """
    where, cls = p["samples"], p["class"]
    root = _open_samples(p)
    sel = p["configurations"]
    if not isinstance(sel, Selection):
        sel = Selection("configurations", indices=tuple(int(i) for i in sel))
    samples = resolve_selection(sel, root, cls, where)
    refs = [_read_one(root[cls], s, cls, where) for s in samples]
    return samples, {k: np.stack([r[k] for r in refs]) for k in ("positions", "types", "box")}


def read_reference(p: dict[str, Any]) -> dict[str, np.ndarray]:
    """The reference of the first configuration of ``p`` (one configuration's arrays)."""
    _, refs = read_references(p)
    return {k: v[0] for k, v in refs.items()}


def store_parameters(p: dict[str, Any], natoms: int) -> dict[str, Any]:
    out = {k: v for k, v in p.items()}
    out["natoms"] = int(natoms)
    out["cage_definition"] = cage_definition(p)
    return out


# ------------------------------------------------------------------------------------------
# per-process run state


@dataclass
class _Run:
    p: dict[str, Any]
    universe: Any
    part: Any
    queue: Any
    samples: np.ndarray  # i8 [C] sample index of each configuration
    references: dict[str, np.ndarray]  # positions f8 [C, N, 2], types i8 [C, N], box f8 [C, 2]
    steps: np.ndarray
    seeds: np.ndarray  # [C, Ns]
    stop: np.ndarray  # [C] last output of each configuration, -1 while unknown (root's cache)
    cages: dict[int, cage.Cage] = field(default_factory=dict)  # partition root
    store: Any = None  # on partition roots
    arrays: dict[str, Any] = field(default_factory=dict)  # crd, stop, done, opened once
    task: tuple[int, int] = (-1, -1)  # (c, s)
    ran: list[tuple[int, int]] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)  # end of setup on this rank

    @property
    def is_root(self) -> bool:
        return self.part.Get_rank() == 0

    @property
    def nreplicas(self) -> int:
        return int(self.p["nreplicas"])

    def cage_of(self, c: int) -> cage.Cage:
        if c not in self.cages:
            self.cages[c] = _build_cage(self.p, {k: v[c] for k, v in self.references.items()})
        return self.cages[c]


_RUN: _Run | None = None


def _state() -> _Run:
    if _RUN is None:
        raise RuntimeError("glasscam.insitu.isoconfigurational: 'setup' must be called first")
    return _RUN


def _log(msg: str) -> None:
    print(f"glasscam propensity: {msg}", flush=True)


def _build_cage(p: dict[str, Any], ref: dict[str, np.ndarray]) -> cage.Cage:
    return cage.build_cage(ref["positions"], ref["box"], p["cage"], ref["types"],
                           systems.get(p["model"]).sigma_matrix(), p["cage_factor"])


def _init_store(p: dict[str, Any], ref: dict[str, np.ndarray], steps: np.ndarray,
                seeds: np.ndarray, requested: str):
    """Create or reopen the propensity store (universe rank 0). Returns the store."""
    out = p["out"]
    natoms = ref["positions"].shape[1]
    params = store_parameters(p, natoms)
    if os.path.exists(out):
        try:
            store = open_propensity_store(out, mode="r+", expect=params,
                                          schemas=(PROPENSITY_SCHEMA,))
        except SchemaError as err:
            raise PropensityInputError(
                f"{out}: exists and cannot be resumed (variable 'out'): {err}"
            ) from None
        if not np.array_equal(np.asarray(store["steps"][:]), steps):
            raise PropensityInputError(f"{out}: 'steps' differ from this run's output steps")
        return store
    reference = {
        "positions": ref["positions"].astype(np.float32),
        "types": ref["types"].astype(np.int8),
        "box": ref["box"],
    }
    store = create_propensity_store(out, params, reference, steps, p["dt"])
    if p["delta_stop"] is None:
        store["stop"][:] = np.full(len(p["configurations"]), len(steps) - 1, dtype=np.int64)
    store.attrs.update(
        {
            "source": p["samples"],
            "class": p["class"],
            "samples": list(p["configurations"]),
            "configurations_requested": requested,
            "temperature": p["temp"],
            "nreplicas": p["nreplicas"],
            "dt": p["dt"],
            "cage": cage_definition(p),
            "delta_stop": p["delta_stop"],
            "stop_rule": STOP_RULE if p["delta_stop"] is not None else "fixed: nsteps",
            "replica_seeds": seeds.tolist(),
            "velocity": "velocity all create T seed dist gaussian mom yes rot no loop geom",
            "thermostat": f"nvt (Nose-Hoover), Tdamp = {p['tdamp']:g}",
        }
    )
    return store


def _task_order(done: np.ndarray) -> list[int]:
    """Queue items c·Ns + s of the tasks not done: every pilot (s = 0) first, then by (c, s)."""
    nconf, ns = done.shape
    pilots = [c * ns for c in range(nconf) if not done[c, 0]]
    rest = [c * ns + s for c in range(nconf) for s in range(1, ns) if not done[c, s]]
    return pilots + rest


def setup(lmp, step: int, **kw: str) -> None:
    """Validate inputs, create/reopen the store, build the queue; collective over the universe."""
    global _RUN
    universe = parallel.universe()
    part = parallel.partition(lmp)
    if part is None:
        raise RuntimeError("LAMMPS has no MPI communicator (mpi4py missing?)")
    root_state: dict[str, Any] = {}

    def prepare() -> dict[str, Any]:
        p = parse_parameters(kw)
        sel = p["configurations"]
        requested = str(kw.get("configurations" if sel.variable == "configurations" else "sample"))
        samples, ref = read_references(p)
        p["configurations"] = samples
        steps = cage.log_steps(p["nsteps"], p["noutputs"], p["first"])
        seeds = np.array([[replica_seed(p["seed"], i, s) for s in range(p["nreplicas"])]
                          for i in samples], dtype=np.int64)
        store = _init_store(p, ref, steps, seeds, requested)
        done = np.asarray(store["done"][:], dtype=bool)
        stop = np.asarray(store["stop"][:], dtype=np.int64)
        todo = _task_order(done)
        root_state["store"] = store
        if done.any():
            _log(
                f"resuming {p['out']}: {int(done.sum())} of {done.size} replica(s) done, "
                f"{len(todo)} to run"
            )
        return {"p": p, "ref": ref, "steps": steps, "seeds": seeds, "todo": todo,
                "samples": np.asarray(samples, dtype=np.int64), "stop": stop}

    # universe rank 0 validates everything before any MD step; an error stops every rank
    payload = parallel.on_root(universe, prepare)
    dump = str(kw.get("dump", "none"))
    deck.set_variable(lmp, "dumping", 0 if dump.lower() in ("", "none") else 1)
    p = payload["p"]
    queue = parallel.WorkQueue(universe, payload["todo"], f"{p['out']}.claims")
    run = _Run(
        p=p,
        universe=universe,
        part=part,
        queue=queue,
        samples=payload["samples"],
        references=payload["ref"],
        steps=payload["steps"],
        seeds=payload["seeds"],
        stop=payload["stop"].copy(),
    )
    if run.is_root:
        run.store = root_state.get("store") or open_propensity_store(
            p["out"], mode="r+", schemas=(PROPENSITY_SCHEMA,))
        run.arrays = {k: run.store[k] for k in ("crd", "stop", "done")}
    _RUN = run


def next_replica(lmp, step: int, **kw: str) -> None:
    """Take the next task from the dynamic queue; sets the deck variables replica (-1: none
    left), configuration (its sample index) and vseed."""
    run = _state()
    item = run.queue.next(run.part)
    if item is None:
        run.task = (-1, -1)
        values = {"replica": -1, "configuration": -1, "vseed": 0}
    else:
        c, s = divmod(int(item), run.nreplicas)
        run.task = (c, s)
        values = {"replica": s, "configuration": int(run.samples[c]),
                  "vseed": int(run.seeds[c, s])}
    for name, value in values.items():
        deck.set_variable(lmp, name, value)


def load(lmp, step: int, **kw: str) -> None:
    """Create the box and the atoms of the current configuration (IDs 1..N, image 0)."""
    run = _state()
    c = run.task[0]
    if c < 0:
        raise RuntimeError("glasscam.insitu.isoconfigurational:load: no current replica")
    pos, types = run.references["positions"][c], run.references["types"][c]
    lx, ly = (float(v) for v in run.references["box"][c])
    n = pos.shape[0]
    lmp.command(f"region glasscam_box block 0 {lx!r} 0 {ly!r} -0.5 0.5")
    lmp.command("create_box 2 glasscam_box")
    x = np.zeros((n, 3), dtype=np.float64)
    x[:, :2] = pos
    created = lmp.create_atoms(n, list(range(1, n + 1)), (types + 1).tolist(), x.ravel().tolist())
    natoms = int(lmp.get_natoms())
    if natoms != n:
        raise RuntimeError(
            f"glasscam.insitu.isoconfigurational:load: created {natoms} atoms of {n} "
            f"(returned {created})"
        )


# ------------------------------------------------------------------------------------------
# the δ-target stop (partition root)


def row_delta(row: np.ndarray) -> float:
    """δ of one replica at one output: the float64 mean of its float32 |CRD| row."""
    return float(np.asarray(row, dtype=np.float32).astype(np.float64).mean())


def _known_stop(run: _Run, c: int) -> int:
    if run.stop[c] < 0:
        run.stop[c] = int(run.arrays["stop"][c])
    return int(run.stop[c])


def _write_stop(run: _Run, c: int, k: int) -> None:
    run.arrays["stop"][c] = k
    run.stop[c] = k


def _continue_after(run: _Run, c: int, s: int, k: int, row: np.ndarray) -> bool:
    """Whether replica s of configuration c goes on past output k (partition root)."""
    last = len(run.steps) - 1
    target = run.p["delta_stop"]
    if k >= last:
        if s == 0 and target is not None and run.stop[c] < 0:
            _write_stop(run, c, k)
        return False
    stop = _known_stop(run, c)
    if stop >= 0:
        return k < stop
    if s == 0:  # the pilot decides
        if row_delta(row) >= target:
            _write_stop(run, c, k)
            return False
        return True
    # another replica: follow the pilot, which publishes stop[c] or its row k
    wait, waited, t0 = 0.002, False, time.perf_counter()
    while True:
        stop = _known_stop(run, c)
        if stop >= 0:
            return k < stop
        pilot = np.asarray(run.arrays["crd"][c, 0, k])
        if np.isfinite(pilot).all():
            return row_delta(pilot) < target
        if not waited and time.perf_counter() - t0 > 5.0:
            _log(f"configuration {c} replica {s}: waiting for the pilot at output {k}")
            waited = True
        time.sleep(wait)
        wait = min(wait * 1.5, 0.5)


def run_replica(lmp, step: int, **kw: str) -> None:
    """Run the current replica through the output steps (to stop[c]), writing crd[c, s, k]."""
    deck.parse_keywords(kw, {}, "glasscam.insitu.isoconfigurational:run_replica")
    run = _state()
    c, s = run.task
    if s < 0:
        raise RuntimeError("glasscam.insitu.isoconfigurational:run_replica: no current replica")
    t0 = time.perf_counter()
    frame0 = deck.gather(lmp, run.part, unwrapped=True)
    ref0 = members = None
    if run.is_root:
        ref0 = frame0.positions
        # t = 0 positions as held by LAMMPS must be the reference the cage was built from
        reference = run.references["positions"][c]
        dr0 = np.abs(ref0 - reference).max()
        if dr0 > 1e-9 * float(run.references["box"][c].max()):
            raise RuntimeError(
                f"configuration {c} replica {s}: t=0 positions differ from the reference by {dr0}"
            )
        members = run.cage_of(c)
    crd_time, k = 0.0, -1
    for k, target in enumerate(run.steps):
        lmp.command(f"run {int(target)} upto pre {'yes' if k == 0 else 'no'} post no")
        t1 = time.perf_counter()
        frame = deck.gather(lmp, run.part, unwrapped=True)
        go_on = None
        if run.is_root:
            row = cage.crd_from_positions(frame.positions, ref0, members).astype(np.float32)
            run.arrays["crd"][c, s, k, :] = row
            crd_time += time.perf_counter() - t1
            go_on = _continue_after(run, c, s, k, row)
        if not run.part.bcast(go_on, root=0):
            break
    if run.is_root:
        run.arrays["done"][c, s] = True
        wall = time.perf_counter() - t0
        run.ran.append((c, s))
        _log(
            f"configuration {c} (sample {run.samples[c]}) replica {s} (seed {run.seeds[c, s]}) "
            f"done: {int(run.steps[k])} steps in {wall:.3f} s, CRD+write {crd_time:.3f} s over "
            f"{k + 1} outputs"
        )
        _maybe_finalize(run, c)


# ------------------------------------------------------------------------------------------
# propensity of a configuration, once all its replicas are done


def configuration_propensity(crd, c: int, nreplicas: int, stop: int):
    """(propensity f4 [stop+1, N], delta f8 [stop+1]) of configuration c from the stored rows
    ``crd[c, s, :stop+1]``: float64 sums of the float32 values in replica order (equal, bit for
    bit, to ``cage.propensity_from_crd`` of the same rows)."""
    sums = np.zeros((stop + 1, crd.shape[-1]), dtype=np.float64)
    for s in range(nreplicas):
        rows = np.asarray(crd[c, s, : stop + 1], dtype=np.float32)
        if not np.isfinite(rows).all():
            raise RuntimeError(f"configuration {c} replica {s}: 'crd' rows 0..{stop} incomplete")
        sums += rows.astype(np.float64)
    return cage.propensity_from_sums(sums, np.full(stop + 1, nreplicas, dtype=np.int64))


def _finalize(run: _Run, c: int) -> None:
    """Write propensity[c], reached[c], then delta[c] (this process owns those chunks)."""
    store = run.store
    k_all, n = len(run.steps), run.references["positions"].shape[1]
    stop = int(store["stop"][c])
    if stop < 0:
        raise RuntimeError(f"{run.p['out']}: configuration {c} is done but 'stop'[{c}] is unknown")
    prop, delta = configuration_propensity(run.arrays["crd"], c, run.nreplicas, stop)
    full_p = np.full((k_all, n), np.nan, dtype=np.float32)
    full_p[: stop + 1] = prop
    full_d = np.full(k_all, np.nan, dtype=np.float64)
    full_d[: stop + 1] = delta
    target = run.p["delta_stop"]
    reached = bool(target is not None and delta[stop] >= target)
    store["propensity"][c] = full_p
    store["reached"][c] = reached
    store["delta"][c] = full_d
    run.finalized.append(c)
    extra = "" if target is None else (
        f"; target delta {target:g} {'reached' if reached else 'NOT reached'} by the ensemble")
    _log(f"configuration {c} (sample {run.samples[c]}): propensity of {run.nreplicas} replicas "
         f"to output {stop} (step {int(run.steps[stop])}), delta = {delta[stop]:.4g}{extra}")


def _maybe_finalize(run: _Run, c: int) -> None:
    """Finalise c if all its replicas are done; one partition only (an O_EXCL claim)."""
    if not np.asarray(run.arrays["done"][c], dtype=bool).all():
        return
    folder = run.queue.folder
    try:
        fd = os.open(os.path.join(folder, f"final.{c}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    _finalize(run, c)


def finish(lmp, step: int, **kw: str) -> None:
    """Finalise what a killed run left; check every configuration is complete; summary."""
    from mpi4py import MPI

    deck.parse_keywords(kw, {}, "glasscam.insitu.isoconfigurational:finish")
    run = _state()
    run.universe.Barrier()  # every partition is past its last replica and its finalisations

    def leftovers() -> None:
        done = np.asarray(run.store["done"][:], dtype=bool)
        delta0 = np.asarray(run.store["delta"][:, 0])
        for c in np.flatnonzero(done.all(axis=1) & ~np.isfinite(delta0)):
            _finalize(run, int(c))
        delta0 = np.asarray(run.store["delta"][:, 0])
        missing = np.flatnonzero(~(done.all(axis=1) & np.isfinite(delta0)))
        if missing.size:
            raise RuntimeError(
                f"{run.p['out']}: configuration(s) {missing.tolist()[:20]} incomplete: "
                f"{int(done.sum())} of {done.size} replicas done ('done' array)"
            )
        stop = np.asarray(run.store["stop"][:])
        reached = np.asarray(run.store["reached"][:])
        text = f"wrote propensity and delta of {done.shape[0]} configuration(s) x " \
               f"{run.nreplicas} replicas to {run.p['out']}"
        if run.p["delta_stop"] is not None:
            text += (f"; stop outputs {stop.tolist()}, target delta {run.p['delta_stop']:g} "
                     f"reached by {int(reached.sum())} of {len(reached)}")
        _log(text)

    parallel.on_root(run.universe, leftovers)
    ran = run.universe.allreduce(len(run.ran), op=MPI.SUM)
    wall = run.universe.allreduce(time.perf_counter() - run.t0, op=MPI.MAX)
    if run.universe.Get_rank() == 0:
        _log(f"{ran} replica(s) run now, in {wall:.1f} s wall")
    run.queue.free()
    sys.stdout.flush()


__all__ = [
    "PROPENSITY_SCHEMA",
    "PropensityInputError",
    "Selection",
    "configuration_propensity",
    "finish",
    "load",
    "next_replica",
    "parse_parameters",
    "read_reference",
    "read_references",
    "replica_seed",
    "run_replica",
    "setup",
]
