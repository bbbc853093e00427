"""Nothing lost, nothing torn: how every glasscam writer creates, fills, checks and repairs a
store (DESIGN §4). The layouts and units are :mod:`glasscam.insitu.schema`'s; this module is
the discipline around them, shared by the samples, propensity, gradcam and indicators writers.

* **Creation is atomic** (:func:`create_store_atomically`): a store is built in a hidden sibling
  folder ``.<name>.creating-<token>`` and renamed into place, so a killed creation leaves no
  store at all, only a hidden folder the next writer removes. A store made by an older
  glasscam that wrote its root first (``zarr.json`` without ``schema``) holds no sample and is
  recreated (:func:`open_or_create`).
* **Units** (:class:`~glasscam.insitu.schema.Unit`): one writer writes the slices ``[index]`` of
  the arrays a unit covers, then their CRC-32 checksums (of the bytes as stored, i.e. after
  the cast to the array's dtype), then ``done`` (:func:`write_units`, or :func:`seal_unit` for
  slices written piecewise, e.g. a replica's CRD rows).
* **Verification** (:func:`verify`): every done unit's slices are read back and their checksums
  compared; a chunk that cannot be decoded, a deleted chunk (it reads as fill values), a
  missing checksum are :class:`Damage`, each naming the store, the unit (sample, or
  configuration and replica), the array and the chunk file. :func:`repair` clears the ``done``
  of exactly the damaged units (and the entries their ``Unit.clears`` name), so the command
  that wrote them redoes exactly them. Writers verify the store they resume before planning.
* **Corruption while reading** (:func:`reading`): any failure to decode becomes a
  :class:`~glasscam.insitu.schema.CorruptStoreError` naming the file and sample and saying to run
  ``glasscam verify``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.insitu.schema import (
    CorruptStoreError,
    HalfCreatedStoreError,
    SchemaError,
    Unit,
    units_of,
)

# --------------------------------------------------------------------------------------------
# checksums


def checksum(value: Any, dtype: Any) -> int:
    """CRC-32 of ``value`` as an array of ``dtype`` would store it (C order)."""
    arr = np.ascontiguousarray(np.asarray(value, dtype=dtype))
    return zlib.crc32(arr.tobytes())


def _slice_shape(arr, depth: int) -> tuple[int, ...]:
    return tuple(arr.shape[depth:])


def write_units(root, unit: Unit, indices: Sequence[int] | np.ndarray,
                values: Mapping[str, Any]) -> None:
    """Write units with a one-dimensional ``done`` (index = sample): for each covered array
    ``values[path]`` [B, ...] at ``indices`` [B], then the checksums [B, A], then ``done``.

    ``values`` is keyed by the covered arrays' paths (``unit.covers``); every one must be
    given. One writer per index (chunks are one sample long)."""
    index = np.asarray(indices, dtype=np.int64)
    if index.ndim != 1:
        raise ValueError("write_units: indices must be one-dimensional")
    missing = [p for p in unit.covers if p not in values]
    if missing:
        raise ValueError(f"write_units: no values for {missing} of unit {unit.done!r}")
    sums = np.empty((len(index), len(unit.covers)), dtype=np.int64)
    for a, path in enumerate(unit.covers):
        arr = root[path]
        shape = (len(index), *_slice_shape(arr, 1))
        block = np.broadcast_to(np.asarray(values[path], dtype=arr.dtype), shape)
        for b, i in enumerate(index.tolist()):
            # an integer index covers its chunk whole: Zarr writes it without reading the old
            # chunk (which may be the damaged one being redone)
            arr[i] = block[b]
            sums[b, a] = checksum(block[b], arr.dtype)
    for b, i in enumerate(index.tolist()):
        root[unit.checksum][i] = sums[b]
    for i in index.tolist():
        root[unit.done][i] = True


def unit_checksums(root, unit: Unit, index: tuple[int, ...]) -> np.ndarray:
    """The checksums of the slices ``[index]`` of the covered arrays as they are stored now."""
    return np.array([checksum(root[p][index], root[p].dtype) for p in unit.covers],
                    dtype=np.int64)


def seal_unit(root, unit: Unit, index: tuple[int, ...]) -> None:
    """Record the checksums of what the store holds for ``index`` (written piecewise by this
    writer, e.g. row by row), then set ``done``."""
    index = tuple(int(i) for i in index)
    root[unit.checksum][index] = unit_checksums(root, unit, index)
    root[unit.done][index] = True


def seal(root) -> None:
    """Record the checksums of every done unit that has none (stores written without
    :func:`write_units`, e.g. by the test factories of :mod:`glasscam.testing`)."""
    for unit in units_of(root):
        done = np.asarray(root[unit.done][...], dtype=bool)
        sums = np.asarray(root[unit.checksum][...])
        for idx in np.argwhere(done):
            index = tuple(int(i) for i in idx)
            if (sums[index] < 0).any():
                root[unit.checksum][index] = unit_checksums(root, unit, index)


# --------------------------------------------------------------------------------------------
# files of a slice (for messages)


def store_root(root) -> str:
    """The folder of a local store."""
    store = root.store
    path = getattr(store, "root", None)
    return os.fspath(path) if path is not None else str(store)


def chunk_files(where: str, arr, index: tuple[int, ...]) -> list[str]:
    """Chunk files holding the slice ``arr[index]`` (leading dims chunked one by one)."""
    depth = len(index)
    chunks = arr.chunks
    rest = [range(math.ceil(n / c)) for n, c in zip(arr.shape[depth:], chunks[depth:],
                                                     strict=True)]
    files = []
    for tail in itertools.product(*rest):
        key = arr.metadata.encode_chunk_key((*index, *tail))
        files.append(os.path.join(where, arr.path, *key.split("/")))
    return files


def describe_index(unit: Unit, index: tuple[int, ...]) -> str:
    if unit.done.endswith("finished"):
        return f"configuration {index[0]}"
    if len(index) == 2:
        return f"configuration {index[0]} replica {index[1]}"
    return f"sample {index[0]}"


@contextlib.contextmanager
def reading(where: str, what: str, arr=None, index: tuple[int, ...] | None = None
            ) -> Iterator[None]:
    """Turn a failure to read ``what`` (e.g. "liquid/image of samples [3, 4]") into a
    :class:`CorruptStoreError` naming the store, the chunk file when known, and what to do."""
    try:
        yield
    except (SchemaError, FileNotFoundError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - codec errors come in many types
        files = ""
        if arr is not None and index is not None:
            with contextlib.suppress(Exception):
                files = f" (chunk file {chunk_files(where, arr, index)[0]})"
        raise CorruptStoreError(
            f"{where}: cannot read {what}{files}: {type(err).__name__}: {err}. The store is "
            f"damaged: `glasscam verify {where}` lists every bad sample, `glasscam verify "
            f"--repair {where}` marks them not done, and the command that wrote the store then "
            "redoes exactly them"
        ) from None


def read_selection(group, name: str, index: np.ndarray, where: str) -> np.ndarray:
    """``group[name]`` at the leading ``index`` (orthogonal selection), with a
    :class:`CorruptStoreError` naming the chunk file and sample when a chunk is damaged."""
    return read_rows(group[name], index, where)


def read_rows(arr, index: np.ndarray, where: str | None = None) -> np.ndarray:
    """``arr`` at the leading ``index`` (see :func:`read_selection`); ``where`` defaults to
    the array's store folder."""
    where = where or store_root(arr)
    index = np.asarray(index, dtype=np.int64)
    try:
        return np.asarray(arr.get_orthogonal_selection((index,)))
    except Exception:  # noqa: BLE001 - find the sample whose chunk fails, and name it
        for i in index.tolist():
            with reading(where, f"{arr.path} of sample {i}", arr, (i,)):
                arr[i]
        raise


# --------------------------------------------------------------------------------------------
# verify / repair


@dataclass(frozen=True)
class Damage:
    """One damaged unit: the array and chunk file at fault, and what is wrong."""

    store: str
    unit: Unit
    index: tuple[int, ...]
    array: str
    problem: str
    files: tuple[str, ...] = ()

    def __str__(self) -> str:
        files = f" [{', '.join(self.files[:3])}{' ...' if len(self.files) > 3 else ''}]" \
            if self.files else ""
        return (f"{self.store}: {describe_index(self.unit, self.index)} ({self.unit.done}): "
                f"{self.array}: {self.problem}{files}")


def _read_lenient(arr, where: str) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """The whole of a small per-unit array, and the leading indices whose chunk is unreadable
    (read with their fill value)."""
    try:
        return np.asarray(arr[...]), []
    except Exception:  # noqa: BLE001 - fall back to chunk by chunk
        out = np.full(arr.shape, arr.fill_value, dtype=arr.dtype)
        bad = []
        lead = [range(n) for n, c in zip(arr.shape, arr.chunks, strict=True) if c == 1]
        for idx in itertools.product(*lead):
            try:
                out[idx] = arr[idx]
            except Exception:  # noqa: BLE001
                bad.append(tuple(int(i) for i in idx))
        return out, bad


def verify(root, where: str | None = None,
           progress: Callable[[int, int], None] | None = None) -> list[Damage]:
    """Every damaged done unit of a store of a current schema (see the module docstring)."""
    where = where or store_root(root)
    damages: list[Damage] = []
    units = units_of(root)
    for unit in units:
        done_arr, sums_arr = root[unit.done], root[unit.checksum]
        done, bad_done = _read_lenient(done_arr, where)
        sums, bad_sums = _read_lenient(sums_arr, where)
        for idx in bad_done:
            damages.append(Damage(where, unit, idx, unit.done, "done flag unreadable",
                                  tuple(chunk_files(where, done_arr, idx))))
        todo = [tuple(int(i) for i in idx) for idx in np.argwhere(done.astype(bool))]
        for n, index in enumerate(todo):
            if index in bad_sums:
                damages.append(Damage(where, unit, index, unit.checksum, "checksum unreadable",
                                      tuple(chunk_files(where, sums_arr, index))))
                continue
            for a, path in enumerate(unit.covers):
                arr = root[path]
                files = chunk_files(where, arr, index)
                recorded = int(sums[index][a])
                if recorded < 0:
                    damages.append(Damage(where, unit, index, path, "no checksum recorded"))
                    continue
                try:
                    value = arr[index]
                except Exception as err:  # noqa: BLE001
                    bad = [f for f in files if os.path.exists(f)]
                    damages.append(Damage(where, unit, index, path,
                                          f"unreadable ({type(err).__name__}: {err})",
                                          tuple(bad or files)))
                    continue
                if checksum(value, arr.dtype) != recorded:
                    gone = [f for f in files if not os.path.exists(f)]
                    problem = ("chunk file missing" if gone
                               else "differs from the checksum recorded when it was written")
                    damages.append(Damage(where, unit, index, path, problem,
                                          tuple(gone or files)))
            if progress is not None:
                progress(n + 1, len(todo))
    return damages


def damaged_units(damages: Sequence[Damage]) -> list[tuple[Unit, tuple[int, ...]]]:
    seen: dict[tuple[str, tuple[int, ...]], tuple[Unit, tuple[int, ...]]] = {}
    for d in damages:
        seen.setdefault((d.unit.done, d.index), (d.unit, d.index))
    return list(seen.values())


def repair(root, damages: Sequence[Damage]) -> list[tuple[Unit, tuple[int, ...]]]:
    """Mark exactly the damaged units not done (and reset what their ``clears`` name); the
    command that wrote the store then redoes them. Returns the units cleared."""
    cleared = damaged_units(damages)
    for unit, index in cleared:
        root[unit.checksum][index] = -1
        root[unit.done][index] = False
        for path, depth in unit.clears:
            arr = root[path]
            arr[index[:depth]] = arr.fill_value
    return cleared


#: what a killed write leaves: Zarr's local store writes ``<file>.<32 hex>.partial`` and renames
#: it; glasscam's own atomic writes use ``.<name>.<pid>.<8 hex>.tmp``
LEFTOVERS = ("*.????????????????????????????????.partial", ".*.*.????????.tmp")


def leftovers(folder: str | os.PathLike) -> list[Path]:
    """Temporary files of writes that were killed before their rename, under ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted({p for pattern in LEFTOVERS for p in root.rglob(pattern) if p.is_file()})


def sweep_leftovers(folder: str | os.PathLike, log: Callable[[str], None] | None = None
                    ) -> int:
    """Remove :func:`leftovers` (the caller holds the output's lock: no write is in flight)."""
    found = leftovers(folder)
    for path in found:
        path.unlink(missing_ok=True)
    if found and log is not None:
        log(f"{folder}: removed {len(found)} temporary file(s) of writes interrupted earlier")
    return len(found)


def check_and_repair(root, where: str, log: Callable[[str], None]) -> int:
    """What a writer does before resuming ``root``: remove the temporary files of interrupted
    writes, verify, report, clear the damaged units (they are redone by this run). Returns the
    number of units cleared."""
    sweep_leftovers(where, log)
    damages = verify(root, where)
    if not damages:
        return 0
    for d in damages:
        log(f"damaged, will be redone: {d}")
    return len(repair(root, damages))


# --------------------------------------------------------------------------------------------
# creation


def write_atomically(path: str | os.PathLike, write: Callable[[Path], Any],
                     durable: bool = False) -> Path:
    """Write a file through ``write(tmp)`` to a unique temporary name beside it, then rename it
    into place: readers see the old file or the new one, never a torn one. ``durable``: fsync
    the file before the rename (it survives a crash of the machine, not only of the process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    """:func:`write_atomically` of a text file."""
    return write_atomically(path, lambda tmp: tmp.write_text(text), durable)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def creating_siblings(path: str | os.PathLike) -> list[Path]:
    where = Path(os.path.abspath(os.fspath(path)))
    return sorted(where.parent.glob(f".{where.name}.creating-*"))


def create_store_atomically(path: str | os.PathLike, build: Callable[[str], Any]):
    """Build a store with ``build(tmp_path)`` in a hidden sibling folder, then rename it to
    ``path`` (which must not exist, or be an empty folder). Returns the opened root (r+)."""
    import zarr

    where = Path(os.path.abspath(os.fspath(path)))
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = where.with_name(f".{where.name}.creating-{uuid.uuid4().hex[:12]}")
    try:
        build(str(tmp))
        if where.is_dir() and not any(where.iterdir()):
            where.rmdir()
        os.rename(tmp, where)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return zarr.open_group(str(where), mode="r+")


def open_or_create(path: str | os.PathLike, create: Callable[[str], Any],
                   reopen: Callable[[str], Any], what: str = "store",
                   log: Callable[[str], None] = print) -> tuple[Any, bool]:
    """Open the store at ``path`` with ``reopen(path)``, or create it with ``create(tmp)``
    atomically. The caller holds the output's lock (:mod:`glasscam.insitu.lock`).

    Leftovers of killed creations are removed first; a half-created store of an older
    glasscam is recreated; a folder that holds something else is refused. Returns
    ``(root, created)``."""
    where = Path(os.path.abspath(os.fspath(path)))
    for leftover in creating_siblings(where):
        log(f"{where}: removing {leftover.name}, left by a creation that was interrupted")
        shutil.rmtree(leftover, ignore_errors=True)
    if (where / "zarr.json").exists():
        try:
            return reopen(str(where)), False
        except HalfCreatedStoreError:
            log(f"{where}: its creation was interrupted (no 'schema' attribute, no sample): "
                "recreating it")
            shutil.rmtree(where)
    elif where.exists():
        if not where.is_dir() or any(where.iterdir()):
            raise SchemaError(
                f"{where}: exists and is not a Zarr store (no zarr.json); refusing to write "
                f"the {what} into it: choose another output path"
            )
    return create_store_atomically(where, create), True
