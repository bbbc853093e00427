"""The quench benchmark's stress path: a gridized frame every ``stride`` MD steps, into Zarr.

Benchmark-only (DESIGN: production hooks hold no benchmark code). :class:`FrameWriter` writes
one chunk per frame into a scratch store, asynchronously: :meth:`FrameWriter.submit` hands a
gathered frame (positions, types, box) to one background thread that gridizes it and writes
it, so the MD loop only pays for the gather. The thread takes up to ``batch`` waiting frames
(waiting at most ``linger`` seconds for the next one) and writes a run of consecutive frames
with one slice assignment: still one chunk per frame, but zarr's per-call overhead is paid once
per batch (zarr writes the chunks of one call concurrently). Every write goes through zarr's
own API (``array[i:j] = images``); the interpreter's switch interval is left as it is. The
thread runs while LAMMPS computes (the plugin holds the GIL only during hook calls). At most
``backlog`` frames wait (then ``submit`` blocks: back-pressure instead of unbounded memory).
:meth:`FrameWriter.flush` waits until all submitted frames are written, :meth:`FrameWriter.close`
also ends the thread; both re-raise the first error of the thread, as does the next ``submit``.
"""

from __future__ import annotations

import os
import queue
import threading
import time

import numpy as np

SCHEMA = "glasscam.frames/scratch"
_FLUSH = object()  # queue marker: write what is collected now


class FrameWriter:
    """Gridize and write frames in a background thread (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, grid: int, channels: int, kernel: str,
                 backlog: int = 64, batch: int = 16, linger: float = 2.0):
        import zarr

        self.batch, self.linger = batch, linger
        self.path = os.fspath(path)
        self.image = zarr.open_group(self.path, mode="r+")["image"]
        self.grid, self.channels, self.kernel = grid, channels, kernel
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)
        self._error: BaseException | None = None
        self.thread_cpu_s = 0.0  # CPU time of the writer thread (gridize + write)
        self.written = 0
        self._thread = threading.Thread(target=self._work, name="glasscam-frames", daemon=True)
        self._thread.start()

    @staticmethod
    def create(path: str | os.PathLike, nframes: int, channels: int, grid: int,
               stride: int) -> None:
        """The scratch store: ``image`` f4 [nframes, C, M, M], one chunk per frame."""
        import zarr

        root = zarr.open_group(os.fspath(path), mode="w", zarr_format=3)
        root.create_array(
            "image",
            shape=(nframes, channels, grid, grid),
            chunks=(1, channels, grid, grid),
            dtype="float32",
            fill_value=0.0,
            compressors=None,
        )
        root.attrs.update({"schema": SCHEMA, "stride": int(stride)})

    def _work(self) -> None:
        from glasscam.insitu.gridize import gridize

        while True:
            batch = [self._queue.get()]
            # take what else is waiting (up to `batch`): one multi-chunk write is much cheaper
            # than several single-chunk writes
            while batch[-1] is not None and batch[-1] is not _FLUSH and len(batch) < self.batch:
                try:
                    batch.append(self._queue.get(timeout=self.linger))
                except queue.Empty:
                    break
            stop = batch[-1] is None
            frames = [item for item in batch if item is not None and item is not _FLUSH]
            t0 = time.thread_time()
            if frames and self._error is None:
                try:
                    images = [gridize(pos, typ, box, grid=self.grid, channels=self.channels,
                                      kernel=self.kernel) for _, pos, typ, box in frames]
                    self._write([f[0] for f in frames], images)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._error = exc
            self.thread_cpu_s += time.thread_time() - t0
            for _ in batch:
                self._queue.task_done()
            if stop:
                return

    def _write(self, indices: list[int], images: list[np.ndarray]) -> None:
        """Runs of consecutive indices: one zarr slice assignment each."""
        start = 0
        while start < len(indices):
            stop = start + 1
            while stop < len(indices) and indices[stop] == indices[stop - 1] + 1:
                stop += 1
            self.image[indices[start]:indices[stop - 1] + 1] = np.stack(images[start:stop])
            self.written += stop - start
            start = stop

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"{self.path}: writing a frame failed: {self._error!r}")

    def submit(self, index: int, positions: np.ndarray, types: np.ndarray,
               box: np.ndarray) -> None:
        self._raise()
        self._queue.put((index, positions, types, box))

    def flush(self) -> None:
        """Wait until every frame submitted so far is written (the thread keeps running)."""
        if self._thread.is_alive():
            self._queue.put(_FLUSH)  # ends the batch being collected: no linger
            self._queue.join()
        self._raise()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()
