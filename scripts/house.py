#!/usr/bin/env python3
"""Draws the house from its imports, and fails on an import circle.

Reads every file under src/, takes the paths it names through `crate::`,
`super::` and `self::` (in `use` statements and inline), and resolves each
to the file that defines the item, following the `pub use` re-exports of
the crate root and of each `mod.rs`. Then, at two levels:

- rooms: the top-level modules (`auth`, `cache`, `oauth2`, `token`, ...);
  the crate root (`lib.rs`) is the front door that re-exports them, not a
  room;
- files inside each room, for the rooms that are folders.

A circle at either level is an error (exit status 1). Without one, it
prints the rooms by floor: the ground floor stands on nothing, and each room
sits one floor above the highest room it stands on.

Test code is left out: `#[cfg(test)]` modules inside a file, and files
declared under `#[cfg(test)]` (a test may reach anywhere). A `mod.rs`'s own
`mod` and `pub use` lines declare and re-export its children: they are not
an import of them. Feature gates are ignored: every `cfg` counts.

Python 3 standard library only. `python3 scripts/house.py [--edges]`.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Doors, not rooms: the crate root and the old names re-export the rooms.
DOORS = {(), ("deprecated",)}


def module_of(rel):
    """The module path (a tuple) of a file relative to src/."""
    parts = rel[:-3].split(os.sep)
    if parts == ["lib"]:
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def is_test_cfg(attribute):
    """`#[cfg(test)]`, `#[cfg(all(test, ...))]`: code built for tests only."""
    return (
        attribute.startswith("#[cfg(")
        and re.search(r"\btest\b", attribute) is not None
        and "not(test" not in attribute
        and "any(" not in attribute
    )


def strip_tests_and_comments(text):
    """The text without comment lines and `#[cfg(test)]` modules (rustfmt's
    layout: the module closes with `}` at its own indentation)."""
    out = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if is_test_cfg(stripped):
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith("#["):
                j += 1
            m = j < len(lines) and re.match(
                r"^(\s*)(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{\s*$", lines[j]
            )
            if m:
                close = m.group(1) + "}"
                j += 1
                while j < len(lines) and lines[j].rstrip() != close:
                    j += 1
                i = j + 1
                continue
        if stripped.startswith("//"):
            i += 1
            continue
        # A trailing comment, when it does not sit inside a string.
        if "//" in line and line.count('"') == 0:
            line = line[: line.index("//")]
        out.append(line)
        i += 1
    return "\n".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d as e}}` -> ["a::b", "a::c::d"]."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    return _expand(re.sub(r"\s+", "", tree))


def _expand(tree):
    for k, ch in enumerate(tree):
        if ch == "{":
            prefix = tree[:k]
            inner = tree[k + 1 : _matching(tree, k)]
            out = []
            for part in _split_top(inner):
                if part == "self":
                    out.append(prefix.rstrip(":"))
                elif part:
                    out.extend(prefix + sub for sub in _expand(part))
            return out
    return [tree] if tree else []


def _matching(text, open_at):
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(text)


def _split_top(text):
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    parts.append(text[start:])
    return [p for p in parts if p]


class Crate:
    def __init__(self, root):
        self.files = {}  # module -> relative path
        self.code = {}  # module -> code without tests and comments
        self.raw = {}
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                if not name.endswith(".rs"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                module = module_of(rel)
                with open(os.path.join(root, rel), encoding="utf-8") as f:
                    text = f.read()
                self.files[module] = rel
                self.raw[module] = text
        self.test_only = set()
        for module, text in self.raw.items():
            for m in re.finditer(
                r"(#\[cfg\([^\n]*\)\])\s*\n(?:\s*#\[[^\n]*\n)*\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;",
                text,
            ):
                if is_test_cfg(m.group(1)):
                    self.test_only.add(module + (m.group(2),))
        for module, text in self.raw.items():
            self.code[module] = strip_tests_and_comments(text)
        # Re-exports: module -> {name: path}
        self.reexports = {}
        for module, code in self.code.items():
            table = {}
            for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
                for path in expand_use_tree(m.group(1)):
                    segments = path.split("::")
                    table[segments[-1]] = segments
            self.reexports[module] = table

    def is_test(self, module):
        return any(module[: k + 1] in self.test_only for k in range(len(module)))

    def resolve(self, current, segments, seen=None):
        """The module whose file defines what `segments` names, seen from
        `current`; None when it leaves the crate."""
        seen = seen or set()
        key = (current, tuple(segments))
        if key in seen:
            return None
        seen.add(key)
        first = segments[0]
        if first == "crate":
            base, rest = (), segments[1:]
        elif first == "super":
            base, rest = current, segments
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        elif first == "self":
            base, rest = current, segments[1:]
        else:
            return None
        module = base
        while rest:
            child = module + (rest[0],)
            if child in self.files:
                module, rest = child, rest[1:]
                continue
            target = self.reexports.get(module, {}).get(rest[0])
            if target and target[0] in ("self", "super", "crate"):
                return self.resolve(module, target + rest[1:], seen)
            break
        return module

    def imports(self, module):
        """The modules this file's code names (not itself)."""
        code = self.code[module]
        paths = []
        for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", code):
            for path in expand_use_tree(m.group(2)):
                paths.append((path.split("::"), bool(m.group(1))))
        without_uses = re.sub(r"\buse\s+[^;]+;", "", code)
        for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", without_uses):
            paths.append((m.group(0).split("::"), False))
        out = set()
        for segments, reexport in paths:
            target = self.resolve(module, segments)
            if target is None or target == module or self.is_test(target):
                continue
            if target in DOORS:
                continue
            # A module's re-export of its own descendants declares them.
            if reexport and target[: len(module)] == module:
                continue
            out.add(target)
        return out


def room(module):
    return module[0] if module else None


def cycles(nodes, edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def floors(nodes, edges):
    floor = {}

    def of(v, path=()):
        if v in floor:
            return floor[v]
        below = [of(w, path + (v,)) for w in edges.get(v, ()) if w not in path]
        floor[v] = 1 + max(below) if below else 0
        return floor[v]

    for v in nodes:
        of(v)
    return floor


def main():
    show_edges = "--edges" in sys.argv
    crate = Crate(ROOT)
    if "--src" in sys.argv:
        crate = Crate(sys.argv[sys.argv.index("--src") + 1])
    modules = [m for m in crate.files if m not in DOORS and not crate.is_test(m)]

    file_edges = {m: crate.imports(m) for m in modules}

    rooms = sorted({room(m) for m in modules})
    room_edges = {r: set() for r in rooms}
    why = {}
    for m, targets in file_edges.items():
        for t in targets:
            if t and room(t) != room(m):
                room_edges[room(m)].add(room(t))
                why.setdefault((room(m), room(t)), []).append(
                    f"{crate.files[m]} -> {crate.files[t]}"
                )

    failed = False
    for component in cycles(rooms, room_edges):
        failed = True
        print("circle between rooms: " + " <-> ".join(component))
        for a in component:
            for b in component:
                for line in why.get((a, b), []):
                    print(f"    {line}")

    for r in rooms:
        inside = [m for m in modules if room(m) == r]
        if len(inside) < 2:
            continue
        edges = {m: {t for t in file_edges[m] if t in inside} for m in inside}
        for component in cycles(inside, edges):
            failed = True
            names = [crate.files[m] for m in component]
            print(f"circle inside {r}/: " + " <-> ".join(names))

    if failed:
        print("house.py: import circles found")
        return 1

    floor = floors(rooms, room_edges)
    top = max(floor.values()) if floor else 0
    print(f"The house: {len(rooms)} rooms on {top + 1} floors, no import circle.")
    for level in range(top + 1):
        here = [r for r in rooms if floor[r] == level]
        parts = []
        for r in here:
            below = sorted(room_edges[r])
            parts.append(f"{r}" + (f" (on {', '.join(below)})" if below else ""))
        print(f"  floor {level}: " + "; ".join(parts))
    if show_edges:
        for m in sorted(modules):
            targets = sorted(crate.files[t] for t in file_edges[m] if t)
            print(f"{crate.files[m]}: {', '.join(targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
