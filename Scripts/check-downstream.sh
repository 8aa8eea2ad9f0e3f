#!/usr/bin/env bash
# Checks that SSMRec works as a versioned dependency: clones this repository's HEAD into a
# scratch folder, tags it 0.1.0, and builds and runs Examples/Downstream, a separate package that
# depends on it with `.package(url: "file://…", from: "0.1.0")` and multiplies two matrices.
# SwiftPM refuses unsafeFlags in such a dependency, so this also guards the no-unsafeFlags rule.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/ssmrec-downstream.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

git clone -q "$root" "$scratch/SSMRec"
git -C "$scratch/SSMRec" -c user.name=ci -c user.email=ci@localhost tag -f 0.1.0 >/dev/null
cp -R "$root/Examples/Downstream" "$scratch/Downstream"
rm -rf "$scratch/Downstream/.build"

cd "$scratch/Downstream"
SSMREC_PACKAGE_URL="file://$scratch/SSMRec" swift build
SSMREC_PACKAGE_URL="file://$scratch/SSMRec" swift run DownstreamCheck
