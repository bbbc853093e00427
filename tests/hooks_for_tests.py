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
