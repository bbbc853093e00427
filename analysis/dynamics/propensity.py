"""Offline dynamic propensity: read the propensity stores (one :class:`Configuration` per
isoconfigurational ensemble: :func:`open_configurations`), recompute CRD / Δ / δ from dumped
unwrapped trajectories, split a large isoconfigurational ensemble into sub-ensembles (paper
Table 4), pick the output times at which δ reaches given values (paper Figs. 1–5: δ ≈ 0.3, 1, 3).

Stores: ``glasscam.propensity/2`` (C configurations, outputs 0..stop[c] each) and the older
``glasscam.propensity/1`` (one configuration) are both read; :func:`open_configurations` gives
the same :class:`Configuration` for either.

The in-situ path (``glasscam.insitu.isoconfigurational``) and this module share the kernels of
``glasscam.insitu.cage``,
but this one reads positions from LAMMPS text dumps (``dump custom ... id type xu yu``), so it
is an independent oracle for the gather/unwrap/accumulate path that runs inside LAMMPS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.analysis.paper import DELTA_TARGETS
from glasscam.insitu.cage import (
    Cage,
    build_cage,
    crd_from_positions,
    propensity_from_crd,
    propensity_from_sums,
)
from glasscam.insitu.schema import PROPENSITY_SCHEMA_V1, open_propensity_store

# ------------------------------------------------------------------------------------------
# stores -> configurations


@dataclass
class Configuration:
    """The isoconfigurational ensemble of one glass configuration at one temperature.

    Arrays cover the outputs 0..stop of the configuration (all K outputs of a fixed-step run;
    up to the δ-target stop otherwise). ``crd(k)`` reads the per-replica |CRD| of the done
    replicas at output k from the store (or from ``crd_values`` when given: an in-memory
    configuration, e.g. synthetic data in tests).
    """

    store: str  # path of the propensity store
    index: int  # c in the store
    sample: int  # sample index in the samples store
    temperature: float
    positions: np.ndarray  # f8 [N, 2] reference (t = 0) positions
    types: np.ndarray  # i8 [N]
    box: np.ndarray  # f8 [2]
    steps: np.ndarray  # i8 [K_c]  outputs 0..stop[c] only
    times: np.ndarray  # f8 [K_c]
    delta: np.ndarray  # f8 [K_c]  ensemble δ
    propensity: np.ndarray  # f8 [K_c, N]
    replicas: np.ndarray  # i8 indices of done replicas
    delta_stop: float | None  # the target of a δ-stop run, None for fixed steps
    reached: bool = False  # δ-stop runs: the ensemble δ reached delta_stop at the last output
    schema: str = ""  # the store's schema
    crd_values: np.ndarray | None = field(default=None, repr=False)  # f4/f8 [R, K_c, N]
    _crd_array: Any = field(default=None, init=False, repr=False, compare=False)
    _crd_cache: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False,
                                              compare=False)

    @property
    def stop(self) -> int:
        """Index of the last output (K_c − 1)."""
        return len(self.steps) - 1

    def crd(self, k: int) -> np.ndarray:
        """f8 [len(replicas), N]: per-replica |CRD| at output k (0 <= k < K_c)."""
        k = int(k)
        if not 0 <= k < len(self.steps):
            raise IndexError(f"{self.store}: configuration {self.index} has outputs "
                             f"0..{len(self.steps) - 1}, asked for {k}")
        if self.crd_values is not None:
            return np.asarray(self.crd_values[:, k], dtype=np.float64)
        if k in self._crd_cache:
            return self._crd_cache[k].copy()
        if self._crd_array is None:
            self._crd_array = open_propensity_store(self.store)["crd"]
        crd = self._crd_array
        lead = () if self.schema == PROPENSITY_SCHEMA_V1 else (self.index,)
        reps = np.asarray(self.replicas, dtype=np.int64)
        if np.array_equal(reps, np.arange(crd.shape[len(lead)])):
            rows = crd[(*lead, slice(None), k)]  # one call: zarr reads the chunks concurrently
        else:
            rows = crd.get_orthogonal_selection((*lead, reps, k, slice(None)))
        rows = np.asarray(rows, dtype=np.float64)
        if len(self._crd_cache) >= 8:  # the last few outputs (each Ns·N float64)
            self._crd_cache.pop(next(iter(self._crd_cache)))
        self._crd_cache[k] = rows
        return rows.copy()

    def subset(self, replicas: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(propensity f8 [K_c, N], δ f8 [K_c]) of a subset of the replicas (positions in
        ``replicas``' own numbering, i.e. replica indices of the store) — e.g. disjoint halves
        for a split-half noise ceiling, or Table 4's sub-ensembles."""
        want = [int(s) for s in replicas]
        bad = sorted(set(want) - set(self.replicas.tolist()))
        if bad:
            raise ValueError(f"{self.store}: configuration {self.index}: replicas {bad[:10]} "
                             "are not done")
        pos = {int(s): i for i, s in enumerate(self.replicas)}
        sums = np.zeros((len(self.steps), len(self.types)), dtype=np.float64)
        for k in range(len(self.steps)):
            rows = self.crd(k)[[pos[s] for s in want]].astype(np.float32)
            sums[k] = rows.astype(np.float64).sum(axis=0)
        prop, delta = propensity_from_sums(sums, np.full(len(self.steps), len(want)))
        return prop.astype(np.float64), delta


def _temperature(attrs: dict[str, Any]) -> float:
    return float(attrs.get("temperature", attrs.get("parameters", {}).get("temp", float("nan"))))


def open_configurations(path: str | os.PathLike, incomplete: bool = False
                        ) -> list[Configuration]:
    """The configurations of a propensity store, in store order.

    ``glasscam.propensity/2``: one per configuration whose replicas are all done and whose
    propensity is written; ``/1``: the one configuration of the store. With
    ``incomplete=True`` also configurations of a running (or killed) run that have at least one
    done replica and a known stop: their Δ and δ are computed here from the done replicas.
    """
    where = os.fspath(path)
    root = open_propensity_store(where)
    attrs = dict(root.attrs)
    schema = attrs["schema"]
    params = dict(attrs["parameters"])
    temp = _temperature(attrs)
    steps_all = np.asarray(root["steps"][:], dtype=np.int64)
    times_all = np.asarray(root["times"][:], dtype=np.float64)
    if schema == PROPENSITY_SCHEMA_V1:
        done = np.asarray(root["done"][:], dtype=bool)[None]
        delta = np.asarray(root["delta"][:], dtype=np.float64)[None]
        stops = np.array([len(steps_all) - 1])
        samples = [int(attrs.get("sample", params.get("sample", -1)))]
        reached = np.zeros(1, dtype=bool)
        delta_stop = None

        def ref(name: str, c: int) -> np.ndarray:
            return np.asarray(root[f"reference/{name}"][:])

        def prop(c: int, kc: int) -> np.ndarray:
            return np.asarray(root["propensity"][:kc], dtype=np.float64)
    else:
        done = np.asarray(root["done"][:], dtype=bool)
        delta = np.asarray(root["delta"][:], dtype=np.float64)
        stops = np.asarray(root["stop"][:], dtype=np.int64)
        samples = [int(i) for i in np.asarray(root["samples"][:])]
        reached = np.asarray(root["reached"][:], dtype=bool)
        delta_stop = params.get("delta_stop")
        delta_stop = None if delta_stop is None else float(delta_stop)

        def ref(name: str, c: int) -> np.ndarray:
            return np.asarray(root[f"reference/{name}"][c])

        def prop(c: int, kc: int) -> np.ndarray:
            return np.asarray(root["propensity"][c, :kc], dtype=np.float64)

    out = []
    for c, sample in enumerate(samples):
        replicas = np.flatnonzero(done[c]).astype(np.int64)
        complete = bool(done[c].all()) and np.isfinite(delta[c, 0])
        if not complete and not (incomplete and replicas.size and stops[c] >= 0):
            continue
        kc = int(stops[c]) + 1
        conf = Configuration(
            store=where, index=c, sample=sample, temperature=temp,
            positions=ref("positions", c).astype(np.float64),
            types=ref("types", c).astype(np.int64),
            box=ref("box", c).astype(np.float64),
            steps=steps_all[:kc].copy(), times=times_all[:kc].copy(),
            delta=delta[c, :kc].copy(),
            propensity=prop(c, kc) if complete else np.empty((kc, 0)),
            replicas=replicas, delta_stop=delta_stop, reached=bool(reached[c]), schema=schema,
        )
        if not complete:
            conf.propensity, conf.delta = conf.subset(replicas)
            conf.reached = bool(delta_stop is not None and conf.delta[-1] >= delta_stop)
        out.append(conf)
    return out

# ------------------------------------------------------------------------------------------
# LAMMPS dumps


def read_dump(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Frames of a LAMMPS ``dump custom`` text file: (step, ids [N], columns dict as [N, C]).

    Yields ``(step, ids, table)`` with ``table`` a float64 array of the remaining columns in dump
    order; column names are checked by :func:`read_unwrapped`.
    """
    with open(path) as fh:
        while True:
            line = fh.readline()
            if not line:
                return
            if not line.startswith("ITEM: TIMESTEP"):
                raise ValueError(f"{path}: expected 'ITEM: TIMESTEP', got {line.strip()!r}")
            step = int(fh.readline())
            fh.readline()  # ITEM: NUMBER OF ATOMS
            n = int(fh.readline())
            header = fh.readline()  # ITEM: BOX BOUNDS
            ndim_lines = 3 if "zz" in header or len(header.split()) >= 6 else 2
            for _ in range(ndim_lines):
                fh.readline()
            cols = fh.readline().split()[2:]
            data = np.loadtxt(fh, max_rows=n, ndmin=2)
            yield step, cols, data


def read_unwrapped(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """``{step: unwrapped xy [N, 2] sorted by atom ID}`` from a dump with ``id xu yu`` columns."""
    frames: dict[int, np.ndarray] = {}
    for step, cols, data in read_dump(path):
        try:
            ic, xc, yc = cols.index("id"), cols.index("xu"), cols.index("yu")
        except ValueError:
            raise ValueError(f"{path}: dump needs columns id xu yu, has {cols}") from None
        order = np.argsort(data[:, ic], kind="stable")
        frames[step] = data[order][:, [xc, yc]]
    return frames


def replica_crd_from_dump(path: str | os.PathLike, steps: Sequence[int], cage: Cage) -> np.ndarray:
    """|CRD| [K, N] of one replica from its dumped trajectory at the given output ``steps``.

    The reference is the dump's step-0 frame (the replica's t = 0 configuration).
    """
    frames = read_unwrapped(path)
    if 0 not in frames:
        raise ValueError(f"{path}: no frame at step 0 (the reference configuration)")
    missing = [int(s) for s in steps if int(s) not in frames]
    if missing:
        raise ValueError(f"{path}: no frames at output steps {missing[:10]}")
    ref = frames[0]
    return np.stack([crd_from_positions(frames[int(s)], ref, cage) for s in steps]).astype(
        np.float32
    )


def dump_path(prefix: str | os.PathLike, sample: int, replica: int) -> Path:
    """The dump of replica ``replica`` of the configuration that is sample ``sample``, as the
    propensity decks write it with ``-var dump PREFIX``: ``PREFIX.SAMPLE.REPLICA.lammpstrj``."""
    return Path(f"{os.fspath(prefix)}.{int(sample)}.{int(replica)}.lammpstrj")


def recompute_from_dumps(
    dumps: Sequence[str | os.PathLike],
    steps: Sequence[int],
    reference: np.ndarray,
    box: Sequence[float],
    cage_kind: str = "voronoi",
    types: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    factor: float = 1.4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crd f4 [Ns, K, N], propensity f4 [K, N], delta f8 [K]) from one dump per replica."""
    cage = build_cage(reference, box, cage_kind, types=types, sigma=sigma, factor=factor)
    crd_skn = np.stack([replica_crd_from_dump(p, steps, cage) for p in dumps])
    prop, delta = propensity_from_crd(crd_skn)
    return crd_skn, prop, delta


# ------------------------------------------------------------------------------------------
# ensembles (paper §4.2, Table 4)


def ensemble_splits(
    nreplicas: int, size: int = 30, count: int = 3, seed: int | None = None
) -> dict[str, np.ndarray]:
    """Disjoint replica subsets for Table 4: ``{"e30A": idx, "e30B": ..., "e100": all}``.

    Without ``seed`` the subsets are consecutive blocks (replicas 0–29, 30–59, 60–89); with a
    seed, a random permutation first. The last key holds every replica (``e{nreplicas}``).
    """
    if size * count > nreplicas:
        raise ValueError(
            f"{count} disjoint subsets of {size} need {size * count} replicas, have {nreplicas}"
        )
    order = np.arange(nreplicas)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(nreplicas)
    out = {
        f"e{size}{chr(ord('A') + c)}": np.sort(order[c * size : (c + 1) * size])
        for c in range(count)
    }
    out[f"e{nreplicas}"] = np.arange(nreplicas)
    return out


def ensemble_propensity(
    store, replicas: Sequence[int], configuration: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(propensity f4 [K, N], delta f8 [K]) of a subset of a propensity store's replicas.

    ``/1`` stores: all K outputs; ``/2`` stores: configuration ``configuration`` (c), outputs
    0..stop[c] (K = stop[c] + 1). Reads ``crd`` one replica at a time (memory K·N) and refuses
    replicas not marked done.
    """
    replicas = np.asarray(replicas, dtype=np.int64)
    v1 = store.attrs.get("schema") == PROPENSITY_SCHEMA_V1
    done = np.asarray(store["done"][:] if v1 else store["done"][int(configuration)])
    if not done[replicas].all():
        bad = replicas[~done[replicas]].tolist()
        raise ValueError(f"propensity store: replicas {bad[:10]} are not done ('done' array)")
    crd = store["crd"]
    k = crd.shape[-2] if v1 else int(store["stop"][int(configuration)]) + 1
    sums = np.zeros((k, crd.shape[-1]), dtype=np.float64)
    for s in replicas:
        rows = crd[int(s)] if v1 else crd[int(configuration), int(s), :k]
        sums += np.asarray(rows, dtype=np.float32)
    return propensity_from_sums(sums, np.full(k, len(replicas)))


def ensembles(
    path: str | os.PathLike, size: int = 30, count: int = 3, seed: int | None = None,
    configuration: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Propensity and δ of each sub-ensemble of :func:`ensemble_splits`, from a store path
    (configuration ``configuration`` of a ``/2`` store)."""
    store = open_propensity_store(path)
    ns = store["done"].shape[-1]
    return {
        name: ensemble_propensity(store, idx, configuration)
        for name, idx in ensemble_splits(ns, size, count, seed).items()
    }


# ------------------------------------------------------------------------------------------
# time selection


def output_at_delta(delta: np.ndarray, target: float) -> int:
    """Index k of the output whose δ is closest to ``target`` in log(δ) (NaNs ignored)."""
    delta = np.asarray(delta, dtype=np.float64)
    ok = np.isfinite(delta) & (delta > 0)
    if not ok.any():
        raise ValueError("no output with a finite positive delta")
    dist = np.where(ok, np.abs(np.log(np.where(ok, delta, 1.0)) - np.log(target)), np.inf)
    return int(np.argmin(dist))


def outputs_at_deltas(
    delta: np.ndarray, targets: Sequence[float] = DELTA_TARGETS
) -> dict[float, int]:
    """``{target: k}`` for each target δ (paper: 0.3, 1, 3 ≈ τα, 3τα, 10τα)."""
    return {float(t): output_at_delta(delta, t) for t in targets}


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a propensity store except ``crd``, as stored (deprecated: use
    :func:`open_configurations`).

    ``/1``: steps, times, propensity [K, N], delta [K], done [Ns]. ``/2``: the same names with a
    leading configuration axis (propensity [C, K, N], delta [C, K], done [C, Ns]; NaN beyond
    each stop), plus samples [C], stop [C] and reached [C].
    """
    store = open_propensity_store(Path(path))
    names = ["steps", "times", "propensity", "delta", "done"]
    if store.attrs["schema"] != PROPENSITY_SCHEMA_V1:
        names += ["samples", "stop", "reached"]
    return {k: np.asarray(store[k][:]) for k in names}
