"""The liquid/glass CNN (paper §3.1), its Zarr data pipeline, training and Grad-CAM (§3.2)."""
