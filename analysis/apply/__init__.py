"""A trained model applied to a user's own configurations (``glasscam apply`` and the Python
API ``glasscam.load_model`` / ``glasscam.read_configuration`` / ``glasscam.open_run``).

* :mod:`.read`: LAMMPS data and dump files (through LAMMPS itself) and extended XYZ (ASE);
* :mod:`.explain`: :class:`~.explain.TrainedModel` — checks a configuration against the
  training data (density, composition, pixel size), then P(glass), Grad-CAM, Γ;
* :mod:`.files`: every frame of a file into a resumable Zarr store, extended XYZ and a dump;
* :mod:`.datasets`: the stores of a run folder as xarray trees.
"""
