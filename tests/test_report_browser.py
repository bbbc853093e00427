"""The report of a small real run folder (tests/small_run.py): rendered in a real headless
browser (Chromium driven by selenium: every image loads, every local link resolves, no console
error), and what issue 15 asks of its content (δ labels, rounding, figure formats, ...).

The browser test skips, naming what is missing, where selenium, chromium or chromedriver is
absent; ``make test`` installs Debian's chromium and chromium-driver when it can (CI does).
"""

from __future__ import annotations

import re
import shutil
import struct
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from small_run import build_small_run

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "chrome")
CHROMEDRIVER = ("chromedriver",)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return build_small_run(tmp_path_factory.mktemp("report") / "run")


# --------------------------------------------------------------------------------------------
# the page as data


class _Page(HTMLParser):
    """Tables (rows of cell texts), img srcs, a hrefs, ids and figure captions of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.captions: list[str] = []
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "figcaption":
            self._caption = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "figcaption" and self._caption is not None:
            self.captions.append("".join(self._caption).strip())
            self._caption = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)


def parse(run: Path) -> _Page:
    page = _Page()
    page.feed((run / "report.html").read_text())
    return page


def svg_text(path: Path) -> str:
    """Every text element of a figure's SVG (its text is written as text), joined."""
    return " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text()))


def caption(page: _Page, start: str) -> str:
    found = [c for c in page.captions if c.startswith(start)]
    assert found, f"no figure caption starting {start!r}"
    return found[0]


# --------------------------------------------------------------------------------------------
# the browser


def _find(names: tuple[str, ...], extra: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return next((p for p in extra if Path(p).is_file()), None)


def _driver():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    chromium = _find(CHROMIUM, ("/usr/bin/chromium", "/usr/lib/chromium/chromium"))
    driver_bin = _find(CHROMEDRIVER, ("/usr/bin/chromedriver",
                                      "/usr/lib/chromium/chromedriver"))
    if chromium is None or driver_bin is None:
        pytest.skip("no headless browser: install chromium and chromedriver (Debian: apt-get "
                    "install chromium chromium-driver; `make test` tries)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--allow-file-access-from-files", "--window-size=1280,2000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    except Exception as err:  # noqa: BLE001 - a browser that cannot start: say why, skip
        pytest.skip(f"chromium/chromedriver could not start: {str(err).splitlines()[0]}")


def test_report_renders_in_a_headless_browser(small_run: Path):
    """The page loads in Chromium with every image decoded (naturalWidth > 0), every local link
    pointing at a file or #anchor that exists, and no error in the console."""
    driver = _driver()
    try:
        report = small_run / "report.html"
        driver.get(report.as_uri())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = driver.execute_script(
                "return document.readyState === 'complete' && "
                "Array.from(document.images).every(i => i.complete)")
            if ready:
                break
            time.sleep(0.2)
        assert driver.title.startswith("glasscam report")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), "
            "i.naturalWidth, i.naturalHeight])")
        assert len(images) >= 10, images
        broken = [src for src, w, h in images if not (w > 0 and h > 0)]
        assert not broken, f"images that did not load: {broken}"
        hrefs = driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href]')).map(a => "
            "[a.getAttribute('href'), a.href])")
        ids = set(driver.execute_script(
            "return Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
        assert hrefs
        for raw, resolved in hrefs:
            url = urlparse(resolved)
            if raw.startswith("#"):
                assert raw[1:] in ids, f"link to a missing anchor {raw}"
            elif url.scheme == "file":
                target = Path(unquote(url.path))
                assert target.is_file(), f"link {raw} -> missing {target}"
                assert small_run in target.parents, f"link {raw} leaves the run folder"
        logs = driver.get_log("browser")
        errors = [e for e in logs if e.get("level") in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"
        # the sections rendered: one h2 per table of contents entry, the caution banner shown
        n_h2 = driver.execute_script("return document.querySelectorAll('h2').length")
        n_toc = driver.execute_script("return document.querySelectorAll('ul a[href^=\"#s\"]')"
                                      ".length")
        assert n_h2 == n_toc >= 8
        banner = driver.find_element("css selector", ".caution")
        assert banner.is_displayed() and "not reached" in banner.text
    finally:
        driver.quit()


# --------------------------------------------------------------------------------------------
# what the page says


def test_a_delta_not_reached_is_never_shown_under_the_targets_name(small_run: Path):
    """Configuration 0 stops at δ = 0.55, configuration 1 reaches 0.85 (standing for δ ≈ 1),
    δ ≈ 0.3 is met at 0.26 and δ ≈ 3 never: every label carries the δ reached."""
    page = parse(small_run)
    figures = small_run / "figures"
    # Fig. 1 (configuration 0): δ ≈ 1 and 3 left out with a note, δ ≈ 0.3 under 0.26
    fig1 = svg_text(next(figures.glob("fig1_maps_sample*.svg")))
    assert "Δ at δ = 0.26" in fig1 and "target 0.3" in fig1
    assert "target 1" not in fig1 and "target 3" not in fig1 and "not reached" not in fig1
    cap1 = caption(page, "Figs. 1–2 analogue")
    assert "Δ at δ ≈ 1, 3 is not shown" in cap1 and "stopped at δ = 0.55" in cap1
    # Fig. 3: each curve under the δ reached, δ ≈ 1 by one configuration of two
    fig3 = svg_text(figures / "fig3_c_delta_T0.6.svg")
    assert "δ = 0.26 (target 0.3)" in fig3
    assert "δ = 0.85 (target 1; 1 of 2 configurations)" in fig3
    assert "largest δ of the run = 0.55–0.85" in fig3
    assert "target 3" not in fig3 and "(reached)" not in fig3
    assert "δ target(s) 3 not reached" in caption(page, "Fig. 3 analogue")
    # Fig. 4 at the largest δ of configuration 0, named as such
    assert "δ = 0.55 (the largest of the run: target 1 not reached)" in caption(
        page, "Fig. 4 analogue")
    # Table 3: the δ its ξ_Δ was measured at, and who did not reach δ ≈ 1
    table3 = next(t for t in page.tables if t[0][:2] == ["T", "variable"])
    how = [r[-1] for r in table3 if r[1].startswith("Delta (bare")]
    assert how and "at δ = 0.55–0.85" in how[0]
    assert "target δ ≈ 1 not reached by 1 of 2 configurations" in how[0]
    # Table 4: configuration 0 skipped, saying why; configuration 1 at δ = 0.85
    table4 = next(t for t in page.tables if "ensemble size" in t[0])
    assert any("skipped" in r[2] and "not reached" in r[2] for r in table4[1:])
    assert {r[4] for r in table4[1:] if "skipped" not in r[2]} == {"0.85"}
    # Figs. 5 and 7: the dotted lines at Fig. 1's δ, not at δ = 1 or 3; Fig. 5 per temperature
    for name in ("fig5_gamma_vs_delta.svg", "fig7_indicators_vs_delta_T0.6.svg"):
        text = svg_text(figures / name)
        assert "Fig. 1: δ = 0.26" in text and "δ = 3" not in text and "δ = 1 " not in text
    assert "T = 0.6" in svg_text(figures / "fig5_gamma_vs_delta.svg")
    # the caution banner names the targets not reached by every configuration
    text = (small_run / "report.html").read_text()
    assert "δ target(s) 1, 3 not reached by every configuration" in text


_DECIMAL = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])")  # not a version 1.2.3


def _significant(number: str) -> int:
    """Significant digits of a decimal written without exponent (trailing zeros count)."""
    return len(number.replace(".", "").lstrip("0"))


def test_every_table_is_rounded_and_accuracy_is_in_percent(small_run: Path):
    page = parse(small_run)
    assert len(page.tables) >= 10
    for table in page.tables:
        for row in table:
            for cell in row:
                if "<code>" in cell or cell.startswith(("glasscam ", "{")):
                    continue
                for number in _DECIMAL.findall(cell):
                    assert _significant(number) <= 3, f"unrounded {number} in {row}"
    table2 = next(t for t in page.tables if t[0] == ["quantity", "this run", "paper"])
    acc = next(r for r in table2 if r[0] == "test accuracy")[1]
    assert re.fullmatch(r"\d+(\.\d)? % \(\d+ of \d+ right\)", acc), acc
    per_class = [r[1] for r in table2 if r[0].startswith("test accuracy (")]
    assert per_class and all(c.endswith(" %") for c in per_class)
    # a value and its CI share the precision the CI width allows (two digits of the width)
    from glasscam.analysis.report.html import _ci, _pm

    assert _ci(0.3916831663, 0.05482616082, 0.7616043084) == ("0.39", "0.05", "0.76")
    assert _ci(0.92408, 0.87870, 0.98781) == ("0.92", "0.88", "0.99")
    assert _pm(-0.1210558617, 0.1998951797) == "-0.12 ± 0.20"
    table5 = next(t for t in page.tables if "C_max (95 % CI)" in t[0])
    col = table5[0].index("C_max (95 % CI)")
    for row in table5[1:]:
        value, ci = row[col].split(" ", 1)
        lo, hi = ci.strip("[]").split(", ")
        if "–" in (lo, hi):  # no CI (two configurations): the value alone, to 3 digits
            continue
        decimals = {len(x.split(".")[1]) if "." in x else 0 for x in (value, lo, hi)}
        assert len(decimals) == 1, row[col]
    # stage times in pipeline order, readable durations
    stages = next(t for t in page.tables if t[0][:2] == ["stage", "wall time"])
    assert [r[0] for r in stages[1:]] == ["quench", "train", "correlate", "report"]
    assert stages[1][1] == "5400 s (90 min)" and stages[3][1] == "61 s"


def test_low_accuracy_and_misclassified_samples_are_shown(tmp_path: Path):
    """A run whose network is below 90 %: the caution banner, and its misclassified samples
    as a table (the rest of the report says what is missing)."""
    import json

    from glasscam.analysis.report.html import build_report

    (tmp_path / "model").mkdir()
    wrong = [{"class": "liquid", "sample": 7, "predicted": "glass", "p_glass": 0.8123456},
             {"class": "glass", "sample": 12, "predicted": "liquid", "p_glass": 0.31}]
    (tmp_path / "model" / "metrics.json").write_text(json.dumps({"test": {
        "n": 10, "accuracy": 0.8, "classes": ["liquid", "glass"],
        "per_class_accuracy": {"liquid": 0.8, "glass": 0.8},
        "confusion_matrix": [[4, 1], [1, 4]], "misclassified": wrong}}))
    page_text = build_report(tmp_path).read_text()
    assert "class='caution'" in page_text and "test accuracy 80.0 % is below 90 %" in page_text
    page = parse(tmp_path)
    table = next(t for t in page.tables if t[0] == ["true class", "sample", "predicted",
                                                    "P(glass)"])
    assert table[1:] == [["liquid", "7", "glass", "0.812"], ["glass", "12", "liquid", "0.31"]]
    table2 = next(t for t in page.tables if t[0] == ["quantity", "this run", "paper"])
    assert table2[1][1] == "80 % (8 of 10 right)"


def _png_dpi(path: Path) -> float:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    at = data.find(b"pHYs")
    assert at > 0, f"{path}: no pHYs chunk"
    x, y, unit = struct.unpack(">IIB", data[at + 4:at + 13])
    assert unit == 1 and x == y  # pixels per metre
    return x * 0.0254


def test_figures_are_svg_and_png_at_150_dpi_and_the_page_links_both(small_run: Path):
    page = parse(small_run)
    pngs = [s for s in page.imgs if s.endswith(".png")]
    assert len(pngs) >= 10 and len(pngs) == len(page.imgs)
    for src in pngs:
        png = small_run / src
        assert _png_dpi(png) >= 149.9, src
        svg = png.with_suffix(".svg")
        assert svg.is_file() and svg.read_text().lstrip().startswith(("<?xml", "<svg")), svg
        assert src[:-4] + ".svg" in page.links, f"the page does not link {svg.name}"
        width = struct.unpack(">I", png.read_bytes()[16:20])[0]
        assert width >= 500, f"{src}: {width} px wide"


def test_figure_content_fig1_fig6_s6_s7(small_run: Path):
    """Fig. 1: discs at the species' diameters and a scale bar; Fig. 6: quartiles and n;
    Fig. S6: the mean over samples with a band; Fig. S7: says total g(r)."""
    page = parse(small_run)
    figures = small_run / "figures"
    fig1 = svg_text(next(figures.glob("fig1_maps_sample*.svg")))
    assert "2 σ" in fig1  # L = 10.3: a 2 σ bar
    assert "σ_A = 1, σ_B = 0.88" in caption(page, "Figs. 1–2 analogue")
    fig6 = svg_text(figures / "fig6_violins.svg")
    assert "quartiles" in fig6 and re.search(r"n=\d+", fig6)
    assert "mean over the 24 samples" in caption(page, "Fig. S6 analogue")
    assert "± one standard deviation" in caption(page, "Fig. S6 analogue")
    assert "total g(r)" in caption(page, "Fig. S7 analogue")
    assert "total g(r)" in svg_text(figures / "figS7_gr.svg")


def test_fig7_legend_sits_outside_the_axes(monkeypatch, tmp_path: Path):
    """legend_outside (Fig. 7): the legend's box does not overlap the axes' box."""
    from glasscam.analysis.report import plots

    captured = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.append(fig) or Path(path))
    x = np.geomspace(0.3, 2, 12)
    ys = {f"indicator {i}": 0.2 + 0.1 * i + 0.3 * np.log(x) for i in range(5)}
    plots.curves({k: x for k in ys}, ys, tmp_path / "f.png", "δ", "C", logx=True,
                 references={k: 0.9 for k in ys}, legend_outside=True)
    fig = captured[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    axes = ax.get_window_extent()
    assert legend.x0 >= axes.x1, (legend, axes)
