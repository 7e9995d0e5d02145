#!/usr/bin/env python3
"""The scores of one or more cargo-mutants runs, per file and per folder.

    python3 scripts/mutants_scores.py mutants.out [more/mutants.out ...]

Reads each run's `outcomes.json` (docs/mutants.md). When a mutant appears in
several runs (a full run, then `--iterate` or a `--re` rerun after new
tests), the last run given wins, so list the runs oldest first.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

KINDS = ("CaughtMutant", "MissedMutant", "Timeout", "Unviable")


def outcomes(run: Path) -> dict[str, tuple[str, str]]:
    data = json.loads((run / "outcomes.json").read_text())
    found = {}
    for outcome in data["outcomes"]:
        mutant = outcome["scenario"]
        if not isinstance(mutant, dict) or "Mutant" not in mutant:
            continue  # the baseline
        mutant = mutant["Mutant"]
        found[mutant["name"]] = (mutant["file"], outcome["summary"])
    return found


def row(name: str, counts: dict[str, int]) -> str:
    caught, missed, timeout, unviable = (counts[k] for k in KINDS)
    viable = caught + missed + timeout
    share = f"{100 * (caught + timeout) / viable:.0f}%" if viable else "-"
    total = viable + unviable
    return f"| {name} | {total} | {caught} | {missed} | {timeout} | {unviable} | {share} |"


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    merged: dict[str, tuple[str, str]] = {}
    for run in sys.argv[1:]:
        merged.update(outcomes(Path(run)))
    files: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))
    folders: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))
    missed = []
    for name, (file, summary) in merged.items():
        files[file][summary] += 1
        folders["/".join(file.split("/")[:2])][summary] += 1
        if summary == "MissedMutant":
            missed.append(name)
    print("| Scope | Mutants | Caught | Missed | Timeout | Unviable | Caught or timed out, of viable |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for folder in sorted(folders):
        print(row(f"`{folder}/`", folders[folder]))
    for file in sorted(files):
        print(row(f"`{file}`", files[file]))
    if missed:
        print("\nMissed:")
        for name in sorted(missed):
            print(f"- {name}")


if __name__ == "__main__":
    main()
