#!/usr/bin/env python3
"""flags_doc: docs/flags.md lists exactly the flags `ringrelay --help` prints.

    flags_doc_test.py RINGRELAY DOCS_FLAGS_MD

Every flag in --help must have a row in the doc's generated table with the same names,
argument, default and description (the default and JSON key as `ringrelay --dump-flags`
gives them from the flag table), in the same order, and the doc must have no row for a flag
--help lacks; --help and --dump-flags must agree. On a mismatch it prints each difference, a
unified diff of the table, and the command that fixes it. Exit 0 pass, 1 fail. The reading
of the binary and the rendering are scripts/gen-flags-doc's (imported); the doc's table is
read back here independently, cell by cell.
"""
import argparse
import difflib
import importlib.machinery
import importlib.util
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
FIX = "run: scripts/gen-flags-doc build/tools/ringrelay   (then commit docs/flags.md)"


def load_generator():
    path = REPO / "scripts" / "gen-flags-doc"
    loader = importlib.machinery.SourceFileLoader("gen_flags_doc", str(path))
    spec = importlib.util.spec_from_loader("gen_flags_doc", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def split_cells(row):
    """The cells of a Markdown table row, splitting on '|' that is not backslash-escaped."""
    inner = row.strip()
    if not (inner.startswith("|") and inner.endswith("|")):
        raise ValueError(f"not a table row: {row!r}")
    cells, cell, i = [], "", 1
    while i < len(inner) - 1:
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner) - 1:
            cell += inner[i:i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
        i += 1
    cells.append(cell.strip())
    return cells


def read_doc_table(gen, doc_text):
    """[Flag] from the doc's generated table, or raises ValueError saying what is wrong."""
    _, block, _ = gen.split_doc(doc_text)
    if block is None:
        raise ValueError(f"no generated table: the markers\n  {gen.BEGIN_MARK}\n  {gen.END_MARK}\nare missing")
    rows = [l for l in block.splitlines() if l.startswith("|")]
    if len(rows) < 2 or [c.lower() for c in split_cells(rows[0])] != [h.lower() for h in gen.HEADER]:
        raise ValueError(f"the table header must be: | {' | '.join(gen.HEADER)} |")
    flags = []
    for row in rows[2:]:
        cells = split_cells(row)
        if len(cells) != len(gen.HEADER):
            raise ValueError(f"row has {len(cells)} cells, not {len(gen.HEADER)}: {row}")
        names = [n.strip().strip("`") for n in cells[0].split(",") if n.strip()]
        argument = cells[1].strip("`")
        key = cells[3].replace("`", "")
        flags.append(gen.Flag(names, argument, gen.unescape(cells[2]), key, gen.unescape(cells[4])))
    return flags


def compare(expected, documented):
    """Differences between the flags --help gives and those the doc lists, as sentences."""
    problems = []
    by_name = lambda flags: {f.names[-1]: f for f in flags}
    want, have = by_name(expected), by_name(documented)
    for name in want:
        if name not in have:
            problems.append(f"{name}: in --help, missing from docs/flags.md")
    for name in have:
        if name not in want:
            problems.append(f"{name}: in docs/flags.md, but ringrelay --help has no such flag")
    for name, w in want.items():
        h = have.get(name)
        if h is None:
            continue
        for field in ("names", "argument", "default", "json_key", "description"):
            if getattr(w, field) != getattr(h, field):
                problems.append(f"{name}: {field} differs\n    --help: {getattr(w, field)!r}\n"
                                f"    doc:    {getattr(h, field)!r}")
    if not problems and [f.names for f in expected] != [f.names for f in documented]:
        problems.append("same flags, but not in the order --help prints them")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("doc")
    args = ap.parse_args()
    gen = load_generator()
    try:
        expected = gen.read_flags(args.binary)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: cannot read the flags from the code: {e}")
        return 1
    doc_text = pathlib.Path(args.doc).read_text()
    try:
        documented = read_doc_table(gen, doc_text)
    except ValueError as e:
        print(f"FAIL: {args.doc}: {e}\n{FIX}")
        return 1
    problems = compare(expected, documented)
    # Belt and braces: the table must also be byte-for-byte what the generator writes.
    _, block, _ = gen.split_doc(doc_text)
    want_block = gen.render_block(expected)
    if not problems and block != want_block:
        problems.append("the table's text differs from what scripts/gen-flags-doc writes (formatting)")
    if not problems:
        print(f"ok: {args.doc} matches ringrelay --help ({len(expected)} flags)")
        return 0
    print(f"FAIL: {args.doc} and `ringrelay --help` disagree:")
    for p in problems:
        print("  - " + p)
    print("\ndiff (docs/flags.md -> generated from --help):")
    sys.stdout.writelines(difflib.unified_diff(block.splitlines(True), want_block.splitlines(True),
                                               "docs/flags.md", "ringrelay --help", n=1))
    print("\n" + FIX)
    return 1


if __name__ == "__main__":
    sys.exit(main())
