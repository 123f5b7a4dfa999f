"""Figures for the static site, drawn with matplotlib and inlined as SVG.

matplotlib (already a dependency) gives real axes: ticks with units, log scales where values span
decades, a legend instead of labels that overlap, and text kept as SVG ``<text>`` (readable,
searchable, escaped by matplotlib's XML writer). The SVG is inlined into the page, so the site
stays one folder of static files with no JavaScript library and nothing fetched from a CDN.
Output is deterministic (fixed hash salt, no date), so a rebuilt site only changes where the
numbers do.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import numpy as np


@dataclass
class Point:
    label: str
    x: float
    y: float
    y_err: float = float("nan")
    reference: bool = False  # an oracle or other non-method reference: drawn hollow


def pareto_front(points: list[Point], higher_is_better: bool) -> list[Point]:
    """Points no other point beats on both cost (x, lower is better) and the metric (y)."""
    good = [p for p in points if not p.reference and math.isfinite(p.x) and math.isfinite(p.y)]
    front = []
    for p in sorted(good, key=lambda q: (q.x, -q.y if higher_is_better else q.y)):
        if not front or (p.y > front[-1].y if higher_is_better else p.y < front[-1].y):
            front.append(p)
    return front


def literal(text: str) -> str:
    """``text`` as matplotlib draws it verbatim: a "$" escaped, so a name such as "a$b$c" is
    not read as mathtext (matplotlib's own tick labels keep their mathtext)."""
    return text.replace("$", r"\$")


def tradeoff_svg(
    points: list[Point],
    x_label: str,
    y_label: str,
    higher_is_better: bool,
    title: str = "",
) -> str:
    """A headline-metric-vs-compute scatter: one marker per strategy (legend), error bars of
    the standard deviation over seeds, the Pareto front as a line; log x when the compute
    spans more than a decade."""
    import matplotlib
    from matplotlib.figure import Figure

    pts = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
    if not pts:
        return ""
    xs = np.array([p.x for p in pts])
    log_x = bool(xs.min() > 0 and xs.max() / xs.min() > 10)
    # mathtext stays on for matplotlib's own tick labels (10^1 on a log axis); names are drawn
    # as literal text through literal()
    rc = {"svg.fonttype": "none", "svg.hashsalt": "cladapt", "font.size": 9}
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(7.2, 3.6), layout="constrained")
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["tab20" if len(pts) > 10 else "tab10"]
        markers = "osD^v<>pPX*h"
        handles, labels = [], []
        for i, p in enumerate(pts):
            colour = cmap(i % cmap.N)
            handle = ax.errorbar(
                p.x,
                p.y,
                yerr=p.y_err if math.isfinite(p.y_err) else None,
                marker=markers[i % len(markers)],
                markersize=7,
                color=colour,
                markerfacecolor="none" if p.reference else colour,
                linestyle="none",
                capsize=3,
            )
            handles.append(handle)
            labels.append(literal(p.label + (" (reference)" if p.reference else "")))
        front = pareto_front(pts, higher_is_better)
        if len(front) > 1:
            (line,) = ax.step(
                [p.x for p in front],
                [p.y for p in front],
                where="post",
                color="#444",
                linewidth=1,
                linestyle="--",
                zorder=0,
            )
            handles.append(line)
            labels.append("Pareto front")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(literal(x_label + (" (log scale)" if log_x else "")))
        ax.set_ylabel(literal(y_label))
        ax.grid(True, which="major", alpha=0.3)
        if title:
            ax.set_title(literal(title))
        # handles and labels given explicitly: a name starting with "_" (which matplotlib's
        # automatic legend leaves out) is listed like any other
        ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: it is inlined in HTML
    # matplotlib keeps each mathtext source as a comment ("$\mathdefault{10^{1}}$"): the page
    # needs only what is drawn
    return re.sub(r"<!--.*?-->\s*", "", svg, flags=re.S)
