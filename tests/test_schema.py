"""Store schemas (glasscam.insitu.schema) and the sample-store writer (glasscam.insitu.store),
without LAMMPS."""

from __future__ import annotations

import json

import numpy as np
import pytest
from glasscam.insitu import schema
from glasscam.insitu.store import SampleWriter, Snapshot, prepare_samples_store

PARAMS = {
    "model": "kam",
    "nsamples": 7,
    "natoms": 20,
    "seed": 3,
    "grid": 8,
    "channels": 2,
    "ncool": 5,
    "rate": 0.01,
}


def snap(rng, n=20, m=8) -> Snapshot:
    return Snapshot(
        positions=rng.random((n, 2)).astype(np.float32),
        types=(rng.random(n) < 0.5).astype(np.int8),
        box=np.array([1.0, 1.0]),
        image=rng.random((2, m, m)).astype(np.float32),
        potential_energy=float(rng.random()),
        particle_energy=rng.random(n).astype(np.float32),
        temperature=float(rng.random()),
    )


def test_split_is_deterministic_and_has_the_paper_proportions():
    a = schema.split_assignment(5000, 1)
    np.testing.assert_array_equal(a, schema.split_assignment(5000, 1))
    assert np.bincount(a).tolist() == [4000, 400, 600]
    assert not np.array_equal(a, schema.split_assignment(5000, 2))
    small = schema.split_assignment(5, 1)
    assert sorted(set(small.tolist())) == [0, 1, 2]


def test_created_store_has_every_array_of_the_schema(tmp_path):
    path = tmp_path / "s.zarr"
    todo = prepare_samples_store(path, PARAMS)
    assert todo == list(range(7))
    root = schema.open_samples_store(path, expect=PARAMS)
    assert root.attrs["schema"] == schema.SAMPLES_SCHEMA
    assert root.attrs["parameters"]["natoms"] == 20 and "zarr" in root.attrs["versions"]
    sizes = {"S": 7, "N": 20, "D": 2, "C": 2, "M": 8, "Y": 8, "X": 8, "K": 5}
    for cls in schema.CLASSES:
        for spec in schema.SAMPLE_CLASS_ARRAYS:
            arr = root[f"{cls}/{spec.name}"]
            assert arr.dtype == np.dtype(spec.dtype), spec.name
            assert arr.shape == spec.shape(sizes), spec.name
            assert arr.chunks[0] == 1, f"{spec.name}: one sample per chunk"
            assert arr.chunks[1:] == arr.shape[1:], f"{spec.name}: whole sample in one chunk"
    for spec in schema.SAMPLE_COOLING_ARRAYS:
        assert root[f"cooling/{spec.name}"].shape == (7, 5)
    np.testing.assert_array_equal(root["split"][:], schema.split_assignment(7, 3))
    assert not schema.done_samples(root).any()


def test_writer_sets_done_last_and_resume_lists_missing_samples(tmp_path):
    path = tmp_path / "s.zarr"
    prepare_samples_store(path, PARAMS)
    rng = np.random.default_rng(0)
    w = SampleWriter(path)
    cooling = {s.name: np.arange(5.0) for s in schema.SAMPLE_COOLING_ARRAYS}
    snaps = {"liquid": snap(rng), "glass": snap(rng)}
    w.write(2, 12345, snaps, cooling)
    w.write(5, 777, {"liquid": snap(rng), "glass": snap(rng)}, cooling)
    assert prepare_samples_store(path, PARAMS) == [0, 1, 3, 4, 6]
    root = schema.open_samples_store(path)
    np.testing.assert_array_equal(root["glass/positions"][2], snaps["glass"].positions)
    assert root["liquid/seed"][2] == 12345 and root["glass/seed"][5] == 777
    np.testing.assert_array_equal(root["cooling/temperature"][2], np.arange(5.0))
    with pytest.raises(ValueError, match="glass"):
        w.write(3, 1, {"liquid": snap(rng)}, cooling)
    assert not root["liquid/done"][3]


def test_parameter_mismatch_names_the_field_and_leaves_the_store_alone(tmp_path):
    path = tmp_path / "s.zarr"
    prepare_samples_store(path, PARAMS)
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(schema.ParameterMismatchError, match="rate.*0.01.*0.02"):
        prepare_samples_store(path, {**PARAMS, "rate": 0.02})
    mismatch = "model: store has 'kam', run asks 'abm'"
    with pytest.raises(schema.ParameterMismatchError, match=mismatch):
        prepare_samples_store(path, {**PARAMS, "model": "abm"})
    # run-only keys (out path, partitions...) may differ
    prepare_samples_store(path, {**PARAMS, "out": "elsewhere"})
    after = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert before == after


def test_wrong_schema_and_broken_stores_are_named(tmp_path):
    path = tmp_path / "s.zarr"
    prepare_samples_store(path, PARAMS)
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["schema"] = "glasscam.propensity/1"
    meta.write_text(json.dumps(doc))
    with pytest.raises(schema.SchemaError, match="schema"):
        prepare_samples_store(path, PARAMS)

    path2 = tmp_path / "t.zarr"
    prepare_samples_store(path2, PARAMS)
    import shutil

    shutil.rmtree(path2 / "glass" / "image")
    with pytest.raises(schema.SchemaError, match="glass/image"):
        prepare_samples_store(path2, PARAMS)

    notzarr = tmp_path / "plain"
    notzarr.mkdir()
    (notzarr / "data.txt").write_text("x")
    with pytest.raises(schema.SchemaError, match="not a Zarr store"):
        prepare_samples_store(notzarr, PARAMS)


def test_wrong_dtype_is_named(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    prepare_samples_store(path, PARAMS)
    root = zarr.open_group(path, mode="r+")
    del root["liquid/types"]
    root["liquid"].create_array("types", shape=(7, 20), chunks=(1, 20), dtype="int32")
    with pytest.raises(schema.SchemaError, match="liquid/types.*int32"):
        schema.open_samples_store(path)


def test_a_store_of_the_previous_samples_schema_is_read_but_never_written(tmp_path):
    path = tmp_path / "old.zarr"
    root = schema.create_samples_store(path, PARAMS)
    for cls in schema.CLASSES:
        del root[f"{cls}/particle_energy"]
    root.attrs["schema"] = schema.SAMPLES_SCHEMA_V1
    assert "particle_energy" not in schema.open_samples_store(path, mode="r")["glass"]
    with pytest.raises(schema.SchemaError, match="glasscam.samples/1.*no per-particle energy"
                                                 ".*can be read but not resumed"):
        schema.open_samples_store(path, mode="r+")
