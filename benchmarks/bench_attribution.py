"""Cost of every attribution method (issue 16), on this machine.

* ``per_method``: ms per image of each method (``glasscam.analysis.cnn.attribution``) at the
  paper's input size (64 x 64 x 2, N = 2000), the paper's network (conv 16/32/64, FC 64),
  batched 32, one network; the CAMs at the last conv layer and, for the layer's effect, at
  ``act1`` too; integrated gradients with its default step count
  (:data:`~glasscam.analysis.cnn.attribution.IG_STEPS` Gauss–Legendre nodes: 32 forward and
  backward passes per image). Best of a few repeats (the machine is shared: the load average
  is recorded).
* ``readout_ms_per_sample``: the read-out to particles (N = 2000): G⁻¹ of a CAM and the adjoint
  of a two-channel input map.
* ``tiny_all_methods``: ``glasscam gradcam --method all`` (run_attributions, every method at
  act3, the stores written) over the test split of a store of the tiny preset's size (N = 200,
  12 x 12 grid, 64 samples: 8 test pairs = 16 images) with an ensemble of 3 networks, as the
  tiny preset trains them: wall seconds in all and per store (the issue's goal: < 2 minutes on
  2 cores). The networks are trained for one epoch only (the cost does not depend on the
  weights).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import quick, write_result

GRID, CHANNELS, BATCH, NATOMS = 64, 2, 32, 2000


def _best(fn, repeats: int = 3) -> float:
    return min(fn() for _ in range(repeats))


def main() -> dict[str, Any]:
    import torch
    from glasscam.analysis.cnn import attribution as attr
    from glasscam.analysis.cnn.network import CNNConfig, GlassCNN, tune_host_allocator

    threads = min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    tune_host_allocator()
    load_before = os.getloadavg()
    grid, batch, repeats = (16, 8, 2) if quick() else (GRID, BATCH, 3)
    result: dict[str, Any] = {
        "input": f"{CHANNELS}x{grid}x{grid}", "batch_size": batch, "threads": threads,
        "torch": str(torch.__version__), "ig_steps": attr.IG_STEPS,
        "ig_baseline": attr.IG_BASELINE,
    }
    torch.manual_seed(0)
    model = GlassCNN(CNNConfig(channels=CHANNELS, grid=grid, input_mean=(0.5, 0.27),
                               input_std=(0.45, 0.3))).eval()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.poisson(0.5, (batch, CHANNELS, grid, grid)).astype(np.float32))

    def timed(name: str, layer: str | None) -> float:
        def once() -> float:
            t0 = time.perf_counter()
            attr.attribute(model, x, name, layer=layer)
            return (time.perf_counter() - t0) / batch

        once()  # warm-up
        return 1e3 * _best(once, repeats)

    per_method: dict[str, float] = {}
    for name, spec in attr.METHODS.items():
        per_method[name] = timed(name, "act3" if spec.is_cam else None)
        print(f"{name}: {per_method[name]:.2f} ms/sample", flush=True)
    for name in ("gradcam", "hirescam"):
        per_method[f"{name} act1"] = timed(name, "act1")
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        per_method["inference (forward only)"] = 1e3 * (time.perf_counter() - t0) / batch
    result["per_method_ms_per_sample"] = {k: round(v, 3) for k, v in per_method.items()}

    box = np.array([np.sqrt(NATOMS / 1.2)] * 2)
    pos = rng.random((NATOMS, 2)) * box
    types = (rng.random(NATOMS) < 0.35).astype(np.int8)
    cam = rng.random((GRID, GRID))
    amap = rng.normal(size=(CHANNELS, GRID, GRID))

    def readout(a) -> float:
        t0 = time.perf_counter()
        for _ in range(20):
            attr.particle_attribution(a, pos, types, box)
        return (time.perf_counter() - t0) / 20

    result["readout_ms_per_sample"] = {"cam (G^-1)": round(1e3 * _best(lambda: readout(cam)), 3),
                                       "input map (adjoint, 2 channels)":
                                           round(1e3 * _best(lambda: readout(amap)), 3)}
    result["tiny_all_methods"] = _tiny(threads)
    result["loadavg_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    write_result("attribution", result)
    return result


def _tiny(threads: int) -> dict[str, Any]:
    """Every method over the test split of a tiny-preset-sized store (3 networks)."""
    from glasscam.analysis.cnn.gradcam import run_attributions
    from glasscam.analysis.cnn.train import TrainConfig, train_ensemble

    from glasscam.testing import synthetic_samples_store

    nsamples = 16 if quick() else 64
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synthetic_samples_store(folder / "samples.zarr", nsamples=nsamples, natoms=200,
                                grid=12, seed=1)
        train_ensemble(folder / "samples.zarr", folder / "model", 3,
                       TrainConfig(epochs=1, batch_size=16, seed=0, threads=threads,
                                   standardize=True, augment=True))
        t0 = time.perf_counter()
        summaries = run_attributions(folder / "samples.zarr", folder / "model",
                                     folder / "gradcam.zarr", methods="all", batch_size=64,
                                     device="cpu", echo=lambda s: None)
        wall = time.perf_counter() - t0
    return {
        "store": f"N = 200, 12 x 12 x 2, {nsamples} samples, test split, 3 networks",
        "images": int(summaries[0]["items"]),
        "wall_s_all_methods": round(wall, 2),
        "goal_s": 120,
        "per_store": {s["method"]: {"wall_s": round(s["wall_s"], 3),
                                    "ms_per_image": round(s["gradcam_ms_per_sample"], 2)}
                      for s in summaries},
    }


if __name__ == "__main__":
    main()
