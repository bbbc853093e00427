"""Sample store writer: one whole chunk per sample and array, ``done`` flags last, resume.

Layout and validation are :mod:`insitu.schema`'s (DESIGN §4); this module adds the write
discipline used by the quench hooks:

* :func:`prepare_samples_store` — run by **one** process (universe rank 0) while the others
  wait: create the store, or open an existing one, check that it was made with the parameters
  now requested (:class:`~insitu.schema.ParameterMismatchError` naming the fields otherwise) and
  return the indices of the samples still to do.
* :class:`SampleWriter` — used by the root rank of a partition: writes one sample's liquid and
  glass snapshots and its cooling record, each array as one whole chunk (chunks are one sample
  long, so two partitions never touch the same chunk or file), then ``liquid/done`` and
  ``glass/done``. A process killed at any point leaves either a sample that is not marked done
  (redone on resume, bit-for-bit the same since it depends on its seed only) or a complete one.

:class:`FrameWriter` is the benchmark's stress path (a gridized frame every ``stride`` MD steps
into a scratch store, one chunk per frame).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import schema


@dataclass
class Snapshot:
    """One configuration as it goes into ``liquid/`` or ``glass/`` (DESIGN §4 dtypes)."""

    positions: np.ndarray  # f4 [N, 2], wrapped into [0, L)
    types: np.ndarray  # i1 [N], 0 = A, 1 = B
    box: np.ndarray  # f8 [2]
    image: np.ndarray  # f4 [C, M, M]
    potential_energy: float  # per particle
    temperature: float


def _store_exists(path: Path) -> bool:
    return (path / "zarr.json").exists()


def prepare_samples_store(path: str | os.PathLike, params: Mapping[str, Any]) -> list[int]:
    """Create the store (or validate the existing one) and return the not-done sample indices.

    One process only. Raises :class:`~insitu.schema.SchemaError` /
    :class:`~insitu.schema.ParameterMismatchError` (message names the store and the field) if an
    existing store does not fit; the store is not modified then.
    """
    where = Path(path)
    if _store_exists(where):
        root = schema.open_samples_store(where, mode="r", expect=params)
        done = schema.done_samples(root)
        return [int(i) for i in np.flatnonzero(~done)]
    if where.exists() and any(where.iterdir()):
        raise schema.SchemaError(
            f"{where}: exists and is not a Zarr store (no zarr.json); refusing to write into it"
        )
    where.parent.mkdir(parents=True, exist_ok=True)
    schema.create_samples_store(where, params)
    return list(range(int(params["nsamples"])))


class SampleWriter:
    """Writes whole samples into an existing samples store (root rank of one partition)."""

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = os.fspath(path)
        self.root = zarr.open_group(self.path, mode="r+")
        self._arrays: dict[str, Any] = {}

    def _array(self, name: str):
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self.root[name]
        return arr

    def write(
        self,
        index: int,
        seed: int,
        snapshots: Mapping[str, Snapshot],
        cooling: Mapping[str, np.ndarray],
    ) -> None:
        """Write sample ``index``: every class's arrays, the cooling record, then the flags."""
        missing = [c for c in schema.CLASSES if c not in snapshots]
        if missing:
            raise ValueError(f"{self.path}: sample {index} lacks the {missing} snapshot(s)")
        for cls in schema.CLASSES:
            snap = snapshots[cls]
            self._array(f"{cls}/positions")[index] = snap.positions
            self._array(f"{cls}/types")[index] = snap.types
            self._array(f"{cls}/box")[index] = snap.box
            self._array(f"{cls}/image")[index] = snap.image
            self._array(f"{cls}/potential_energy")[index] = snap.potential_energy
            self._array(f"{cls}/temperature")[index] = snap.temperature
            self._array(f"{cls}/seed")[index] = seed
        for spec in schema.SAMPLE_COOLING_ARRAYS:
            self._array(f"cooling/{spec.name}")[index] = cooling[spec.name]
        # flags last: a sample exists only once all of the above is on disk
        for cls in schema.CLASSES:
            self._array(f"{cls}/done")[index] = True


class FrameWriter:
    """Stress path of the benchmark: gridized frames, one chunk per frame, in a scratch store.

    Asynchronous: :meth:`submit` hands a gathered frame (positions, types, box) to one
    background thread that gridizes it and writes its chunk, so the MD loop only pays for the
    gather. The thread collects up to ``batch`` frames (waiting at most ``linger`` seconds for
    the next one) and writes consecutive frames with one slice assignment: still one chunk per
    frame, but zarr's per-call overhead is paid once per batch. The thread runs while LAMMPS
    computes (the plugin holds the GIL only during hook calls). Frames are written in
    submission order; at most ``backlog`` wait (then ``submit`` blocks: back-pressure instead
    of unbounded memory). :meth:`close` drains the queue and re-raises the first error of the
    thread; an error is also re-raised by the next ``submit``.
    """

    def __init__(self, path: str | os.PathLike, grid: int, channels: int, kernel: str,
                 backlog: int = 64, batch: int = 16, linger: float = 2.0):
        import queue
        import sys
        import threading

        import zarr

        # the hook (main thread) must not wait long for the GIL while the writer holds it
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self.batch, self.linger = batch, linger
        self.path = os.fspath(path)
        self.image = zarr.open_group(self.path, mode="r+")["image"]
        self.grid, self.channels, self.kernel = grid, channels, kernel
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)
        self._error: BaseException | None = None
        self.thread_cpu_s = 0.0  # CPU time of the writer thread (gridize + write)
        self._thread = threading.Thread(target=self._work, name="glasscam-frames", daemon=True)
        self._thread.start()

    @staticmethod
    def create(path: str | os.PathLike, nframes: int, channels: int, grid: int,
               stride: int) -> None:
        import zarr

        root = zarr.open_group(os.fspath(path), mode="w", zarr_format=3)
        root.create_array(
            "image",
            shape=(nframes, channels, grid, grid),
            chunks=(1, channels, grid, grid),
            dtype="float32",
            fill_value=0.0,
            compressors=None,  # plain little-endian bytes: chunks can be written directly
        )
        root.attrs.update({"schema": "glasscam.frames/scratch", "stride": int(stride)})

    def _work(self) -> None:
        import queue

        from .gridize import gridize

        while True:
            batch = [self._queue.get()]
            # take what else is waiting (up to `batch`): one multi-chunk write is much cheaper
            # than several single-chunk writes (zarr writes the chunks of one call concurrently)
            while batch[-1] is not None and len(batch) < self.batch:
                try:
                    batch.append(self._queue.get(timeout=self.linger))
                except queue.Empty:
                    break
            stop = batch[-1] is None
            frames = [item for item in batch if item is not None]
            t0 = time.thread_time()
            if frames and self._error is None:
                try:
                    images = [gridize(pos, typ, box, grid=self.grid, channels=self.channels,
                                      kernel=self.kernel) for _, pos, typ, box in frames]
                    self._write([f[0] for f in frames], images)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._error = exc
            self.thread_cpu_s += time.thread_time() - t0
            if stop:
                return

    def _direct_path(self) -> str | None:
        """Directory of the array if its chunks are plain little-endian bytes in a local store."""
        meta = self.image.metadata
        codecs = getattr(meta, "codecs", ())
        names = [type(c).__name__ for c in codecs]
        endian = str(getattr(codecs[0], "endian", "")) if codecs else ""
        folder = os.path.join(self.path, "image")
        if names == ["BytesCodec"] and "little" in endian and os.path.isdir(folder):
            return folder
        return None

    def _write(self, indices: list[int], images: list[np.ndarray]) -> None:
        folder = self._direct_path()
        if folder is not None:
            # the chunk files zarr itself would write (same key encoding, same bytes), written
            # directly: zarr-python's per-chunk machinery costs ~2 ms of CPU a chunk, a file
            # write ~0.1 ms; written to a temporary name and renamed, so never torn
            for index, image in zip(indices, images, strict=True):
                key = self.image.metadata.encode_chunk_key((index, 0, 0, 0))
                target = os.path.join(folder, key)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.tmp{os.getpid()}"
                with open(tmp, "wb") as fh:
                    fh.write(np.ascontiguousarray(image, dtype="<f4").tobytes())
                os.replace(tmp, target)
            return
        start = 0
        while start < len(indices):  # runs of consecutive indices: one slice write each
            stop = start + 1
            while stop < len(indices) and indices[stop] == indices[stop - 1] + 1:
                stop += 1
            self.image[indices[start]:indices[stop - 1] + 1] = np.stack(images[start:stop])
            start = stop

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"{self.path}: writing a frame failed: {self._error!r}")

    def submit(self, index: int, positions: np.ndarray, types: np.ndarray,
               box: np.ndarray) -> None:
        self._raise()
        self._queue.put((index, positions, types, box))

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()


def sample_seeds(base_seed: int, indices: Sequence[int]) -> np.ndarray:
    """Vectorised :func:`insitu.quench.sample_seed` (for checks and analysis)."""
    from .quench import sample_seed

    return np.array([sample_seed(base_seed, i) for i in indices], dtype=np.int64)
