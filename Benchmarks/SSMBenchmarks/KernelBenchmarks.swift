import CKernels
import Foundation
import SSMKernels
import SSMTestSupport
import XCTest

/// The SSM kernels against plain scalar loops of the same math, measured in the same run.
final class KernelBenchmarks: XCTestCase {
  override func setUpWithError() throws {
    #if DEBUG
      throw XCTSkip("Benchmarks run in release builds: swift test -c release --filter SSMBenchmarks")
    #endif
  }

  static func scanInputs(batch: Int, length: Int, channels: Int, state: Int) -> SelectiveScan.Inputs {
    var rng = SplitMix64(seed: 1)
    let shape: Shape = [batch, length, channels]
    return SelectiveScan.Inputs(
      u: Tensor.randomNormal(shape, using: &rng), delta: Tensor.randomUniform(shape, lowerBound: -3, upperBound: 1, using: &rng),
      A: -Tensor.randomUniform([channels, state], lowerBound: 0.5, upperBound: 4, using: &rng),
      B: Tensor.randomNormal([batch, length, state], using: &rng), C: Tensor.randomNormal([batch, length, state], using: &rng),
      D: Tensor.randomNormal([channels], using: &rng), z: Tensor.randomNormal(shape, using: &rng),
      deltaBias: Tensor.randomUniform([channels], lowerBound: -1, upperBound: 1, using: &rng))
  }

  /// Selective scan forward + backward at Mamba4Rec's shapes (E = 128, N = 32), fast kernel
  /// against the plain scalar Float32 reference loops compiled in the same (release) build.
  func testSelectiveScanAgainstScalarLoop() {
    let batch = Benchmark.isFull ? 256 : 32
    for length in [50, 200] {
      let x = Self.scanInputs(batch: batch, length: length, channels: 128, state: 32)
      let g = Tensor.random(x.u.shape, seed: 2)
      let scalar = SelectiveScan.ReferenceInputs<Float>(x)
      let gs = g.scalars
      let fastForward = Benchmark.time(repeats: 10) { blackHole(SelectiveScan.forward(x)) }
      let fastBoth = Benchmark.time(repeats: 10) {
        blackHole(SelectiveScan.forward(x))
        blackHole(SelectiveScan.backward(outputGradient: g, x))
      }
      let slowForward = Benchmark.time(repeats: 3, warmup: 0) { blackHole(SelectiveScan.referenceForward(scalar)) }
      let slowBoth = Benchmark.time(repeats: 3, warmup: 0) {
        blackHole(SelectiveScan.referenceForward(scalar))
        blackHole(SelectiveScan.referenceBackward(scalar, outputGradient: gs))
      }
      // Forward: exp + 2 mul + 2 FMA per (b, t, e, n) ≈ 6 flops, the exp counted as one;
      // backward recomputes the forward and adds ≈ 14 more.
      let elements = Double(batch * length * 128 * 32)
      Benchmark.report(
        "selective_scan_fwd_bwd_B\(batch)_L\(length)_E128_N32", fastBoth,
        ["forward_ms": fastForward.median * 1e3, "scalar_forward_ms": slowForward.median * 1e3,
         "scalar_fwd_bwd_ms": slowBoth.median * 1e3, "speedup_forward": slowForward.median / fastForward.median,
         "speedup_fwd_bwd": slowBoth.median / fastBoth.median, "gflops_fwd_bwd": elements * 26 / fastBoth.median / 1e9,
         "lanes": Double(ssm_scan_lanes())])
    }
  }
}
