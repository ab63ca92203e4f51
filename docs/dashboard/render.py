"""Draws the Grafana dashboard (k8s/grafana-dashboard.json) from a Prometheus server, without
Grafana: every panel's PromQL queries are evaluated by that Prometheus (HTTP API
`/api/v1/query_range`, `$model` = All) and plotted with matplotlib at the panel's place in the
dashboard's own 24-column grid, with its title, legend format, unit and right-axis override.
A query with no result is drawn as Grafana draws it: "No data".

    python docs/dashboard/render.py --prometheus http://127.0.0.1:9090 --start 1700000000 \\
        --end 1700000900 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "grafana-dashboard.json"
GRID_COLUMNS, ROW_PX, WIDTH_PX, DPI = 24, 30, 1800, 100  # Grafana: 24 columns, 30 px per grid row
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"  # Grafana's dark theme
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ff780a", "#96d98d",
          "#fade2a", "#ca95e5", "#ffa6b0"]


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=60) as reply:
        body = json.load(reply)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or str(labels)


def formatter(unit: str) -> FuncFormatter:
    def short(v: float) -> str:
        for size, suffix in ((1e9, " B"), (1e6, " Mil"), (1e3, " K")):
            if abs(v) >= size:
                return f"{v / size:.3g}{suffix}"
        return f"{v:.3g}"

    def seconds(v: float) -> str:
        return f"{v * 1000:.3g} ms" if abs(v) < 1 and v else f"{v:.3g} s"

    by_unit = {"percentunit": lambda v: f"{v * 100:.3g}%", "reqps": lambda v: f"{short(v)} req/s", "s": seconds}
    fmt = by_unit.get(unit, short)
    return FuncFormatter(lambda v, _: fmt(v))


def panel_unit(panel: dict, ref_id: str) -> tuple[str, bool]:
    """(unit, on the right axis) of one query, after the panel's per-query overrides."""
    unit, right = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"), False
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"] == {"id": "byFrameRefID", "options": ref_id}:
            for prop in override["properties"]:
                unit = prop["value"] if prop["id"] == "unit" else unit
                right = right or (prop["id"] == "custom.axisPlacement" and prop["value"] == "right")
    return unit, right


def style(ax, unit: str) -> None:
    ax.set_facecolor(PANEL)
    ax.tick_params(colors=TEXT, labelsize=8)
    ax.grid(color=GRID, linewidth=0.6)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.yaxis.set_major_formatter(formatter(unit))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))


def draw_panel(fig, panel: dict, prometheus: str, start: float, end: float, step: float, height_rows: int) -> None:
    pos = panel["gridPos"]
    fig_h = height_rows * ROW_PX
    # [left, bottom, width, height] in figure fractions; inner margins leave room for title and legend
    left, width = pos["x"] / GRID_COLUMNS, pos["w"] / GRID_COLUMNS
    top = 1 - pos["y"] * ROW_PX / fig_h
    height = pos["h"] * ROW_PX / fig_h
    fig.patches.append(plt.Rectangle((left + 0.002, top - height + 0.002), width - 0.004, height - 0.004,
                                     transform=fig.transFigure, color=PANEL, zorder=0))
    fig.text(left + 0.008, top - 0.012, panel["title"], color=TEXT, fontsize=10, fontweight="bold", va="top")
    ax = fig.add_axes([left + 0.045 * 12 / pos["w"], top - height + 0.045 * 8 / pos["h"],
                       width - 0.08 * 12 / pos["w"], height - 0.075 * 8 / pos["h"]])
    ax.set_zorder(1)  # above the panel's background
    style(ax, panel_unit(panel, "A")[0])
    right_ax, lines, color = None, [], 0
    for target in panel["targets"]:
        unit, right = panel_unit(panel, target["refId"])
        axis = ax
        if right:
            right_ax = right_ax or ax.twinx()
            style(right_ax, unit)
            axis = right_ax
        expr = target["expr"].replace("$model", ".*")
        for series in query_range(prometheus, expr, start, end, step):
            points = [(datetime.fromtimestamp(t), float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf")]
            if not points:
                continue
            times, values = zip(*points)
            lines += axis.plot(times, values, color=COLORS[color % len(COLORS)], linewidth=1.4,
                               label=legend(target.get("legendFormat", ""), series["metric"]))
            color += 1
    ax.set_xlim(datetime.fromtimestamp(start), datetime.fromtimestamp(end))
    if not lines:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", fontsize=12, transform=ax.transAxes)
        return
    ax.set_ylim(bottom=0)
    if right_ax is not None:
        right_ax.set_ylim(bottom=0)
    ax.legend(handles=lines, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(len(lines), 4),
              fontsize=7.5, frameon=False, labelcolor=TEXT, handlelength=1.2, columnspacing=1.2)


def render(dashboard: dict, prometheus: str, start: float, end: float, step: float, out: Path) -> None:
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    header = 2  # grid rows for the dashboard's title line
    fig = plt.figure(figsize=(WIDTH_PX / DPI, (rows + header) * ROW_PX / DPI), dpi=DPI, facecolor=BACKGROUND)
    span = f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M} to {datetime.fromtimestamp(end):%H:%M}"
    fig.text(0.01, 1 - 0.6 * ROW_PX / ((rows + header) * ROW_PX), dashboard["title"], color=TEXT, fontsize=14,
             fontweight="bold", va="top")
    fig.text(0.99, 1 - 0.6 * ROW_PX / ((rows + header) * ROW_PX),
             f"{span} · model = All · each panel's queries evaluated by Prometheus, drawn by docs/dashboard/render.py",
             color=TEXT, fontsize=9, ha="right", va="top")
    for panel in dashboard["panels"]:
        shifted = {**panel, "gridPos": {**panel["gridPos"], "y": panel["gridPos"]["y"] + header}}
        draw_panel(fig, shifted, prometheus, start, end, step, rows + header)
    fig.savefig(out, dpi=DPI, facecolor=BACKGROUND)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--start", type=float, required=True, help="unix seconds")
    parser.add_argument("--end", type=float, required=True, help="unix seconds")
    parser.add_argument("--step", type=float, default=10.0, help="seconds between points")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "dashboard.png")
    args = parser.parse_args()
    render(json.loads(args.dashboard.read_text()), args.prometheus, args.start, args.end, args.step, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
