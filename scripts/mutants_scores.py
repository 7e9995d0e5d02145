#!/usr/bin/env python3
"""The scores of one or more cargo-mutants runs, per file and per folder.

    python3 scripts/mutants_scores.py [--list mutants.json]
        [--explained scripts/mutants_explained.txt] RUN [RUN ...]

Each RUN is a run's output folder (`mutants.out`, with its `outcomes.json`;
docs/mutants.md). When a mutant appears in several runs (a full run, then a
`--re` rerun after new tests), the last run given wins, so list the runs
oldest first.

Runs made at different commits are matched by what the mutant is, not by
its line, which moves as code is added above it: the file, the column and
the description (`replace < with <= in Keyed::insert`), and for mutants
alike in all three, their order in the file.

--list: the mutants of the tree now (`cargo mutants --list --json` with the
same --file options): only those are counted, and the ones no run tested
are counted as "not run". Without it, every mutant of the runs is counted.

--explained: a file of the missed mutants that are explained, one a line,
as their names without the line (`src/cache/clock.rs:91:46: replace * with
/ in coarse_slack` becomes `src/cache/clock.rs:46: replace * with / in
coarse_slack`), each followed by `  # why`: equivalent (no test can catch
it), or caught by a check that cargo-mutants does not run (the model
check). An entry that matches no missed mutant is reported, so that the
list cannot go stale unnoticed.
"""

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

KINDS = ("CaughtMutant", "Timeout", "Unviable", "MissedMutant")
NAME = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<what>.*)$")


def key(name: str) -> str:
    """The name without its line: `file:col: description`."""
    m = NAME.match(name)
    if not m:
        raise SystemExit(f"not a mutant name: {name}")
    return f"{m['file']}:{m['col']}: {m['what']}"


# A mutant across runs: its key, and which of the mutants alike (the same
# key) it is, counting from 1 in the order of their lines.
Key = tuple[str, int]


def keyed(names: list[str]) -> list[Key]:
    """Each name's `Key`, in the order given."""
    line = {name: int(NAME.match(name)["line"]) for name in names}
    seen: dict[str, int] = defaultdict(int)
    out = {}
    for name in sorted(names, key=lambda name: (key(name), line[name])):
        seen[key(name)] += 1
        out[name] = (key(name), seen[key(name)])
    return [out[name] for name in names]


def outcomes(run: Path) -> dict[Key, str]:
    data = json.loads((run / "outcomes.json").read_text())
    names, summaries = [], []
    for outcome in data["outcomes"]:
        mutant = outcome["scenario"]
        if not isinstance(mutant, dict) or "Mutant" not in mutant:
            continue  # the baseline
        names.append(mutant["Mutant"]["name"])
        summaries.append(outcome["summary"])
    return dict(zip(keyed(names), summaries))


def explained(path: Path | None) -> set[str]:
    if path is None:
        return set()
    listed = set()
    for line in path.read_text().splitlines():
        entry = line.split("  #")[0].strip()
        if entry and not entry.startswith("#"):
            listed.add(entry)
    return listed


def row(name: str, counts: dict[str, int]) -> str:
    caught, timeout, unviable, missed = (counts[k] for k in KINDS)
    explained, not_run = counts["Explained"], counts["NotRun"]
    viable = caught + timeout + missed + explained
    share = f"{100 * (caught + timeout + explained) / viable:.0f}%" if viable else "-"
    total = viable + unviable + not_run
    cells = [total, caught, timeout, unviable, explained, missed, not_run]
    return f"| {name} | " + " | ".join(map(str, cells)) + f" | {share} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", type=Path)
    parser.add_argument("--explained", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()

    merged: dict[Key, str] = {}
    for run in args.runs:
        merged.update(outcomes(run))
    if args.list:
        names = [m["name"] for m in json.loads(args.list.read_text())]
        universe = keyed(names)
        merged = {k: merged.get(k, "NotRun") for k in universe}
    listed = explained(args.explained)

    files: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    folders: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    missed, used = [], set()
    for (k, nth), summary in merged.items():
        if summary == "MissedMutant" and k in listed:
            summary = "Explained"
            used.add(k)
        elif summary == "MissedMutant":
            missed.append(k if nth == 1 else f"{k} (#{nth} of its kind)")
        file = k.split(":")[0]
        files[file][summary] += 1
        folders["/".join(file.split("/")[:2])][summary] += 1

    print(
        "| Scope | Mutants | Caught | Timeout | Unviable | Explained | Missed | Not run "
        "| Caught, timed out or explained, of viable |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for folder in sorted(folders):
        print(row(f"`{folder}/`", folders[folder]))
    for file in sorted(files):
        print(row(f"`{file}`", files[file]))
    if missed:
        print("\nMissed, not explained:")
        for k in sorted(missed):
            print(f"- {k}")
    stale = sorted(listed - used)
    if stale and args.list:
        print("\nListed as explained, but not missed by these runs:")
        for entry in stale:
            print(f"- {entry}")


if __name__ == "__main__":
    main()
