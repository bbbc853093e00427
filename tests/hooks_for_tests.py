"""Hooks called from LAMMPS by tests/test_plugin.py (``fix insitu`` / ``insitu``).

Each writes what it saw to its own file, ``<out>.p<partition>.r<world rank>``, one JSON
line per call, so that concurrent ranks never share a file.
"""

from __future__ import annotations

import json


def _ids(lmp):
    return (
        lmp.extract_setting("world_rank"),
        lmp.extract_setting("world_size"),
        lmp.extract_setting("universe_rank"),
    )


def _partition(lmp):
    # partition index: universe rank // world size holds for -partition MxN
    rank, size, urank = _ids(lmp)
    return urank // size


def record(lmp, step, out, **kw):
    """Append {step, rank, partition, kw, natoms} to ``out``.p<i>.r<rank>."""
    rank, size, _ = _ids(lmp)
    part = _partition(lmp)
    line = {
        "step": step,
        "step_type": type(step).__name__,
        "rank": rank,
        "size": size,
        "partition": part,
        "kw": kw,
        "natoms": lmp.get_natoms(),
    }
    with open(f"{out}.p{part}.r{rank}", "a") as fh:
        fh.write(json.dumps(line) + "\n")


def positions(lmp, step, out):
    """Collective: gather positions and types via the lammps object; rank 0 writes them."""
    import numpy as np

    x = lmp.numpy.extract_atom("x")
    nlocal = lmp.extract_setting("nlocal")
    local = np.asarray(x[:nlocal, :2], dtype=float)
    natoms = lmp.get_natoms()
    xall = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(natoms, 3)
    boxlo, boxhi = lmp.extract_box()[:2]
    if lmp.extract_setting("world_rank") == 0:
        with open(out, "w") as fh:
            json.dump(
                {
                    "step": step,
                    "natoms": natoms,
                    "nlocal0": int(nlocal),
                    "local_shape": list(local.shape),
                    "x": xall[:, :2].tolist(),
                    "boxlo": list(boxlo),
                    "boxhi": list(boxhi),
                },
                fh,
            )


def fail(lmp, step, rank="-1", at_step="0", partition="-1"):
    """Raise on world rank ``rank`` (-1: all) of partition ``partition`` (-1: all) from step on."""
    me, _, _ = _ids(lmp)
    if int(rank) in (-1, me) and int(partition) in (-1, _partition(lmp)) and step >= int(at_step):
        raise ValueError(f"boom from hooks_for_tests on rank {me} at step {step}")


def empty(lmp, step, **kw):
    """Does nothing (overhead measurements)."""


not_callable = 42


def fail_text(lmp, step, text):
    """Raise ValueError with a message that is awkward for C: lone surrogate, non-ASCII."""
    messages = {
        "surrogate": "bad \udcff byte from a surrogateescape decode",
        "nonascii": "bad é ✓ (valid non-ASCII)",
        "braces": "bad {} {0} {:>x} (format braces)",
    }
    raise ValueError(messages[text])


_ZIP: dict[str, dict] = {}
_LAZY_EXTENSIONS = ("_sqlite3", "_curses", "_lzma", "_bz2", "_decimal", "_csv")


def zarr_zip(lmp, step, out, n, delay="0.5"):
    """Rank 0 stores ``step`` into ``steps`` of a Zarr ZipStore ``out`` (one chunk per call).

    The zip file gets its central directory only when the store is closed, which an atexit
    handler does, after creating the group ``done`` with the attributes ``calls``, ``late``
    and ``mpi_finalized``.  Each call also starts a non-daemon thread that sleeps ``delay``
    seconds (so it runs while ``lmp`` shuts down), then imports an extension module nothing
    imported yet (a dlopen, as lazily imported codecs do) and reports it in ``late``.

    So the store is readable and complete after ``lmp`` exits only if the embedded interpreter
    was finalized, with the hook's threads joined first (able to dlopen: no loader lock held)
    and the atexit handlers run while MPI was still up.
    """
    import atexit
    import importlib
    import sys
    import threading
    import time

    import zarr
    from zarr.storage import ZipStore

    if lmp.extract_setting("world_rank") != 0:
        return
    state = _ZIP.get(out)
    if state is None:
        store = ZipStore(out, mode="w")
        root = zarr.open_group(store, mode="w")
        steps = root.create_array("steps", shape=(int(n),), chunks=(1,), dtype="i8",
                                  fill_value=-1)
        state = _ZIP[out] = {"steps": steps, "calls": 0, "late": []}

        def close():
            from mpi4py import MPI

            root.create_group("done", attributes={  # a new key: zip members are write-once
                "calls": state["calls"],
                "late": sorted(state["late"]),
                "mpi_finalized": MPI.Is_finalized(),
            })
            store.close()

        atexit.register(close)

    state["steps"][state["calls"]] = step
    state["calls"] += 1

    def late():
        time.sleep(float(delay))
        for name in _LAZY_EXTENSIONS:
            if name not in sys.modules:
                try:
                    importlib.import_module(name)
                except ImportError:
                    continue
                state["late"].append(f"{step}:{name}")
                return
        state["late"].append(f"{step}:-")

    threading.Thread(target=late, name=f"zarr_zip_late_{step}", daemon=False).start()
