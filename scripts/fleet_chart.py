#!/usr/bin/env python3
"""Prints the fleet benchmark's table as Markdown and writes docs/fleet.svg.

    python3 scripts/fleet_chart.py [target/fleet-report.json] [docs/fleet.svg]

Reads the JSON that `fleet_report` in tests/fleet.rs writes (run it with
scripts/fleet_report.sh). Only the Python standard library.
"""

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLOURS = ["#1f77b4", "#d62728"]


def table(report):
    lines = [
        "| processes | token requests per lifetime, sharing through Redis | each on its own "
        "| first token through Redis, median (max) | through the IdP, median (max) |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        redis, idp = row["redis_first_ms"], row["idp_first_ms"]
        lines.append(
            f"| {row['processes']} | {row['shared_per_lifetime']:.2f} | {row['alone_per_lifetime']:.2f} "
            f"| {redis[0]:.1f} ms ({redis[1]:.1f} ms) | {idp[0]:.1f} ms ({idp[1]:.1f} ms) |"
        )
    return "\n".join(lines)


def chart(report):
    rows = report["rows"]
    width, height = 640, 400
    left, right, top, bottom = 70, 170, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    sizes = [row["processes"] for row in rows]
    values = [v for row in rows for v in (row["shared_per_lifetime"], row["alone_per_lifetime"])]
    # Log scales on both axes: powers of two from 1 up past the largest value.
    y_top = 2 ** math.ceil(math.log2(max(values + [2])))
    x_lo, x_hi = math.log2(min(sizes)), math.log2(max(sizes))

    def x(n):
        return left + (math.log2(n) - x_lo) / (x_hi - x_lo or 1) * plot_w

    def y(v):
        return top + plot_h - math.log2(max(v, 1)) / math.log2(y_top) * plot_h

    lifetime = report["token_lifetime"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">Identity-provider token requests per '
        f"token lifetime ({lifetime} s tokens)</text>",
    ]
    tick = 1
    while tick <= y_top:
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>')
        tick *= 2
    for n in sizes:
        out.append(f'<text x="{x(n):.1f}" y="{top + plot_h + 20}" text-anchor="middle">{n}</text>')
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 15}" text-anchor="middle">'
        "processes in the fleet (log scale)</text>"
    )
    series = {
        "sharing through Redis": [(r["processes"], r["shared_per_lifetime"]) for r in rows],
        "each on its own": [(r["processes"], r["alone_per_lifetime"]) for r in rows],
    }
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for n, v in points:
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        legend_y = top + 20 * i
        out.append(
            f'<rect x="{left + plot_w + 10}" y="{legend_y + 16}" width="12" height="3" fill="{colour}"/>'
        )
        out.append(f'<text x="{left + plot_w + 28}" y="{legend_y + 22}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "fleet-report.json"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "fleet.svg"
    if not source.exists():
        sys.exit(f"no {source}: run scripts/fleet_report.sh first")
    report = json.loads(source.read_text())
    print(f"{report['seconds']:g} s per run, {report['token_lifetime']} s tokens\n")
    print(table(report))
    target.write_text(chart(report))
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
