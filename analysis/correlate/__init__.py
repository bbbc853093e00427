"""Coarse-graining, spatial correlations C_X(r), correlation lengths, Pearson/Spearman (§3.6)."""
