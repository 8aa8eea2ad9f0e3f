import CBLAS
import CKernels
import Foundation
import SSMTensor
import SSMTestSupport
import XCTest

/// Matrix products and memory-bound passes of SSMTensor against their raw ceilings, measured in
/// the same process: `cblas_sgemm` called directly, and `memcpy` of the same bytes.
///
/// Run with `swift test -c release --filter SSMBenchmarks` (add `SSMREC_BENCH=full` for full sizes).
final class TensorBenchmarks: XCTestCase {
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

  /// Shapes of the models' largest products: a [B·L, D] × [D, 2E]-style projection and the
  /// scores over all items, [B, D] × [D, V].
  func testMatmulAgainstRawSgemm() {
    let shapes: [(Int, Int, Int)] =
      Benchmark.isFull ? [(12_800, 64, 256), (256, 64, 3417)] : [(1_600, 64, 256), (256, 64, 3417)]
    var rng = SplitMix64(seed: 1)
    for (m, k, n) in shapes {
      let a = Tensor.randomNormal([m, k], using: &rng)
      let b = Tensor.randomNormal([k, n], using: &rng)
      let flop = 2 * Double(m * n * k)
      var c = [Float](repeating: 0, count: m * n)
      let (pa, pb) = (a.scalars, b.scalars)
      func raw(threads: Int32) {
        openblas_set_num_threads(threads)
        c.withUnsafeMutableBufferPointer { pc in
          cblas_sgemm(
            CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1,
            pa, Int32(k), pb, Int32(n), 0, pc.baseAddress, Int32(n))
        }
        openblas_set_num_threads(1)
      }
      let timings = Benchmark.interleaved([
        { blackHole(Tensor.matmul(a, b)) }, { raw(threads: 1) }, { raw(threads: Int32(Parallel.workerCount)) },
      ])
      let (ours, raw1, raw2) = (timings[0], timings[1], timings[2])
      let name = "matmul_\(m)x\(k)x\(n)"
      Benchmark.report(
        name, ours,
        [
          "gflops": flop / ours.median / 1e9, "raw1_ms": raw1.median * 1e3, "raw1_gflops": flop / raw1.median / 1e9,
          "rawN_ms": raw2.median * 1e3, "rawN_gflops": flop / raw2.median / 1e9,
          "ratio_vs_rawN": ours.median / raw2.median, "ratio_vs_raw1": ours.median / raw1.median,
        ])
    }
  }

  /// Elementwise functions and softmax in GB/s (bytes read + written) against `memcpy` of the
  /// same number of bytes into a preallocated buffer.
  func testMemoryBoundPassesAgainstMemcpy() {
    let count = Benchmark.isFull ? 4 << 20 : 1 << 20
    var rng = SplitMix64(seed: 2)
    let x = Tensor.randomNormal([count / 1024, 1024], using: &rng)
    let y = Tensor.randomNormal([count / 1024, 1024], using: &rng)
    let bytes = Double(2 * count * 4)
    var destination = [Float](repeating: 0, count: count)
    let source = x.scalars
    func copy() {
      source.withUnsafeBufferPointer { src in
        destination.withUnsafeMutableBufferPointer { dst in _ = memcpy(dst.baseAddress!, src.baseAddress!, count * 4) }
      }
    }
    let cases: [(String, () -> Tensor, Double)] = [
      ("exp", { x.exp() }, bytes), ("sigmoid", { x.sigmoid() }, bytes), ("silu", { x.silu() }, bytes),
      ("gelu", { x.gelu() }, bytes), ("softplus", { x.softplus() }, bytes), ("tanh", { x.tanh() }, bytes),
      ("add", { x + y }, bytes * 1.5), ("mul_row_broadcast", { x * y.slice(alongAxis: 0, 0..<1) }, bytes),
      ("softmax", { x.softmax() }, bytes), ("sum_axis0", { x.sum(alongAxis: 0) }, bytes / 2),
    ]
    // A steady state before the first timed case: without this the first case (whichever it
    // was) measured up to 2× slower than the same pass placed last, while the worker threads
    // and the heap settled.
    for (_, body, _) in cases { for _ in 0..<10 { blackHole(body()) } }
    for (name, body, moved) in cases {
      let timings = Benchmark.interleaved([{ blackHole(body()) }, copy])
      let rate = moved / timings[0].median / 1e9
      let copyRate = bytes / timings[1].median / 1e9
      Benchmark.report(
        "\(name)_\(count)", timings[0], ["gbps": rate, "memcpy_gbps": copyRate, "ratio_vs_memcpy": rate / copyRate])
    }
  }
}
