"""In-situ isoconfigurational dynamic propensity (paper §3.5, §4.3; DESIGN §4 propensity.zarr).

Hooks for the ``insitu`` command of glasscam's LAMMPS plugin, called as
``function(lmp, step, **kw)`` on every rank of a partition. The decks
``inputs/{kam,abm}/propensity.in`` call them in this order::

    insitu insitu.propensity:setup key value ...   # all partitions at once (collective)
    label replica_loop
      clear
      insitu insitu.propensity:next_replica        # dynamic queue -> ${replica}, ${vseed}
      if "${replica} < 0" then "jump SELF replicas_done"
      (units, atom_style ...)
      insitu insitu.propensity:load                # reference glass -> box + atoms (IDs 1..N)
      (potential, velocity create ${temp} ${vseed}, fix nvt, optional dump)
      insitu insitu.propensity:run_replica         # log-spaced `run N upto` segments + CRD
      jump SELF replica_loop
    label replicas_done
    insitu insitu.propensity:finish                # MPI reduction -> propensity, delta

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

from insitu import crd as K
from insitu import parallel
from insitu.schema import (
    PROPENSITY_SCHEMA,
    SAMPLES_SCHEMA,
    SchemaError,
    create_propensity_store,
    open_propensity_store,
    open_samples_store,
)

# σ_ij of the two models (DESIGN §3); used by the "cutoff" cage only.
SIGMA: dict[str, np.ndarray] = {
    "kam": np.array([[1.0, 0.8], [0.8, 0.88]]),
    "abm": np.array([[5.0 / 6.0, 1.0], [1.0, 7.0 / 6.0]]),
}

REQUIRED = ("samples", "sample", "nreplicas", "temp", "nsteps", "out")


class PropensityInputError(ValueError):
    """Bad deck variables or input store; raised on every rank before any MD step."""


# ------------------------------------------------------------------------------------------
# parameters


def parse_parameters(kw: dict[str, str]) -> dict[str, Any]:
    """Deck strings -> typed parameters, with clear errors naming the deck variable."""
    missing = [k for k in REQUIRED if str(kw.get(k, "none")).lower() in ("", "none")]
    if missing:
        raise PropensityInputError(
            "propensity deck: required variable(s) not set: "
            + ", ".join(missing)
            + " (pass -var NAME VALUE)"
        )

    def num(name: str, typ: type, default: Any = None) -> Any:
        raw = kw.get(name, default)
        try:
            return typ(float(raw)) if typ is int and "." not in str(raw) else typ(raw)
        except (TypeError, ValueError):
            raise PropensityInputError(
                f"propensity deck: variable '{name}' must be {typ.__name__}, got {raw!r}"
            ) from None

    p: dict[str, Any] = {
        "model": str(kw.get("model", "kam")).lower(),
        "samples": os.path.abspath(kw["samples"]),
        "class": str(kw.get("class", "glass")),
        "sample": num("sample", int),
        "nreplicas": num("nreplicas", int),
        "temp": num("temp", float),
        "nsteps": num("nsteps", int),
        "noutputs": num("noutputs", int, 32),
        "first": num("first", int, 1),
        "dt": num("dt", float, 0.005),
        "seed": num("seed", int, 1),
        "tdamp": num("tdamp", float, 0.5),
        "cage": str(kw.get("cage", "voronoi")),
        "cage_factor": num("cage_factor", float, K.DEFAULT_CUTOFF_FACTOR),
        "out": os.path.abspath(kw["out"]),
    }
    if p["model"] not in SIGMA:
        raise PropensityInputError(f"propensity deck: model must be kam or abm, got {p['model']!r}")
    if not np.isfinite(p["temp"]) or p["temp"] <= 0:
        raise PropensityInputError(f"propensity deck: variable 'temp' must be > 0, got {p['temp']}")
    if p["nreplicas"] < 1:
        raise PropensityInputError(
            f"propensity deck: variable 'nreplicas' must be >= 1, got {p['nreplicas']}"
        )
    if p["nsteps"] < 1:
        raise PropensityInputError(
            f"propensity deck: variable 'nsteps' must be >= 1, got {p['nsteps']}"
        )
    if not p["dt"] > 0:
        raise PropensityInputError(f"propensity deck: variable 'dt' must be > 0, got {p['dt']}")
    if p["class"] != "glass":
        raise PropensityInputError(
            f"propensity deck: class must be 'glass' (the isoconfigurational ensemble starts "
            f"from a glass configuration, paper §4.3), got {p['class']!r}"
        )
    if p["cage"] not in K.CAGE_KINDS:
        raise PropensityInputError(
            f"propensity deck: variable 'cage' must be one of {K.CAGE_KINDS}, got {p['cage']!r}"
        )
    if p["seed"] < 0:
        raise PropensityInputError(
            f"propensity deck: variable 'seed' must be >= 0, got {p['seed']}"
        )
    try:
        K.log_steps(p["nsteps"], p["noutputs"], p["first"])
    except ValueError as err:
        raise PropensityInputError(f"propensity deck: noutputs/first/nsteps: {err}") from None
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
    pos = np.mod(pos, box)
    pos = np.where(pos >= box, pos - box, pos)
    return {"positions": pos, "types": types, "box": box}


def store_parameters(p: dict[str, Any], natoms: int) -> dict[str, Any]:
    out = {k: v for k, v in p.items()}
    out["natoms"] = int(natoms)
    out["cage_definition"] = cage_definition(p)
    return out


# ------------------------------------------------------------------------------------------
# MPI helpers: communicators and the work queue come from insitu.parallel


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
    cage: K.Cage
    steps: np.ndarray
    todo: np.ndarray  # replica indices still to run (same on every rank)
    seeds: np.ndarray
    acc: K.PropensityAccumulator | None = None  # on partition roots
    store: Any = None  # on partition roots
    crd_array: Any = None  # store["crd"], opened once (a group lookup re-reads metadata)
    replica: int = -1
    ran: list[int] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=lambda: {"md": 0.0, "crd": 0.0, "steps": 0})
    t0: float = field(default_factory=time.perf_counter)  # end of setup on this rank
    baseline: bool = False  # a replica ran with "observe no" (benchmark): nothing to write

    @property
    def is_root(self) -> bool:
        return self.part.Get_rank() == 0


_RUN: _Run | None = None


def _state() -> _Run:
    if _RUN is None:
        raise RuntimeError("insitu.propensity: 'setup' must be called first")
    return _RUN


def _log(msg: str) -> None:
    print(f"glasscam propensity: {msg}", flush=True)


def _init_store(p: dict[str, Any], ref: dict[str, np.ndarray], steps: np.ndarray):
    """Create or reopen the propensity store (universe rank 0). Returns (store, done mask)."""
    out = p["out"]
    natoms = ref["positions"].shape[0]
    params = store_parameters(p, natoms)
    seeds = np.array([K.replica_seed(p["seed"], s) for s in range(p["nreplicas"])])
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
        steps = K.log_steps(p["nsteps"], p["noutputs"], p["first"])
        store, done, seeds = _init_store(p, ref, steps)
        cage = K.build_cage(
            ref["positions"],
            ref["box"],
            p["cage"],
            ref["types"],
            SIGMA[p["model"]],
            p["cage_factor"],
        )
        todo = np.flatnonzero(~done)
        # running sums of replicas already done (resume): re-read their stored float32 crd
        acc = K.PropensityAccumulator(len(steps), ref["positions"].shape[0])
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
            "indptr": cage.indptr,
            "indices": cage.indices,
            "definition": cage.definition,
        }

    # universe rank 0 validates everything before any MD step; an error stops every rank
    payload = parallel.on_root(universe, prepare)
    dump = str(kw.get("dump", "none"))
    lmp.command(f"variable dumping string {0 if dump.lower() in ('', 'none') else 1}")
    p = payload["p"]
    cage = K.Cage(payload["indptr"], payload["indices"], payload["definition"])
    queue = parallel.WorkQueue(universe, payload["todo"].tolist(), f"{p['out']}.claims")
    run = _Run(
        p=p,
        universe=universe,
        part=part,
        roots=roots,
        queue=queue,
        reference=payload["ref"],
        cage=cage,
        steps=payload["steps"],
        todo=payload["todo"],
        seeds=payload["seeds"],
    )
    if run.is_root:
        run.acc = root_state.get("acc") or K.PropensityAccumulator(len(run.steps), cage.n)
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
    lmp.command(f"variable replica string {task}")
    lmp.command(f"variable vseed string {seed}")


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
            f"insitu.propensity.load: created {natoms} atoms of {n} (returned {created})"
        )


def _image_decoder(lmp):
    size = int(lmp.extract_setting("imageint"))
    bits = 10 if size == 4 else 21
    return bits, (1 << bits) - 1, 1 << (bits - 1)


def gather_unwrapped(lmp, part) -> np.ndarray | None:
    """Unwrapped xy of all atoms, sorted by atom ID, on the partition's rank 0 (None elsewhere)."""
    from mpi4py import MPI

    nlocal = int(lmp.extract_global("nlocal"))
    ids = np.array(lmp.numpy.extract_atom("id", nelem=nlocal), dtype=np.int64, copy=True)
    x = np.asarray(lmp.numpy.extract_atom("x", nelem=nlocal, dim=3))[:, :2]
    img = np.asarray(lmp.numpy.extract_atom("image", nelem=nlocal)).astype(np.int64)
    bits, mask, imax = _image_decoder(lmp)
    boxlo, boxhi = lmp.extract_box()[:2]
    prd = np.array([boxhi[0] - boxlo[0], boxhi[1] - boxlo[1]])
    ix = (img & mask) - imax
    iy = ((img >> bits) & mask) - imax
    local = np.empty((nlocal, 3), dtype=np.float64)
    local[:, 0] = ids
    local[:, 1] = x[:, 0] + ix * prd[0]
    local[:, 2] = x[:, 1] + iy * prd[1]
    counts = part.gather(nlocal, root=0)
    if part.Get_rank() == 0:
        total = int(sum(counts))
        buf = np.empty((total, 3), dtype=np.float64)
        part.Gatherv(local, [buf, np.asarray(counts) * 3, None, MPI.DOUBLE], root=0)
        order = np.argsort(buf[:, 0], kind="stable")
        return buf[order, 1:]
    part.Gatherv(local, None, root=0)
    return None


def run_replica(lmp, step: int, **kw: str) -> None:
    """Run the current replica through the log-spaced output steps, writing crd[s, k, :].

    ``observe no`` (benchmark baseline): one plain ``run nsteps``, no CRD, nothing written.
    """
    run = _state()
    s = run.replica
    if s < 0:
        raise RuntimeError("insitu.propensity.run_replica: no current replica")
    t0 = time.perf_counter()
    if str(kw.get("observe", "yes")).lower() in ("no", "0", "false"):
        lmp.command(f"run {int(run.p['nsteps'])} post no")
        if run.is_root:
            wall = time.perf_counter() - t0
            _log(f"replica {s} (no observation): {run.p['nsteps']} steps in {wall:.3f} s")
            run.timing["md"] += wall
            run.timing["steps"] += run.p["nsteps"]
        run.baseline = True
        return
    ref0 = gather_unwrapped(lmp, run.part)
    if run.is_root:
        # t = 0 positions as held by LAMMPS must be the reference the cage was built from
        dr0 = np.abs(ref0 - run.reference["positions"]).max()
        if dr0 > 1e-9 * float(run.reference["box"].max()):
            raise RuntimeError(f"replica {s}: t=0 positions differ from the reference by {dr0}")
    crd_time = 0.0
    for k, target in enumerate(run.steps):
        lmp.command(f"run {int(target)} upto pre {'yes' if k == 0 else 'no'} post no")
        t1 = time.perf_counter()
        pos = gather_unwrapped(lmp, run.part)
        if run.is_root:
            c = K.crd_from_positions(pos, ref0, run.cage).astype(np.float32)
            run.crd_array[s, k, :] = c
            run.acc.add(k, c)
        crd_time += time.perf_counter() - t1
    if run.is_root:
        run.store["done"][s] = True
        wall = time.perf_counter() - t0
        run.timing["md"] += wall - crd_time
        run.timing["crd"] += crd_time
        run.timing["steps"] += int(run.steps[-1])
        run.ran.append(s)
        _log(
            f"replica {s} (seed {run.seeds[s]}) done: {int(run.steps[-1])} steps in {wall:.3f} s, "
            f"CRD+write {crd_time:.3f} s over {len(run.steps)} outputs"
        )


def finish(lmp, step: int, **kw: str) -> None:
    """Reduce the running sums over partitions; universe rank 0 writes propensity and delta."""
    from mpi4py import MPI

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
        prop, delta = K.propensity_from_sums(sums, counts)
        run.store["propensity"][...] = prop
        run.store["delta"][...] = delta
        _log(f"wrote propensity and delta of {run.p['nreplicas']} replicas to {run.p['out']}")

    if run.universe.allreduce(run.baseline, op=MPI.LOR):
        if run.universe.Get_rank() == 0:
            _log("observe no (benchmark baseline): no propensity written")
    else:
        parallel.on_root(run.universe, write)
    import resource

    wall = run.universe.reduce(time.perf_counter() - run.t0, op=MPI.MAX, root=0)
    rss = run.universe.reduce(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, op=MPI.MAX, root=0
    )
    tot = run.universe.reduce(
        np.array([run.timing["md"], run.timing["crd"], run.timing["steps"]])
        if run.is_root
        else np.zeros(3),
        op=MPI.SUM,
        root=0,
    )
    if run.universe.Get_rank() == 0:
        rate = tot[2] / wall if wall > 0 else 0.0
        _log(
            f"timing: {int(tot[2])} replica-steps in {wall:.3f} s wall ({rate:.1f} replica-steps/s)"
            f"; summed over partitions: MD {tot[0]:.3f} s, CRD+write {tot[1]:.3f} s"
            f"; peak RSS per rank {rss / 1024:.1f} MiB"
        )
    run.universe.Barrier()
    run.queue.free()
    if run.roots != MPI.COMM_NULL:
        run.roots.Free()
    sys.stdout.flush()


__all__ = [
    "PROPENSITY_SCHEMA",
    "PropensityInputError",
    "finish",
    "gather_unwrapped",
    "load",
    "next_replica",
    "parse_parameters",
    "read_reference",
    "run_replica",
    "setup",
]
