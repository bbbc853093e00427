"""The Zarr schemas of glasscam, in one place (DESIGN §4).

Every store glasscam writes is a Zarr v3 group whose root attributes carry

* ``schema``: ``"glasscam.samples/3"``, ``"glasscam.propensity/3"``, ... (name/version);
* ``parameters``: the full parameter set that produced it (a JSON object);
* ``versions``: package versions of the writer.

Chunking rule: every per-sample (per-replica, per-output-time) array is chunked with exactly one
sample along its leading axis, so that two processes writing different samples never touch the
same chunk (no sharding). Arrays written by one process only (``split``, ``steps``,
``samples``) are whole-array chunks; the propensity store's ``propensity``/``delta`` are one
chunk per configuration (written once, by the process that completes it).

``samples.zarr`` (``glasscam.samples/3``; ``/2`` lacks the checksums, ``/1`` also
``particle_energy``; both are read only)::

    split                     i1 [S]          0 train, 1 val, 2 test (deterministic from seed)
    liquid/, glass/           one group per class, each with
        positions             f4 [S, N, 2]    wrapped into [0, L)
        types                 i1 [S, N]       0 = A, 1 = B
        box                   f8 [S, 2]       (Lx, Ly)
        image                 f4 [S, C, M, M] gridized frame (glasscam.insitu.gridize), written in
        situ
        potential_energy      f8 [S]          per particle
        particle_energy       f4 [S, N]       potential energy of each particle (LAMMPS
                                              compute pe/atom: half of each pair energy)
        temperature           f8 [S]          instantaneous kinetic temperature
        seed                  i8 [S]          the seed the sample was generated from
        checksum              i8 [S, A]       CRC-32 of each array's sample as written (the
                                              class's arrays; glass/ also cooling/), -1: none
        done                  b1 [S]          set last: a sample exists only when done
    cooling/                  energy-temperature record of each sample's quench (paper Fig. S6)
        target_temperature    f8 [S, K]
        temperature           f8 [S, K]
        potential_energy      f8 [S, K]       per particle

``propensity.zarr`` (``glasscam.propensity/3``; ``/2`` lacks finished and the checksums): the
isoconfigurational ensembles of C glass configurations at one temperature, Ns replicas each
(``glasscam.insitu.isoconfigurational``)::

    samples                   i8 [C]          index of configuration c in the samples store
    reference/positions       f4 [C, N, 2]    the glass configuration the replicas of c start from
    reference/types           i1 [C, N]
    reference/box             f8 [C, 2]
    steps                     i8 [K]          candidate output steps (log spaced, up to nsteps)
    times                     f8 [K]          steps * dt
    crd                       f4 [C, Ns, K, N] |cage-relative displacement| per replica; one
                                              chunk per (c, s, k) row; NaN beyond stop[c]
    propensity                f4 [C, K, N]    replica mean of crd (outputs 0..stop[c]; NaN beyond)
    delta                     f8 [C, K]       ensemble delta: mean of crd over replicas, particles
    stop                      i8 [C]          index of the last output of c (-1: not yet known)
    reached                   b1 [C]          delta[c, stop[c]] >= delta_stop (False without one)
    checksum                  i8 [C, Ns, A]   CRC-32 of crd[c, s] when replica s completed
    done                      b1 [C, Ns]      replica s of c complete (set after its last row)
    summary_checksum          i8 [C, B]       CRC-32 of propensity, delta, stop, reached of c
    finished                  b1 [C]          c finalised (set after its summary_checksum)

Units of completion (:class:`Unit`; :mod:`glasscam.insitu.integrity` writes and checks them):
whatever one writer writes for one index of a ``done`` array is followed by its checksums,
then ``done``. ``glasscam verify`` recomputes the checksums of every done unit; a resume does
the same for the store it continues, and redoes the damaged units.

Every array carries Zarr v3 ``dimension_names`` (the letters above: C, Ns, K, N, D). Root
attrs: ``schema``, ``parameters`` (compared on resume), ``versions``, ``source``, ``class``,
``samples``, ``temperature``, ``nreplicas``, ``dt``, ``cage``, ``delta_stop`` (None: fixed
steps), ``stop_rule``, ``replica_seeds`` [C][Ns], ``velocity``, ``thermostat``. propensity,
delta and reached of c are written once, after its last replica (``delta[c, 0]`` finite).

``glasscam.propensity/1`` (one configuration; read by :func:`open_propensity_store` and
``glasscam.analysis.dynamics.propensity``, never resumed)::

    reference/{positions f4 [N, 2], types i1 [N], box f8 [2]}, steps i8 [K], times f8 [K],
    crd f4 [Ns, K, N], propensity f4 [K, N], delta f8 [K], done b1 [Ns]; attr ``sample``
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLES_SCHEMA = "glasscam.samples/3"
# stores of earlier versions are still read; they cannot be resumed or grown (what each lacks)
SAMPLES_SCHEMA_V2 = "glasscam.samples/2"
SAMPLES_SCHEMA_V1 = "glasscam.samples/1"
SAMPLES_OLD: dict[str, str] = {
    SAMPLES_SCHEMA_V2: "no per-sample checksums",
    SAMPLES_SCHEMA_V1: "no per-particle energy, no per-sample checksums",
}
PROPENSITY_SCHEMA = "glasscam.propensity/3"
PROPENSITY_SCHEMA_V2 = "glasscam.propensity/2"  # no checksums, no `finished`: read only
# /1 stores (one configuration per store) are still read, never resumed
PROPENSITY_SCHEMA_V1 = "glasscam.propensity/1"
PROPENSITY_SCHEMAS: tuple[str, ...] = (PROPENSITY_SCHEMA, PROPENSITY_SCHEMA_V2,
                                       PROPENSITY_SCHEMA_V1)
CLASSES: tuple[str, ...] = ("liquid", "glass")
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.08, "test": 0.12}  # 4000/400/600

# Parameters that may differ between the run that created a store and a run resuming it.
VOLATILE_PARAMETERS = frozenset({"out", "partitions", "ranks", "log", "screen"})


class SchemaError(ValueError):
    """A store does not follow its glasscam schema. The message names the store and field."""


class ParameterMismatchError(SchemaError):
    """An existing store was made with other parameters than the ones now requested."""


class CorruptStoreError(SchemaError):
    """A file of a store cannot be read (truncated, damaged, or gone). The message names the
    file, the sample where there is one, and what to do."""


class HalfCreatedStoreError(SchemaError):
    """A store whose creation was interrupted (root ``zarr.json`` without ``schema``): it holds
    no done sample; the writer that made it recreates it."""


@dataclass(frozen=True)
class Unit:
    """A unit of completion: for each index of the ``done`` array, the slices ``[index]`` of
    the ``covers`` arrays are written by one writer, then their checksums (``checksum`` array,
    ``done``'s dims + one, CRC-32 of the stored bytes, -1 = none), then ``done`` (DESIGN §4).
    ``clears``: arrays whose entry at ``index[:depth]`` must be reset when a unit is found
    damaged (e.g. a configuration's ``finished`` when one of its replicas is redone)."""

    done: str
    checksum: str
    covers: tuple[str, ...]
    dim: str = "A"
    clears: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ArraySpec:
    """Shape (as dimension names), per-sample chunking and dtype of one array."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    fill_value: Any
    chunk_one: tuple[str, ...] = ()  # dims chunked with length 1 (one writer per chunk)

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(int(sizes[d]) for d in self.dims)

    def chunks(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(1 if d in self.chunk_one else int(sizes[d]) for d in self.dims)


_S = ("S",)
SAMPLE_CLASS_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("positions", ("S", "N", "D"), "float32", float("nan"), _S),
    ArraySpec("types", ("S", "N"), "int8", -1, _S),
    ArraySpec("box", ("S", "D"), "float64", float("nan"), _S),
    ArraySpec("image", ("S", "C", "Y", "X"), "float32", 0.0, _S),
    ArraySpec("potential_energy", ("S",), "float64", float("nan"), _S),
    ArraySpec("particle_energy", ("S", "N"), "float32", float("nan"), _S),
    ArraySpec("temperature", ("S",), "float64", float("nan"), _S),
    ArraySpec("seed", ("S",), "int64", -1, _S),
    ArraySpec("done", ("S",), "bool", False, _S),
)
# glasscam.samples/1: the same without the per-particle energy
SAMPLE_CLASS_ARRAYS_V1: tuple[ArraySpec, ...] = tuple(
    s for s in SAMPLE_CLASS_ARRAYS if s.name != "particle_energy"
)
SAMPLE_COOLING_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("target_temperature", ("S", "K"), "float64", float("nan"), _S),
    ArraySpec("temperature", ("S", "K"), "float64", float("nan"), _S),
    ArraySpec("potential_energy", ("S", "K"), "float64", float("nan"), _S),
)
SAMPLE_ROOT_ARRAYS: tuple[ArraySpec, ...] = (ArraySpec("split", ("S",), "int8", -1),)

PROPENSITY_REFERENCE_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("positions", ("N", "D"), "float32", float("nan")),
    ArraySpec("types", ("N",), "int8", -1),
    ArraySpec("box", ("D",), "float64", float("nan")),
)
PROPENSITY_ROOT_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("steps", ("K",), "int64", -1),
    ArraySpec("times", ("K",), "float64", float("nan")),
    ArraySpec("crd", ("Ns", "K", "N"), "float32", float("nan"), ("Ns", "K")),
    ArraySpec("propensity", ("K", "N"), "float32", float("nan")),
    ArraySpec("delta", ("K",), "float64", float("nan")),
    ArraySpec("done", ("Ns",), "bool", False, ("Ns",)),
)
# glasscam.propensity/2: C configurations; one writer per chunk: crd per (c, s, k) row, done per
# (c, s), propensity/delta/stop/reached per configuration (written once)
_C = ("C",)
PROPENSITY_V2_REFERENCE_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("positions", ("C", "N", "D"), "float32", float("nan"), _C),
    ArraySpec("types", ("C", "N"), "int8", -1, _C),
    ArraySpec("box", ("C", "D"), "float64", float("nan"), _C),
)
PROPENSITY_V2_ROOT_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("samples", ("C",), "int64", -1),
    ArraySpec("steps", ("K",), "int64", -1),
    ArraySpec("times", ("K",), "float64", float("nan")),
    ArraySpec("crd", ("C", "Ns", "K", "N"), "float32", float("nan"), ("C", "Ns", "K")),
    ArraySpec("propensity", ("C", "K", "N"), "float32", float("nan"), _C),
    ArraySpec("delta", ("C", "K"), "float64", float("nan"), _C),
    ArraySpec("stop", ("C",), "int64", -1, _C),
    ArraySpec("reached", ("C",), "bool", False, _C),
    ArraySpec("done", ("C", "Ns"), "bool", False, ("C", "Ns")),
)
# glasscam.propensity/3: /2 plus `finished` (configuration c finalised: propensity, delta,
# reached written) and the checksums of both units
PROPENSITY_V3_ROOT_ARRAYS: tuple[ArraySpec, ...] = (
    *PROPENSITY_V2_ROOT_ARRAYS,
    ArraySpec("finished", ("C",), "bool", False, _C),
)
PROPENSITY_UNITS: tuple[Unit, ...] = (
    # replica s of configuration c: its rows crd[c, s] (redoing one re-finalises c)
    Unit("done", "checksum", ("crd",), dim="A", clears=(("finished", 1),)),
    # configuration c, once all its replicas are done (stop is the pilot's, final by then)
    Unit("finished", "summary_checksum", ("propensity", "delta", "stop", "reached"), dim="B"),
)
_PROPENSITY_UNIT_DIMS = {"done": ("C", "Ns"), "finished": ("C",)}


# --------------------------------------------------------------------------------------------
# helpers


def versions() -> dict[str, str]:
    """Versions of the packages that write stores (recorded in every store's root attrs)."""
    from importlib import metadata

    out = {}
    for pkg in ("glasscam", "lammps", "zarr", "numpy", "mpi4py"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Round-trip ``params`` through JSON so stored and requested parameters compare equal."""
    return json.loads(json.dumps(dict(params), default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"parameter value {obj!r} is not JSON serialisable")


def split_assignment(nsamples: int, seed: int) -> np.ndarray:
    """Deterministic train/val/test labels (0/1/2) for ``nsamples`` samples.

    The paper's 4000/400/600 of 5000 (80/8/12 %) with counts rounded to nearest; when there are
    at least three samples, validation and test get at least one each. The assignment is a
    permutation drawn from ``numpy.random.default_rng(seed)``: the same base seed always gives
    the same split.
    """
    if nsamples < 1:
        raise ValueError(f"nsamples must be >= 1, got {nsamples}")
    n_val = int(round(SPLIT_FRACTIONS["val"] * nsamples))
    n_test = int(round(SPLIT_FRACTIONS["test"] * nsamples))
    if nsamples >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_train = nsamples - n_val - n_test
    labels = np.repeat(np.array([0, 1, 2], dtype=np.int8), [n_train, n_val, n_test])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B117]))
    return labels[rng.permutation(nsamples)]


def check_parameters(
    stored: Mapping[str, Any], requested: Mapping[str, Any], where: str
) -> None:
    """Raise :class:`ParameterMismatchError` naming every field where the two differ."""
    a, b = jsonable(stored), jsonable(requested)
    keys = sorted((set(a) | set(b)) - VOLATILE_PARAMETERS)
    diffs = [k for k in keys if a.get(k) != b.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: store has {a.get(k)!r}, run asks {b.get(k)!r}" for k in diffs)
        raise ParameterMismatchError(
            f"{where}: parameters do not match the existing store ({detail}). "
            "Use another output path, or the parameters the store was made with."
        )


def _create_arrays(group, specs, sizes, dimension_names: bool = True) -> None:
    """Create ``specs`` in ``group``, with the Zarr v3 names of their dimensions (the specs'
    dims; ``xarray.open_zarr`` reads them). ``dimension_names=False`` only for the test
    writers of old schemas."""
    for spec in specs:
        group.create_array(
            spec.name,
            shape=spec.shape(sizes),
            chunks=spec.chunks(sizes),
            dtype=spec.dtype,
            fill_value=spec.fill_value,
            **({"dimension_names": spec.dims} if dimension_names else {}),
        )


def checksum_spec(unit: Unit, dims: tuple[str, ...]) -> ArraySpec:
    """The checksum array of ``unit`` whose ``done`` array has dimensions ``dims``."""
    return ArraySpec(unit.checksum.rsplit("/", 1)[-1], (*dims, unit.dim), "int64", -1, dims)


def _create_checksums(root, units: tuple[Unit, ...], sizes: Mapping[str, int],
                      dims_of: Mapping[str, tuple[str, ...]]) -> None:
    """The checksum arrays of ``units`` (``dims_of``: the dims of each unit's done array)."""
    for unit in units:
        spec = checksum_spec(unit, dims_of[unit.done])
        parent, _, _ = unit.checksum.rpartition("/")
        group = root[parent] if parent else root
        _create_arrays(group, (spec,), {**sizes, unit.dim: len(unit.covers)})
        group[spec.name].attrs["covers"] = list(unit.covers)


def _check_arrays(group, specs, sizes, where: str, lead_ok: set[int] | None = None) -> None:
    """Check presence, dtype and shape; ``lead_ok``: lengths accepted for a leading ``S``."""
    for spec in specs:
        name = f"{group.path}/{spec.name}".lstrip("/")
        try:
            arr = group[spec.name]
        except KeyError:
            raise SchemaError(f"{where}: missing array '{name}'") from None
        except ValueError as err:  # a zarr.json that is not JSON
            raise CorruptStoreError(
                f"{where}/{name}/zarr.json: unreadable ({err}); the array's metadata is "
                "damaged: restore the file, or delete the store and rerun the command that "
                "made it"
            ) from None
        if np.dtype(arr.dtype) != np.dtype(spec.dtype):
            raise SchemaError(
                f"{where}: array '{name}' has dtype {arr.dtype}, schema says {spec.dtype}"
            )
        shape = spec.shape(sizes)
        if lead_ok and spec.dims[:1] == ("S",) and arr.shape[:1] and arr.shape[0] in lead_ok:
            shape = (arr.shape[0], *shape[1:])
        if tuple(arr.shape) != shape:
            raise SchemaError(
                f"{where}: array '{name}' has shape {tuple(arr.shape)}, "
                f"schema says {spec.shape(sizes)} {spec.dims}"
            )


def _refuse_writing_old(where: str, mode: str, found: Any, old: Mapping[str, str],
                        new: str) -> bool:
    """True for a store of an earlier schema (a key of ``old``, whose value says what it
    lacks), which opens read-only: writing into it (resume, grow) is refused, naming what it
    lacks and the schema a new store gets."""
    if found not in old:
        return False
    if mode != "r":
        raise SchemaError(
            f"{where}: attribute 'schema' is {found!r}, made by an older glasscam "
            f"({old[found]}); it can be read but not resumed or grown: write a new store "
            f"({new!r}) with another output path"
        )
    return True


def root_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed root ``zarr.json`` of a store; :class:`CorruptStoreError` naming the file
    when it is not JSON (a truncated write), FileNotFoundError when absent."""
    meta = os.path.join(os.fspath(path), "zarr.json")
    try:
        with open(meta, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(path)}: no Zarr store here") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptStoreError(
            f"{meta}: not valid JSON ({err}); the store's root metadata is truncated or "
            "damaged. It holds the store's schema and parameters: restore it from a backup, "
            "or delete the store and rerun the command that made it"
        ) from None
    if not isinstance(doc, dict):
        raise CorruptStoreError(f"{meta}: not a JSON object; the root metadata is damaged")
    return doc


def _open_root(path: str | os.PathLike, mode: str, schema: str | tuple[str, ...]):
    """The root group of a store whose ``schema`` attribute is ``schema`` (or one of them)."""
    import zarr

    where = os.fspath(path)
    doc = root_metadata(where)
    if doc.get("node_type") == "group" and "schema" not in doc.get("attributes", {}):
        raise HalfCreatedStoreError(
            f"{where}: attribute 'schema' is missing: the store's creation was interrupted and "
            "it holds no sample; the command that writes it recreates it (run it again)"
        )
    try:
        root = zarr.open_group(where, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise FileNotFoundError(f"{where}: no Zarr store here") from None
    found = root.attrs.get("schema")
    accepted = (schema,) if isinstance(schema, str) else tuple(schema)
    if found not in accepted:
        expected = " or ".join(repr(s) for s in accepted)
        raise SchemaError(f"{where}: attribute 'schema' is {found!r}, expected {expected}")
    if "parameters" not in root.attrs:
        raise SchemaError(f"{where}: root attribute 'parameters' is missing")
    return root


def _check_checksums(root, units: tuple[Unit, ...], sizes: Mapping[str, int],
                     dims_of: Mapping[str, tuple[str, ...]], where: str,
                     lead_ok: set[int] | None = None) -> None:
    for unit in units:
        spec = checksum_spec(unit, dims_of[unit.done])
        parent, _, _ = unit.checksum.rpartition("/")
        group = root[parent] if parent else root
        _check_arrays(group, (spec,), {**sizes, unit.dim: len(unit.covers)}, where, lead_ok)


def _class_units(specs: tuple[ArraySpec, ...]) -> tuple[Unit, ...]:
    """One unit per class group: every array of the class, guarded by ``<class>/done``."""
    names = tuple(s.name for s in specs if s.name != "done")
    return tuple(Unit(f"{cls}/done", f"{cls}/checksum", tuple(f"{cls}/{n}" for n in names))
                 for cls in CLASSES)


def _create_class_store(
    path: str | os.PathLike,
    schema: str,
    specs: tuple[ArraySpec, ...],
    sizes: Mapping[str, int],
    params: Mapping[str, Any],
    extra_attrs: Mapping[str, Any],
):
    """A store with one group per class (``CLASSES``), each holding ``specs`` and the
    checksums of its samples."""
    import zarr

    root = zarr.open_group(os.fspath(path), mode="w-", zarr_format=3)
    for cls in CLASSES:
        _create_arrays(root.create_group(cls), specs, sizes)
    units = _class_units(specs)
    _create_checksums(root, units, sizes, {u.done: _S for u in units})
    # attrs last: a store without 'schema' is recognisably half-created
    root.attrs.update(
        {
            "parameters": jsonable(params),
            "versions": versions(),
            **{k: jsonable(v) for k, v in extra_attrs.items()},
            "schema": schema,
        }
    )
    return root


def _open_class_store(
    path: str | os.PathLike,
    mode: str,
    schemas: Mapping[str, tuple[ArraySpec, ...]],
    current: str,
    sizes_of,
    expect: Mapping[str, Any] | None,
):
    """Open and validate a per-class store of one of ``schemas`` (name -> class arrays; only
    ``current`` is writable and has checksums); with ``expect``, check its parameters match."""
    where = os.fspath(path)
    root = _open_root(where, mode, tuple(schemas))
    found = root.attrs["schema"]
    _refuse_writing_old(where, mode, found,
                        {k: "no per-sample checksums" for k in schemas if k != current}, current)
    params = dict(root.attrs["parameters"])
    if expect is not None:
        check_parameters(params, expect, where)
    sizes = sizes_of(params)
    specs = schemas[found]
    for cls in CLASSES:
        if cls not in root:
            raise SchemaError(f"{where}: missing group '{cls}'")
        _check_arrays(root[cls], specs, sizes, where)
    if found == current:
        units = _class_units(specs)
        _check_checksums(root, units, sizes, {u.done: _S for u in units}, where)
    return root


# --------------------------------------------------------------------------------------------
# samples.zarr


def samples_sizes(params: Mapping[str, Any]) -> dict[str, int]:
    """Dimension sizes of a samples store from its parameters."""
    try:
        return {
            "S": int(params["nsamples"]),
            "N": int(params["natoms"]),
            "D": 2,
            "C": int(params["channels"]),
            "M": int(params["grid"]),
            "Y": int(params["grid"]),
            "X": int(params["grid"]),
            "K": int(params["ncool"]),
        }
    except KeyError as err:
        raise SchemaError(f"samples parameters lack field {err.args[0]!r}") from None


def _samples_units() -> tuple[Unit, ...]:
    names = [spec.name for spec in SAMPLE_CLASS_ARRAYS if spec.name != "done"]
    cooling = tuple(f"cooling/{spec.name}" for spec in SAMPLE_COOLING_ARRAYS)
    return (
        Unit("liquid/done", "liquid/checksum", tuple(f"liquid/{n}" for n in names)),
        # the cooling record is written with the glass snapshot, the sample's last step
        Unit("glass/done", "glass/checksum", tuple(f"glass/{n}" for n in names) + cooling),
    )


SAMPLES_UNITS: tuple[Unit, ...] = _samples_units()


def create_samples_store(path: str | os.PathLike, params: Mapping[str, Any]):
    """Create an empty samples store (one process only) and return its root group."""
    import zarr

    sizes = samples_sizes(params)
    root = zarr.open_group(os.fspath(path), mode="w-", zarr_format=3)
    for cls in CLASSES:
        _create_arrays(root.create_group(cls), SAMPLE_CLASS_ARRAYS, sizes)
    _create_arrays(root.create_group("cooling"), SAMPLE_COOLING_ARRAYS, sizes)
    _create_arrays(root, SAMPLE_ROOT_ARRAYS, sizes)
    _create_checksums(root, SAMPLES_UNITS, sizes, {u.done: _S for u in SAMPLES_UNITS})
    root["split"][:] = split_assignment(sizes["S"], int(params.get("seed", 1)))
    # attrs last: a store without 'schema' is recognisably half-created
    root.attrs.update(
        {"parameters": jsonable(params), "versions": versions(), "schema": SAMPLES_SCHEMA}
    )
    return root


def _samples_groups(root, old: str | None):
    """(group path, array specs) of every per-sample array group of a samples store ("" is
    the root)."""
    class_specs = SAMPLE_CLASS_ARRAYS_V1 if old == SAMPLES_SCHEMA_V1 else SAMPLE_CLASS_ARRAYS
    out = [(cls, class_specs) for cls in CLASSES]
    out += [("cooling", SAMPLE_COOLING_ARRAYS), ("", SAMPLE_ROOT_ARRAYS)]
    return out


def open_samples_store(
    path: str | os.PathLike, mode: str = "r", expect: Mapping[str, Any] | None = None,
    grow: bool = False,
):
    """Open and validate a samples store; with ``expect``, check its parameters match.

    With ``grow`` (and ``expect``), an ``expect["nsamples"]`` larger than the store's grows
    it (:func:`grow_samples_store`): the samples it holds are not touched, the new ones are
    not done, ``split`` becomes that of a store made with the larger count. A smaller count
    is refused. An interrupted grow is completed by the same request.

    Stores of earlier schemas (``glasscam.samples/2`` without checksums, ``/1`` also without
    ``particle_energy``) open read-only (``mode="r"``); writing into one is refused.
    """
    where = os.fspath(path)
    root = _open_root(where, mode, (SAMPLES_SCHEMA, *SAMPLES_OLD))
    found = root.attrs["schema"]
    old = found if _refuse_writing_old(where, mode, found, SAMPLES_OLD, SAMPLES_SCHEMA) else None
    params = dict(root.attrs["parameters"])
    sizes = samples_sizes(params)
    target = sizes["S"]
    if expect is not None:
        asked = dict(expect)
        if grow and "nsamples" in asked:
            target = int(asked["nsamples"])
            if target < sizes["S"]:
                raise ParameterMismatchError(
                    f"{where}: nsamples: store has {sizes['S']}, run asks {target}; a samples "
                    "store can grow but not shrink (use another output path, or ask for "
                    f"nsamples >= {sizes['S']})"
                )
            asked["nsamples"] = sizes["S"]
        check_parameters(params, asked, where)
    for name, specs in _samples_groups(root, old):
        if name and name not in root:
            raise SchemaError(f"{where}: missing group '{name}'")
        group = root[name] if name else root
        # an interrupted grow leaves arrays of either length
        _check_arrays(group, specs, sizes, where, lead_ok={sizes["S"], target})
    if old is None:
        _check_checksums(root, SAMPLES_UNITS, sizes, {u.done: _S for u in SAMPLES_UNITS}, where,
                         lead_ok={sizes["S"], target})
    if target != sizes["S"]:
        grow_samples_store(root, target)
    return root


def grow_samples_store(root, nsamples: int) -> None:
    """Extend every per-sample array of an open (``r+``) samples store to ``nsamples``.

    Samples already there keep every byte; the new ones are not done (their ``done`` is the
    fill value). ``split`` is rewritten to :func:`split_assignment` of the new count, so a
    grown store equals one made with that count from the start. Order: arrays first,
    ``split``, the ``parameters`` attribute last; an interrupted grow is completed by asking
    for the same count again.
    """
    params = dict(root.attrs["parameters"])
    for name, specs in _samples_groups(root, None):
        group = root[name] if name else root
        for spec in specs:
            arr = group[spec.name]
            if arr.shape[0] != nsamples:
                arr.resize((nsamples, *arr.shape[1:]))
    for unit in SAMPLES_UNITS:
        arr = root[unit.checksum]
        if arr.shape[0] != nsamples:
            arr.resize((nsamples, *arr.shape[1:]))
    root["split"][:] = split_assignment(nsamples, int(params.get("seed", 1)))
    root.attrs["parameters"] = jsonable({**params, "nsamples": int(nsamples)})


def done_samples(root) -> np.ndarray:
    """Boolean mask of samples whose liquid and glass snapshots are both complete."""
    return np.asarray(root["liquid/done"][:]) & np.asarray(root["glass/done"][:])


# --------------------------------------------------------------------------------------------
# propensity.zarr


def propensity_sizes(params: Mapping[str, Any]) -> dict[str, int]:
    """Dimension sizes of a propensity store from its parameters (C only for /2 stores)."""
    try:
        sizes = {
            "Ns": int(params["nreplicas"]),
            "K": int(params["noutputs"]),
            "N": int(params["natoms"]),
            "D": 2,
        }
    except KeyError as err:
        raise SchemaError(f"propensity parameters lack field {err.args[0]!r}") from None
    if "configurations" in params:
        sizes["C"] = len(params["configurations"])
    return sizes


def create_propensity_store(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    reference: Mapping[str, np.ndarray],
    steps: np.ndarray,
    dt: float,
):
    """Create an empty propensity store with its reference configurations and output times.

    ``params`` with a ``configurations`` list (sample indices, C of them): a
    ``glasscam.propensity/2`` store; ``reference`` holds ``positions`` [C, N, 2], ``types``
    [C, N], ``box`` [C, 2] (or the arrays of one configuration when C = 1), ``samples`` is
    set from ``configurations``. Without ``configurations``: the ``/1`` layout of one
    configuration (kept so that tests can write the stores the ``/1`` readers read).
    """
    import zarr

    sizes = propensity_sizes(params)
    steps = np.asarray(steps, dtype=np.int64)
    if steps.shape != (sizes["K"],):
        raise SchemaError(f"{path}: steps has shape {steps.shape}, expected ({sizes['K']},)")
    v3 = "C" in sizes
    root = zarr.open_group(os.fspath(path), mode="w-", zarr_format=3)
    ref = root.create_group("reference")
    if v3:
        _create_arrays(ref, PROPENSITY_V2_REFERENCE_ARRAYS, sizes)
        for spec in PROPENSITY_V2_REFERENCE_ARRAYS:
            ref[spec.name][...] = np.asarray(reference[spec.name]).reshape(spec.shape(sizes))
        _create_arrays(root, PROPENSITY_V3_ROOT_ARRAYS, sizes)
        _create_checksums(root, PROPENSITY_UNITS, sizes, _PROPENSITY_UNIT_DIMS)
        root["samples"][:] = np.asarray(params["configurations"], dtype=np.int64)
    else:
        _create_arrays(ref, PROPENSITY_REFERENCE_ARRAYS, sizes, dimension_names=False)
        for name in ("positions", "types", "box"):
            ref[name][...] = np.asarray(reference[name])
        _create_arrays(root, PROPENSITY_ROOT_ARRAYS, sizes, dimension_names=False)
    root["steps"][:] = steps
    root["times"][:] = steps * float(dt)
    # attrs last: a store without 'schema' is recognisably half-created
    root.attrs.update(
        {
            "parameters": jsonable(params),
            "versions": versions(),
            "schema": PROPENSITY_SCHEMA if v3 else PROPENSITY_SCHEMA_V1,
        }
    )
    return root


def open_propensity_store(
    path: str | os.PathLike,
    mode: str = "r",
    expect: Mapping[str, Any] | None = None,
    schemas: tuple[str, ...] = PROPENSITY_SCHEMAS,
):
    """Open and validate a propensity store of one of ``schemas`` (default: /3, /2 and /1).

    ``root.attrs["schema"]`` tells which layout it has. ``/2`` and ``/1`` stores open
    read-only only.
    """
    where = os.fspath(path)
    root = _open_root(where, mode, tuple(schemas))
    found = root.attrs["schema"]
    _refuse_writing_old(where, mode, found, {
        PROPENSITY_SCHEMA_V2: "no checksums, no 'finished'",
        PROPENSITY_SCHEMA_V1: "one configuration"}, PROPENSITY_SCHEMA)
    v1 = found == PROPENSITY_SCHEMA_V1
    params = dict(root.attrs["parameters"])
    if expect is not None:
        check_parameters(params, expect, where)
    sizes = propensity_sizes(params)
    if not v1 and "C" not in sizes:
        raise SchemaError(f"{where}: parameters lack field 'configurations'")
    if "reference" not in root:
        raise SchemaError(f"{where}: missing group 'reference'")
    ref_specs = PROPENSITY_REFERENCE_ARRAYS if v1 else PROPENSITY_V2_REFERENCE_ARRAYS
    root_specs = {PROPENSITY_SCHEMA_V1: PROPENSITY_ROOT_ARRAYS,
                  PROPENSITY_SCHEMA_V2: PROPENSITY_V2_ROOT_ARRAYS}.get(
                      found, PROPENSITY_V3_ROOT_ARRAYS)
    _check_arrays(root["reference"], ref_specs, sizes, where)
    _check_arrays(root, root_specs, sizes, where)
    if found == PROPENSITY_SCHEMA:
        _check_checksums(root, PROPENSITY_UNITS, sizes, _PROPENSITY_UNIT_DIMS, where)
    return root


# ============================================================================================
# indicators.zarr (glasscam.indicators/2; /1 lacks checksum, read only) -- structural
# indicators, written by `glasscam indicators` (glasscam.analysis.structure.indicators).
# Section owned by the indicators stage.
#
#     liquid/, glass/                one group per class, each with
#         voronoi       f8 [S, N]    Voronoi cell area ϒ (periodic 2D)
#         ttop          f8 [S, N]    Tong-Tanaka order parameter Θ (radians)
#         checksum      i8 [S, 2]    CRC-32 of voronoi[s], ttop[s] as written (-1: none)
#         done          b1 [S]       set last, after both fields of the sample are written
#
# One chunk per sample (a task owns its samples' chunks whole). Root attrs: ``schema``,
# ``parameters`` (samples store path, nsamples, natoms, system, diameters, skin factor: a
# resumed run must match them), ``versions``, ``provenance`` (samples-store parameters and the
# last run's scheduler/workers; informational, not compared).
# ============================================================================================

INDICATORS_SCHEMA = "glasscam.indicators/2"
INDICATORS_SCHEMA_V1 = "glasscam.indicators/1"  # no checksums: read only
INDICATOR_CLASS_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("voronoi", ("S", "N"), "float64", float("nan"), _S),
    ArraySpec("ttop", ("S", "N"), "float64", float("nan"), _S),
    ArraySpec("done", ("S",), "bool", False, _S),
)


def indicators_sizes(params: Mapping[str, Any]) -> dict[str, int]:
    try:
        return {"S": int(params["nsamples"]), "N": int(params["natoms"])}
    except KeyError as err:
        raise SchemaError(f"indicators parameters lack field {err.args[0]!r}") from None


def create_indicators_store(
    path: str | os.PathLike, params: Mapping[str, Any], provenance: Mapping[str, Any] | None = None
):
    """Create an empty indicators store (one process only) and return its root group."""
    return _create_class_store(
        path, INDICATORS_SCHEMA, INDICATOR_CLASS_ARRAYS, indicators_sizes(params), params,
        {"provenance": provenance or {}},
    )


def open_indicators_store(
    path: str | os.PathLike, mode: str = "r", expect: Mapping[str, Any] | None = None
):
    """Open and validate an indicators store; with ``expect``, check its parameters match."""
    return _open_class_store(
        path, mode,
        {INDICATORS_SCHEMA: INDICATOR_CLASS_ARRAYS, INDICATORS_SCHEMA_V1: INDICATOR_CLASS_ARRAYS},
        INDICATORS_SCHEMA, indicators_sizes, expect
    )


# ============================================================================================
# gradcam.zarr (glasscam.gradcam/3; /2 lacks checksum, /1 also gamma_members) -- Grad-CAM
# maps and particle scores, written by `glasscam gradcam` (glasscam.analysis.cnn.gradcam).
# Section owned by the CNN/Grad-CAM stage.
#
#     liquid/, glass/                one group per class of the *sample* (true label), each with
#         cam           f4 [S, M, M] Grad-CAM map L^C = ReLU(sum_m w_m A^m) of the target class
#                                    (C = glass unless parameters say otherwise), last conv layer
#         gamma         f4 [S, N]    particle score Gamma_i = G^-1(L^C) (bare: not coarse-grained,
#                                    not normalised; the correlate stage does both); for an
#                                    ensemble of E networks the mean of the members' Gamma
#         gamma_members f4 [S, E, N] each member's own Gamma (E = 1 for one network)
#         logits        f4 [S, 2]    network output y (before softmax), CLASSES order; for an
#                                    ensemble log of the members' mean class probability
#         correct       b1 [S]       predicted class == true class; False = misclassified (the
#                                    paper's footnote 2: leave out of per-sample distributions)
#         checksum      i8 [S, 5]    CRC-32 of cam .. correct of the sample as written
#         done          b1 [S]       set last; only samples of the chosen split are ever done
#
# Indexed by the sample index of samples.zarr (S = its nsamples), one chunk per sample.
# Root attrs: ``schema``; ``parameters`` (samples store, model folder, split, target class,
# layer, gridization kernel, nsamples, natoms, grid: a resumed run must match them);
# ``versions``; ``model`` (provenance: checkpoint path and sha256, epochs trained, model and
# training configuration, test accuracy; informational, not compared); ``cost`` (seconds and
# ms per sample of the last run; informational). Attribution methods other than the paper's
# (`glasscam gradcam --method/--layer/--randomize`, glasscam.analysis.cnn.attribution) write
# stores of this same schema named gradcam_<method>[_<layer>][_<randomisation>].zarr, with
# the method, layer, randomisation (and integrated-gradients steps) in ``parameters``.
# ============================================================================================

GRADCAM_SCHEMA = "glasscam.gradcam/3"
GRADCAM_SCHEMA_V2 = "glasscam.gradcam/2"  # no checksums: read only
GRADCAM_SCHEMA_V1 = "glasscam.gradcam/1"  # one network, no gamma_members: read only
GRADCAM_CLASS_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("cam", ("S", "Y", "X"), "float32", float("nan"), _S),
    ArraySpec("gamma", ("S", "N"), "float32", float("nan"), _S),
    ArraySpec("gamma_members", ("S", "E", "N"), "float32", float("nan"), _S),
    ArraySpec("logits", ("S", "K"), "float32", float("nan"), _S),
    ArraySpec("correct", ("S",), "bool", False, _S),
    ArraySpec("done", ("S",), "bool", False, _S),
)


def gradcam_sizes(params: Mapping[str, Any]) -> dict[str, int]:
    try:
        return {
            "S": int(params["nsamples"]),
            "N": int(params["natoms"]),
            "M": int(params["grid"]),
            "Y": int(params["grid"]),
            "X": int(params["grid"]),
            "K": len(CLASSES),
            "E": int(params.get("members", 1)),
        }
    except KeyError as err:
        raise SchemaError(f"gradcam parameters lack field {err.args[0]!r}") from None


def create_gradcam_store(
    path: str | os.PathLike, params: Mapping[str, Any], model: Mapping[str, Any] | None = None
):
    """Create an empty gradcam store (one process only) and return its root group."""
    return _create_class_store(
        path, GRADCAM_SCHEMA, GRADCAM_CLASS_ARRAYS, gradcam_sizes(params), params,
        {"model": model or {}},
    )


def open_gradcam_store(
    path: str | os.PathLike, mode: str = "r", expect: Mapping[str, Any] | None = None
):
    """Open and validate a gradcam store; with ``expect``, check its parameters match.

    ``glasscam.gradcam/2`` (no checksums) and ``/1`` (one network, no ``gamma_members``)
    stores open read-only."""
    v1 = tuple(s for s in GRADCAM_CLASS_ARRAYS if s.name != "gamma_members")
    return _open_class_store(
        path, mode,
        {GRADCAM_SCHEMA: GRADCAM_CLASS_ARRAYS, GRADCAM_SCHEMA_V2: GRADCAM_CLASS_ARRAYS,
         GRADCAM_SCHEMA_V1: v1},
        GRADCAM_SCHEMA, gradcam_sizes, expect,
    )


# ============================================================================================
# <name>.zarr of `glasscam apply` (glasscam.applied/1) -- a trained model applied to the frames
# of one input file (glasscam.analysis.apply). F frames of N particles each:
#
#     positions     f4 [F, N, 2]  wrapped into [0, L), sorted by atom ID, as gridized
#     types         i1 [F, N]     0 = A, 1 = B (after the type mapping)
#     ids           i8 [F, N]     atom IDs of the file
#     box           f8 [F, 2]     (Lx, Ly)
#     step          i8 [F]        the frame's timestep (-1: none in the file)
#     p_glass       f8 [F]        probability of the glass class (ensemble: members' mean)
#     logits        f4 [F, 2]     CLASSES order (ensemble: log of the mean probability)
#     cam           f4 [F, M, M]  Grad-CAM map of the glass class (M: the frame's grid)
#     gamma         f4 [F, N]     Γ = G^-1(cam), bare; gamma_members f4 [F, E, N] per network
#     gamma_cg      f4 [F, N]     Γ coarse-grained (exp kernel, ξ = parameters 'xi')
#     voronoi, ttop f8 [F, N]     ϒ and Θ (NaN unless parameters 'indicators')
#     checksum      i8 [F, A]     CRC-32 of every array above of the frame; done b1 [F] last
#
# Root attrs: schema, parameters (input file and its sha256, model folder and checkpoint
# sha256s, frames, natoms, grid, xi, indicators, types: a resume must match), versions.
# ============================================================================================

APPLIED_SCHEMA = "glasscam.applied/1"
_F = ("F",)
APPLIED_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("positions", ("F", "N", "D"), "float32", float("nan"), _F),
    ArraySpec("types", ("F", "N"), "int8", -1, _F),
    ArraySpec("ids", ("F", "N"), "int64", -1, _F),
    ArraySpec("box", ("F", "D"), "float64", float("nan"), _F),
    ArraySpec("step", ("F",), "int64", -1, _F),
    ArraySpec("p_glass", ("F",), "float64", float("nan"), _F),
    ArraySpec("logits", ("F", "K"), "float32", float("nan"), _F),
    ArraySpec("cam", ("F", "Y", "X"), "float32", float("nan"), _F),
    ArraySpec("gamma", ("F", "N"), "float32", float("nan"), _F),
    ArraySpec("gamma_cg", ("F", "N"), "float32", float("nan"), _F),
    ArraySpec("gamma_members", ("F", "E", "N"), "float32", float("nan"), _F),
    ArraySpec("voronoi", ("F", "N"), "float64", float("nan"), _F),
    ArraySpec("ttop", ("F", "N"), "float64", float("nan"), _F),
    ArraySpec("done", ("F",), "bool", False, _F),
)
APPLIED_UNITS: tuple[Unit, ...] = (
    Unit("done", "checksum", tuple(s.name for s in APPLIED_ARRAYS if s.name != "done")),
)


def applied_sizes(params: Mapping[str, Any]) -> dict[str, int]:
    try:
        return {"F": int(params["frames"]), "N": int(params["natoms"]), "D": 2,
                "K": len(CLASSES), "M": int(params["grid"]), "Y": int(params["grid"]),
                "X": int(params["grid"]), "E": int(params["members"])}
    except KeyError as err:
        raise SchemaError(f"applied parameters lack field {err.args[0]!r}") from None


def create_applied_store(path: str | os.PathLike, params: Mapping[str, Any]):
    """Create an empty store of `glasscam apply` (one process only); return its root."""
    import zarr

    sizes = applied_sizes(params)
    root = zarr.open_group(os.fspath(path), mode="w-", zarr_format=3)
    _create_arrays(root, APPLIED_ARRAYS, sizes)
    _create_checksums(root, APPLIED_UNITS, sizes, {"done": _F})
    root.attrs.update(
        {"parameters": jsonable(params), "versions": versions(), "schema": APPLIED_SCHEMA})
    return root


def open_applied_store(path: str | os.PathLike, mode: str = "r",
                       expect: Mapping[str, Any] | None = None):
    """Open and validate a store of `glasscam apply`; with ``expect``, check its parameters."""
    where = os.fspath(path)
    root = _open_root(where, mode, APPLIED_SCHEMA)
    params = dict(root.attrs["parameters"])
    if expect is not None:
        check_parameters(params, expect, where)
    sizes = applied_sizes(params)
    _check_arrays(root, APPLIED_ARRAYS, sizes, where)
    _check_checksums(root, APPLIED_UNITS, sizes, {"done": _F}, where)
    return root


# ============================================================================================
# live.zarr (glasscam.live/1) -- the trained network as an in-situ observable of a running
# LAMMPS (glasscam.insitu.live:gradcam, `fix ID all insitu N glasscam.insitu.live:gradcam`).
# Section owned by the live hook. F frames (one per hook call, growing), N particles in
# atom-ID order:
#
#     step          i8 [F]        MD step of the frame
#     time          f8 [F]        step * dt
#     temperature   f8 [F]        instantaneous kinetic temperature (LAMMPS thermo 'temp')
#     box           f8 [F, 2]     (Lx, Ly)
#     p_glass       f8 [F]        probability of the glass class (ensemble: members' mean)
#     logits        f4 [F, 2]     CLASSES order (ensemble: log of the mean probability)
#     cam           f4 [F, Y, X]  Grad-CAM map of the glass class
#     gamma         f4 [F, N]     Γ = G^-1(cam), bare (what the per-atom property holds)
#     positions     f4 [F, N, 2]  wrapped into [0, L), float32, as gridized
#     crd           f4 [F, N]     |cage-relative displacement| since the first frame (aging
#                                 deck, parameters 'crd' true; NaN otherwise)
#     checksum      i8 [F, A]     CRC-32 of every array above of the frame; done b1 [F] last
#     ids           i8 [N]        atom IDs of the columns; types i1 [N] (0 = A, 1 = B)
#
# Chunks: 'batch' frames along F (one chunk per batch, written whole by the partition's rank
# 0), whole along the other axes. The arrays grow along F; an interrupted growth leaves arrays
# longer than 'done', whose length is the store's F. Root attrs: schema, parameters (model
# checkpoints' sha256, natoms, grid, channels, kernel, batch, device, threads, crd, and the
# deck's 'run' parameters: a resume must match them), versions, model (its folder).
#
# samples.live.zarr (glasscam.live-ramp/1) -- P(glass) along the cooling ramp of the quench
# deck (-var cnn DIR -var livestride K), beside the samples store; one chunk per sample:
#
#     step, target_temperature, temperature, p_glass [S, R] (i8, f8, f8, f8), logits f4
#     [S, R, 2] (R = ncool // livestride + 1 rows, steps 0, K, 2K, ...); checksum i8 [S, A];
#     done b1 [S]
# ============================================================================================

LIVE_SCHEMA = "glasscam.live/1"
RAMP_SCHEMA = "glasscam.live-ramp/1"
_LF = ("F",)
LIVE_FRAME_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("step", ("F",), "int64", -1),
    ArraySpec("time", ("F",), "float64", float("nan")),
    ArraySpec("temperature", ("F",), "float64", float("nan")),
    ArraySpec("box", ("F", "D"), "float64", float("nan")),
    ArraySpec("p_glass", ("F",), "float64", float("nan")),
    ArraySpec("logits", ("F", "K"), "float32", float("nan")),
    ArraySpec("cam", ("F", "Y", "X"), "float32", float("nan")),
    ArraySpec("gamma", ("F", "N"), "float32", float("nan")),
    ArraySpec("positions", ("F", "N", "D"), "float32", float("nan")),
    ArraySpec("crd", ("F", "N"), "float32", float("nan")),
)
LIVE_UNITS: tuple[Unit, ...] = (
    Unit("done", "checksum", tuple(s.name for s in LIVE_FRAME_ARRAYS)),
)
LIVE_ATOM_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("ids", ("N",), "int64", -1),
    ArraySpec("types", ("N",), "int8", -1),
)
RAMP_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("step", ("S", "R"), "int64", -1, _S),
    ArraySpec("target_temperature", ("S", "R"), "float64", float("nan"), _S),
    ArraySpec("temperature", ("S", "R"), "float64", float("nan"), _S),
    ArraySpec("p_glass", ("S", "R"), "float64", float("nan"), _S),
    ArraySpec("logits", ("S", "R", "K"), "float32", float("nan"), _S),
    ArraySpec("done", ("S",), "bool", False, _S),
)
RAMP_UNITS: tuple[Unit, ...] = (
    Unit("done", "checksum", tuple(s.name for s in RAMP_ARRAYS if s.name != "done")),
)


def live_sizes(params: Mapping[str, Any], frames: int = 0) -> dict[str, int]:
    try:
        return {"F": int(frames), "N": int(params["natoms"]), "D": 2, "K": len(CLASSES),
                "Y": int(params["grid"]), "X": int(params["grid"]), "B": int(params["batch"])}
    except KeyError as err:
        raise SchemaError(f"live parameters lack field {err.args[0]!r}") from None


def _live_frame_chunks(spec: ArraySpec, sizes: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(sizes["B"] if d == "F" else int(sizes[d]) for d in spec.dims)


def create_live_store(path: str | os.PathLike, params: Mapping[str, Any], ids: np.ndarray,
                      types: np.ndarray, attrs: Mapping[str, Any] | None = None):
    """Create an empty live store (no frame yet; one process only) and return its root."""
    import zarr

    sizes = live_sizes(params)
    root = zarr.open_group(os.fspath(path), mode="w-", zarr_format=3)
    specs = (*LIVE_FRAME_ARRAYS, checksum_spec(LIVE_UNITS[0], _LF),
             ArraySpec("done", ("F",), "bool", False))
    for spec in specs:
        dims = {**sizes, "A": len(LIVE_UNITS[0].covers)}
        root.create_array(spec.name, shape=spec.shape(dims), chunks=_live_frame_chunks(
            spec, dims), dtype=spec.dtype, fill_value=spec.fill_value, dimension_names=spec.dims)
    root["checksum"].attrs["covers"] = list(LIVE_UNITS[0].covers)
    _create_arrays(root, LIVE_ATOM_ARRAYS, sizes)
    root["ids"][...] = np.asarray(ids, dtype=np.int64)
    root["types"][...] = np.asarray(types, dtype=np.int8)
    # attrs last: a store without 'schema' is recognisably half-created
    root.attrs.update({"parameters": jsonable(params), "versions": versions(),
                       **{k: jsonable({"v": v})["v"] for k, v in (attrs or {}).items()},
                       "schema": LIVE_SCHEMA})
    return root


def open_live_store(path: str | os.PathLike, mode: str = "r",
                    expect: Mapping[str, Any] | None = None):
    """Open and validate a live store (F = the length of ``done``; the frame arrays may be
    longer after an interrupted growth); with ``expect``, check its parameters."""
    where = os.fspath(path)
    root = _open_root(where, mode, LIVE_SCHEMA)
    params = dict(root.attrs["parameters"])
    if expect is not None:
        check_parameters(params, expect, where)
    try:
        frames = int(root["done"].shape[0])
    except KeyError:
        raise SchemaError(f"{where}: missing array 'done'") from None
    sizes = live_sizes(params, frames)
    specs = (*LIVE_FRAME_ARRAYS, checksum_spec(LIVE_UNITS[0], _LF))
    for spec in specs:
        if spec.name not in root:
            raise SchemaError(f"{where}: missing array '{spec.name}'")
        arr = root[spec.name]
        want = spec.shape({**sizes, "A": len(LIVE_UNITS[0].covers)})
        if np.dtype(arr.dtype) != np.dtype(spec.dtype) or tuple(arr.shape[1:]) != want[1:] \
                or arr.shape[0] < frames:
            raise SchemaError(f"{where}: array '{spec.name}' has shape {tuple(arr.shape)} and "
                              f"dtype {arr.dtype}, schema says (>= {frames}, *{want[1:]}) "
                              f"{spec.dtype} {spec.dims}")
    _check_arrays(root, LIVE_ATOM_ARRAYS, sizes, where)
    return root


def ramp_sizes(params: Mapping[str, Any]) -> dict[str, int]:
    try:
        return {"S": int(params["nsamples"]), "R": int(params["rows"]), "K": len(CLASSES)}
    except KeyError as err:
        raise SchemaError(f"live-ramp parameters lack field {err.args[0]!r}") from None


def create_ramp_store(path: str | os.PathLike, params: Mapping[str, Any],
                      attrs: Mapping[str, Any] | None = None):
    """Create an empty store of P(glass) along the cooling ramp (one process only)."""
    import zarr

    sizes = ramp_sizes(params)
    root = zarr.open_group(os.fspath(path), mode="w-", zarr_format=3)
    _create_arrays(root, RAMP_ARRAYS, sizes)
    _create_checksums(root, RAMP_UNITS, sizes, {"done": _S})
    root.attrs.update({"parameters": jsonable(params), "versions": versions(),
                       **{k: jsonable({"v": v})["v"] for k, v in (attrs or {}).items()},
                       "schema": RAMP_SCHEMA})
    return root


def open_ramp_store(path: str | os.PathLike, mode: str = "r",
                    expect: Mapping[str, Any] | None = None, grow: bool = False):
    """Open and validate a ramp store; with ``expect``, check its parameters. With ``grow``,
    a larger ``expect["nsamples"]`` extends it (as the samples store it sits beside grows)."""
    where = os.fspath(path)
    root = _open_root(where, mode, RAMP_SCHEMA)
    params = dict(root.attrs["parameters"])
    target = int(params.get("nsamples", 0))
    if expect is not None:
        asked = dict(expect)
        if grow and int(asked.get("nsamples", target)) > target:
            target = int(asked["nsamples"])
            asked["nsamples"] = params.get("nsamples")
        check_parameters(params, asked, where)
    sizes = ramp_sizes(params)
    lead = {sizes["S"], target}
    _check_arrays(root, RAMP_ARRAYS, sizes, where, lead_ok=lead)
    _check_checksums(root, RAMP_UNITS, sizes, {"done": _S}, where, lead_ok=lead)
    if target != sizes["S"]:
        for name in [s.name for s in RAMP_ARRAYS] + ["checksum"]:
            arr = root[name]
            if arr.shape[0] != target:
                arr.resize((target, *arr.shape[1:]))
        root.attrs["parameters"] = jsonable({**params, "nsamples": target})
    return root


# --------------------------------------------------------------------------------------------
# the units of every current schema (what verify and resume check)


def units_of(root) -> tuple[Unit, ...]:
    """The units of completion of a store of a current schema (``()`` for an older one)."""
    found = root.attrs.get("schema")
    if found == SAMPLES_SCHEMA:
        return SAMPLES_UNITS
    if found == PROPENSITY_SCHEMA:
        return PROPENSITY_UNITS
    if found == GRADCAM_SCHEMA:
        return _class_units(GRADCAM_CLASS_ARRAYS)
    if found == INDICATORS_SCHEMA:
        return _class_units(INDICATOR_CLASS_ARRAYS)
    if found == APPLIED_SCHEMA:
        return APPLIED_UNITS
    if found == LIVE_SCHEMA:
        return LIVE_UNITS
    if found == RAMP_SCHEMA:
        return RAMP_UNITS
    return ()


OPENERS: dict[str, Any] = {}  # schema name prefix -> open function, filled below


def open_store(path: str | os.PathLike, mode: str = "r"):
    """Open any glasscam store by its ``schema`` attribute (validated by its own opener)."""
    where = os.fspath(path)
    doc = root_metadata(where)
    found = str(doc.get("attributes", {}).get("schema", ""))
    for prefix, opener in OPENERS.items():
        if found.startswith(prefix + "/"):
            return opener(where, mode=mode)
    if not found:
        return _open_root(where, mode, ())  # raises HalfCreatedStoreError / SchemaError
    raise SchemaError(f"{where}: attribute 'schema' is {found!r}, not a glasscam store")


OPENERS.update({
    "glasscam.samples": open_samples_store,
    "glasscam.propensity": open_propensity_store,
    "glasscam.gradcam": open_gradcam_store,
    "glasscam.indicators": open_indicators_store,
    "glasscam.applied": open_applied_store,
    "glasscam.live": open_live_store,
    "glasscam.live-ramp": open_ramp_store,
})
