#!/usr/bin/env python3
"""Checks that the relative links of the README (and of docs/*.md and
CHANGELOG.md) resolve: every file or folder linked exists, every
`#fragment` into a Markdown file names one of its headings, and every
`cargo run --example NAME` names an example.

    python3 scripts/check_links.py

Links to other sites (`https://...`) are not fetched. Exits 1 and lists
each broken link with its file and line. Only the Python standard library.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# [text](target) and ![alt](target), target up to a space or ')'.
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
EXAMPLE = re.compile(r"cargo run\b[^\n`]*?--example[ =]([A-Za-z0-9_-]+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def documents():
    found = [ROOT / "README.md"]
    found += sorted((ROOT / "docs").glob("*.md"))
    changelog = ROOT / "CHANGELOG.md"
    if changelog.exists():
        found.append(changelog)
    return found


def lines_outside_code(text):
    """(line number, line) for lines outside fenced code, with inline code
    spans blanked so that `[a](b)` in backticks is not taken for a link."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r"`[^`]*`", lambda m: " " * len(m.group()), line)


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: keep the text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """The anchors GitHub gives the headings of a Markdown file."""
    seen = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            yield base if count == 0 else f"{base}-{count}"


def example_exists(name):
    """An example of the root package, or one a workspace member under
    examples/ declares (`[[example]] name = "NAME"`, as the quickstart's)."""
    if (ROOT / "examples" / f"{name}.rs").is_file() or (
        ROOT / "examples" / name / "main.rs"
    ).is_file():
        return True
    declared = re.compile(r'^\[\[example\]\]\s*\nname = "' + re.escape(name) + '"', re.M)
    return any(
        declared.search(manifest.read_text(encoding="utf-8"))
        for manifest in (ROOT / "examples").glob("*/Cargo.toml")
    )


def check(document):
    """Yields (line, message) for each broken link; counts the good ones."""
    text = document.read_text(encoding="utf-8")
    checked = 0
    for number, line in lines_outside_code(text):
        targets = INLINE.findall(line)
        definition = DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
        for target in targets:
            if URL_SCHEME.match(target) or target.startswith("//"):
                continue
            path_part, _, fragment = target.partition("#")
            linked = (document.parent / path_part).resolve() if path_part else document
            checked += 1
            if not linked.exists():
                yield number, f"{target}: no such file or folder"
                continue
            if fragment and linked.suffix == ".md" and fragment not in set(anchors(linked)):
                yield number, f"{target}: no heading #{fragment} in {linked.relative_to(ROOT)}"
    # `cargo run --example NAME`, in code blocks and prose alike.
    for number, line in enumerate(text.splitlines(), start=1):
        for name in EXAMPLE.findall(line):
            checked += 1
            if not example_exists(name):
                yield number, f"--example {name}: no such example under examples/"
    check.counts[document] = checked


check.counts = {}


def main():
    broken = []
    for document in documents():
        for number, message in check(document):
            broken.append(f"{document.relative_to(ROOT)}:{number}: {message}")
    readme = ROOT / "README.md"
    if check.counts.get(readme, 0) == 0:
        broken.append("README.md: no relative links found; is the parser broken?")
    if broken:
        print("broken links:", *broken, sep="\n  ")
        return 1
    total = sum(check.counts.values())
    print(f"links ok: {total} relative links in {len(check.counts)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
