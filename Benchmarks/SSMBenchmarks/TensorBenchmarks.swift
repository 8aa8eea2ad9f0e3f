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

  /// The backward of Mamba's `dt_proj`, whose short side (the rank of Δ, 4) sends it to the
  /// short-dimension kernels: the input gradient `[B·L, 128]·[128, 4]` and the weight gradient
  /// `[128, B·L]·[B·L, 4]`, at
  /// B·L = 12,800 (51,200 with `SSMREC_BENCH=full`). The reference is what `BLAS.gemm` did
  /// before them: `cblas_sgemm` (one thread) in row bands on the workers, or for the weight
  /// gradient in halves of B·L added at the end; and `cblas_sgemm` on one thread. OpenBLAS's own
  /// threading is left out: its threads spin after each call and slow whatever runs next.
  func testShortDimensionProductsAgainstRawSgemm() {
    let rows = Benchmark.isFull ? 51_200 : 12_800
    let (rank, inner) = (4, 128)
    var rng = SplitMix64(seed: 2)
    let delta = Tensor.randomNormal([rows, rank], using: &rng)
    let weight = Tensor.randomNormal([inner, rank], using: &rng)
    let gradient = Tensor.randomNormal([rows, inner], using: &rng)
    // (name, transposeA, transposeB, m, n, k, A, lda, B, ldb)
    let cases: [(String, Bool, Bool, Int, Int, Int, Tensor, Int, Tensor, Int)] = [
      ("input_gradient", false, false, rows, rank, inner, gradient, inner, weight, rank),
      ("weight_gradient", true, false, inner, rank, rows, gradient, inner, delta, rank),
    ]
    for (name, ta, tb, m, n, k, a, lda, b, ldb) in cases {
      var c = [Float](repeating: 0, count: m * n)
      var partial = [Float](repeating: 0, count: m * n)
      let (pa, pb) = (a.scalars, b.scalars)
      func ours() {
        c.withUnsafeMutableBufferPointer { pc in
          BLAS.gemm(
            transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 1, a: pa, lda: lda, b: pb, ldb: ldb, beta: 0,
            c: pc.baseAddress!, ldc: n)
        }
      }
      func sgemm(m: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
        cblas_sgemm(
          CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k),
          1, a, Int32(lda), b, Int32(ldb), 0, c, Int32(n))
      }
      func sgemmSplit() {
        pa.withUnsafeBufferPointer { ap in
          pb.withUnsafeBufferPointer { bp in
            c.withUnsafeMutableBufferPointer { cp in
              partial.withUnsafeMutableBufferPointer { tp in
                nonisolated(unsafe) let (a, b, c, t) = (ap.baseAddress!, bp.baseAddress!, cp.baseAddress!, tp.baseAddress!)
                if ta {
                  let half = k / 2
                  Parallel.forEachWorker(count: 2, minimumPerWorker: 1) { worker, _ in
                    let (k0, kc) = worker == 0 ? (0, half) : (half, k - half)
                    sgemm(m: m, k: kc, a: a + k0 * lda, b: b + k0 * ldb, c: worker == 0 ? c : t)
                  }
                  ssm_accumulate(c, t, m * n)
                } else {
                  Parallel.forEachChunk(count: m, minimumPerWorker: 1) { band in
                    sgemm(m: band.count, k: k, a: a + band.lowerBound * lda, b: b, c: c + band.lowerBound * n)
                  }
                }
              }
            }
          }
        }
      }
      func sgemmOneThread() {
        c.withUnsafeMutableBufferPointer { cp in sgemm(m: m, k: k, a: pa, b: pb, c: cp.baseAddress!) }
      }
      let timings = Benchmark.interleaved([ours, sgemmSplit, sgemmOneThread])
      let (mine, split, one) = (timings[0], timings[1], timings[2])
      let flop = 2 * Double(m * n * k)
      Benchmark.report(
        "dt_proj_\(name)_\(rows)", mine,
        [
          "gflops": flop / mine.median / 1e9, "sgemm_split_ms": split.median * 1e3, "sgemm_1_ms": one.median * 1e3,
          "ratio_vs_sgemm_split": mine.median / split.median, "ratio_vs_sgemm_1": mine.median / one.median,
        ])
    }
  }

  /// `ssm_gemm_panel` against `cblas_sgemm`, both on one thread, at the shapes `BLAS.gemm` sends
  /// it (`BLAS.prefersPanel`) and at two it does not: a weight gradient
  /// `[256, rows]·[rows, 64]` and `[64, rows]·[rows, 256]` (rows 12,800 a worker's half of B·L at
  /// B 256, L 100; 25,600 with `SSMREC_BENCH=full`), a head's `P·V` and `Pᵀ·dO` at L 200, a band of
  /// a GRU step, and the two it loses: a head's `Q·Kᵀ` (k 32) and a wide projection of many rows.
  func testPanelProductsAgainstRawSgemm() {
    let rows = Benchmark.isFull ? 25_600 : 12_800
    // (name, transposeA, m, n, k)
    let cases: [(String, Bool, Int, Int, Int)] = [
      ("weight_gradient_256x64", true, 256, 64, rows), ("weight_gradient_64x256", true, 64, 256, rows),
      ("attention_pv", false, 200, 32, 200), ("attention_ptdo", true, 200, 32, 200), ("gru_band", false, 128, 192, 64),
      ("attention_qk", false, 200, 200, 32), ("projection_\(rows)x256", false, rows, 256, 64),
    ]
    // OpenBLAS on one thread, as BLAS configures it, which this test has not called yet.
    openblas_set_num_threads(1)
    var rng = SplitMix64(seed: 3)
    for (name, ta, m, n, k) in cases {
      let a = Tensor.randomNormal(ta ? [k, m] : [m, k], using: &rng).scalars
      let b = Tensor.randomNormal([k, n], using: &rng).scalars
      let lda = ta ? m : k
      var c = [Float](repeating: 0, count: m * n)
      func panel() {
        c.withUnsafeMutableBufferPointer { pc in ssm_gemm_panel(ta ? 1 : 0, m, n, k, 1, a, lda, b, n, 0, pc.baseAddress!, n) }
      }
      func sgemm() {
        c.withUnsafeMutableBufferPointer { pc in
          cblas_sgemm(
            CblasRowMajor, ta ? CblasTrans : CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(lda),
            b, Int32(n), 0, pc.baseAddress, Int32(n))
        }
      }
      // Small products are repeated inside a timed run so that each run lasts about a millisecond.
      let inner = Swift.max(1, 2_000_000 / (m * n * k))
      let timings = Benchmark.interleaved([
        { for _ in 0..<inner { panel() } }, { for _ in 0..<inner { sgemm() } },
      ])
      let (mine, raw) = (timings[0], timings[1])
      let flop = 2 * Double(m * n * k * inner)
      Benchmark.report(
        "panel_\(name)", mine,
        [
          "gflops": flop / mine.median / 1e9, "sgemm_1_gflops": flop / raw.median / 1e9,
          "ratio_vs_sgemm_1": mine.median / raw.median, "isa_level": Double(ssm_isa_level()),
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
