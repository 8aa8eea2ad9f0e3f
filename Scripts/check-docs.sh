#!/usr/bin/env bash
# Builds the DocC catalog of every library module with the toolchain's docc (offline) and fails
# on any documentation warning or on a public declaration without a doc comment.
set -euo pipefail
cd "$(dirname "$0")/.."
# A scratch build of its own, so every module is compiled (and its symbol graph emitted) anew.
scratch=".build-docs"
graphs="$scratch/symbol-graphs"
rm -rf "$scratch" && mkdir -p "$graphs"
swift build --scratch-path "$scratch" --target SSMRec \
  -Xswiftc -emit-symbol-graph -Xswiftc -emit-symbol-graph-dir -Xswiftc "$PWD/$graphs" >/dev/null
out="$(mktemp -d "${TMPDIR:-/tmp}/ssmrec-docs.XXXXXX")"
trap 'rm -rf "$out"' EXIT
status=0
python3 Scripts/check-doc-comments.py "$graphs" || status=1
for module in SSMTensor SSMAutograd SSMKernels SSMLayers SSMMetrics SSMRecommenders; do
  module_graphs="$out/graphs-$module"
  mkdir -p "$module_graphs"
  cp "$graphs/$module".symbols.json "$module_graphs/" 2>/dev/null || true
  cp "$graphs/$module"@*.symbols.json "$module_graphs/" 2>/dev/null || true
  log="$out/$module.log"
  if ! docc convert "Sources/$module/$module.docc" --fallback-display-name "$module" \
      --fallback-bundle-identifier "org.ssmrec.$module" --additional-symbol-graph-dir "$module_graphs" \
      --output-path "$out/$module.doccarchive" --warnings-as-errors > "$log" 2>&1; then
    echo "check-docs: $module has documentation problems:" >&2
    grep -E "warning|error" "$log" >&2
    status=1
  else
    echo "check-docs: $module ok"
  fi
done
exit $status
