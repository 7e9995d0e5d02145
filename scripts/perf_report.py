#!/usr/bin/env python3
"""Turns criterion's results into the tables of docs/performance.md and the
storm chart.

    cargo bench --bench hot_path && cargo bench --bench storm
    python3 scripts/perf_report.py            # prints the tables (Markdown)
                                              # and writes docs/storm.svg

    cargo bench -p tower-bearer-bench-prod    # hot_path without test-util
    python3 scripts/perf_report.py --prod     # its tables

Reads target/criterion/*/new/{benchmark,estimates}.json; uses the median of
each benchmark. The root's benches run with tokio's `test-util` (the
dev-dependencies turn it on); `benches/prod` runs the same hot_path source
without it and names its results `prod/...`. Only the Python standard library.
"""

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where criterion writes, by its own rules.
CRITERION = Path(
    os.environ.get("CRITERION_HOME")
    or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "criterion"
)
CHART = ROOT / "docs" / "storm.svg"

STORM_LATENCY_MS = 5.0  # the source's latency in benches/storm.rs
PROD = "prod/"  # the prefix of benches/prod's results (no test-util)


def medians():
    """full_id -> median in nanoseconds, for every benchmark criterion kept."""
    found = {}
    for meta in CRITERION.glob("**/new/benchmark.json"):
        estimates = meta.with_name("estimates.json")
        if not estimates.exists():
            continue
        full_id = json.loads(meta.read_text())["full_id"]
        found[full_id] = json.loads(estimates.read_text())["median"]["point_estimate"]
    return found


def configuration(found, prod):
    """The results of one build, without the `prod/` prefix."""
    if prod:
        return {k[len(PROD):]: v for k, v in found.items() if k.startswith(PROD)}
    return {k: v for k, v in found.items() if not k.startswith(PROD)}


def ns(value):
    if math.isnan(value):
        return "–"
    return f"{value:.0f} ns" if value < 10_000 else f"{value / 1e6:.2f} ms"


def ratio(value):
    return "–" if math.isnan(value) else f"{value:.2f}×"


def hot_path_cases(found):
    """(case, name) -> {"1 thread": ns, "2 threads": ns}."""
    cases = {}
    for full_id, median in found.items():
        match = re.fullmatch(r"(\w+) (.+) / (1 thread|2 threads)", full_id)
        if match:
            case, name, threads = match.groups()
            cases.setdefault((case, name), {})[threads] = median
    return cases


def baseline(cases):
    """Case 2 (`AddAuthorization`) on one thread, if it ran."""
    times = next((v for (c, _), v in cases.items() if c == "2"), {})
    return times.get("1 thread")


def hot_path_table(found):
    cases = hot_path_cases(found)
    base1 = baseline(cases)
    if not base1:
        return None
    base = next(v for (c, _), v in cases.items() if c == "2")
    base_slowdown = base.get("2 threads", math.nan) / base1
    rows = [
        "| case | 1 thread | vs. case 2 | 2 threads | 2-thread slowdown | slowdown vs. case 2's |",
        "|---|---|---|---|---|---|",
    ]
    for (case, name), times in sorted(cases.items(), key=lambda kv: sort_key(kv[0][0])):
        one = times.get("1 thread", math.nan)
        two = times.get("2 threads", math.nan)
        slowdown = two / one
        rows.append(
            f"| {case} {name} | {ns(one)} | {ratio(one / base1)} | {ns(two)} | "
            f"{ratio(slowdown)} | {ratio(slowdown / base_slowdown)} |"
        )
    return "\n".join(rows)


def sort_key(case):
    match = re.fullmatch(r"(\d+)(\w*)", case)
    return (int(match.group(1)), match.group(2)) if match else (99, case)


def storms(found):
    """phase -> [(n, median ms)], sorted by n."""
    series = {}
    for full_id, median in found.items():
        match = re.fullmatch(r"storm / (.+)/(\d+)", full_id)
        if match:
            phase, n = match.group(1), int(match.group(2))
            series.setdefault(phase, []).append((n, median / 1e6))
    order = ["fresh token (baseline)", "cold start", "expiry", "due window"]
    phases = sorted(series, key=lambda p: order.index(p) if p in order else len(order))
    return {phase: sorted(series[phase]) for phase in phases}


def storm_table(series):
    sizes = sorted({n for points in series.values() for n, _ in points})
    rows = [
        "| phase | " + " | ".join(f"N = {n:,}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for phase, points in series.items():
        by_n = dict(points)
        cells = [f"{by_n[n]:.2f} ms" if n in by_n else "" for n in sizes]
        rows.append(f"| {phase} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


COLOURS = ["#888888", "#d1495b", "#edae49", "#1b6ca8", "#6a4c93"]


def storm_chart(series):
    width, height = 640, 400
    left, right, top, bottom = 70, 200, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    sizes = sorted({n for points in series.values() for n, _ in points})
    top_ms = max(ms for points in series.values() for _, ms in points)
    top_ms = max(STORM_LATENCY_MS, math.ceil(top_ms / 5) * 5)
    lo, hi = math.log10(sizes[0]), math.log10(sizes[-1])

    def x(n):
        return left + (math.log10(n) - lo) / (hi - lo or 1) * plot_w

    def y(ms):
        return top + plot_h - ms / top_ms * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">Refresh storm: time until all N '
        f"requests complete (source: {STORM_LATENCY_MS:g} ms)</text>",
    ]
    step = 5 if top_ms <= 40 else 10
    for tick in range(0, int(top_ms) + 1, step):
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{left - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick} ms</text>'
        )
    for n in sizes:
        out.append(
            f'<text x="{x(n):.1f}" y="{top + plot_h + 20}" text-anchor="middle">{n:,}</text>'
        )
    out.append(
        f'<text x="{left + plot_w / 2}" y="{height - 15}" text-anchor="middle">'
        "N concurrent requests (log scale)</text>"
    )
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{y(STORM_LATENCY_MS):.1f}" '
        f'y2="{y(STORM_LATENCY_MS):.1f}" stroke="#555" stroke-dasharray="4 4"/>'
    )
    out.append(
        f'<text x="{left + plot_w + 8}" y="{y(STORM_LATENCY_MS) + 4:.1f}" fill="#555">'
        "source latency</text>"
    )
    for i, (phase, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(n):.1f},{y(ms):.1f}" for n, ms in points)
        dash = ' stroke-dasharray="6 3"' if "baseline" in phase else ""
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for n, ms in points:
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(ms):.1f}" r="3" fill="{colour}"/>')
        legend_y = top + 20 * i
        out.append(
            f'<rect x="{left + plot_w + 10}" y="{legend_y + 16}" width="12" height="3" '
            f'fill="{colour}"/>'
        )
        out.append(f'<text x="{left + plot_w + 28}" y="{legend_y + 22}">{phase}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prod",
        action="store_true",
        help="the build users get (benches/prod, without tokio's test-util)",
    )
    prod = parser.parse_args().prod
    found = configuration(medians(), prod)
    if not found:
        command = "cargo bench -p tower-bearer-bench-prod" if prod else "cargo bench"
        sys.exit(f"no criterion results: run `{command}` first")
    print(
        "Build: benches/prod, without tokio's test-util (as users build it)\n"
        if prod
        else "Build: the root's dev-dependencies, with tokio's test-util\n"
    )
    table = hot_path_table(found)
    if table:
        print("Per request (median):\n")
        print(table)
    references = sorted((k, v) for k, v in found.items() if k.startswith(("reference:", "clock read:")))
    if references:
        base1 = baseline(hot_path_cases(found)) or math.nan
        print("\nFor scale (median):\n")
        print("| measurement | median | vs. case 2, 1 thread |\n|---|---|---|")
        for name, median in references:
            value = ns(median) if median < 10_000 else f"{median / 1e3:.1f} µs"
            print(f"| {name} | {value} | {ratio(median / base1)} |")
    series = storms(found)
    if series:
        print("\nRefresh storm (median time until all complete):\n")
        print(storm_table(series))
        CHART.parent.mkdir(exist_ok=True)
        CHART.write_text(storm_chart(series))
        print(f"\nwrote {CHART.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
