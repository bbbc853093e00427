"""Dynamic propensity Δ and δ read back from isoconfigurational stores (paper §3.5)."""
