import CKernels
import Foundation
import SSMKernels
import SSMTestSupport
import XCTest

/// The SSM kernels against plain scalar loops of the same math, measured in the same run.
final class KernelBenchmarks: XCTestCase {
  /// The allocator setting the `ssmrec` command uses, so the figures match it.
  override class func setUp() {
    super.setUp()
    AllocatorTuning.applyForTraining()
  }

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
      // The scalar loops take seconds to minutes at full size: fewer repeats there.
      let slowRepeats = Benchmark.isFull ? 1 : 3
      let slowForward = Benchmark.time(repeats: slowRepeats, warmup: 0) { blackHole(SelectiveScan.referenceForward(scalar)) }
      let slowBoth = Benchmark.time(repeats: slowRepeats, warmup: 0) {
        blackHole(SelectiveScan.referenceForward(scalar))
        blackHole(SelectiveScan.referenceBackward(scalar, outputGradient: gs))
      }
      // Forward: exp + 2 mul + 2 FMA per (b, t, e, n) ≈ 6 flops, the exp counted as one;
      // backward recomputes the forward and adds ≈ 14 more.
      let elements = Double(batch * length * 128 * 32)
      Benchmark.report(
        "selective_scan_fwd_bwd_B\(batch)_L\(length)_E128_N32", fastBoth,
        [
          "forward_ms": fastForward.median * 1e3, "scalar_forward_ms": slowForward.median * 1e3,
          "scalar_fwd_bwd_ms": slowBoth.median * 1e3, "speedup_forward": slowForward.median / fastForward.median,
          "speedup_fwd_bwd": slowBoth.median / fastBoth.median, "gflops_fwd_bwd": elements * 26 / fastBoth.median / 1e9,
          "lanes": Double(ssm_scan_lanes()),
        ])
    }
  }

  /// Chunked SSD forward + backward against the sequential selective-scan kernel computing the
  /// same function (A one scalar per head, Δ shared by the head's channels), at SSD4Rec's head
  /// shape (H = 32, P = 16, N = 64), to find the length from which the matmul form wins.
  func testChunkedSSDAgainstSequentialScan() {
    let batch = Benchmark.isFull ? 8 : 2
    let (heads, headDim, state) = (32, 16, 64)
    for length in [50, 200, 1000] {
      var rng = SplitMix64(seed: UInt64(length))
      let x = ChunkedSSD.Inputs(
        x: Tensor.randomNormal([batch, length, heads, headDim], using: &rng),
        dt: Tensor.randomUniform([batch, length, heads], lowerBound: -3, upperBound: 0, using: &rng),
        A: -Tensor.randomUniform([heads], lowerBound: 1, upperBound: 16, using: &rng),
        B: Tensor.randomNormal([batch, length, 1, state], using: &rng),
        C: Tensor.randomNormal([batch, length, 1, state], using: &rng), D: Tensor(ones: [heads]),
        dtBias: Tensor(zeros: [heads]), chunkSize: 256)
      let channels = heads * headDim
      var delta = [Float]()
      delta.reserveCapacity(batch * length * channels)
      for i in 0..<(batch * length) { for h in 0..<heads { for _ in 0..<headDim { delta.append(x.dt.scalars[i * heads + h]) } } }
      var aRows = [Float]()
      for h in 0..<heads { for _ in 0..<headDim { aRows += Array(repeating: x.A.scalars[h], count: state) } }
      let scan = SelectiveScan.Inputs(
        u: x.x.reshaped(to: [batch, length, channels]), delta: Tensor(shape: [batch, length, channels], scalars: delta),
        A: Tensor(shape: [channels, state], scalars: aRows), B: x.B.reshaped(to: [batch, length, state]),
        C: x.C.reshaped(to: [batch, length, state]), D: Tensor(ones: [channels]), deltaBias: Tensor(zeros: [channels]))
      let g = Tensor.random(x.x.shape, seed: 3)
      let gScan = g.reshaped(to: [batch, length, channels])
      // The function does not depend on the chunk size, so the CPU may pick its own: SSD4Rec's
      // Q = 256 suits GPU tensor cores; smaller chunks trade Q² work for more state passing.
      let chunks = [32, 64, 256]
      var variants: [() -> Void] = chunks.map { q in
        var xq = x
        xq.chunkSize = q
        return {
          blackHole(ChunkedSSD.forward(xq))
          blackHole(ChunkedSSD.backward(outputGradient: g, xq))
        }
      }
      variants.append {
        blackHole(SelectiveScan.forward(scan))
        blackHole(SelectiveScan.backward(outputGradient: gScan, scan))
      }
      let t = Benchmark.interleaved(repeats: 5, warmup: 1, variants)
      let sequential = t[chunks.count].median
      Benchmark.report(
        "chunked_ssd_fwd_bwd_B\(batch)_L\(length)_H32_P16_N64", t[1],
        [
          "sequential_scan_ms": sequential * 1e3, "q32_ms": t[0].median * 1e3, "q64_ms": t[1].median * 1e3,
          "q256_ms": t[2].median * 1e3, "speedup_q64_vs_sequential": sequential / t[1].median,
          "speedup_best_vs_sequential": sequential / t[0..<chunks.count].map(\.median).min()!,
        ])
    }
  }

  /// The partial flip and the causal convolution at Mamba4Rec/SIGMA shapes, in GB/s of tensor
  /// bytes read and written, against memcpy of the same bytes.
  func testFlipAndConvolutionBandwidth() {
    let batch = Benchmark.isFull ? 256 : 64
    var rng = SplitMix64(seed: 4)
    let x = Tensor.randomNormal([batch, 50, 64], using: &rng)
    let inner = Tensor.randomNormal([batch, 50, 128], using: &rng)
    let w = Tensor.randomNormal([128, 4], using: &rng)
    let bias = Tensor.randomNormal([128], using: &rng)
    let g = Tensor.randomNormal([batch, 50, 128], using: &rng)
    func memcpyCase(_ t: Tensor) -> () -> Void {
      var destination = [Float](repeating: 0, count: t.elementCount)
      let source = t.scalars
      return {
        source.withUnsafeBufferPointer { s in
          destination.withUnsafeMutableBufferPointer { d in _ = memcpy(d.baseAddress!, s.baseAddress!, s.count * 4) }
        }
      }
    }
    let cases: [(String, Tensor, () -> Void, Double)] = [
      ("partial_flip_prefix45_B\(batch)_L50_D64", x, { blackHole(PartialFlip.prefix(x, count: 45)) }, 2),
      (
        "causal_conv1d_forward_B\(batch)_L50_C128_K4", inner, { blackHole(CausalConv1d.forward(inner, weight: w, bias: bias)) }, 2
      ),
      (
        "causal_conv1d_backward_B\(batch)_L50_C128_K4", inner,
        {
          blackHole(CausalConv1d.backward(outputGradient: g, inner, weight: w, hasBias: true))
        }, 3
      ),
    ]
    for (name, tensor, body, passes) in cases {
      let t = Benchmark.interleaved([body, memcpyCase(tensor)])
      let bytes = Double(tensor.elementCount * 4)
      let rate = passes * bytes / t[0].median / 1e9
      let copyRate = 2 * bytes / t[1].median / 1e9
      Benchmark.report(name, t[0], ["gbps": rate, "memcpy_gbps": copyRate, "ratio_vs_memcpy": rate / copyRate])
    }
  }
}
