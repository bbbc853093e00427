"""Streaming the gridized images of ``samples.zarr`` into torch batches (DESIGN §4).

One labelled item is one (class, sample) pair: sample ``s`` of split ``train`` contributes its
liquid snapshot (label 0) and its glass snapshot (label 1), as in the paper (4000 training samples
per class, 8000 in all). Only samples whose ``done`` flag is set in both classes are used.

Data path. The images are never loaded whole. For each pass over a split, the (shuffled) item
order becomes a Dask array of images with one block per batch, built with ``map_blocks`` over the
item codes; a block's task reads exactly the Zarr chunks of its batch (one chunk per sample, see
``glasscam.insitu.schema``) with one orthogonal selection per class, which Zarr fetches
concurrently. A
background thread computes the blocks ahead of the training loop (``prefetch`` batches deep), so
the network never waits for the disk while the next batches fit in the queue; the time the loop
does wait is measured (:attr:`Prefetcher.wait_s`) and reported in ``metrics.json``.

(Slicing ``da.from_zarr(image)`` with one-sample chunks by a random index set was measured at
~130 ms per batch of 32 here, dominated by graph construction over all chunks; the per-batch block
costs the Zarr read plus a few ms.)
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from glasscam.insitu import integrity
from glasscam.insitu.schema import CLASSES, SPLITS, SchemaError, done_samples, open_samples_store


@dataclass
class Batch:
    """One batch: images [B, C, M, M] float32, labels [B] (0 liquid, 1 glass), which items."""

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray  # class index per item (= labels)
    samples: np.ndarray  # sample index in the store per item


def _read_codes(codes: np.ndarray, arrays: tuple, nsamples: int) -> np.ndarray:
    """Images of the items ``codes`` (class * nsamples + sample), in the order given."""
    codes = np.asarray(codes, dtype=np.int64)
    first = arrays[0]
    out = np.empty((len(codes),) + tuple(first.shape[1:]), dtype=np.float32)
    cls, smp = np.divmod(codes, nsamples)
    for c, arr in enumerate(arrays):
        where = np.flatnonzero(cls == c)
        if where.size == 0:
            continue
        order = np.argsort(smp[where], kind="stable")
        sel = smp[where][order]
        out[where[order]] = integrity.read_rows(arr, sel)  # a damaged chunk is named
    return out


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random exact symmetries of a periodic square box, per image: a translation by whole
    pixels (a periodic roll: shifting the configuration by one pixel rolls its image by one) and
    one of the 8 rotations/reflections of the square (the interactions are isotropic)."""
    out = np.empty_like(images)
    m = images.shape[-1]
    for i, img in enumerate(images):
        dy, dx = rng.integers(0, m, size=2)
        img = np.roll(img, (int(dy), int(dx)), axis=(-2, -1))
        if rng.random() < 0.5:
            img = img[..., ::-1, :]
        if rng.random() < 0.5:
            img = img[..., :, ::-1]
        if rng.random() < 0.5:
            img = np.swapaxes(img, -1, -2)
        out[i] = img
    return out


class SplitImages:
    """The labelled images of one split of a samples store, read lazily.

    Raises :class:`~glasscam.insitu.schema.SchemaError` (naming the store and the field) when
    the store is not a samples store, has no ``split``, has no done sample in the split, or has
    images of another size than ``expect_grid`` / ``expect_channels``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        expect_grid: int | None = None,
        expect_channels: int | None = None,
        what: str = "the model",
    ) -> None:
        self.path = os.fspath(path)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLITS)}")
        self.split = split
        self.root = root = open_samples_store(self.path)
        self.parameters: dict[str, Any] = dict(root.attrs["parameters"])
        self.arrays = tuple(root[f"{cls}/image"] for cls in CLASSES)
        nsamples, channels, grid, grid2 = self.arrays[0].shape
        if grid != grid2:
            raise SchemaError(f"{self.path}: array 'liquid/image' is not square ({grid}x{grid2})")
        self.nsamples, self.channels, self.grid = int(nsamples), int(channels), int(grid)
        for name, want, have in (
            ("grid size M", expect_grid, self.grid),
            ("channels C", expect_channels, self.channels),
        ):
            if want is not None and int(want) != have:
                raise SchemaError(
                    f"{self.path}: arrays 'liquid/image', 'glass/image' have {name} = {have} "
                    f"(image shape {tuple(self.arrays[0].shape[1:])}), but {what} expects "
                    f"{name} = {want}"
                )
        split_labels = np.asarray(root["split"][:])
        if np.any(split_labels < 0):
            raise SchemaError(
                f"{self.path}: array 'split' is unset (fill value -1) for "
                f"{int(np.sum(split_labels < 0))} samples"
            )
        done = done_samples(root)
        self.samples = np.flatnonzero((split_labels == SPLITS[split]) & done).astype(np.int64)
        if self.samples.size == 0:
            counts = {k: int(np.sum((split_labels == v) & done)) for k, v in SPLITS.items()}
            raise SchemaError(
                f"{self.path}: array 'split' has no done sample in split {split!r} "
                f"(done samples per split: {counts})"
            )

    def __len__(self) -> int:
        """Number of labelled items (2 per sample: liquid and glass)."""
        return 2 * len(self.samples)

    @property
    def codes(self) -> np.ndarray:
        """Item codes class * nsamples + sample, classes in CLASSES order, samples ascending."""
        return np.concatenate([c * self.nsamples + self.samples for c in range(len(CLASSES))])

    def order(self, shuffle: bool, seed: int = 0, epoch: int = 0) -> np.ndarray:
        """Item order of one pass: a permutation drawn from (seed, epoch) when shuffled."""
        codes = self.codes
        if not shuffle:
            return codes
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 0xDA7A]))
        return codes[rng.permutation(len(codes))]

    def dask_images(self, codes: np.ndarray, batch_size: int):
        """Dask array [len(codes), C, M, M] of the items' images, one block per batch."""
        import dask.array as da

        idx = da.from_array(np.asarray(codes, dtype=np.int64), chunks=int(batch_size))
        return idx.map_blocks(
            _read_codes,
            arrays=self.arrays,
            nsamples=self.nsamples,
            new_axis=[1, 2, 3],
            chunks=(idx.chunks[0], (self.channels,), (self.grid,), (self.grid,)),
            dtype=np.float32,
            meta=np.empty((0, 0, 0, 0), dtype=np.float32),
            name=f"glasscam-images-{id(self):x}-{time.perf_counter_ns():x}",
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        prefetch: int = 4,
        codes: np.ndarray | None = None,
        augment: bool = False,
    ) -> Prefetcher:
        """Batches of one pass over the split (or over ``codes``, in that order), computed
        ahead in a background thread. With ``augment``, every image gets a random symmetry of
        the periodic box (:func:`augment`), drawn from (seed, epoch, batch)."""
        if codes is None:
            codes = self.order(shuffle, seed, epoch)
        codes = np.asarray(codes, dtype=np.int64)
        if codes.size == 0:
            return Prefetcher([], prefetch)
        blocks = self.dask_images(codes, batch_size).to_delayed().ravel().tolist()
        starts = np.cumsum([0] + [batch_size] * (len(blocks) - 1))
        meta = []
        for start, block in zip(starts, blocks, strict=True):
            part = codes[start : start + batch_size]
            cls, smp = np.divmod(part, self.nsamples)
            meta.append((block, cls.astype(np.int64), smp))
        aug_seed = (int(seed), int(epoch)) if augment else None
        return Prefetcher(meta, prefetch, aug_seed)

    def positions(self, cls: str, sample: int) -> tuple[np.ndarray, np.ndarray]:
        """Particle positions [N, 2] and box (Lx, Ly) of one snapshot."""
        grp = self.root[cls]
        return np.asarray(grp["positions"][sample]), np.asarray(grp["box"][sample])


class Prefetcher:
    """Iterator over :class:`Batch` es whose Dask blocks a background thread computes ahead."""

    _END = object()

    def __init__(
        self,
        items: list[tuple[Any, np.ndarray, np.ndarray]],
        depth: int = 4,
        augment_seed: tuple[int, int] | None = None,
    ) -> None:
        self.items = items
        self.augment_seed = augment_seed
        self.wait_s = 0.0  # time the consumer spent blocked on data
        self.load_s = 0.0  # time the producer spent computing blocks
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="glasscam-prefetch", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self.items)

    def _produce(self) -> None:
        try:
            for b, (block, cls, smp) in enumerate(self.items):
                if self._stop.is_set():
                    return
                t0 = time.perf_counter()
                images = block.compute(scheduler="synchronous")
                if self.augment_seed is not None:
                    seq = np.random.SeedSequence([*self.augment_seed, b, 0xA06])
                    images = augment(images, np.random.default_rng(seq))
                self.load_s += time.perf_counter() - t0
                self._put(Batch(images, cls, cls, smp))
        except BaseException as err:  # re-raised in the consumer
            self._put(err)
            return
        self._put(self._END)

    def _put(self, obj: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Batch]:
        try:
            while True:
                t0 = time.perf_counter()
                obj = self._queue.get()
                self.wait_s += time.perf_counter() - t0
                if obj is self._END:
                    return
                if isinstance(obj, BaseException):
                    raise obj
                yield obj
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
