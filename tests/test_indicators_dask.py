"""The indicators driver: LocalCluster == serial bit for bit, resumability, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from glasscam.analysis.structure.indicators import (
    IndicatorsInputError,
    compute_sample,
    load_indicators,
    run_indicators,
)
from glasscam.analysis.structure.tong_tanaka import diameters_for
from glasscam.insitu.schema import (
    ParameterMismatchError,
    SchemaError,
    create_samples_store,
    open_indicators_store,
)

N = 144
S = 8


def make_samples(path, nsamples=S, natoms=N, system="kam", not_done=None, seed=0):
    params = {
        "nsamples": nsamples,
        "natoms": natoms,
        "channels": 2,
        "grid": 8,
        "ncool": 1,
        "seed": 3,
        "system": system,
    }
    root = create_samples_store(path, params)
    if not_done is None:  # one training sample left not done
        not_done = (first_train(root),)
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(natoms))
    length = np.sqrt(natoms / 1.2)
    g = (np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2) + 0.5)
    for ci, cls in enumerate(("liquid", "glass")):
        for s in range(nsamples):
            noise = 0.25 if ci == 0 else 0.1
            pos = (g + rng.normal(0, noise, g.shape)) * (length / side)
            root[f"{cls}/positions"][s] = np.mod(pos, length).astype(np.float32)
            root[f"{cls}/types"][s] = (rng.random(natoms) < 0.35).astype(np.int8)
            root[f"{cls}/box"][s] = [length, length]
            root[f"{cls}/done"][s] = s not in not_done
    return path


def first_train(root) -> int:
    return int(np.flatnonzero(np.asarray(root["split"][:]) == 0)[0])


@pytest.fixture
def samples(tmp_path):
    return make_samples(tmp_path / "samples.zarr")


def read_all(path):
    root = zarr.open_group(path, mode="r")
    return {
        f"{cls}/{name}": np.asarray(root[f"{cls}/{name}"][:])
        for cls in ("liquid", "glass")
        for name in ("voronoi", "ttop", "done")
    }


def test_local_cluster_equals_serial_bit_for_bit(samples, tmp_path):
    serial = tmp_path / "serial.zarr"
    cluster = tmp_path / "cluster.zarr"
    run_indicators(samples, serial, scheduler="serial", batch_size=3, echo=lambda s: None)
    info = run_indicators(samples, cluster, workers=2, batch_size=3, echo=lambda s: None)
    assert info["mode"] == "local" and info["samples"] == 2 * (S - 1)
    a, b = read_all(serial), read_all(cluster)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the not-done sample stays not done and NaN
    skip = first_train(zarr.open_group(samples, mode="r"))
    assert not a["glass/done"][skip] and np.isnan(a["glass/voronoi"][skip]).all()
    # and the store holds exactly the kernel's values
    src = zarr.open_group(samples, mode="r")
    vol, theta = compute_sample(
        src["glass/positions"][2], src["glass/types"][2], src["glass/box"][2],
        diameters_for("kam"),
    )
    np.testing.assert_array_equal(a["glass/voronoi"][2], vol)
    np.testing.assert_array_equal(a["glass/ttop"][2], theta)
    assert a["glass/voronoi"][2].sum() == pytest.approx(np.prod(src["glass/box"][2]))
    root = open_indicators_store(serial)
    assert root.attrs["parameters"]["system"] == "kam"
    assert root.attrs["provenance"]["samples"].endswith("samples.zarr")


def test_resume_and_split(samples, tmp_path):
    out = tmp_path / "ind.zarr"
    first = run_indicators(samples, out, scheduler="serial", split="test", echo=lambda s: None)
    split = np.asarray(zarr.open_group(samples, mode="r")["split"][:])
    skip = first_train(zarr.open_group(samples, mode="r"))
    n_test = int((split == 2).sum())
    assert first["samples"] == 2 * n_test
    second = run_indicators(samples, out, scheduler="serial", echo=lambda s: None)
    assert second["samples"] == 2 * (S - 1) - 2 * n_test
    third = run_indicators(samples, out, scheduler="serial", echo=lambda s: None)
    assert third["samples"] == 0 and third["tasks"] == 0
    vor, tt = load_indicators(out, "glass")
    assert vor.shape == (S - 1, N) and tt.shape == (S - 1, N)
    with pytest.raises(SchemaError, match="glass/done"):
        load_indicators(out, "glass", [skip])


def test_resume_with_other_parameters_is_refused(samples, tmp_path):
    out = tmp_path / "ind.zarr"
    run_indicators(samples, out, scheduler="serial", split="val", echo=lambda s: None)
    with pytest.raises(ParameterMismatchError, match="system"):
        run_indicators(samples, out, scheduler="serial", system="abm", echo=lambda s: None)


def test_nan_positions_named(samples, tmp_path):
    root = zarr.open_group(samples, mode="r+")
    pos = np.asarray(root["glass/positions"][3])
    pos[7, 0] = np.nan
    root["glass/positions"][3] = pos
    with pytest.raises(IndicatorsInputError, match=r"samples\.zarr.*glass/positions.*sample 3"):
        run_indicators(samples, tmp_path / "o.zarr", scheduler="serial", echo=lambda s: None)


def test_empty_split_missing_field_missing_system(tmp_path):
    empty = make_samples(tmp_path / "empty.zarr", not_done=range(S))
    with pytest.raises(IndicatorsInputError, match="no done samples"):
        run_indicators(empty, tmp_path / "o1.zarr", scheduler="serial", echo=lambda s: None)
    broken = make_samples(tmp_path / "broken.zarr")
    del zarr.open_group(broken, mode="r+")["glass"]["types"]
    with pytest.raises(SchemaError, match="glass/types"):
        run_indicators(broken, tmp_path / "o2.zarr", scheduler="serial", echo=lambda s: None)
    nosys = make_samples(tmp_path / "nosys.zarr", system=None)
    with pytest.raises(IndicatorsInputError, match="system"):
        run_indicators(nosys, tmp_path / "o3.zarr", scheduler="serial", echo=lambda s: None)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_indicators(tmp_path / "nowhere.zarr", tmp_path / "o4.zarr", echo=lambda s: None)


def test_cli(samples, tmp_path):
    from glasscam.analysis.cli import app
    from typer.testing import CliRunner

    out = tmp_path / "cli.zarr"
    res = CliRunner().invoke(
        app, ["indicators", "--samples", str(samples), "--out", str(out), "--scheduler", "serial"]
    )
    assert res.exit_code == 0, res.output
    assert read_all(out)["liquid/done"].sum() == S - 1
    res = CliRunner().invoke(
        app, ["indicators", "--samples", str(samples), "--out", str(out), "--split", "bogus",
              "--scheduler", "serial"]
    )
    assert res.exit_code == 2 and "bogus" in res.output
