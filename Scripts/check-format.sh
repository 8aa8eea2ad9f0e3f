#!/usr/bin/env bash
# Fails on any formatting or style-rule finding of `swift format` (the toolchain's formatter,
# configured by .swift-format) over every Swift file of the repository; `swift format format -i
# -r Sources Tests Benchmarks Examples Fuzz` fixes what it reports.
set -euo pipefail
cd "$(dirname "$0")/.."
swift format lint --strict --recursive Sources Tests Benchmarks Examples Fuzz/Sources Server/Sources Package.swift Fuzz/Package.swift Server/Package.swift
echo "check-format: clean"
