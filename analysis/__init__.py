"""glasscam.analysis — offline, Dask-parallel analysis of the stores written in situ."""
