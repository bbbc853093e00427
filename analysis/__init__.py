"""glasscam.analysis — offline analysis of the stores written in situ, grouped by the paper's
concepts:

``cnn``        the liquid/glass network, its data pipeline, training and Grad-CAM (§3.1–3.2)
``structure``  Voronoi volume ϒ, Tong–Tanaka order parameter Θ, g(r) (§3.3–3.4)
``dynamics``   dynamic propensity Δ and δ read back from the isoconfigurational stores (§3.5)
``correlate``  coarse-graining, spatial correlations C_X(r), ξ, Pearson/Spearman (§3.6)
``report``     figures, tables beside the paper's values, exports
``pipeline``   presets and `glasscam run`
``cli``        the `glasscam` command line
``stage``      the base of every per-sample analysis stage (iteration, resume, backends)
``paper``      the paper's reference numbers and the shared constants (1/e, δ targets)
"""
