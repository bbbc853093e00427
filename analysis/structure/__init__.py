"""Hand-made structural indicators: Voronoi volume ϒ, Tong–Tanaka order parameter Θ, g(r)."""
