#!/usr/bin/env python3
"""Builds the README's examples exactly as a reader pastes them.

Each ```toml block that holds a `[dependencies]` table, and the ```rust
block after it, become a new crate: that table as its Cargo.toml, that code
as its src/main.rs, nothing added, nothing hidden. The one change is where
`tower-bearer` comes from: this checkout instead of crates.io (the README's
version must still match the crate's). The crates are built, not run (they
talk to example.com). Also checks that the README stays a front page of at
most 200 lines.

    python3 scripts/readme_examples.py

The crates are written under target/readme-examples/ and built with the
repository's Cargo.lock as a starting point, in one shared target directory
(CARGO_TARGET_DIR if set, else target/readme-examples/target). Only the
Python standard library.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 200
BLOCK = re.compile(r"^```([\w,-]*)\n(.*?)^```\n", re.S | re.M)


def examples(readme):
    """(dependencies, code) pairs, in the README's order."""
    pairs = []
    dependencies = None
    for match in BLOCK.finditer(readme):
        info, body = match.group(1), match.group(2)
        language = info.split(",")[0]
        if language == "toml" and "[dependencies]" in body:
            dependencies = body
        elif language == "rust":
            if dependencies is None:
                sys.exit(f"README.md: a rust block without its [dependencies]:\n{body}")
            pairs.append((dependencies, body))
            dependencies = None
    return pairs


def crate_version():
    manifest = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "(\d+)\.(\d+)\.\d+"', manifest, re.M)
    return f"{version.group(1)}.{version.group(2)}"


def local(dependencies, version):
    """The table with tower-bearer taken from this checkout."""
    quoted = f'"{version}"'
    out = []
    for line in dependencies.splitlines():
        if line.startswith("tower-bearer ="):
            if quoted not in line:
                sys.exit(f"README.md: `{line}` does not ask for version {version}")
            path = f"path = {str(ROOT)!r}".replace("'", '"')
            if line.endswith(quoted):
                line = f"tower-bearer = {{ {path} }}"
            else:
                line = line.replace(f"version = {quoted}", path)
        out.append(line)
    return "\n".join(out) + "\n"


def main():
    readme = (ROOT / "README.md").read_text()
    lines = readme.count("\n")
    if lines > MAX_LINES:
        sys.exit(f"README.md has {lines} lines: a front page has at most {MAX_LINES}")
    pairs = examples(readme)
    if not pairs:
        sys.exit("README.md: no example found")
    version = crate_version()
    base = ROOT / "target" / "readme-examples"
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", str(base / "target"))
    for number, (dependencies, code) in enumerate(pairs, start=1):
        crate = base / f"example-{number}"
        shutil.rmtree(crate, ignore_errors=True)
        (crate / "src").mkdir(parents=True)
        manifest = (
            f'[package]\nname = "readme-example-{number}"\nversion = "0.0.0"\n'
            'edition = "2021"\npublish = false\n\n'
            "# Not a member of the repository's workspace.\n[workspace]\n\n"
            + local(dependencies, version)
        )
        (crate / "Cargo.toml").write_text(manifest)
        (crate / "src" / "main.rs").write_text(code)
        shutil.copy(ROOT / "Cargo.lock", crate / "Cargo.lock")
        print(f"== README example {number}: cargo build in {crate.relative_to(ROOT)}", flush=True)
        build = subprocess.run(["cargo", "build", "--quiet"], cwd=crate, env=env)
        if build.returncode != 0:
            sys.exit(f"README example {number} does not build as pasted")
    print(f"README.md: {lines} lines, {len(pairs)} examples build as pasted")


if __name__ == "__main__":
    main()
