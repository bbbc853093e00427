"""`glasscam run` orchestration: presets, run-folder ownership, deck-variable checks."""

from __future__ import annotations

import json

import pytest
from glasscam.analysis.pipeline.presets import PresetError, load_preset
from glasscam.analysis.pipeline.runner import (
    RunFolderError,
    claim_run_folder,
    deck_variables,
    lammps_argv,
)


def write(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return str(path)


def test_per_system_values_are_resolved(tmp_path):
    text = '[run]\nsystem = "abm"\n[propensity]\ntemperatures = {kam = [0.4], abm = [1.1]}\n'
    p = load_preset(write(tmp_path, text))
    assert p["run"]["system"] == "abm"
    assert p["propensity"]["temperatures"] == [1.1]
    assert load_preset(str(tmp_path / "p.toml"), "kam")["propensity"]["temperatures"] == [0.4]


def test_unknown_table_and_key_are_named(tmp_path):
    with pytest.raises(PresetError, match=r"unknown table\(s\) \['trian'\]"):
        load_preset(write(tmp_path, "[trian]\nepochs = 3\n"))
    with pytest.raises(PresetError, match=r"p.toml: \[train\] key 'epoch' is not an option of "
                       r"glasscam train \(options: .*epochs"):
        load_preset(write(tmp_path, "[train]\nepoch = 3\n"))
    with pytest.raises(PresetError, match=r"p.toml: \[gradcam\] keys 'a', 'b' are not options"):
        load_preset(write(tmp_path, "[gradcam]\nb = 1\na = 2\n"))
    with pytest.raises(PresetError, match=r"p.toml: \[run\] key 'npp' is not a setting of \[run\]"):
        load_preset(write(tmp_path, "[run]\nnpp = 3\n"))
    with pytest.raises(PresetError, match="system"):
        load_preset(write(tmp_path, '[run]\nsystem = "lj"\n'))
    with pytest.raises(PresetError, match="no preset 'nope'"):
        load_preset("nope")


def test_run_folder_of_another_system_is_refused(tmp_path):
    kam = {"run": {"system": "kam", "preset": "tiny"}}
    abm = {"run": {"system": "abm", "preset": "tiny"}}
    claim_run_folder(tmp_path / "r", kam)
    claim_run_folder(tmp_path / "r", kam)  # same system again: fine (resume)
    with pytest.raises(RunFolderError, match="system 'kam'"):
        claim_run_folder(tmp_path / "r", abm)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["system"] == "kam"


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "x" / "samples.zarr").mkdir(parents=True)
    with pytest.raises(RunFolderError, match="no run.json"):
        claim_run_folder(tmp_path / "x", {"run": {"system": "kam", "preset": "tiny"}})


def test_lammps_argv_partitions(tmp_path):
    deck = tmp_path / "d.in"
    deck.write_text("variable natoms index 2000\nvariable out index x.zarr\nvariable t equal 1\n")
    assert deck_variables(deck) == {"natoms", "out"}
    argv = lammps_argv(deck, {"natoms": 10}, np=4, partitions=2)
    assert argv[1:3] == ["-np", "4"]
    assert argv[argv.index("-partition") + 1] == "2x2"
    assert argv[-2:] == ["natoms", "10"]
    with pytest.raises(PresetError, match="multiple"):
        lammps_argv(deck, {}, np=3, partitions=2)
