"""The LAMMPS decks (``kam/``, ``abm/``) and presets (``presets/*.toml``), shipped as package
data of ``glasscam.inputs``; :mod:`glasscam.decks` finds and copies them."""
