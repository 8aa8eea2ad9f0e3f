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
    var out = [Double]()
    for p in 0..<batch {
      for i in 0..<m {
        for j in 0..<n {
          var s = 0.0
          for l in 0..<k {
            let av = transposeA ? a.scalars[p * aStride + l * ac + i] : a.scalars[p * aStride + i * ac + l]
            let bv = transposeB ? b.scalars[p * bStride + j * bc + l] : b.scalars[p * bStride + l * bc + j]
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

  /// A product with one row (a single history's projections and scores) goes through sgemv:
  /// every transposition, strided operands, beta 0 overwriting a NaN already in C, and beta 1
  /// accumulating.
  func testOneRowProductsAgreeWithTheReference() {
    withEvery("kn", in: [(1, 1), (7, 17), (64, 3417), (33, 1)]) { (k, n) in
      withEvery("transposeA", in: [false, true]) { ta in
        withEvery("transposeB", in: [false, true]) { tb in
          withEvery("beta", in: [Float(0), 1]) { beta in
            // Operands with padded rows: lda and ldb exceed their widths.
            let (lda, ldb) = (ta ? 3 : k + 2, (tb ? k : n) + 5)
            let a = Tensor.random(ta ? [k, lda] : [1, lda], seed: UInt64(k + n))
            let b = Tensor.random([tb ? n : k, ldb], seed: UInt64(3 * k + n))
            let dense = (
              Tensor(shape: ta ? [k, 1] : [1, k], scalars: ta ? (0..<k).map { a.scalars[$0 * lda] } : Array(a.scalars[0..<k])),
              Tensor(
                shape: tb ? [n, k] : [k, n],
                scalars: (0..<(tb ? n : k)).flatMap { r in b.scalars[(r * ldb)..<(r * ldb + (tb ? k : n))] })
            )
            let initial = Tensor.random([1, n], seed: 9)
            let product = Self.reference(dense.0, dense.1, transposeA: ta, transposeB: tb, batch: 1)
            var c = beta == 0 ? Tensor(shape: [1, n], scalars: Array(repeating: .nan, count: n)) : initial
            a.withUnsafeBufferPointer { ap in
              b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                  BLAS.gemm(
                    transposeA: ta, transposeB: tb, m: 1, n: n, k: k, alpha: 2, a: ap.baseAddress!, lda: lda,
                    b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: n)
                }
              }
            }
            let expected = (0..<n).map { 2 * product[$0] + (beta == 0 ? 0 : Double(initial.scalars[$0])) }
            assertClose(c, expected: expected, shape: [1, n], rtol: 1e-5, atol: 1e-5)
          }
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
