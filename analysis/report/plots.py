"""Every figure glasscam draws, in one module (matplotlib, Agg backend).

Functions take arrays and a destination path ``NAME.png``, and return it; they read no store.
Every figure is written twice: ``NAME.png`` at :data:`DPI` (≥ 150 dpi, recorded in the PNG's
pHYs chunk) for the page, and ``NAME.svg`` (vector, its text kept as text; particle discs of
large configurations are rasterised inside it) for print. The report
(glasscam.analysis.report.html) gathers the data and calls them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import EllipseCollection  # noqa: E402

DPI = 150  # of every PNG; the SVG beside it is vector
#: above this many discs (panels × particles) a map's discs are rasterised inside its SVG, at
#: SVG_RASTER_DPI (the file stays a few MB; axes, labels and colour bar stay vector)
RASTERIZE_ABOVE = 8000
SVG_RASTER_DPI = 300


def vector_path(path: str | Path) -> Path:
    """The SVG written beside a figure's PNG."""
    return Path(path).with_suffix(".svg")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    if path.suffix.lower() != ".svg":
        with plt.rc_context({"svg.fonttype": "none"}):  # text stays text (editable, searchable)
            fig.savefig(vector_path(path), dpi=SVG_RASTER_DPI, bbox_inches="tight")
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
    scale_bar: bool = True,
) -> Path:
    """Figures 1–2: particle maps of several per-particle fields of one configuration.

    Every panel shares the colour scale [0, 1] (fields are coarse-grained and normalised) and
    the periodic box is drawn as its frame; particles are discs of their species' diameter
    (``diameters`` = (σ_A, σ_B), in the units of the positions), and each panel carries a
    scale bar in units of σ_A = 1 (a round length near a fifth of the box).
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
        coll.set_rasterized(n * len(pos) > RASTERIZE_ABOVE)
        coll.set_array(np.asarray(values, dtype=float))
        coll.set_clim(0.0, 1.0)
        ax.add_collection(coll)
        ax.set_xlim(0, lx)
        ax.set_ylim(0, ly)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label)
        if scale_bar:
            _scale_bar(ax, lx)
        mappable = coll
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, label="normalised value")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _scale_bar(ax, lx: float) -> None:
    """A white-backed bar of a round length (1, 2 or 5 × 10^k σ) near lx / 5, lower left."""
    from matplotlib.offsetbox import AnchoredOffsetbox, AuxTransformBox, TextArea, VPacker
    from matplotlib.patches import Rectangle

    raw = lx / 5.0
    k = 10.0 ** np.floor(np.log10(raw))
    length = max((m * k for m in (1, 2, 5) if m * k <= raw), default=k)
    bar = AuxTransformBox(ax.transData)
    bar.add_artist(Rectangle((0, 0), length, 0.012 * lx, fc="k", ec="none"))
    text = TextArea(f"{length:g} σ", textprops={"fontsize": 8})
    box = AnchoredOffsetbox(loc="lower left", child=VPacker(children=[bar, text], align="center",
                                                            pad=0, sep=2),
                            pad=0.3, borderpad=0.4, frameon=True)
    box.patch.set_facecolor("white")
    box.patch.set_alpha(0.8)
    box.patch.set_edgecolor("none")
    ax.add_artist(box)


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
    legend_outside: bool = False,
    distinct_markers: bool = False,
) -> Path:
    """Line plots (Figures 3, 5, 7, 8, S6, S7, training curves).

    ``x`` is one abscissa for all curves or one per curve (same keys as ``ys``); ``hlines``
    draws labelled horizontal reference lines (e.g. 1/e, 0); ``markers`` draws labelled points
    (e.g. the paper's value) as stars; ``references`` draws, for a curve label, a dashed line in
    that curve's colour at a reference value (e.g. the paper's C_max), named in the legend;
    ``bands`` shades (low, high) around a curve (e.g. the spread over configurations) and
    ``null_bands`` hatches, in the curve's colour, (null mean, null 95th percentile).
    ``vlines`` draws labelled vertical dotted lines (e.g. the δ of Fig 1's panels);
    ``legend_outside`` puts the legend right of the axes, where it hides no data;
    ``distinct_markers`` gives every curve its own marker (e.g. one per temperature, Fig 5).
    """
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    marker_cycle = ("o", "s", "^", "D", "v", "P", "X", "*")
    for n_curve, (label, y) in enumerate(ys.items()):
        marker = marker_cycle[n_curve % len(marker_cycle)] if distinct_markers else "o"
        xv = x[label] if isinstance(x, Mapping) else x
        err = None if yerr is None else yerr.get(label)
        if err is not None:
            line = ax.errorbar(xv, y, yerr=err, label=label, capsize=2, marker=marker, ms=3)[0]
        else:
            (line,) = ax.plot(xv, y, label=label,
                              marker=marker if len(np.atleast_1d(y)) < 40 or distinct_markers
                              else None, ms=3 if not distinct_markers else 4)
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
        lo, hi = ax.get_ylim()
        ax.annotate(label, (0.99, value), xycoords=("axes fraction", "data"), ha="right",
                    va="top" if value > hi - 0.1 * (hi - lo) else "bottom", fontsize=8,
                    color="grey")
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
    if (ys or markers) and legend_outside:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif ys or markers:
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
    of indicators. ``data[pair][class]`` holds the per-sample values. As in the paper, dashed
    lines mark the quartiles (25, 50, 75 %); the number of samples n of each violin is written
    under it."""
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
            at = k + (j - 0.5) * width
            part = ax.violinplot([values], positions=[at], widths=width, showextrema=False,
                                 quantiles=[[0.25, 0.5, 0.75]])
            for body in part["bodies"]:
                body.set_facecolor(colours[cls])
                body.set_alpha(0.9)
            part["cquantiles"].set_color("k")
            part["cquantiles"].set_linestyle("--")
            part["cquantiles"].set_linewidth(0.9)
            ax.annotate(f"n={values.size}", (at, -1.0), ha="center", va="bottom", fontsize=7)
    for cls, colour in colours.items():
        ax.bar([np.nan], [np.nan], color=colour, label=cls)
    ax.plot([], [], "k--", lw=0.9, label="quartiles")
    ax.axhline(0, ls="--", lw=0.8, color="grey")
    ax.set_xticks(range(len(pairs)))
    ax.set_xticklabels(pairs)
    ax.set_ylim(-1.08, 1.05)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
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


def image_grid(
    panels: Sequence[tuple[str, np.ndarray]], path: str | Path, title: str = "",
    ncol: int = 4,
) -> Path:
    """Raw maps side by side (attribution methods, issue 16), ``origin='lower'``, each with its
    own colour scale (raw maps differ by orders of magnitude): viridis for a map ≥ 0, a
    diverging scale centred on 0 for a signed one."""
    n = len(panels)
    ncol = max(1, min(ncol, n))
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 3.1 * nrow), squeeze=False)
    for ax, (label, img) in zip(axes.flat, panels, strict=False):
        img = np.asarray(img, dtype=float)
        finite = img[np.isfinite(img)]
        if finite.size and finite.min() < 0:
            vmax = float(np.abs(finite).max()) or 1.0
            im = ax.imshow(img, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        else:
            im = ax.imshow(img, origin="lower", cmap="viridis")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.75)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def pglass_vs_temperature(
    temperatures: np.ndarray,
    p_glass: np.ndarray,
    path: str | Path,
    t_half: float | None = None,
    t_star: float | None = None,
    title: str = "",
) -> Path:
    """The network's glass transition: P(glass) of every sample along its cooling ramp (thin
    grey), their mean (black), 1/2 dashed, the mean curve's crossing of 1/2 and T* dotted.
    ``temperatures`` and ``p_glass`` are [S, R] (one row per sample)."""
    t = np.atleast_2d(np.asarray(temperatures, dtype=float))
    p = np.atleast_2d(np.asarray(p_glass, dtype=float))
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for k in range(p.shape[0]):
        ax.plot(t[k], p[k], color="0.65", lw=0.8, alpha=0.7,
                label="samples" if k == 0 else None)
    ax.plot(t[0], np.nanmean(p, axis=0), color="k", lw=1.8, label="mean")
    ax.axhline(0.5, ls="--", lw=0.8, color="grey")
    if t_half is not None and np.isfinite(t_half):
        ax.axvline(t_half, ls="-", lw=1.0, color="tab:red",
                   label=f"P(glass) = 1/2 at T = {t_half:.3g}")
    if t_star is not None:
        ax.axvline(t_star, ls=":", lw=1.2, color="tab:blue", label=f"T* = {t_star:g}")
    ax.set_xlabel("T (thermostat target along the ramp)")
    ax.set_ylabel("P(glass)")
    ax.set_ylim(-0.03, 1.03)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
