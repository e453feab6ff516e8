#!/usr/bin/env python3
"""Draws the chart's Grafana dashboard as a PNG from real Prometheus data (no Grafana is installable here).

Reads charts/millrace/dashboards/millrace.json, runs every panel's PromQL against a Prometheus over a time
window with the dashboard's own variables filled in ($job, $__rate_interval), and lays the panels out by their
gridPos, so the picture shows exactly what the shipped queries return. It is not a Grafana screenshot:
styling is matplotlib's, the data and queries are the dashboard's.

    dashboard-picture.py --prometheus 127.0.0.1:19090 --job millrace-demo --start 1700000000 --end 1700000120 \
        --out docs/dashboard.png

Exits 1 when a query fails; panels whose queries return nothing are listed on stderr and drawn empty. Series that
stay at zero are drawn but left out of the legend.
"""
import argparse
import json
import re
import sys
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

UNITS = {"rps": "/s", "s": "s", "short": "", "ops": "ops/s", "none": ""}


def query(prom, path, params):
    url = f"http://{prom}/api/v1/{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params.get('query')}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(metric.items())) or "value"
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)
    return re.sub(r"\s+", " ", text).strip() or "value"


def short(text, n=46):
    # digests and long labels stay readable in a legend
    text = re.sub(r"sha256:([0-9a-f]{12})[0-9a-f]+", r"sha256:\1…", text)
    return text if len(text) <= n else text[: n - 1] + "…"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", default="charts/millrace/dashboards/millrace.json")
    ap.add_argument("--job", required=True, help="value for the dashboard's $job variable (a regex)")
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--step", default="1s")
    ap.add_argument("--rate-interval", default="5s", help="value for $__rate_interval")
    ap.add_argument("--out", required=True)
    ap.add_argument("--subtitle", default="")
    a = ap.parse_args()

    dash = json.load(open(a.dashboard))
    panels = [p for p in dash["panels"] if p.get("type") in ("timeseries", "table", "stat")]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    plt.style.use("dark_background")
    height = rows * 0.42 + 1.6
    fig = plt.figure(figsize=(20, height), facecolor="#111217")
    gs = fig.add_gridspec(rows, 24, hspace=2.2, wspace=3.5, top=1 - 1.3 / height, bottom=0.02, left=0.04,
                          right=0.99)
    title = f"{dash['title']} dashboard ({a.dashboard}), drawn from Prometheus data by scripts/dashboard-picture.py"
    fig.suptitle(title + (f"\n{a.subtitle}" if a.subtitle else ""), fontsize=13, color="#d8d9da", y=1 - 0.25 / height)
    empty = []
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(gs[g["y"]: g["y"] + g["h"] - 1, g["x"]: g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        ax.set_title(p["title"], loc="left", fontsize=11, color="#d8d9da")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        any_data = False
        if p["type"] == "table":
            cells = []
            cols = None
            for t in p.get("targets", []):
                expr = t["expr"].replace("$job", a.job).replace("$__rate_interval", a.rate_interval)
                for s in query(a.prometheus, "query", {"query": expr, "time": a.end}):
                    cols = cols or sorted(s["metric"])
                    cells.append([short(s["metric"].get(c, ""), 60) for c in cols] + [s["value"][1]])
            ax.axis("off")
            if cells:
                any_data = True
                tab = ax.table(cellText=cells, colLabels=cols + ["value"], loc="upper left", cellLoc="left")
                tab.auto_set_font_size(False)
                tab.set_fontsize(9)
                for cell in tab.get_celld().values():
                    cell.set_facecolor("#181b1f")
                    cell.set_edgecolor("#333")
                    cell.get_text().set_color("#d8d9da")
        else:
            zeros = 0
            for t in p.get("targets", []):
                expr = t["expr"].replace("$job", a.job).replace("$__rate_interval", a.rate_interval)
                res = query(a.prometheus, "query_range",
                            {"query": expr, "start": a.start, "end": a.end, "step": a.step})
                for s in res:
                    pts = [(datetime.fromtimestamp(float(ts), tz=timezone.utc), float(v)) for ts, v in s["values"]
                           if v not in ("NaN", "+Inf", "-Inf")]
                    if not pts:
                        continue
                    any_data = True
                    xs, ys = zip(*pts)
                    label = short(legend(t.get("legendFormat", ""), s["metric"]))
                    if not any(ys):
                        # drawn, but kept out of the legend (Grafana's "hide series with only zeros")
                        zeros += 1
                        label = "_" + label
                    ax.plot(xs, ys, linewidth=1.4, label=label)
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
            ax.tick_params(labelsize=8, colors="#9fa7b3")
            ax.grid(color="#2a2d33", linewidth=0.6)
            ax.set_ylabel(UNITS.get(unit, unit), fontsize=8, color="#9fa7b3")
            if zeros:
                ax.plot([], [], " ", label=f"(+{zeros} series at 0)")
            if any_data:
                ax.legend(fontsize=7, loc="upper left", framealpha=0.4, ncol=2 if g["w"] >= 12 else 1)
        if not any_data:
            empty.append(p["title"])
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center", color="#6e7079")
    fig.savefig(a.out, dpi=72, facecolor=fig.get_facecolor())
    print(f"wrote {a.out}: {len(panels)} panels, {len(panels) - len(empty)} with data", file=sys.stderr)
    for t in empty:
        print(f"  no data in the window: {t}", file=sys.stderr)


if __name__ == "__main__":
    main()
