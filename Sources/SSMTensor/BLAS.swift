import CBLAS
import CKernels

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Matrix products through OpenBLAS, with the work split across cores by SSMRec itself.
///
/// OpenBLAS is kept on one thread (`openblas_set_num_threads(1)`) and large products are cut into
/// row or column bands that run on separate workers: two threading layers on two cores
/// oversubscribe (measured: 133 GF/s with 4 threads against 169 with 2).
public enum BLAS {
  /// Set once, before the first product (or LAPACK call).
  static let configured: Bool = {
    selectedCore = selectKernelsForThisCPU()
    openblas_set_num_threads(1)
    return true
  }()

  /// The OpenBLAS kernel family in use ("SkylakeX", "Haswell", …), `nil` if the library does
  /// not say.
  public static var kernelFamily: String? {
    _ = configured
    return selectedCore
  }

  nonisolated(unsafe) private static var selectedCore: String?

  /// OpenBLAS built for several CPUs picks its kernels by the CPU model, and a release that does
  /// not know the model falls back to its SSE3 kernels ("Prescott"): OpenBLAS 0.3.21 (Debian 12)
  /// on a 5th-generation Xeon (family 6, model 207) runs products 3–6× slower than it can
  /// (measured: a GRU4Rec inference batch 1,471 µs against 242 with the Skylake-X kernels).
  /// When that fallback meets a CPU with AVX-512 (or AVX2 and FMA), the library is initialised
  /// again with the kernels of that instruction set, as `OPENBLAS_CORETYPE` would do. An
  /// explicit `OPENBLAS_CORETYPE` is left alone, as is a build without OpenBLAS's dynamic
  /// dispatch (the entry points are looked up, not linked).
  private static func selectKernelsForThisCPU() -> String? {
    typealias CoreName = @convention(c) () -> UnsafeMutablePointer<CChar>?
    typealias Hook = @convention(c) () -> Void
    guard let nameSymbol = dlsym(nil, "openblas_get_corename") else { return nil }
    let coreName = unsafeBitCast(nameSymbol, to: CoreName.self)
    func current() -> String? { coreName().map { String(cString: $0) } }
    guard let name = current(), name.lowercased() == "prescott", getenv("OPENBLAS_CORETYPE") == nil,
      let quit = dlsym(nil, "gotoblas_dynamic_quit"), let initialise = dlsym(nil, "gotoblas_dynamic_init")
    else { return current() }
    let family: String
    switch ssm_isa_supported() {
    case 2: family = "SkylakeX"
    case 1: family = "Haswell"
    default: return name
    }
    setenv("OPENBLAS_CORETYPE", family, 1)
    unsafeBitCast(quit, to: Hook.self)()
    unsafeBitCast(initialise, to: Hook.self)()
    unsetenv("OPENBLAS_CORETYPE")
    return current()
  }

  /// Products below this many flops (2·m·n·k) run on one worker.
  public static let parallelFlopThreshold = 1_000_000
  /// Elements of op(B) (256 KB) above which a product with at most four rows of C is split
  /// between the workers whatever its operation count.
  static let largeOperandElements = 1 << 16

  /// `C = alpha·op(A)·op(B) + beta·C` for row-major matrices, `op(A)` of shape `[m, k]`,
  /// `op(B)` of shape `[k, n]`, `C` of shape `[m, n]` with leading dimension `ldc`.
  ///
  /// - Parameters:
  ///   - transposeA: whether `A` is stored as `[k, m]` (leading dimension `lda`).
  ///   - transposeB: whether `B` is stored as `[n, k]` (leading dimension `ldb`).
  ///   - m: rows of `op(A)` and `C`.
  ///   - n: columns of `op(B)` and `C`.
  ///   - k: columns of `op(A)`, rows of `op(B)`.
  ///   - alpha: the scale of the product.
  ///   - a: `A`'s first element.
  ///   - lda: the distance between `A`'s rows in elements.
  ///   - b: `B`'s first element.
  ///   - ldb: the distance between `B`'s rows in elements.
  ///   - beta: the scale of `C`'s previous contents (0 overwrites them).
  ///   - c: `C`'s first element.
  ///   - ldc: the distance between `C`'s rows in elements.
  public static func gemm(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    _ = configured
    if m == 0 || n == 0 { return }
    let flops = 2 * m * n * k
    FLOPCounter.add(flops, kind: .matrixProduct)
    // A few rows of C against a large op(B) (one history scored against the catalogue) are
    // bound by reading op(B): in column bands each worker reads its half, which then stays in
    // its own core's L2 from one call to the next.
    let streamsB = m <= 4 && n * k >= largeOperandElements
    let workers = flops >= parallelFlopThreshold || streamsB ? Parallel.workerCount : 1
    if workers == 1 {
      rawGemm(transposeA, transposeB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
      return
    }
    nonisolated(unsafe) let (a, b, c) = (a, b, c)
    if workers == 2 && k >= 16 * Swift.max(m, n) && m * n <= 1 << 16 {
      // A long reduction into a small C (the weight gradient of a layer applied to every
      // position): halves of k, the second into a scratch C added at the end. Bands of a
      // 64-row C left one worker idle or both with half-width products (measured at
      // 64×256×12800: 59 GF/s banded against ≈95 split by k).
      let half = k / 2
      var partial = [Float](repeating: 0, count: m * n)
      partial.withUnsafeMutableBufferPointer { scratch in
        nonisolated(unsafe) let t = scratch.baseAddress!
        Parallel.forEachWorker(count: 2, minimumPerWorker: 1) { worker, _ in
          let (k0, kc) = worker == 0 ? (0, half) : (half, k - half)
          let aPart = transposeA ? a + k0 * lda : a + k0
          let bPart = transposeB ? b + k0 : b + k0 * ldb
          if worker == 0 {
            rawGemm(transposeA, transposeB, m, n, kc, alpha, aPart, lda, bPart, ldb, beta, c, ldc)
          } else {
            rawGemm(transposeA, transposeB, m, n, kc, alpha, aPart, lda, bPart, ldb, 0, t, n)
          }
        }
        for row in 0..<m {
          ssm_accumulate(c + row * ldc, t + row * n, n)
        }
      }
      return
    }
    if m >= n || m >= 64 * workers {
      // Row bands of C: rows of op(A).
      Parallel.forEachChunk(count: m, minimumPerWorker: 1) { rows in
        let aBand = transposeA ? a + rows.lowerBound : a + rows.lowerBound * lda
        rawGemm(
          transposeA, transposeB, rows.count, n, k, alpha, aBand, lda, b, ldb, beta,
          c + rows.lowerBound * ldc, ldc)
      }
    } else {
      // Column bands of C: columns of op(B).
      Parallel.forEachChunk(count: n, minimumPerWorker: 1) { cols in
        let bBand = transposeB ? b + cols.lowerBound * ldb : b + cols.lowerBound
        rawGemm(
          transposeA, transposeB, m, cols.count, k, alpha, a, lda, bBand, ldb, beta,
          c + cols.lowerBound, ldc)
      }
    }
  }

  /// ``gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)`` on the calling thread
  /// only, for kernels that already run one task per worker.
  public static func gemmOnCurrentThread(
    transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
    c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    _ = configured
    if m == 0 || n == 0 { return }
    FLOPCounter.add(2 * m * n * k, kind: .matrixProduct)
    rawGemm(transposeA, transposeB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
  }

  /// `y = alpha·A·x + beta·y` for a row-major `A` of `rows × columns` (row stride `lda`), one
  /// `cblas_sgemv` call. A matrix–vector product through `gemm` with one row would have
  /// OpenBLAS pack all of `A` first (measured: a 384 × 128 GRU step took 5× longer that way).
  public static func gemv(
    rows: Int, columns: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>, beta: Float,
    y: UnsafeMutablePointer<Float>
  ) {
    _ = configured
    if rows == 0 { return }
    FLOPCounter.add(2 * rows * columns, kind: .matrixProduct)
    cblas_sgemv(
      CblasRowMajor, CblasNoTrans, Int32(rows), Int32(columns), alpha, a, Int32(Swift.max(lda, 1)), x, 1, beta, y, 1)
  }

  /// One `cblas_sgemm` call on the calling thread, or `cblas_sgemv` when C has one row: for one
  /// row, `sgemm` packs all of op(B) first (a one-history forward pass spent most of its
  /// projections and its scoring over the catalogue doing that).
  @inline(__always)
  static func rawGemm(
    _ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float,
    _ c: UnsafeMutablePointer<Float>, _ ldc: Int
  ) {
    if m == 1 {
      // sgemv scales y by beta, which keeps a NaN already in C; sgemm with beta 0 overwrites it.
      if beta == 0 { c.update(repeating: 0, count: n) }
      // op(A)'s one row: A's first row, or its first column read with stride lda.
      let incX = Int32(transposeA ? Swift.max(lda, 1) : 1)
      if transposeB {  // C = a·Bᵀ with B [n, k]: y = B·x.
        cblas_sgemv(
          CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), alpha, b, Int32(Swift.max(ldb, 1)), a, incX, beta, c, 1)
      } else {  // C = a·B with B [k, n]: y = Bᵀ·x.
        cblas_sgemv(
          CblasRowMajor, CblasTrans, Int32(k), Int32(n), alpha, b, Int32(Swift.max(ldb, 1)), a, incX, beta, c, 1)
      }
      return
    }
    if shortGemm(transposeA, transposeB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) { return }
    if prefersPanel(transposeA, transposeB, m, n, k) {
      ssm_gemm_panel(transposeA ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
      return
    }
    cblas_sgemm(
      CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
      Int32(m), Int32(n), Int32(k), alpha, a, Int32(Swift.max(lda, 1)), b, Int32(Swift.max(ldb, 1)),
      beta, c, Int32(Swift.max(ldc, 1)))
  }
}

extension BLAS {
  /// The longest dimension a product can have and still go to SSMRec's short-dimension kernels
  /// instead of `sgemm` (`SSM_SHORT_DIMENSION_MAX`).
  public static let shortDimension = Int(SSM_SHORT_DIMENSION_MAX)

  /// A product with a short n, or a short m or n and A transposed (the backward of Mamba's
  /// `dt_proj`: its input gradient `[B·L, E]·[E, 4]` and its weight gradient `[E, B·L]·[B·L, 4]`),
  /// through the `ssm_gemm_short_*` kernels, which read the long operand once; `sgemm` packs and
  /// blocks them like large products (measured: 15–17 GFLOP/s, 3.1–3.4 ms each at B·L = 51,200).
  /// Returns `false`, having done nothing, for every other shape.
  @inline(__always)
  static func shortGemm(
    _ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float,
    _ c: UnsafeMutablePointer<Float>, _ ldc: Int
  ) -> Bool {
    let short = shortDimension
    guard n <= short || (transposeA && m <= short) else { return false }
    if !transposeA {
      // Each element of C is a row of A against a column of op(B), wanted as a contiguous row.
      guard !transposeB else {
        ssm_gemm_short_n(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return true
      }
      withTransposed(b, rows: k, columns: n, ld: ldb) { ssm_gemm_short_n(m, n, k, alpha, a, lda, $0, k, beta, c, ldc) }
      return true
    }
    guard !transposeB else { return false }
    if m <= short {
      ssm_gemm_short_m_transposed_a(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
      return true
    }
    // Cᵀ = op(B)ᵀ·A is the same kernel with the operands swapped; C is then its transpose.
    withUnsafeTemporaryAllocation(of: Float.self, capacity: n * m) { scratch in
      let t = scratch.baseAddress!
      ssm_gemm_short_m_transposed_a(n, m, k, alpha, b, ldb, a, lda, 0, t, m)
      for i in 0..<m {
        let row = c + i * ldc
        for j in 0..<n { row[j] = beta == 0 ? t[j * m + i] : t[j * m + i] + beta * row[j] }
      }
    }
    return true
  }

  /// The widest op(B), and the most rows of C with A untransposed, that go to `ssm_gemm_panel`.
  static let panelWidth = 256

  /// Whether a product goes to `ssm_gemm_panel`, which reads op(A) where it lies instead of
  /// packing it: at the AVX-512 level only, and for the shapes where it was measured faster than
  /// `sgemm` on one core (AVX-512 EPYC VM, OpenBLAS's Cooper Lake kernels, medians of 9, GFLOP/s):
  /// a weight gradient `[m, B·L]·[B·L, n]` with m, n ≤ 256 and n ≥ 64 (`[256, 25600]·[25600, 64]`
  /// 75–83 against 61–71) and attention's `Pᵀ·dO` (`[200, 200]ᵀ·[200, 32]` 96–110 against
  /// 82–93); with A untransposed, at most 256 rows of C against a k of at least 64 (a head's
  /// `P·V` 102–111 against 84–95, a row band of a GRU step 99–106 against 90–97). It loses with
  /// a short k (`[200, 32]·[32, 200]` 65–82 against 86–99), with many rows of C and a wide B
  /// (`[25600, 64]·[64, 256]` 58–75 against 78–86: OpenBLAS's blocking streams C better), and
  /// below the AVX-512 level, where OpenBLAS's own AVX-512 kernels outrun it. An op(B) given
  /// transposed stays with `sgemm` too: transposing it for every call cost more than the panel
  /// saved on a one-history forward pass (SASRec B 1 L 200 inference 0.35 → 0.37 ms).
  @inline(__always)
  package static func prefersPanel(_ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int) -> Bool {
    guard ssm_isa_level() == 2, n <= panelWidth, !transposeB else { return false }
    if transposeA { return m <= panelWidth && n >= 64 }
    return m <= panelWidth && k >= 64 && n >= 32
  }

  /// Calls `body` with a contiguous `[columns, rows]` copy of the `[rows, columns]` matrix at `x`
  /// (row stride `ld`).
  @inline(__always)
  private static func withTransposed(
    _ x: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int, _ body: (UnsafePointer<Float>) -> Void
  ) {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: rows * columns) { scratch in
      let t = scratch.baseAddress!
      for r in 0..<rows {
        for col in 0..<columns { t[col * rows + r] = x[r * ld + col] }
      }
      body(t)
    }
  }
}

extension Tensor {
  /// The matrix product of the last two axes, with leading (batch) axes handled as follows:
  ///
  /// - `[m, k] × [k, n] → [m, n]`;
  /// - `[…, m, k] × [k, n] → […, m, n]`: the right operand is broadcast over the batch without
  ///   copying (one `sgemm` over all rows when `lhs` is not transposed);
  /// - `[b…, m, k] × [b…, k, n] → [b…, m, n]`: batched, batch axes must be equal;
  /// - `[m, k] × [b…, k, n] → [b…, m, n]`: the left operand is broadcast.
  ///
  /// `transposeA`/`transposeB` swap the last two axes of the operand before the product (BLAS
  /// reads it transposed; nothing is copied).
  ///
  /// - Precondition: the inner extents agree and batch axes are equal; the message names both shapes.
  public static func matmul(
    _ lhs: Tensor, _ rhs: Tensor, transposeA: Bool = false, transposeB: Bool = false
  ) -> Tensor {
    if let message = matmulShapeError(lhs.shape, rhs.shape, transposeA: transposeA, transposeB: transposeB) {
      preconditionFailure(message)
    }
    let (ar, ac) = (lhs.shape[lhs.rank - 2], lhs.shape[lhs.rank - 1])
    let (br, bc) = (rhs.shape[rhs.rank - 2], rhs.shape[rhs.rank - 1])
    let (m, k) = transposeA ? (ac, ar) : (ar, ac)
    let n = transposeB ? br : bc
    let aBatch = Array(lhs.shape.dimensions.dropLast(2))
    let bBatch = Array(rhs.shape.dimensions.dropLast(2))
    let batchDims = aBatch.isEmpty ? bBatch : aBatch
    let batch = batchDims.reduce(1, *)
    let outShape = Shape(batchDims + [m, n])
    if outShape.elementCount == 0 { return Tensor(zeros: outShape) }
    if k == 0 { return Tensor(zeros: outShape) }
    return Tensor(shape: outShape) { out in
      lhs.withUnsafeBufferPointer { aBuffer in
        rhs.withUnsafeBufferPointer { bBuffer in
          let a = aBuffer.baseAddress!
          let b = bBuffer.baseAddress!
          let c = out.baseAddress!
          if bBatch.isEmpty && !transposeA {
            // All rows of every batch element at once: [batch·m, k] × [k, n].
            BLAS.gemm(
              transposeA: false, transposeB: transposeB, m: batch * m, n: n, k: k, alpha: 1,
              a: a, lda: ac, b: b, ldb: bc, beta: 0, c: c, ldc: n)
          } else {
            let aStride = aBatch.isEmpty ? 0 : ar * ac
            let bStride = bBatch.isEmpty ? 0 : br * bc
            batchedGemm(
              batch: batch, transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
              a: a, lda: ac, aStride: aStride, b: b, ldb: bc, bStride: bStride, c: c, cStride: m * n)
          }
        }
      }
    }
  }

  /// The precondition message for operands `matmul` rejects, or `nil` when they fit.
  package static func matmulShapeError(
    _ lhs: Shape, _ rhs: Shape, transposeA: Bool, transposeB: Bool
  ) -> String? {
    // Built only for a message: every product passes through here.
    var written: String { "\(lhs)\(transposeA ? "ᵀ" : "") × \(rhs)\(transposeB ? "ᵀ" : "")" }
    guard lhs.rank >= 2 && rhs.rank >= 2 else { return "matmul needs operands of rank ≥ 2: \(written)" }
    let k = transposeA ? lhs[lhs.rank - 2] : lhs[lhs.rank - 1]
    let k2 = transposeB ? rhs[rhs.rank - 1] : rhs[rhs.rank - 2]
    guard k == k2 else { return "matmul inner dimensions differ: \(written)" }
    guard lhs.rank == 2 || rhs.rank == 2 || lhs.dimensions.dropLast(2) == rhs.dimensions.dropLast(2) else {
      return "matmul batch axes differ: \(written)"
    }
    return nil
  }

  /// Runs `batch` independent products, split across workers by batch element when each is
  /// small and by rows/columns when each is large.
  static func batchedGemm(
    batch: Int, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
    a: UnsafePointer<Float>, lda: Int, aStride: Int, b: UnsafePointer<Float>, ldb: Int, bStride: Int,
    c: UnsafeMutablePointer<Float>, cStride: Int
  ) {
    let flopsEach = 2 * m * n * k
    if flopsEach >= BLAS.parallelFlopThreshold || batch == 1 {
      // BLAS.gemm counts each product.
      for i in 0..<batch {
        BLAS.gemm(
          transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 1,
          a: a + i * aStride, lda: lda, b: b + i * bStride, ldb: ldb, beta: 0, c: c + i * cStride, ldc: n)
      }
      return
    }
    nonisolated(unsafe) let (a, b, c) = (a, b, c)
    let perWorker = Swift.max(1, BLAS.parallelFlopThreshold / Swift.max(flopsEach, 1))
    BLAS.configureOnce()
    FLOPCounter.add(batch * flopsEach, kind: .matrixProduct)
    Parallel.forEachChunk(count: batch, minimumPerWorker: perWorker) { items in
      for i in items {
        BLAS.rawGemm(
          transposeA, transposeB, m, n, k, 1, a + i * aStride, lda, b + i * bStride, ldb, 0,
          c + i * cStride, n)
      }
    }
  }
}

extension BLAS {
  /// Makes sure OpenBLAS runs single-threaded before a direct `rawGemm` call.
  static func configureOnce() { _ = configured }
}
