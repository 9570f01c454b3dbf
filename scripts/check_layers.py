#!/usr/bin/env python3
"""The layering rule as a check: a file under src/ includes only its own layer and the layers below it.

    tools/fp4lab -> bench, eval, report, serve -> engine -> cpu, cuda -> model -> io, tokenizer -> format -> common

Files of one layer may include each other (bench and eval, cpu and cuda, io and tokenizer); nothing under src/
includes tools/. Prints each include that runs back up and exits 1 if there is one.
"""
import pathlib
import re
import sys

RANK = {"common": 0, "format": 1, "io": 2, "tokenizer": 2, "model": 3, "cpu": 4, "cuda": 4, "engine": 5,
        "bench": 6, "eval": 6, "report": 6, "serve": 6}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_0-9]+)/')


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent / "src"
    bad = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in {".h", ".cuh", ".cpp", ".cu"}:
            continue
        layer = path.relative_to(root).parts[0]
        if layer not in RANK:
            bad.append(f"{path.relative_to(root.parent)}: src/{layer}/ is not a known layer")
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            target = m.group(1)
            if target == "tools" or (target in RANK and RANK[target] > RANK[layer]):
                bad.append(f"{path.relative_to(root.parent)}:{n}: {layer} includes {target} ({line.strip()})")
    for b in bad:
        print(b)
    print(f"layers: {len(bad)} include(s) running back up" if bad else "layers: no include runs back up")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
