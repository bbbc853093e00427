"""Presets and `glasscam run`: every stage of the workflow in order, resumable."""
