"""Every figure glasscam draws, in one module (matplotlib, Agg backend, PNG).

Functions take arrays and a destination path, and return the path; they read no store. The
report (glasscam.analysis.report.html) gathers the data and calls them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import EllipseCollection  # noqa: E402

DPI = 110


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def particle_maps(
    panels: Sequence[tuple[str, np.ndarray]],
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    path: str | Path,
    diameters: tuple[float, float] = (1.0, 0.88),
    title: str = "",
    cmap: str = "coolwarm",
    ncol: int | None = None,
) -> Path:
    """Figures 1–2: particle maps of several per-particle fields of one configuration.

    Every panel shares the colour scale [0, 1] (fields are coarse-grained and normalised) and
    the periodic box is drawn as its frame; particles are discs of their species' diameter.
    """
    n = len(panels)
    ncol = ncol or min(n, 3)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 4.0 * nrow), squeeze=False)
    lx, ly = float(box[0]), float(box[1])
    size = np.where(np.asarray(types) == 0, diameters[0], diameters[1])
    pos = np.mod(np.asarray(positions, dtype=float), [lx, ly])
    mappable = None
    for ax, (label, values) in zip(axes.flat, panels, strict=False):
        coll = EllipseCollection(
            size, size, np.zeros_like(size), units="xy", offsets=pos,
            offset_transform=ax.transData, cmap=cmap, linewidths=0,
        )
        coll.set_array(np.asarray(values, dtype=float))
        coll.set_clim(0.0, 1.0)
        ax.add_collection(coll)
        ax.set_xlim(0, lx)
        ax.set_ylim(0, ly)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label)
        mappable = coll
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, label="normalised value")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def curves(
    x: Mapping[str, np.ndarray] | np.ndarray,
    ys: Mapping[str, np.ndarray],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    yerr: Mapping[str, np.ndarray] | None = None,
    hlines: Mapping[str, float] | None = None,
    logx: bool = False,
    markers: Mapping[str, tuple[float, float]] | None = None,
    references: Mapping[str, float] | None = None,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    null_bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    vlines: Mapping[str, float] | None = None,
) -> Path:
    """Line plots (Figures 3, 5, 7, 8, S6, S7, training curves).

    ``x`` is one abscissa for all curves or one per curve (same keys as ``ys``); ``hlines``
    draws labelled horizontal reference lines (e.g. 1/e, 0); ``markers`` draws labelled points
    (e.g. the paper's value) as stars; ``references`` draws, for a curve label, a dashed line in
    that curve's colour at a reference value (e.g. the paper's C_max), named in the legend;
    ``bands`` shades (low, high) around a curve (e.g. the spread over configurations) and
    ``null_bands`` hatches, in the curve's colour, (null mean, null 95th percentile).
    """
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for label, y in ys.items():
        xv = x[label] if isinstance(x, Mapping) else x
        err = None if yerr is None else yerr.get(label)
        if err is not None:
            line = ax.errorbar(xv, y, yerr=err, label=label, capsize=2, marker="o", ms=3)[0]
        else:
            (line,) = ax.plot(xv, y, label=label,
                              marker="o" if len(np.atleast_1d(y)) < 40 else None, ms=3)
        if bands and label in bands:
            lo, hi = bands[label]
            ax.fill_between(xv, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
        if null_bands and label in null_bands:
            lo, hi = null_bands[label]
            ax.fill_between(xv, lo, hi, facecolor="none", edgecolor=line.get_color(),
                            hatch="///", lw=0.0, alpha=0.6)
        if references and label in references:
            value = references[label]
            ax.axhline(value, ls="--", lw=1.0, color=line.get_color(),
                       label=f"{label}: paper {value:g}")
    for label, value in (hlines or {}).items():
        ax.axhline(value, ls="--", lw=0.8, color="grey")
        ax.annotate(label, (0.99, value), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=8, color="grey")
    for label, value in (vlines or {}).items():
        ax.axvline(value, ls=":", lw=0.8, color="grey")
        ax.annotate(label, (value, 0.01), xycoords=("data", "axes fraction"), ha="left",
                    va="bottom", fontsize=7, color="grey", rotation=90)
    for label, (mx, my) in (markers or {}).items():
        ax.plot([mx], [my], marker="*", ms=11, ls="none", label=label)
    if logx:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 0.3, 1, 3 rather than 3×10⁻¹
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if ys or markers:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def violins(
    data: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    ylabel: str = "Pearson coefficient",
    title: str = "",
) -> Path:
    """Figure 6: per-sample correlation coefficients, one violin pair (glass, liquid) per pair
    of indicators. ``data[pair][class]`` holds the per-sample values."""
    pairs = list(data)
    fig, ax = plt.subplots(figsize=(1.9 * max(len(pairs), 2) + 1, 4.0))
    colours = {"glass": "0.35", "liquid": "0.75"}
    width = 0.38
    for k, pair in enumerate(pairs):
        for j, cls in enumerate(("glass", "liquid")):
            values = np.asarray(data[pair].get(cls, []), dtype=float)
            values = values[np.isfinite(values)]
            if values.size < 2:
                continue
            part = ax.violinplot([values], positions=[k + (j - 0.5) * width], widths=width,
                                 showmeans=True)
            for body in part["bodies"]:
                body.set_facecolor(colours[cls])
                body.set_alpha(0.9)
            for key in ("cbars", "cmins", "cmaxes", "cmeans"):
                part[key].set_color("k")
                part[key].set_linewidth(0.8)
    for cls, colour in colours.items():
        ax.bar([np.nan], [np.nan], color=colour, label=cls)
    ax.axhline(0, ls="--", lw=0.8, color="grey")
    ax.set_xticks(range(len(pairs)))
    ax.set_xticklabels(pairs)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def images(
    panels: Sequence[tuple[str, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """Grid images (gridized inputs, Grad-CAM maps) with ``origin='lower'``."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    for ax, (label, img) in zip(axes.flat, panels, strict=True):
        im = ax.imshow(np.asarray(img), origin="lower", cmap="viridis")
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
