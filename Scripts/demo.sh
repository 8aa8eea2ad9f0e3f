#!/usr/bin/env bash
# The main job, for now: build SSMRec in release and run the tensor tour (matrix products
# through OpenBLAS, SIMD elementwise kernels, softmax, top-k), printing what it measures.
# (Training a recommender on ML-100K replaces this once the training pipeline lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash Scripts/install-deps.sh
swift build -c release --product TensorTour
"$(swift build -c release --show-bin-path)/TensorTour"
