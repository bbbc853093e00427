"""The any-size head against the paper's dense head, on one samples store (issue 13).

    python -m benchmarks.compare_heads --samples runs/laptop/samples.zarr \
        --fc runs/laptop/model/member0 --fc2 runs/laptop/model/member1 \
        --out runs/heads --results docs/results/heads

Trains a "gap" network with the training configuration of the ``--fc`` network (resumable,
into OUT/model_gap), then on the test split of both classes: test accuracy of each, and the
agreement of their Γ — Pearson of the bare Γ and of Γ coarse-grained at the paper's structural
ξ, per sample, mean and range — beside the agreement of two dense networks that differ only in
their seed (``--fc2``), the yardstick of how much two equally good networks agree.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def gammas(model_dir: Path, samples: Path, cls: str, index: np.ndarray, xi: float):
    import zarr
    from glasscam.analysis.apply.explain import load_model
    from glasscam.analysis.correlate.coarse_grain import coarse_grain

    model = load_model(model_dir)
    root = zarr.open_group(str(samples), mode="r")
    raw, cg, p = [], [], []
    for i in index.tolist():
        pos = np.asarray(root[f"{cls}/positions"][i])
        box = np.asarray(root[f"{cls}/box"][i])
        r = model.explain(pos, np.asarray(root[f"{cls}/types"][i]), box, xi=xi)
        raw.append(r.gamma.astype(np.float64))
        cg.append(coarse_grain(r.gamma.astype(np.float64), pos.astype(np.float64), box, xi))
        p.append(r.p_glass)
    return raw, cg, np.asarray(p)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def main(argv: list[str] | None = None) -> int:
    from dataclasses import replace

    import zarr
    from glasscam.analysis.cnn.network import CNNConfig
    from glasscam.analysis.cnn.train import TrainConfig, load_checkpoint, train
    from glasscam.analysis.paper import PAPER
    from glasscam.insitu.schema import SPLITS, done_samples

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=Path, required=True)
    ap.add_argument("--fc", type=Path, required=True)
    ap.add_argument("--fc2", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args(argv)

    ckpt = load_checkpoint(args.fc)
    cfg = CNNConfig.from_dict({**ckpt["model_config"], "head": "gap"})
    tcfg = TrainConfig(**{k: v for k, v in ckpt["train_config"].items()
                          if k in TrainConfig.__dataclass_fields__})
    tcfg = replace(tcfg, device="cpu")
    gap_dir = args.out / "model_gap"
    t0 = time.perf_counter()
    gap_metrics = train(args.samples, gap_dir, tcfg, cfg)
    train_s = time.perf_counter() - t0
    fc_metrics = json.loads((args.fc / "metrics.json").read_text())

    root = zarr.open_group(str(args.samples), mode="r")
    params = dict(root.attrs["parameters"])
    system = params.get("model", "kam")
    xi = float(PAPER["xi"][system]["structural"])
    test = np.flatnonzero(done_samples(root) & (np.asarray(root["split"][:]) == SPLITS["test"]))
    rows = {}
    for cls in ("liquid", "glass"):
        fc_raw, fc_cg, fc_p = gammas(args.fc, args.samples, cls, test, xi)
        gap_raw, gap_cg, gap_p = gammas(gap_dir, args.samples, cls, test, xi)
        row = {
            "samples": len(test),
            "pearson_raw_gap_fc": [pearson(a, b) for a, b in zip(gap_raw, fc_raw, strict=True)],
            "pearson_cg_gap_fc": [pearson(a, b) for a, b in zip(gap_cg, fc_cg, strict=True)],
            "p_glass_fc_mean": float(fc_p.mean()), "p_glass_gap_mean": float(gap_p.mean()),
        }
        if args.fc2:
            f2_raw, f2_cg, _ = gammas(args.fc2, args.samples, cls, test, xi)
            row["pearson_raw_fc2_fc"] = [pearson(a, b) for a, b in
                                         zip(f2_raw, fc_raw, strict=True)]
            row["pearson_cg_fc2_fc"] = [pearson(a, b) for a, b in zip(f2_cg, fc_cg, strict=True)]
        for key in [k for k in row if k.startswith("pearson")]:
            v = np.asarray(row[key])
            row[key + "_summary"] = {"mean": float(np.nanmean(v)), "min": float(np.nanmin(v)),
                                     "max": float(np.nanmax(v))}
        rows[cls] = row
    result = {
        "command": "python -m benchmarks.compare_heads " + " ".join(
            str(a) for a in (argv if argv is not None else __import__("sys").argv[1:])),
        "samples": str(args.samples), "system": system, "xi": xi,
        "train_config": ckpt["train_config"],
        "test_accuracy": {"fc": fc_metrics["test"]["accuracy"],
                          "gap": gap_metrics["test"]["accuracy"]},
        "gap_train_wall_s": train_s,
        "gamma_agreement": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "heads.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "gamma_agreement"}, indent=2))
    for cls, row in rows.items():
        print(cls, {k: v for k, v in row.items() if k.endswith("summary")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
