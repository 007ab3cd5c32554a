#!/usr/bin/env python3
"""Fails when two modules (files) of one crate import each other, directly or through others.

A module is a source file (`a.rs`, `a/mod.rs`, `a/b.rs`); an edge M -> T is any path `crate::…`,
`super::…` or `self::…` written in M (in `use` items or inline) that names T or an item of T. A
parent's `pub use child::X` is an edge to the child like any other, so a child that imports
through its parent (`use super::X` where X is the parent's re-export of a sibling) closes a
cycle only when the parent defines what the child uses: a path through a parent's re-export
(`crate::CoreError` where lib.rs says `pub use error::CoreError`) is followed to the module that
defines the item, so a facade is not a dependency of substance. Code in `#[cfg(test)]` modules
is not counted: a test may reach anything.

cargo-modules (`dependencies --acyclic`) was tried first: it checks the item graph, where a type
and its own methods already form a cycle, so it cannot answer the module-level question.

Usage: scripts/check-module-cycles.py [crate-dir …]   (default: crates/* and tests)
"""

import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")


def module_files(src: Path) -> dict[tuple[str, ...], Path]:
    mods: dict[tuple[str, ...], Path] = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("").parts
        if rel in (("lib",), ("main",)):
            key: tuple[str, ...] = ()
        elif rel[-1] == "mod":
            key = rel[:-1]
        elif rel[0] == "bin" or rel[-1] == "main":
            continue
        else:
            key = rel
        mods[key] = f
    return mods


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)]`-gated modules (and the items they gate) and comments."""
    # Comments go (block and line); literals are kept whole, raw strings first (their inner
    # `"` do not end them), so a `//` in "https://…" starts no comment and a '"' no string.
    literal_or_comment = re.compile(
        r"/\*[\s\S]*?\*/"  # block comment
        r"|//[^\n]*"  # line comment
        r'|b?r(#*)"[\s\S]*?"\1'  # raw string
        r"|b?'(?:\\.|[^'\\])'"  # char literal
        r'|b?"(?:\\[\s\S]|[^"\\])*"'  # string
    )
    text = literal_or_comment.sub(
        lambda m: "" if m.group(0).startswith("/") else m.group(0), text
    )
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        j = text.find("{", m.end())
        semi = text.find(";", m.end())
        if j == -1 or (semi != -1 and semi < j):
            i = semi + 1 if semi != -1 else len(text)
            continue
        depth = 0
        for k in range(j, len(text)):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    i = k + 1
                    break
        else:
            i = len(text)
    out.append(text[i:])
    return "".join(out)


def expand_group(text: str, start: int) -> list[str]:
    """`{a::X, b::{Y, Z}}` starting at `start` → ["a::X", "b::Y", "b::Z"] (prefix only matters)."""
    depth, k = 0, start
    for k in range(start, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                break
    inner = text[start + 1 : k]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    names = []
    for p in parts:
        p = re.sub(r"\s+", "", p)
        head = re.match(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*", p)
        if head:
            names.append(head.group(0))
    return names


DEFINES = r"\b(?:struct|enum|trait|fn|type|const|static|mod|macro_rules!)\s+{}\b"
_reexports: dict = {}


def reexports(key, mods) -> tuple[dict, list]:
    """Names a module re-exports (`pub use a::B;`, `pub use a::{B, C as D}`) → the path they
    name, and its glob re-exports (`pub use a::*`)."""
    if key in _reexports:
        return _reexports[key]
    named, globs = {}, []
    text = strip_tests(mods[key].read_text())
    for m in re.finditer(r"pub(?:\([a-z ]+\))?\s+use\s+([^;]+);", text):
        body = re.sub(r"\s+", "", m.group(1))
        prefix, _, group = body.partition("{")
        items = [body] if not group else [prefix + x for x in expand_group("{" + group, 0)]
        if group:  # expand_group drops `as` renames: read them from the text
            for ren in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)as([A-Za-z_][A-Za-z0-9_]*)", group):
                named[ren.group(2)] = (prefix + ren.group(1)).split("::")
        for it in items:
            if "as" in it.split("::")[-1] and re.search(r"[a-z0-9_]as[A-Z]", it):
                continue
            segs = it.split("::")
            if segs[-1] == "*":
                globs.append(segs[:-1])
            else:
                named[segs[-1]] = segs
    _reexports[key] = (named, globs)
    return named, globs


def absolute(key, segs) -> tuple[str, ...]:
    if not segs:
        return key
    head, rest = segs[0], segs[1:]
    if head == "crate":
        base: list = []
    elif head == "self":
        base = list(key)
    elif head == "super":
        base = list(key[:-1])
    else:  # relative to the module (edition 2018 `use child::X` inside the parent)
        base, rest = list(key), segs
    for s in rest:
        if s == "super":
            base = base[:-1]
        elif s != "self":
            base.append(s)
    return tuple(base)


def resolve(segs: tuple, mods, depth: int):
    """The module that defines what `segs` names, following re-exports."""
    for n in range(len(segs), -1, -1):
        cand = tuple(segs[:n])
        if cand in mods:
            break
    else:
        return None
    if n == len(segs) or depth > 8:
        return cand
    name = segs[n]
    text = strip_tests(mods[cand].read_text())
    if re.search(DEFINES.format(re.escape(name)), text):
        return cand
    named, globs = reexports(cand, mods)
    if name in named:
        return resolve(absolute(cand, named[name]) + tuple(segs[n + 1 :]), mods, depth + 1)
    for g in globs:
        base = absolute(cand, g)
        if base in mods:
            t = strip_tests(mods[base].read_text())
            if re.search(DEFINES.format(re.escape(name)), t):
                return base
    return cand


def edges_of(key: tuple[str, ...], path: Path, mods) -> set[tuple[str, ...]]:
    text = strip_tests(path.read_text())
    is_mod_rs = path.name in ("mod.rs", "lib.rs", "main.rs")
    targets: set[tuple[str, ...]] = set()
    for m in PATH_RE.finditer(text):
        root, rest = m.group(1), m.group(2)
        if root == "crate":
            base: tuple[str, ...] = ()
        elif root == "self":
            base = key
        else:
            base = key[:-1]
        if rest == "::{":
            tails = [t.split("::") for t in expand_group(text, m.end() - 1)]
        else:
            tails = [rest.strip(":").split("::")]
        for tail in tails:
            segs = list(base)
            for s in tail:
                if s == "super":
                    segs = segs[:-1]
                elif s != "self":
                    segs.append(s)
            cand = resolve(tuple(segs), mods, 0)
            if cand is not None and cand != key:
                targets.add(cand)
    # `mod x;` declarations are ownership, not imports: not edges.
    del is_mod_rs
    return targets


def cycles(graph: dict) -> list[list]:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    dirs = [Path(a) for a in sys.argv[1:]] or sorted((root / "crates").iterdir()) + [root / "tests"]
    bad = 0
    for d in dirs:
        src = d / "src"
        if not src.is_dir():
            continue
        mods = module_files(src)
        graph = {k: edges_of(k, p, mods) for k, p in mods.items()}
        for comp in cycles(graph):
            bad += 1
            names = sorted("::".join(c) or "(crate root)" for c in comp)
            print(f"{d.name}: import cycle between modules: {', '.join(names)}")
            for a in comp:
                for b in sorted(graph[a]):
                    if b in comp:
                        print(f"    {'::'.join(a) or '(root)'} -> {'::'.join(b) or '(root)'}")
    if bad:
        print(f"{bad} import cycle(s); break them (docs/architecture.md, 'Module rules')")
        return 1
    print("no import cycle between the modules of any crate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
