import CKernels
import Foundation
import SSMTensor
import SSMTestSupport
import XCTest

final class MatMulTests: XCTestCase {
  /// Naive `[m, k] × [k, n]` in Double, operands given in their stored layout.
  static func reference(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool, batch: Int) -> [Double] {
    let (ar, ac) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
    let (br, bc) = (b.shape[b.rank - 2], b.shape[b.rank - 1])
    let (m, k) = transposeA ? (ac, ar) : (ar, ac)
    let n = transposeB ? br : bc
    let aStride = a.rank > 2 ? ar * ac : 0
    let bStride = b.rank > 2 ? br * bc : 0
    let (aScalars, bScalars) = (a.scalars, b.scalars)
    var out = [Double]()
    out.reserveCapacity(batch * m * n)
    for p in 0..<batch {
      for i in 0..<m {
        for j in 0..<n {
          var s = 0.0
          for l in 0..<k {
            let av = transposeA ? aScalars[p * aStride + l * ac + i] : aScalars[p * aStride + i * ac + l]
            let bv = transposeB ? bScalars[p * bStride + j * bc + l] : bScalars[p * bStride + l * bc + j]
            s += Double(av) * Double(bv)
          }
          out.append(s)
        }
      }
    }
    return out
  }

  func testTwoDimensionalWithEveryTransposition() {
    withEvery("mkn", in: [(1, 1, 1), (3, 7, 17), (17, 3, 1), (64, 33, 130), (300, 64, 257)]) { (m, k, n) in
      withEvery("transposeA", in: [false, true]) { ta in
        withEvery("transposeB", in: [false, true]) { tb in
          let a = Tensor.random(ta ? [k, m] : [m, k], seed: UInt64(m * 7 + k))
          let b = Tensor.random(tb ? [n, k] : [k, n], seed: UInt64(n * 5 + k))
          let expected = Self.reference(a, b, transposeA: ta, transposeB: tb, batch: 1)
          assertClose(
            Tensor.matmul(a, b, transposeA: ta, transposeB: tb), expected: expected, shape: [m, n], rtol: 1e-5, atol: 1e-5)
        }
      }
    }
  }

  func testBatchedAndBroadcast() {
    let (batch, m, k, n) = (3, 7, 5, 17)
    withEvery("transposeA", in: [false, true]) { ta in
      withEvery("transposeB", in: [false, true]) { tb in
        let a3 = Tensor.random(ta ? [batch, k, m] : [batch, m, k], seed: 1)
        let b3 = Tensor.random(tb ? [batch, n, k] : [batch, k, n], seed: 2)
        let b2 = Tensor.random(tb ? [n, k] : [k, n], seed: 3)
        let a2 = Tensor.random(ta ? [k, m] : [m, k], seed: 4)
        assertClose(
          Tensor.matmul(a3, b3, transposeA: ta, transposeB: tb),
          expected: Self.reference(a3, b3, transposeA: ta, transposeB: tb, batch: batch), shape: [batch, m, n], rtol: 1e-5,
          atol: 1e-5)
        assertClose(
          Tensor.matmul(a3, b2, transposeA: ta, transposeB: tb),
          expected: Self.reference(a3, b2, transposeA: ta, transposeB: tb, batch: batch), shape: [batch, m, n], rtol: 1e-5,
          atol: 1e-5)
        assertClose(
          Tensor.matmul(a2, b3, transposeA: ta, transposeB: tb),
          expected: Self.reference(a2, b3, transposeA: ta, transposeB: tb, batch: batch), shape: [batch, m, n], rtol: 1e-5,
          atol: 1e-5)
      }
    }
  }

  func testLargeProductsSplitAcrossWorkersAgreeWithOneCall() {
    // Tall (row bands) and wide (column bands) shapes above the parallel threshold.
    for (m, k, n) in [(1100, 64, 64), (16, 64, 3417)] {
      let a = Tensor.random([m, k], seed: 10)
      let b = Tensor.random([k, n], seed: 11)
      let expected = Self.reference(a, b, transposeA: false, transposeB: false, batch: 1)
      assertClose(Tensor.matmul(a, b), expected: expected, shape: [m, n], rtol: 1e-5, atol: 1e-4)
    }
  }

  /// A long reduction into a small C is split along k between workers; with every
  /// transposition, an odd k, beta ≠ 0 and a C whose rows are padded (ldc > n).
  func testLongReductionsSplitAlongKAgreeWithTheReference() {
    let (m, n, k, ldc) = (8, 16, 16_385, 19)
    withEvery("transposeA", in: [false, true]) { ta in
      withEvery("transposeB", in: [false, true]) { tb in
        let a = Tensor.random(ta ? [k, m] : [m, k], seed: 20)
        let b = Tensor.random(tb ? [n, k] : [k, n], seed: 21)
        let initial = Tensor.random([m, ldc], seed: 22)
        let product = Self.reference(a, b, transposeA: ta, transposeB: tb, batch: 1)
        var c = initial
        a.withUnsafeBufferPointer { ap in
          b.withUnsafeBufferPointer { bp in
            c.withUnsafeMutableBufferPointer { cp in
              BLAS.gemm(
                transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 2, a: ap.baseAddress!, lda: ta ? m : k,
                b: bp.baseAddress!, ldb: tb ? k : n, beta: 0.5, c: cp.baseAddress!, ldc: ldc)
            }
          }
        }
        var expected = initial.scalars.map(Double.init)
        for i in 0..<m {
          for j in 0..<n { expected[i * ldc + j] = 2 * product[i * n + j] + 0.5 * Double(initial.scalars[i * ldc + j]) }
        }
        assertClose(c, expected: expected, shape: [m, ldc], rtol: 1e-4, atol: 1e-3)
      }
    }
  }

  /// `BLAS.gemm` on operands with padded rows (lda and ldb exceed their widths, C's rows are
  /// `n + 3` apart) against the Double reference, at each of `levels`: alpha 2, and beta 0
  /// overwriting a NaN already in C, then beta 1 accumulating onto C.
  func assertGemmMatchesReference(
    m: Int, n: Int, k: Int, transposeA ta: Bool, transposeB tb: Bool, levels: [Int32] = [ssm_isa_level()],
    file: StaticString = #filePath, line: UInt = #line
  ) {
    let (aRows, aColumns) = ta ? (k, m) : (m, k)
    let (bRows, bColumns) = tb ? (n, k) : (k, n)
    let (lda, ldb, ldc) = (aColumns + 2, bColumns + 5, n + 3)
    let a = Tensor.random([aRows, lda], seed: UInt64(7 * m + k))
    let b = Tensor.random([bRows, ldb], seed: UInt64(3 * k + n))
    func dense(_ x: Tensor, rows: Int, columns: Int, ld: Int) -> Tensor {
      Tensor(shape: [rows, columns], scalars: (0..<rows).flatMap { r in x.scalars[(r * ld)..<(r * ld + columns)] })
    }
    let product = Self.reference(
      dense(a, rows: aRows, columns: aColumns, ld: lda), dense(b, rows: bRows, columns: bColumns, ld: ldb),
      transposeA: ta, transposeB: tb, batch: 1)
    let accumulated = Tensor.random([m, ldc], seed: 9)
    let overwritten = Tensor(shape: [m, ldc], scalars: Array(repeating: .nan, count: m * ldc))
    let selected = ssm_isa_level()
    defer { _ = ssm_isa_force(selected) }
    for level in levels {
      _ = ssm_isa_force(level)
      for (beta, initial) in [(Float(0), overwritten), (1, accumulated)] {
        var c = initial
        a.withUnsafeBufferPointer { ap in
          b.withUnsafeBufferPointer { bp in
            c.withUnsafeMutableBufferPointer { cp in
              BLAS.gemm(
                transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 2, a: ap.baseAddress!, lda: lda,
                b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc)
            }
          }
        }
        // C's columns past n keep what was there.
        let initialScalars = initial.scalars
        let expected = initialScalars.indices.map { index -> Double in
          let (i, j) = (index / ldc, index % ldc)
          let old = Double(initialScalars[index])
          return j < n ? 2 * product[i * n + j] + (beta == 0 ? 0 : old) : old
        }
        assertClose(
          c, expected: expected, shape: [m, ldc], rtol: 1e-5, atol: 1e-5 * Double(max(k, 1)).squareRoot(),
          nonFinite: .mustMatch, "isa \(level), beta \(beta)", file: file, line: line)
      }
    }
  }

  /// A product with one row (a single history's projections and scores) goes through sgemv.
  func testOneRowProductsAgreeWithTheReference() {
    withEvery("kn", in: [(1, 1), (7, 17), (64, 3417), (33, 1)]) { (k, n) in
      withEvery("transposeA", in: [false, true]) { ta in
        withEvery("transposeB", in: [false, true]) { tb in
          assertGemmMatchesReference(m: 1, n: n, k: k, transposeA: ta, transposeB: tb)
        }
      }
    }
  }

  /// Products with a short n, or a short m or n and A transposed, go to the short-dimension
  /// kernels, at every instruction-set level; the largest shapes are split between the workers
  /// (by rows, or along k). A short k (sgemm's) is compared too.
  func testShortDimensionProductsAgreeWithTheReference() {
    let short = [1, 3, BLAS.shortDimension]
    // Long enough that 2·m·n·k passes BLAS.parallelFlopThreshold.
    func long(_ others: Int) -> Int { BLAS.parallelFlopThreshold / (2 * others) + 1 }
    let s = BLAS.shortDimension
    // (m, n, k) with one side short: k, then n, then m; the last of each long enough to be split.
    let shortK: [(Int, Int, Int)] = short.flatMap { [(37, 130, $0), (5, 17, $0)] } + [(long(131 * s), 131, s)]
    let shortN: [(Int, Int, Int)] = short.flatMap { [(37, $0, 130), (6, $0, 19)] } + [(long(67 * s), s, 67)]
    let shortM: [(Int, Int, Int)] = short.flatMap { [($0, 37, 130), ($0, 70, 9)] } + [(s, 33, long(33 * s))]
    let shapes = shortK + shortN + shortM
    withEvery("mnk", in: shapes) { (m, n, k) in
      withEvery("transposeA", in: [false, true]) { ta in
        withEvery("transposeB", in: [false, true]) { tb in
          assertGemmMatchesReference(
            m: m, n: n, k: k, transposeA: ta, transposeB: tb, levels: Array(0...ssm_isa_supported()))
        }
      }
    }
  }

  /// `ssm_gemm_panel` itself at every instruction-set level, against the Double reference: shapes
  /// that leave part of a tile (rows, a strip of columns wider or narrower than one vector) and
  /// blocks of k longer than one (k > 128), op(A) read as rows and as columns, padded leading
  /// dimensions, alpha 2, beta 0 overwriting a NaN in C and beta 0.5 accumulating; k = 0 scales C.
  func testPanelKernelAgreesWithTheReferenceAtEveryLevel() {
    let shapes: [(Int, Int, Int)] = [
      (1, 1, 1), (7, 17, 3), (9, 33, 129), (130, 16, 64), (17, 200, 32), (200, 36, 300), (8, 64, 0), (129, 250, 257),
    ]
    let selected = ssm_isa_level()
    defer { _ = ssm_isa_force(selected) }
    withEvery("mnk", in: shapes) { (m, n, k) in
      withEvery("transposeA", in: [false, true]) { ta in
        let (aRows, aColumns) = ta ? (k, m) : (m, k)
        let (lda, ldb, ldc) = (aColumns + 3, n + 2, n + 5)
        let a = Tensor.random([max(aRows, 1), lda], seed: UInt64(11 * m + n))
        let b = Tensor.random([max(k, 1), ldb], seed: UInt64(5 * n + k))
        let old = Tensor.random([m, ldc], seed: 3)
        let (aScalars, bScalars, oldScalars) = (a.scalars, b.scalars, old.scalars)
        for level in 0...ssm_isa_supported() {
          _ = ssm_isa_force(level)
          for beta: Float in [0, 0.5] {
            var c = beta == 0 ? Tensor(shape: [m, ldc], scalars: Array(repeating: .nan, count: m * ldc)) : old
            a.withUnsafeBufferPointer { ap in
              b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                  ssm_gemm_panel(
                    ta ? 1 : 0, m, n, k, 2, ap.baseAddress!, lda, bp.baseAddress!, ldb, beta, cp.baseAddress!, ldc)
                }
              }
            }
            let expected = (0..<(m * ldc)).map { index -> Double in
              let (i, j) = (index / ldc, index % ldc)
              // Columns past n are C's own, untouched (NaN stays NaN there).
              guard j < n else { return beta == 0 ? .nan : Double(oldScalars[index]) }
              var sum = 0.0
              for p in 0..<k {
                let av = ta ? aScalars[p * lda + i] : aScalars[i * lda + p]
                sum += Double(av) * Double(bScalars[p * ldb + j])
              }
              return 2 * sum + (beta == 0 ? 0 : Double(beta) * Double(oldScalars[index]))
            }
            assertClose(
              c, expected: expected, shape: [m, ldc], rtol: 1e-5, atol: 1e-5 * Double(max(k, 1)).squareRoot(),
              nonFinite: .mustMatch, "isa \(level), beta \(beta)")
          }
        }
      }
    }
  }

  /// The shapes `BLAS.gemm` sends to the panel kernel at the AVX-512 level (weight gradients,
  /// attention's per-head products, a band of a GRU step), and the same with op(B) transposed
  /// (which stays with `sgemm`), agree with the reference at every level; the largest are split
  /// between the workers (rows, or halves of k), and the panel's own test covers its edges.
  func testPanelShapedProductsAgreeWithTheReference() {
    XCTAssertTrue(BLAS.prefersPanel(true, false, 64, 64, 25_600) == (ssm_isa_level() == 2))
    XCTAssertFalse(BLAS.prefersPanel(false, true, 200, 200, 32))
    XCTAssertFalse(BLAS.prefersPanel(false, true, 200, 64, 64))
    XCTAssertFalse(BLAS.prefersPanel(false, false, 25_600, 256, 64))
    let shapes: [(Int, Int, Int)] = [(64, 64, 4_099), (36, 128, 1_000), (200, 32, 200), (129, 192, 64), (256, 65, 300)]
    withEvery("mnk", in: shapes) { (m, n, k) in
      withEvery("transposeA", in: [false, true]) { ta in
        withEvery("transposeB", in: [false, true]) { tb in
          assertGemmMatchesReference(
            m: m, n: n, k: k, transposeA: ta, transposeB: tb, levels: Array(0...ssm_isa_supported()))
        }
      }
    }
  }

  func testFourDimensionalBatch() {
    let a = Tensor.random([2, 3, 4, 5], seed: 1)
    let b = Tensor.random([2, 3, 5, 6], seed: 2)
    let expected = Self.reference(
      a.reshaped(to: [6, 4, 5]), b.reshaped(to: [6, 5, 6]), transposeA: false, transposeB: false, batch: 6)
    assertClose(Tensor.matmul(a, b), expected: expected, shape: [2, 3, 4, 6], rtol: 1e-5)
  }

  func testEmptyInnerDimensionGivesZeros() {
    XCTAssertEqual(Tensor.matmul(Tensor(zeros: [3, 0]), Tensor(zeros: [0, 4])), Tensor(zeros: [3, 4]))
  }
}

/// OpenBLAS's kernel choice on CPUs its release does not know.
final class KernelFamilyTests: XCTestCase {
  /// A CPU with AVX2 never runs OpenBLAS's SSE3 fallback kernels unless they were asked for.
  func testAnAVX2MachineDoesNotRunTheFallbackKernels() throws {
    guard ssm_isa_supported() >= 1, ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
      let family = BLAS.kernelFamily
    else {
      // A portable CPU, a forced core or a BLAS without dynamic dispatch: nothing to choose.
      XCTAssertTrue(
        ssm_isa_supported() == 0 || ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] != nil
          || BLAS.kernelFamily == nil)
      return
    }
    XCTAssertNotEqual(family.lowercased(), "prescott")
  }
}
