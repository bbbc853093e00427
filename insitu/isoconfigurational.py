"""In-situ isoconfigurational dynamic propensity (paper §3.5, §4.3; DESIGN §4 propensity.zarr).

Hooks for the ``insitu`` command of glasscam's LAMMPS plugin, called as
``function(lmp, step, **kw)`` on every rank of a partition. The decks
``inputs/{kam,abm}/propensity.in`` call them in this order::

    insitu glasscam.insitu.isoconfigurational:setup key value ...   # all partitions at once
    (collective)
    label replica_loop
      clear
      insitu glasscam.insitu.isoconfigurational:next_replica        # dynamic queue -> ${replica},
      ${vseed}
      if "${replica} < 0" then "jump SELF replicas_done"
      (units, atom_style ...)
      insitu glasscam.insitu.isoconfigurational:load                # reference glass -> box +
      atoms (IDs 1..N)
      (potential, velocity create ${temp} ${vseed}, fix nvt, optional dump)
      insitu glasscam.insitu.isoconfigurational:run_replica         # log-spaced `run N upto`
      segments + CRD
      jump SELF replica_loop
    label replicas_done
    insitu glasscam.insitu.isoconfigurational:finish                # MPI reduction -> propensity,
    delta

Why segments instead of ``fix insitu N``: the output steps are log-spaced, and a fix called
every step to test "is this an output step?" costs a Python call per step (≈150 µs, tens of
percent of an N = 2000 step). ``run S_k upto pre no post no`` between outputs costs nothing per
step and only a minimal setup per output (K ≈ 30–100 per replica).

Replica ``s`` always starts from a fresh LAMMPS state (``clear``, atoms created from the
reference with IDs 1..N) with velocities ``velocity all create T seed_s dist gaussian mom yes
rot no loop geom`` and a fresh Nosé–Hoover thermostat, so its trajectory is a function of
(reference, T, seed_s, ranks per partition) only — not of which partition ran it, or when. This is
what makes a resumed run equal to an uninterrupted one.

Parallel layout: universe = MPI_COMM_WORLD (all partitions), partition = the LAMMPS world of
this instance. Universe rank 0 validates the input, creates (or reopens, on resume) the store and
loads the running sums of replicas already done; each partition's rank 0 gathers unwrapped
positions (sorted by atom ID), computes the CRD, writes ``crd[s, k, :]`` (its own chunk) and keeps
running sums over the replicas it ran; at the end the partition roots reduce their sums to
universe rank 0, which writes ``propensity`` and ``delta`` once. ``done[s]`` is set after the
replica's last ``crd`` chunk.

Memory per rank: O(N) for the gather (partition roots), plus the running sums K·N float64 on
partition roots (1.6 MB for K = 100, N = 2000); nothing is buffered per output.
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
    SchemaError,
    create_propensity_store,
    open_propensity_store,
    open_samples_store,
)

REQUIRED = ("samples", "sample", "nreplicas", "temp", "nsteps", "out")
WHERE = "propensity deck"

# deck variable -> type, and the defaults of the optional ones
KEYWORDS: dict[str, type] = {
    "model": str, "samples": str, "class": str, "sample": int, "nreplicas": int,
    "temp": float, "nsteps": int, "noutputs": int, "first": int, "dt": float, "seed": int,
    "tdamp": float, "cage": str, "cage_factor": float, "out": str, "dump": str,
}
DEFAULTS: dict[str, object] = {
    "class": "glass", "noutputs": 32, "first": 1, "dt": 0.005, "seed": 1, "tdamp": 0.5,
    "cage": "voronoi", "cage_factor": cage.DEFAULT_CUTOFF_FACTOR, "dump": "none",
}

PropensityInputError = InputError  # the hooks' one input-error class (glasscam.insitu.deck)


# ------------------------------------------------------------------------------------------
# parameters


def parse_parameters(kw: dict[str, str]) -> dict[str, Any]:
    """Deck strings -> typed parameters, with clear errors naming the deck variable."""
    p = deck.parse_keywords(kw, KEYWORDS, WHERE, required=("model", *REQUIRED),
                            defaults=DEFAULTS)
    p.pop("dump")
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
        ],
        WHERE,
    )
    try:
        cage.log_steps(p["nsteps"], p["noutputs"], p["first"])
    except ValueError as err:
        raise InputError(f"{WHERE}: noutputs/first/nsteps: {err}") from None
    return p


def cage_definition(p: dict[str, Any]) -> str:
    if p["cage"] == "voronoi":
        return "voronoi: i and its Voronoi neighbours at t=0 (periodic 2D Delaunay dual)"
    return f"cutoff: i and all j with r_ij < {p['cage_factor']:g} sigma_ij at t=0"


def read_reference(p: dict[str, Any]) -> dict[str, np.ndarray]:
    """The glass configuration ``sample`` of the samples store, validated (read-only)."""
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
    group = root[p["class"]]
    nsamples = group["done"].shape[0]
    s = p["sample"]
    if not 0 <= s < nsamples:
        raise PropensityInputError(
            f"{where}: sample index {s} out of range: '{p['class']}/done' has {nsamples} samples "
            f"(variable 'sample')"
        )
    if not bool(group["done"][s]):
        raise PropensityInputError(
            f"{where}: sample {s} is not done ('{p['class']}/done'[{s}] is False): "
            "the quench has not finished it"
        )
    pos = np.asarray(group["positions"][s], dtype=np.float64)
    types = np.asarray(group["types"][s], dtype=np.int64)
    box = np.asarray(group["box"][s], dtype=np.float64)
    if not (np.isfinite(pos).all() and np.isfinite(box).all() and (box > 0).all()):
        raise PropensityInputError(
            f"{where}: '{p['class']}/positions' or 'box' of sample {s} is not finite"
        )
    if types.min() < 0 or types.max() > 1:
        raise PropensityInputError(
            f"{where}: '{p['class']}/types' of sample {s} is not in {{0, 1}}"
        )
    # wrap in float64 into [0, L): what LAMMPS will hold at t = 0
    pos = wrap(pos, box)
    return {"positions": pos, "types": types, "box": box}


def store_parameters(p: dict[str, Any], natoms: int) -> dict[str, Any]:
    out = {k: v for k, v in p.items()}
    out["natoms"] = int(natoms)
    out["cage_definition"] = cage_definition(p)
    return out


# ------------------------------------------------------------------------------------------
# MPI helpers: communicators and the work queue come from glasscam.insitu.parallel


def _comms(lmp) -> tuple[Any, Any, Any]:
    """(universe, partition, roots): roots joins the rank 0 of every partition (else NULL)."""
    MPI = parallel.mpi()
    universe = parallel.universe()
    part = parallel.partition(lmp)
    if part is None:
        raise RuntimeError("LAMMPS has no MPI communicator (mpi4py missing?)")
    color = 0 if part.Get_rank() == 0 else MPI.UNDEFINED
    roots = universe.Split(color, universe.Get_rank())
    return universe, part, roots


# ------------------------------------------------------------------------------------------
# per-process run state


@dataclass
class _Run:
    p: dict[str, Any]
    universe: Any
    part: Any
    roots: Any
    queue: Any
    reference: dict[str, np.ndarray]
    members: cage.Cage  # cage(i) ∪ {i} of every particle, fixed at t = 0
    steps: np.ndarray
    todo: np.ndarray  # replica indices still to run (same on every rank)
    seeds: np.ndarray
    acc: cage.PropensityAccumulator | None = None  # on partition roots
    store: Any = None  # on partition roots
    crd_array: Any = None  # store["crd"], opened once (a group lookup re-reads metadata)
    replica: int = -1
    ran: list[int] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)  # end of setup on this rank

    @property
    def is_root(self) -> bool:
        return self.part.Get_rank() == 0


_RUN: _Run | None = None


def _state() -> _Run:
    if _RUN is None:
        raise RuntimeError("glasscam.insitu.isoconfigurational: 'setup' must be called first")
    return _RUN


def _log(msg: str) -> None:
    print(f"glasscam propensity: {msg}", flush=True)


def _init_store(p: dict[str, Any], ref: dict[str, np.ndarray], steps: np.ndarray):
    """Create or reopen the propensity store (universe rank 0). Returns (store, done mask)."""
    out = p["out"]
    natoms = ref["positions"].shape[0]
    params = store_parameters(p, natoms)
    seeds = np.array([cage.replica_seed(p["seed"], s) for s in range(p["nreplicas"])])
    if os.path.exists(out):
        try:
            store = open_propensity_store(out, mode="r+", expect=params)
        except SchemaError as err:
            raise PropensityInputError(
                f"{out}: exists and cannot be resumed (variable 'out'): {err}"
            ) from None
        steps_stored = np.asarray(store["steps"][:])
        if not np.array_equal(steps_stored, steps):
            raise PropensityInputError(f"{out}: 'steps' differ from this run's output steps")
    else:
        reference = {
            "positions": ref["positions"].astype(np.float32),
            "types": ref["types"].astype(np.int8),
            "box": ref["box"],
        }
        store = create_propensity_store(out, params, reference, steps, p["dt"])
        store.attrs.update(
            {
                "source": p["samples"],
                "class": p["class"],
                "sample": p["sample"],
                "temperature": p["temp"],
                "nreplicas": p["nreplicas"],
                "dt": p["dt"],
                "cage": cage_definition(p),
                "replica_seeds": seeds.tolist(),
                "velocity": "velocity all create T seed dist gaussian mom yes rot no loop geom",
                "thermostat": f"nvt (Nose-Hoover), Tdamp = {p['tdamp']:g}",
            }
        )
    done = np.asarray(store["done"][:], dtype=bool)
    return store, done, seeds


def setup(lmp, step: int, **kw: str) -> None:
    """Validate inputs, create/reopen the store, build the cage; collective over the universe."""
    global _RUN
    universe, part, roots = _comms(lmp)
    root_state: dict[str, Any] = {}

    def prepare() -> dict[str, Any]:
        p = parse_parameters(kw)
        ref = read_reference(p)
        steps = cage.log_steps(p["nsteps"], p["noutputs"], p["first"])
        store, done, seeds = _init_store(p, ref, steps)
        members = cage.build_cage(
            ref["positions"],
            ref["box"],
            p["cage"],
            ref["types"],
            systems.get(p["model"]).sigma_matrix(),
            p["cage_factor"],
        )
        todo = np.flatnonzero(~done)
        # running sums of replicas already done (resume): re-read their stored float32 crd
        acc = cage.PropensityAccumulator(len(steps), ref["positions"].shape[0])
        for s in np.flatnonzero(done):
            acc.add_replica(np.asarray(store["crd"][int(s)]))
        root_state.update(store=store, acc=acc)
        if len(todo) < p["nreplicas"]:
            _log(
                f"resuming {p['out']}: {p['nreplicas'] - len(todo)} replica(s) done, "
                f"{len(todo)} to run: {todo.tolist()}"
            )
        return {
            "p": p,
            "ref": ref,
            "steps": steps,
            "seeds": seeds,
            "todo": todo,
            "indptr": members.indptr,
            "indices": members.indices,
            "definition": members.definition,
        }

    # universe rank 0 validates everything before any MD step; an error stops every rank
    payload = parallel.on_root(universe, prepare)
    dump = str(kw.get("dump", "none"))
    deck.set_variable(lmp, "dumping", 0 if dump.lower() in ("", "none") else 1)
    p = payload["p"]
    members = cage.Cage(payload["indptr"], payload["indices"], payload["definition"])
    queue = parallel.WorkQueue(universe, payload["todo"].tolist(), f"{p['out']}.claims")
    run = _Run(
        p=p,
        universe=universe,
        part=part,
        roots=roots,
        queue=queue,
        reference=payload["ref"],
        members=members,
        steps=payload["steps"],
        todo=payload["todo"],
        seeds=payload["seeds"],
    )
    if run.is_root:
        run.acc = root_state.get("acc") or cage.PropensityAccumulator(len(run.steps), members.n)
        run.store = root_state.get("store") or open_propensity_store(p["out"], mode="r+")
        run.crd_array = run.store["crd"]
    _RUN = run


def next_replica(lmp, step: int, **kw: str) -> None:
    """Take the next replica from the dynamic queue; sets deck variables replica, vseed."""
    run = _state()
    item = run.queue.next(run.part)
    task = -1 if item is None else int(item)
    run.replica = task
    seed = int(run.seeds[task]) if task >= 0 else 0
    deck.set_variable(lmp, "replica", task)
    deck.set_variable(lmp, "vseed", seed)


def load(lmp, step: int, **kw: str) -> None:
    """Create the box and the atoms of the reference configuration (IDs 1..N, image 0)."""
    run = _state()
    ref = run.reference
    lx, ly = (float(v) for v in ref["box"])
    n = ref["positions"].shape[0]
    lmp.command(f"region glasscam_box block 0 {lx!r} 0 {ly!r} -0.5 0.5")
    lmp.command("create_box 2 glasscam_box")
    x = np.zeros((n, 3), dtype=np.float64)
    x[:, :2] = ref["positions"]
    created = lmp.create_atoms(
        n, list(range(1, n + 1)), (ref["types"] + 1).tolist(), x.ravel().tolist()
    )
    natoms = int(lmp.get_natoms())
    if natoms != n:
        raise RuntimeError(
            f"glasscam.insitu.isoconfigurational:load: created {natoms} atoms of {n} "
            f"(returned {created})"
        )


def run_replica(lmp, step: int, **kw: str) -> None:
    """Run the current replica through the log-spaced output steps, writing crd[s, k, :]."""
    deck.parse_keywords(kw, {}, "glasscam.insitu.isoconfigurational:run_replica")
    run = _state()
    s = run.replica
    if s < 0:
        raise RuntimeError("glasscam.insitu.isoconfigurational:run_replica: no current replica")
    t0 = time.perf_counter()
    frame0 = deck.gather(lmp, run.part, unwrapped=True)
    if run.is_root:
        ref0 = frame0.positions
        # t = 0 positions as held by LAMMPS must be the reference the cage was built from
        dr0 = np.abs(ref0 - run.reference["positions"]).max()
        if dr0 > 1e-9 * float(run.reference["box"].max()):
            raise RuntimeError(f"replica {s}: t=0 positions differ from the reference by {dr0}")
    crd_time = 0.0
    for k, target in enumerate(run.steps):
        lmp.command(f"run {int(target)} upto pre {'yes' if k == 0 else 'no'} post no")
        t1 = time.perf_counter()
        frame = deck.gather(lmp, run.part, unwrapped=True)
        if run.is_root:
            c = cage.crd_from_positions(frame.positions, ref0, run.members).astype(np.float32)
            run.crd_array[s, k, :] = c
            run.acc.add(k, c)
        crd_time += time.perf_counter() - t1
    if run.is_root:
        run.store["done"][s] = True
        wall = time.perf_counter() - t0
        run.ran.append(s)
        _log(
            f"replica {s} (seed {run.seeds[s]}) done: {int(run.steps[-1])} steps in {wall:.3f} s, "
            f"CRD+write {crd_time:.3f} s over {len(run.steps)} outputs"
        )


def finish(lmp, step: int, **kw: str) -> None:
    """Reduce the running sums over partitions; universe rank 0 writes propensity and delta."""
    from mpi4py import MPI

    deck.parse_keywords(kw, {}, "glasscam.insitu.isoconfigurational:finish")
    run = _state()
    urank0 = run.universe.Get_rank() == 0
    sums = counts = None
    if run.is_root:
        # in place on universe rank 0: no second K x N buffer
        if urank0:
            run.roots.Reduce(MPI.IN_PLACE, run.acc.sum, op=MPI.SUM, root=0)
            run.roots.Reduce(MPI.IN_PLACE, run.acc.count, op=MPI.SUM, root=0)
            sums, counts = run.acc.sum, run.acc.count
        else:
            run.roots.Reduce(run.acc.sum, None, op=MPI.SUM, root=0)
            run.roots.Reduce(run.acc.count, None, op=MPI.SUM, root=0)

    def write() -> None:
        done = np.asarray(run.store["done"][:], dtype=bool)
        if int(done.sum()) != run.p["nreplicas"] or not (counts == done.sum()).all():
            raise RuntimeError(
                f"{run.p['out']}: {int(done.sum())} of {run.p['nreplicas']} replicas done "
                f"('done' array), running sums hold {sorted(set(counts.tolist()))} replicas: "
                "not writing propensity"
            )
        prop, delta = cage.propensity_from_sums(sums, counts)
        run.store["propensity"][...] = prop
        run.store["delta"][...] = delta
        _log(f"wrote propensity and delta of {run.p['nreplicas']} replicas to {run.p['out']}")

    parallel.on_root(run.universe, write)
    ran = run.universe.allreduce(len(run.ran), op=MPI.SUM)
    wall = run.universe.allreduce(time.perf_counter() - run.t0, op=MPI.MAX)
    if urank0:
        _log(f"{ran} replica(s) of {int(run.steps[-1])} steps run now, in {wall:.1f} s wall")
    run.queue.free()
    if run.roots != MPI.COMM_NULL:
        run.roots.Free()
    sys.stdout.flush()


__all__ = [
    "PROPENSITY_SCHEMA",
    "PropensityInputError",
    "finish",
    "load",
    "next_replica",
    "parse_parameters",
    "read_reference",
    "run_replica",
    "setup",
]
