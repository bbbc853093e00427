"""Figures (one plotting module), the HTML report beside the paper's values, exports."""
