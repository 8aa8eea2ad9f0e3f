#!/usr/bin/env python3
"""Fails if a public declaration of a library module has no doc comment.

Reads the symbol graphs the compiler emits (-emit-symbol-graph) from the directory given as the
first argument. Declarations the compiler synthesises (no source location) are skipped, and so
are members that only implement a protocol requirement documented elsewhere (the graph gives
them no location of their own either).
"""
import glob
import json
import os
import sys

MODULES = ("SSMTensor", "SSMAutograd", "SSMKernels", "SSMLayers", "SSMMetrics", "SSMRecommenders", "SSMRec")


def main(directory):
    missing, total = [], 0
    for path in sorted(glob.glob(os.path.join(directory, "*.symbols.json"))):
        module = os.path.basename(path).split(".")[0].split("@")[0]
        if module not in MODULES:
            continue
        for symbol in json.load(open(path))["symbols"]:
            if symbol.get("accessLevel") not in ("public", "open"):
                continue
            location = symbol.get("location")
            if not location:
                continue
            total += 1
            if not symbol.get("docComment"):
                file = location["uri"].split("/Sources/")[-1]
                line = location["position"]["line"] + 1
                missing.append(f"{file}:{line}: {'.'.join(symbol['pathComponents'])} ({symbol['kind']['displayName']})")
    for entry in sorted(set(missing)):
        print(f"check-doc-comments: undocumented public declaration: {entry}", file=sys.stderr)
    if total == 0:
        print("check-doc-comments: no symbols found (were the graphs emitted?)", file=sys.stderr)
        return 1
    print(f"check-doc-comments: {total - len(set(missing))} of {total} public declarations documented")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
