import CKernels
import Foundation
import SSMTestSupport
import XCTest

// Every CKernels kernel is compiled three times and dispatched at run time, so each variant is
// compared here with a plain Double reference, at lengths that exercise its vector body, its
// tail, and tails alone. (The scan is covered in SelectiveScanTests, the elementwise unary
// functions and their derivatives in SSMTensorTests/ElementwiseTests, the SSD decay mask in
// ChunkedSSDTests.)
//
// A debug build compiles the C kernels without optimisation, so there only the explicitly
// vectorised code (the `vf` blocks) differs between levels; the loop-vectorised kernels differ
// per level in an optimised build:
//   swift test -c release --filter KernelLevelTests

// MARK: - Harness

/// The instruction-set levels this CPU supports (0 portable, 1 AVX2+FMA, 2 AVX-512).
private let levels = Array(0...ssm_isa_supported())

/// Lengths around the vector widths in floats: 4 (portable), 8 and 16 (one AVX2 or AVX-512
/// register, and the 16-float blocks of the hand-vectorised kernels), and the loop vectoriser's
/// unrolled multiples of them up to 64, each below, at and just above.
private let sizes = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129]
private let rowCounts = [1, 3, 5]

/// Runs `body` at every supported level, forced, and restores the default level afterwards.
func atEveryLevel(_ body: () throws -> Void) rethrows {
  defer { _ = ssm_isa_force(-1) }
  try withEvery("isa", in: levels) { level in
    XCTAssertEqual(ssm_isa_force(level), level, "level \(level) not available")
    try body()
  }
}

/// Floats after every buffer, more than one AVX-512 vector: a vector body or a partial tail that
/// reads or writes past the end lands in them.
private let padding = 32
/// What padding after outputs holds; it must survive the call.
private let sentinel: Float = -31337.25

/// Input values followed by NaN, so that a kernel reading past the end poisons its result.
private func input(_ values: [Float]) -> [Float] { values + [Float](repeating: .nan, count: padding) }
/// An output buffer: NaN where the kernel must write (an element left unwritten fails the
/// comparison), then the sentinel.
private func output(_ count: Int) -> [Float] {
  [Float](repeating: .nan, count: count) + [Float](repeating: sentinel, count: padding)
}
/// An in-out buffer: its initial values, then the sentinel.
private func inOut(_ values: [Float]) -> [Float] { values + [Float](repeating: sentinel, count: padding) }

private func assertPaddingIntact(
  _ buffer: [Float], after count: Int, _ name: String, file: StaticString = #filePath, line: UInt = #line
) {
  let overwritten = buffer.dropFirst(count).filter { $0.bitPattern != sentinel.bitPattern }.count
  if buffer.count != count + padding || overwritten > 0 {
    XCTFail("\(name): \(overwritten) floats written past element \(count)\(TestContext.description)", file: file, line: line)
  }
}

/// Asserts `|a − e| ≤ atol + rtol·|e|` for the first `expected.count` elements of `actual` (the
/// rest is padding). Written so that NaN cannot pass: where the reference is finite the actual
/// value must be finite and within the bound; a non-finite reference must be matched exactly.
private func assertMatches<T: BinaryFloatingPoint>(
  _ actual: [T], _ expected: [Double], rtol: Double, atol: Double, _ name: String,
  file: StaticString = #filePath, line: UInt = #line
) {
  guard actual.count >= expected.count else {
    XCTFail("\(name): \(actual.count) values for \(expected.count) expected\(TestContext.description)", file: file, line: line)
    return
  }
  var failures = 0
  var first = ""
  for i in expected.indices {
    let (a, e) = (Double(actual[i]), expected[i])
    let ok = e.isFinite ? (a.isFinite && Swift.abs(a - e) <= atol + rtol * Swift.abs(e)) : (e.isNaN ? a.isNaN : a == e)
    if !ok {
      if failures == 0 { first = "index \(i): actual \(a), expected \(e), |Δ| = \(Swift.abs(a - e))" }
      failures += 1
    }
  }
  if failures > 0 {
    XCTFail(
      "\(name): \(failures) of \(expected.count) outside \(atol) + \(rtol)·|expected|, first at \(first)\(TestContext.description)",
      file: file, line: line)
  }
}

private func assertMatches(
  _ actual: Double, _ expected: Double, rtol: Double, atol: Double, _ name: String,
  file: StaticString = #filePath, line: UInt = #line
) {
  assertMatches([actual], [expected], rtol: rtol, atol: atol, name, file: file, line: line)
}

/// `count` uniform Floats in `range`.
private func uniform(_ count: Int, _ range: ClosedRange<Double> = -1...1, seed: UInt64) -> [Float] {
  var rng = SplitMix64(seed: seed)
  return (0..<count).map { _ in Float(range.lowerBound + (range.upperBound - range.lowerBound) * rng.nextUnitDouble()) }
}

/// A seed from the parameters of one case, so that every case draws different values.
private func seed(_ parts: Int...) -> UInt64 { parts.reduce(17) { $0 &* 1_000_003 &+ UInt64(truncatingIfNeeded: $1) } }

/// The `int` a kernel takes for one of its enum cases.
private func kernelCode(_ op: UInt32) -> Int32 { Int32(op) }

/// Calls `body` with a pointer to the values, or with NULL when there are none.
private func withOptionalPointer<T, R>(_ values: [T]?, _ body: (UnsafePointer<T>?) -> R) -> R {
  guard let values else { return body(nil) }
  return values.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// One ulp of 1: elementwise kernels that round once must be within it relatively.
private let oneUlp = Double(Float.ulpOfOne)

// MARK: - Double references

private enum Reference {
  static func rowMax(_ row: ArraySlice<Double>) -> Double {
    var m = -Double.infinity
    for v in row where v > m { m = v }
    return m
  }

  static func logSumExp(_ row: ArraySlice<Double>) -> Double {
    let m = rowMax(row)
    if m == -.infinity { return -.infinity }
    var s = 0.0
    for v in row { s += Foundation.exp(v - m) }
    return m + Foundation.log(s)
  }

  static func softmax(_ row: ArraySlice<Double>) -> [Double] {
    let lse = logSumExp(row)
    return row.map { Foundation.exp($0 - lse) }
  }

  static func sigmoid(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }
}

// MARK: - Tests

final class KernelLevelTests: XCTestCase {
  // MARK: Elementwise

  func testBinaryOperationsAtEveryLevel() {
    let ops: [(ssm_binary_op, (Double, Double) -> Double)] = [
      (SSM_BINARY_ADD, { $0 + $1 }), (SSM_BINARY_SUB, { $0 - $1 }), (SSM_BINARY_MUL, { $0 * $1 }),
      (SSM_BINARY_DIV, { $0 / $1 }), (SSM_BINARY_MAX, { $0 > $1 ? $0 : $1 }), (SSM_BINARY_MIN, { $0 < $1 ? $0 : $1 }),
    ]
    XCTAssertEqual(ops.count, Int(SSM_BINARY_COUNT.rawValue), "every operation is tested")
    atEveryLevel {
      withEvery("op", in: ops.indices) { o in
        let (op, f) = ops[o]
        withEvery("sa", in: [0, 1]) { sa in
          withEvery("sb", in: [0, 1]) { sb in
            withEvery("n", in: sizes) { n in
              // A stride-0 operand is one value (its NaN padding catches a read of a[1]); b stays
              // away from 0 for the division, with both signs for max and min.
              let a = uniform(sa == 1 ? n : 1, -2...2, seed: seed(n, o, sa, sb, 1))
              let b = uniform(sb == 1 ? n : 1, 0.25...2, seed: seed(n, o, sa, sb, 2)).enumerated().map { $0 % 2 == 0 ? $1 : -$1 }
              let expected = (0..<n).map { i in f(Double(a[sa * i]), Double(b[sb * i])) }
              var y = output(n)
              ssm_binary(kernelCode(op.rawValue), input(a), sa, input(b), sb, &y, n)
              assertMatches(y, expected, rtol: oneUlp, atol: 0, "y")
              assertPaddingIntact(y, after: n, "y")
              // y may alias an operand whose stride is 1; here a.
              if sa == 1 {
                var inPlace = inOut(a)
                inPlace.withUnsafeMutableBufferPointer { p in
                  ssm_binary(kernelCode(op.rawValue), p.baseAddress, 1, input(b), sb, p.baseAddress, n)
                }
                assertMatches(inPlace, expected, rtol: oneUlp, atol: 0, "y aliasing a")
                assertPaddingIntact(inPlace, after: n, "y aliasing a")
              }
            }
          }
        }
      }
    }
  }

  func testClampAxpbyAndAccumulateAtEveryLevel() {
    atEveryLevel {
      withEvery("n", in: sizes) { n in
        let x = uniform(n, seed: seed(n, 1))
        var y = output(n)
        ssm_clamp(input(x), -0.5, 0.75, &y, n)
        assertMatches(y, x.map { Double($0 < -0.5 ? -0.5 : ($0 > 0.75 ? 0.75 : $0)) }, rtol: 0, atol: 0, "clamp")
        assertPaddingIntact(y, after: n, "clamp")

        let old = uniform(n, seed: seed(n, 2))
        withEvery("beta", in: [Float(0), -1.25]) { beta in
          // With beta = 0 the old y must be ignored, not multiplied by 0: NaN there shows it.
          var y = beta == 0 ? output(n) : inOut(old)
          ssm_axpby(0.75, input(x), beta, &y, n)
          let expected = (0..<n).map { 0.75 * Double(x[$0]) + (beta == 0 ? 0 : Double(beta) * Double(old[$0])) }
          // Two products of magnitude ≤ 1.25 and a sum: a few roundings of ~1e-7.
          assertMatches(y, expected, rtol: 1e-6, atol: 3e-7, "axpby")
          assertPaddingIntact(y, after: n, "axpby")
        }

        var acc = inOut(old)
        ssm_accumulate(&acc, input(x), n)
        assertMatches(acc, (0..<n).map { Double(old[$0]) + Double(x[$0]) }, rtol: oneUlp, atol: 0, "accumulate")
        assertPaddingIntact(acc, after: n, "accumulate")
      }
    }
  }

  /// Running maxima over positions 0…3 of values drawn from {0, 1, 2, 3}, so that ties are
  /// frequent: the index must be the first position that reached the maximum.
  func testMaxAccumulateKeepsTheFirstMaximumAtEveryLevel() {
    atEveryLevel {
      withEvery("n", in: sizes) { n in
        let positions = 4
        let xs = (0..<positions).map { p in uniform(n, 0...3.999, seed: seed(n, p)).map { $0.rounded(.down) } }
        var acc = inOut([Float](repeating: -.infinity, count: n))
        var index = [Int32](repeating: -1, count: n) + [Int32](repeating: -77, count: padding)
        for p in 0..<positions { ssm_max_accumulate(&acc, &index, input(xs[p]), Int32(p), n) }
        var expectedMax = [Double](repeating: -.infinity, count: n)
        var expectedIndex = [Int32](repeating: -1, count: n)
        for p in 0..<positions {
          for i in 0..<n where Double(xs[p][i]) > expectedMax[i] {
            expectedMax[i] = Double(xs[p][i])
            expectedIndex[i] = Int32(p)
          }
        }
        assertMatches(acc, expectedMax, rtol: 0, atol: 0, "maximum")
        assertPaddingIntact(acc, after: n, "maximum")
        XCTAssertEqual(Array(index.prefix(n)), expectedIndex, "first maximum wins\(TestContext.description)")
        XCTAssertEqual(
          Array(index.dropFirst(n)), [Int32](repeating: -77, count: padding), "index padding\(TestContext.description)")
      }
    }
  }

  // MARK: Sums

  /// Σx, Σ(x − shift)² and Σa·b in Float blocks of 2048 and Double across them, also across the
  /// block boundary. The bound scales with Σ|terms| (the condition of the sum): Float rounding
  /// of ≤ 2048 partial sums reaches ~1e-6 of it when they are added in sequence (unoptimised
  /// builds), ~1e-7 with the vectoriser's parallel partial sums.
  func testSumsAndDotAtEveryLevel() {
    atEveryLevel {
      withEvery("n", in: sizes + [2047, 2048, 2049, 4100]) { n in
        let x = uniform(n, -1...2, seed: seed(n, 1))
        let b = uniform(n, seed: seed(n, 2))
        var sum = 0.0
        var magnitude = 0.0
        for v in x {
          sum += Double(v)
          magnitude += Swift.abs(Double(v))
        }
        assertMatches(ssm_sum(input(x), n), sum, rtol: 0, atol: 2e-6 * magnitude, "sum")

        let shift: Float = 0.3
        var squares = 0.0
        for v in x { squares += (Double(v) - Double(shift)) * (Double(v) - Double(shift)) }
        assertMatches(ssm_sum_squared_deviation(input(x), shift, n), squares, rtol: 2e-6, atol: 0, "squared deviation")

        var dot = 0.0
        var dotMagnitude = 0.0
        for i in 0..<n {
          dot += Double(x[i]) * Double(b[i])
          dotMagnitude += Swift.abs(Double(x[i]) * Double(b[i]))
        }
        assertMatches(ssm_dot(input(x), input(b), n), dot, rtol: 0, atol: 2e-6 * dotMagnitude, "dot")
      }
    }
  }

  // MARK: Rows

  /// Logits in [−8, 8] with one −∞ per row (a masked position) once a row has two entries.
  private func maskedLogits(rows: Int, cols: Int, seed s: UInt64) -> [Float] {
    var x = uniform(rows * cols, -8...8, seed: s)
    if cols >= 2 {
      for r in 0..<rows { x[r * cols + (r * 5 + 1) % cols] = -.infinity }
    }
    return x
  }

  func testRowReductionsAtEveryLevel() {
    atEveryLevel {
      withEvery("rows", in: rowCounts) { rows in
        withEvery("cols", in: sizes) { cols in
          let x = uniform(rows * cols, -1...2, seed: seed(rows, cols, 1))
          let xd = x.map(Double.init)
          var out = output(rows)
          ssm_reduce_rows(kernelCode(SSM_REDUCE_SUM.rawValue), input(x), rows, cols, &out)
          withEvery("row", in: 0..<rows) { r in
            var s = 0.0
            var magnitude = 0.0
            for v in xd[(r * cols)..<((r + 1) * cols)] {
              s += v
              magnitude += Swift.abs(v)
            }
            assertMatches([out[r]], [s], rtol: oneUlp, atol: 1e-6 * magnitude, "sum")
          }
          assertPaddingIntact(out, after: rows, "sum")

          let m = maskedLogits(rows: rows, cols: cols, seed: seed(rows, cols, 2))
          let md = m.map(Double.init)
          let rowsOfM = (0..<rows).map { md[($0 * cols)..<(($0 + 1) * cols)] }
          out = output(rows)
          ssm_reduce_rows(kernelCode(SSM_REDUCE_MAX.rawValue), input(m), rows, cols, &out)
          assertMatches(out, rowsOfM.map(Reference.rowMax), rtol: 0, atol: 0, "max")
          assertPaddingIntact(out, after: rows, "max")

          out = output(rows)
          ssm_reduce_rows(kernelCode(SSM_REDUCE_LOGSUMEXP.rawValue), input(m), rows, cols, &out)
          // exp within ~2.5e-7 relative (kernels_body.inc) moves the log by as much; the result
          // (≤ 8 + log 129) is rounded once more.
          assertMatches(out, rowsOfM.map(Reference.logSumExp), rtol: 1e-7, atol: 5e-7, "logsumexp")
          assertPaddingIntact(out, after: rows, "logsumexp")
        }
      }
    }
  }

  /// Softmax and log-softmax, out of place and in place (y may alias x).
  func testSoftmaxAndLogSoftmaxAtEveryLevel() {
    atEveryLevel {
      withEvery("rows", in: rowCounts) { rows in
        withEvery("cols", in: sizes) { cols in
          let x = maskedLogits(rows: rows, cols: cols, seed: seed(rows, cols))
          let xd = x.map(Double.init)
          var softmax = [Double]()
          var logSoftmax = [Double]()
          for r in 0..<rows {
            let row = xd[(r * cols)..<((r + 1) * cols)]
            softmax += Reference.softmax(row)
            let lse = Reference.logSumExp(row)
            logSoftmax += row.map { $0 - lse }
          }
          let count = rows * cols
          // exp within ~2.5e-7 relative, and one rounding of the normaliser.
          let softmaxTolerance = (rtol: 1e-6, atol: 1e-12)
          // x − logsumexp for |x| ≤ 8: absolute error of the logsumexp plus a rounding of ~5e-7.
          let logTolerance = (rtol: 1e-7, atol: 1e-6)
          var y = output(count)
          ssm_softmax_rows(input(x), rows, cols, &y)
          assertMatches(y, softmax, rtol: softmaxTolerance.rtol, atol: softmaxTolerance.atol, "softmax")
          assertPaddingIntact(y, after: count, "softmax")
          var inPlace = inOut(x)
          inPlace.withUnsafeMutableBufferPointer { ssm_softmax_rows($0.baseAddress, rows, cols, $0.baseAddress) }
          assertMatches(inPlace, softmax, rtol: softmaxTolerance.rtol, atol: softmaxTolerance.atol, "softmax in place")
          assertPaddingIntact(inPlace, after: count, "softmax in place")

          y = output(count)
          ssm_log_softmax_rows(input(x), rows, cols, &y)
          assertMatches(y, logSoftmax, rtol: logTolerance.rtol, atol: logTolerance.atol, "log softmax")
          assertPaddingIntact(y, after: count, "log softmax")
          inPlace = inOut(x)
          inPlace.withUnsafeMutableBufferPointer { ssm_log_softmax_rows($0.baseAddress, rows, cols, $0.baseAddress) }
          assertMatches(inPlace, logSoftmax, rtol: logTolerance.rtol, atol: logTolerance.atol, "log softmax in place")
          assertPaddingIntact(inPlace, after: count, "log softmax in place")
        }
      }
    }
  }

  // MARK: Fused training kernels

  /// Layer norm of rows with a nonzero mean, against y = (x − μ)/√(σ² + ε)·γ + β in Double
  /// (biased σ²), and the mean and 1/√(σ² + ε) it saves.
  func testLayerNormForwardAtEveryLevel() {
    let eps: Float = 1e-5
    atEveryLevel {
      withEvery("rows", in: rowCounts) { rows in
        withEvery("n", in: sizes) { n in
          let x = uniform(rows * n, -1...3, seed: seed(rows, n, 1))
          let gamma = uniform(n, 0.5...1.5, seed: seed(n, 2))
          let beta = uniform(n, -0.5...0.5, seed: seed(n, 3))
          var expectedY = [Double]()
          var expectedMean = [Double]()
          var expectedRstd = [Double]()
          for r in 0..<rows {
            let row = x[(r * n)..<((r + 1) * n)].map(Double.init)
            var mean = 0.0
            for v in row { mean += v }
            mean /= Double(n)
            var variance = 0.0
            for v in row { variance += (v - mean) * (v - mean) }
            variance /= Double(n)
            let rstd = 1 / (variance + Double(eps)).squareRoot()
            for i in 0..<n { expectedY.append((row[i] - mean) * rstd * Double(gamma[i]) + Double(beta[i])) }
            expectedMean.append(mean)
            expectedRstd.append(rstd)
          }
          var y = output(rows * n)
          var mean = output(rows)
          var rstd = output(rows)
          ssm_layer_norm_rows(input(x), input(gamma), input(beta), eps, rows, n, &y, &mean, &rstd)
          assertMatches(mean, expectedMean, rtol: 1e-6, atol: 1e-7, "mean")
          assertMatches(rstd, expectedRstd, rtol: 1e-6, atol: 0, "rstd")
          assertMatches(y, expectedY, rtol: 1e-6, atol: 1e-6, "y")
          assertPaddingIntact(y, after: rows * n, "y")
          assertPaddingIntact(mean, after: rows, "mean")
          assertPaddingIntact(rstd, after: rows, "rstd")
        }
      }
    }
  }

  /// dx = rstd·(g∘γ − mean(g∘γ) − x̂·mean(g∘γ∘x̂)) is written; dγ += Σ g∘x̂ and dβ += Σ g are
  /// accumulated over rows into nonzero starting values.
  func testLayerNormBackwardAtEveryLevel() {
    atEveryLevel {
      withEvery("rows", in: rowCounts) { rows in
        withEvery("n", in: sizes) { n in
          let x = uniform(rows * n, -1...3, seed: seed(rows, n, 1))
          let g = uniform(rows * n, seed: seed(rows, n, 2))
          let gamma = uniform(n, 0.5...1.5, seed: seed(n, 3))
          let dgamma0 = uniform(n, seed: seed(n, 4))
          let dbeta0 = uniform(n, seed: seed(n, 5))
          // The saved statistics as the forward pass would store them (Float), from Double.
          var mean = [Float]()
          var rstd = [Float]()
          for r in 0..<rows {
            let row = x[(r * n)..<((r + 1) * n)].map(Double.init)
            var mu = 0.0
            for v in row { mu += v }
            mu /= Double(n)
            var variance = 0.0
            for v in row { variance += (v - mu) * (v - mu) }
            mean.append(Float(mu))
            rstd.append(Float(1 / (variance / Double(n) + 1e-5).squareRoot()))
          }
          var expectedDx = [Double](repeating: 0, count: rows * n)
          var expectedDgamma = dgamma0.map(Double.init)
          var expectedDbeta = dbeta0.map(Double.init)
          var largestRstd = 0.0
          for r in 0..<rows {
            let (mu, rs) = (Double(mean[r]), Double(rstd[r]))
            largestRstd = rs > largestRstd ? rs : largestRstd
            var sumGG = 0.0
            var sumGGX = 0.0
            for i in 0..<n {
              let xhat = (Double(x[r * n + i]) - mu) * rs
              let gg = Double(g[r * n + i]) * Double(gamma[i])
              sumGG += gg
              sumGGX += gg * xhat
              expectedDgamma[i] += Double(g[r * n + i]) * xhat
              expectedDbeta[i] += Double(g[r * n + i])
            }
            let (a, b) = (sumGG / Double(n), sumGGX / Double(n))
            for i in 0..<n {
              let xhat = (Double(x[r * n + i]) - mu) * rs
              expectedDx[r * n + i] = rs * (Double(g[r * n + i]) * Double(gamma[i]) - a - xhat * b)
            }
          }
          var dx = output(rows * n)
          var dgamma = inOut(dgamma0)
          var dbeta = inOut(dbeta0)
          ssm_layer_norm_backward_rows(
            input(x), input(mean), input(rstd), input(gamma), input(g), rows, n, &dx, &dgamma, &dbeta)
          // dx cancels three terms of size ~1 before the rstd scaling: its absolute error is a
          // few roundings times rstd.
          assertMatches(dx, expectedDx, rtol: 1e-6, atol: 1e-6 * largestRstd, "dx")
          assertMatches(dgamma, expectedDgamma, rtol: 1e-6, atol: 1e-6, "dgamma")
          assertMatches(dbeta, expectedDbeta, rtol: 1e-6, atol: 1e-6, "dbeta")
          assertPaddingIntact(dx, after: rows * n, "dx")
          assertPaddingIntact(dgamma, after: n, "dgamma")
          assertPaddingIntact(dbeta, after: n, "dbeta")
        }
      }
    }
  }

  func testSoftmaxBackwardAtEveryLevel() {
    atEveryLevel {
      withEvery("rows", in: rowCounts) { rows in
        withEvery("n", in: sizes) { n in
          let logits = uniform(rows * n, -4...4, seed: seed(rows, n, 1)).map(Double.init)
          var y = [Float]()
          for r in 0..<rows { y += Reference.softmax(logits[(r * n)..<((r + 1) * n)]).map { Float($0) } }
          let g = uniform(rows * n, seed: seed(rows, n, 2))
          var expected = [Double]()
          for r in 0..<rows {
            var d = 0.0
            for i in 0..<n { d += Double(g[r * n + i]) * Double(y[r * n + i]) }
            for i in 0..<n { expected.append(Double(y[r * n + i]) * (Double(g[r * n + i]) - d)) }
          }
          var dx = output(rows * n)
          ssm_softmax_backward_rows(input(y), input(g), rows, n, &dx)
          // g − ⟨g, y⟩ cancels terms ≤ 1 and is scaled by y ≤ 1.
          assertMatches(dx, expected, rtol: 1e-6, atol: 2e-7, "dx")
          assertPaddingIntact(dx, after: rows * n, "dx")
        }
      }
    }
  }

  /// The fused attention's row kernels on rows `ld` apart (ld = cols + 5, the rest of each row
  /// left alone): the masked softmax in place with the smallest row maximum it returns, the
  /// largest entry of a strided block, and row norms.
  func testStridedRowKernelsAtEveryLevel() {
    atEveryLevel {
      withEvery("rows", in: rowCounts) { rows in
        withEvery("cols", in: sizes) { cols in
          let ld = cols + 5
          let x = uniform(rows * ld, -4...4, seed: seed(rows, cols, 3))
          let mask = uniform(rows * ld, seed: seed(rows, cols, 4)).map { $0 < -0.5 ? Float(-10000) : $0 }
          var expected = x.map(Double.init)
          var least = Double.infinity
          for r in 0..<rows {
            let masked = (0..<cols).map { Double(x[r * ld + $0]) + Double(mask[r * ld + $0]) }
            least = Swift.min(least, masked.max()!)
            for (j, p) in Reference.softmax(masked[...]).enumerated() { expected[r * ld + j] = p }
          }
          var y = inOut(x)
          let returned = ssm_masked_softmax_rows(&y, input(mask), rows, cols, ld, ld)
          // Entries past each row's cols keep their values: compared too.
          assertMatches(y, expected, rtol: 1e-5, atol: 1e-7, "masked softmax")
          assertPaddingIntact(y, after: rows * ld, "masked softmax")
          assertMatches([returned], [least], rtol: 1e-6, atol: 1e-6, "smallest row maximum")

          let largest = (0..<rows).flatMap { r in (0..<cols).map { Double(x[r * ld + $0]) } }.max()!
          assertMatches([ssm_max_rows(input(x), rows, cols, ld)], [largest], rtol: 0, atol: 0, "max rows")

          var norms = output(rows)
          ssm_row_norms(input(x), rows, cols, ld, &norms)
          let expectedNorms = (0..<rows).map { r in
            (0..<cols).reduce(0.0) { $0 + Double(x[r * ld + $1]) * Double(x[r * ld + $1]) }.squareRoot()
          }
          assertMatches(norms, expectedNorms, rtol: 1e-6, atol: 1e-7, "row norms")
          assertPaddingIntact(norms, after: rows, "row norms")
        }
      }
      XCTAssertEqual(ssm_max_rows([1], 0, 1, 1), -.infinity)
    }
  }

  /// loss = logsumexp(x) − x[target] and grad = scale·(softmax(x) − onehot), with targets at
  /// the first, last and middle positions of the rows.
  func testSoftmaxCrossEntropyAtEveryLevel() {
    let scale: Float = 0.37
    atEveryLevel {
      withEvery("rows", in: rowCounts) { rows in
        withEvery("n", in: sizes) { n in
          let x = uniform(rows * n, -8...8, seed: seed(rows, n))
          let xd = x.map(Double.init)
          let targets = (0..<rows).map { r in Int32([0, n - 1, n / 2, 1 % n, (2 * n) / 3][r % 5]) }
          var expectedLoss = [Double]()
          var expectedGrad = [Double]()
          for r in 0..<rows {
            let row = xd[(r * n)..<((r + 1) * n)]
            expectedLoss.append(Reference.logSumExp(row) - xd[r * n + Int(targets[r])])
            let p = Reference.softmax(row)
            for i in 0..<n { expectedGrad.append(Double(scale) * (p[i] - (i == Int(targets[r]) ? 1 : 0))) }
          }
          var loss = output(rows)
          var grad = output(rows * n)
          ssm_softmax_cross_entropy_rows(input(x), targets, rows, n, scale, &loss, &grad)
          // logsumexp − x[t] cancels values up to ~13; softmax − 1 at the target cancels ~1.
          assertMatches(loss, expectedLoss, rtol: 1e-6, atol: 1e-6, "loss")
          assertMatches(grad, expectedGrad, rtol: 1e-6, atol: 1e-7, "grad")
          assertPaddingIntact(loss, after: rows, "loss")
          assertPaddingIntact(grad, after: rows * n, "grad")
        }
      }
    }
  }

  /// The second pass of the cross-entropy blocked over classes: given each row's logsumexp over
  /// all classes, grad = scale·(softmax − onehot) on a block of classes starting at `first`,
  /// with the target inside the block, at its edges and outside it.
  func testSoftmaxCrossEntropyBlockAtEveryLevel() {
    let scale: Float = 0.37
    atEveryLevel {
      withEvery("rows", in: rowCounts) { rows in
        withEvery("n", in: sizes) { n in
          let first = 3
          let x = uniform(rows * n, -8...8, seed: seed(rows, n) + 11)
          let xd = x.map(Double.init)
          // The logsumexp of each row over a catalogue that also holds classes outside the block.
          // (Rounded to Float as the kernel receives it.)
          let lse = (0..<rows).map { r in
            Double(Float(Reference.logSumExp(ArraySlice(Array(xd[(r * n)..<((r + 1) * n)]) + [Double(r % 3), -1]))))
          }
          let targets = (0..<rows).map { r in Int32([first, first + n - 1, first + n / 2, 0, first + n][r % 5]) }
          var expected = [Double]()
          for r in 0..<rows {
            for i in 0..<n {
              let p = Foundation.exp(xd[r * n + i] - lse[r])
              expected.append(Double(scale) * (p - (first + i == Int(targets[r]) ? 1 : 0)))
            }
          }
          var grad = output(rows * n)
          ssm_softmax_cross_entropy_block(input(x), lse.map(Float.init), targets, rows, n, first, scale, &grad)
          assertMatches(grad, expected, rtol: 1e-6, atol: 1e-7, "grad")
          assertPaddingIntact(grad, after: rows * n, "grad")
        }
      }
    }
  }

  /// Six steps of Adam (L2 decay) and AdamW (decoupled decay) against PyTorch's rule in Double,
  /// with the hyperparameters the kernel receives (Float) and the bias corrections 1 − βᵗ.
  func testAdamUpdateAtEveryLevel() {
    let (lr, beta1, beta2, eps): (Float, Float, Float, Float) = (0.05, 0.9, 0.999, 1e-8)
    let (b1, b2) = (Double(beta1), Double(beta2))
    atEveryLevel {
      withEvery("decoupled", in: [Int32(0), 1]) { decoupled in
        let weightDecay: Float = decoupled == 1 ? 0.1 : 0.05
        withEvery("n", in: [5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129]) { n in
          let start = uniform(n, -2...2, seed: seed(n, Int(decoupled)))
          var p = inOut(start)
          var m = inOut([Float](repeating: 0, count: n))
          var v = inOut([Float](repeating: 0, count: n))
          var rp = start.map(Double.init)
          var rm = [Double](repeating: 0, count: n)
          var rv = [Double](repeating: 0, count: n)
          for t in 1...6 {
            let g = uniform(n, -3...3, seed: seed(n, t, 7))
            let bc1 = 1 - Foundation.pow(b1, Double(t))
            let bc2 = 1 - Foundation.pow(b2, Double(t))
            ssm_adam_update(&p, input(g), &m, &v, n, lr, beta1, beta2, eps, weightDecay, decoupled, Float(bc1), Float(bc2))
            let (lrD, wd, epsD) = (Double(lr), Double(weightDecay), Double(eps))
            for i in 0..<n {
              var gi = Double(g[i])
              if decoupled == 1 { rp[i] *= 1 - lrD * wd } else { gi += wd * rp[i] }
              rm[i] = b1 * rm[i] + (1 - b1) * gi
              rv[i] = b2 * rv[i] + (1 - b2) * gi * gi
              rp[i] -= lrD / bc1 * rm[i] / (rv[i].squareRoot() / bc2.squareRoot() + epsD)
            }
          }
          // Each step moves p by ≤ ~lr·3 with a few roundings (~1e-7 relative) of its own and
          // rounds p once; m and v are sums of a few rounded terms.
          assertMatches(p, rp, rtol: 1e-6, atol: 1e-7, "p")
          assertMatches(m, rm, rtol: 1e-6, atol: 1e-7, "m")
          assertMatches(v, rv, rtol: 1e-6, atol: 0, "v")
          for (name, buffer) in [("p", p), ("m", m), ("v", v)] { assertPaddingIntact(buffer, after: n, name) }
        }
      }
    }
  }

  // MARK: Convolution

  /// Causal depthwise convolution and its adjoint against the definition
  /// y[t, c] = bias[c] + Σ_k w[k, c]·x[t − K + 1 + k, c] (taps before 0 or in another segment
  /// are zero), over batch ranges split in two calls; dweight and dbias accumulate into nonzero
  /// starting values.
  func testCausalConvolutionAtEveryLevel() {
    let (batch, length) = (2, 9)
    atEveryLevel {
      withEvery("K", in: [1, 2, 4]) { K in
        withEvery("C", in: [1, 3, 7, 8, 9, 16, 17, 33, 65]) { C in
          withEvery("bias", in: [false, true]) { hasBias in
            withEvery("segments", in: [false, true]) { segmented in
              let count = batch * length * C
              let x = uniform(count, seed: seed(K, C, 1))
              let w = uniform(K * C, seed: seed(K, C, 2))
              let bias = hasBias ? uniform(C, seed: seed(C, 3)) : nil
              let g = uniform(count, seed: seed(K, C, 4))
              let dweight0 = uniform(K * C, seed: seed(K, C, 5))
              let dbias0 = uniform(C, seed: seed(C, 6))
              // Segment boundaries at different steps in the two batch elements.
              let seq: [Int32]? = segmented ? (0..<batch).flatMap { b in (0..<length).map { Int32(($0 + 2 * b) / 3) } } : nil
              func tap(_ b: Int, _ t: Int, _ k: Int) -> Int? {
                let s = t - K + 1 + k
                if s < 0 { return nil }
                if let seq, seq[b * length + s] != seq[b * length + t] { return nil }
                return s
              }
              var expectedY = [Double](repeating: 0, count: count)
              var expectedDx = [Double](repeating: 0, count: count)
              var expectedDw = dweight0.map(Double.init)
              var expectedDbias = dbias0.map(Double.init)
              for b in 0..<batch {
                for t in 0..<length {
                  for c in 0..<C {
                    let o = (b * length + t) * C + c
                    var acc = bias.map { Double($0[c]) } ?? 0
                    for k in 0..<K {
                      guard let s = tap(b, t, k) else { continue }
                      let xi = (b * length + s) * C + c
                      acc += Double(w[k * C + c]) * Double(x[xi])
                      expectedDx[xi] += Double(w[k * C + c]) * Double(g[o])
                      expectedDw[k * C + c] += Double(g[o]) * Double(x[xi])
                    }
                    expectedY[o] = acc
                    expectedDbias[c] += Double(g[o])
                  }
                }
              }
              let (xs, ws, gs) = (input(x), input(w), input(g))
              var y = output(count)
              var dx = output(count)
              var dweight = inOut(dweight0)
              var dbias = inOut(dbias0)
              withOptionalPointer(bias.map(input)) { biasPointer in
                withOptionalPointer(seq) { seqPointer in
                  for (begin, end) in [(0, 1), (1, batch)] {
                    ssm_conv_forward(xs, ws, biasPointer, seqPointer, begin, end, length, C, K, &y)
                    if hasBias {
                      ssm_conv_backward(xs, ws, seqPointer, gs, begin, end, length, C, K, &dx, &dweight, &dbias)
                    } else {
                      ssm_conv_backward(xs, ws, seqPointer, gs, begin, end, length, C, K, &dx, &dweight, nil)
                    }
                  }
                }
              }
              // Sums of ≤ K + 1 (y, dx) or ≤ B·L + 1 (dweight, dbias) terms of size ≤ 1.
              assertMatches(y, expectedY, rtol: 1e-6, atol: 5e-7, "y")
              assertMatches(dx, expectedDx, rtol: 1e-6, atol: 5e-7, "dx")
              assertMatches(dweight, expectedDw, rtol: 1e-6, atol: 2e-6, "dweight")
              assertPaddingIntact(y, after: count, "y")
              assertPaddingIntact(dx, after: count, "dx")
              assertPaddingIntact(dweight, after: K * C, "dweight")
              if hasBias {
                assertMatches(dbias, expectedDbias, rtol: 1e-6, atol: 2e-6, "dbias")
                assertPaddingIntact(dbias, after: C, "dbias")
              }
            }
          }
        }
      }
    }
  }

  // MARK: GRU

  /// One GRU step, gate order r, z, n: r = σ(xw_r + hw_r), z = σ(xw_z + hw_z),
  /// n = tanh(xw_n + r∘hw_n), h = (1 − z)∘n + z∘h_prev (h_prev = 0 when absent). The rows of xw
  /// are `stride` > 3H apart with NaN in the gaps, which must not be read.
  func testGRUForwardStepAtEveryLevel() {
    atEveryLevel {
      withEvery("rows", in: [1, 3]) { rows in
        withEvery("H", in: [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65]) { H in
          withEvery("h_prev", in: [false, true]) { hasPrevious in
            let stride = 3 * H + 5
            var xw = [Float](repeating: .nan, count: rows * stride)
            let xValues = uniform(rows * 3 * H, -3...3, seed: seed(rows, H, 1))
            for b in 0..<rows { for j in 0..<(3 * H) { xw[b * stride + j] = xValues[b * 3 * H + j] } }
            let hw = uniform(rows * 3 * H, -3...3, seed: seed(rows, H, 2))
            let previous = hasPrevious ? uniform(rows * H, seed: seed(rows, H, 3)) : nil
            var eR = [Double]()
            var eZ = [Double]()
            var eN = [Double]()
            var eHn = [Double]()
            var eH = [Double]()
            for b in 0..<rows {
              for j in 0..<H {
                let x = { (gate: Int) in Double(xw[b * stride + gate * H + j]) }
                let h = { (gate: Int) in Double(hw[b * 3 * H + gate * H + j]) }
                let r = Reference.sigmoid(x(0) + h(0))
                let z = Reference.sigmoid(x(1) + h(1))
                let n = Foundation.tanh(x(2) + r * h(2))
                let prev = previous.map { Double($0[b * H + j]) } ?? 0
                eR.append(r)
                eZ.append(z)
                eN.append(n)
                eHn.append(h(2))
                eH.append((1 - z) * n + z * prev)
              }
            }
            let count = rows * H
            var r = output(count)
            var z = output(count)
            var n = output(count)
            var hn = output(count)
            var h = output(count)
            withOptionalPointer(previous.map(input)) { previousPointer in
              ssm_gru_forward_step(input(xw), stride, input(hw), previousPointer, rows, H, &r, &z, &n, &hn, &h)
            }
            // σ and tanh within a few ulp (kernels_body.inc) of arguments rounded once.
            for (name, actual, expected) in [("r", r, eR), ("z", z, eZ), ("n", n, eN), ("h", h, eH)] {
              assertMatches(actual, expected, rtol: 2e-6, atol: 2e-7, name)
              assertPaddingIntact(actual, after: count, name)
            }
            assertMatches(hn, eHn, rtol: 0, atol: 0, "hn")
            assertPaddingIntact(hn, after: count, "hn")
          }
        }
      }
    }
  }

  /// The backward of one GRU step: dn = dh∘(1 − z)∘(1 − n²), dz = dh∘(h_prev − n)∘z∘(1 − z),
  /// dr = dn∘hn∘r∘(1 − r); dxw = [dr, dz, dn] (rows `stride` > 3H apart, gaps untouched),
  /// dhw = [dr, dz, dn∘r], dh_prev = z∘dh.
  func testGRUBackwardStepAtEveryLevel() {
    atEveryLevel {
      withEvery("rows", in: [1, 3]) { rows in
        withEvery("H", in: [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65]) { H in
          withEvery("h_prev", in: [false, true]) { hasPrevious in
            let count = rows * H
            let stride = 3 * H + 5
            let dh = uniform(count, seed: seed(rows, H, 1))
            let r = uniform(count, 0.05...0.95, seed: seed(rows, H, 2))
            let z = uniform(count, 0.05...0.95, seed: seed(rows, H, 3))
            let n = uniform(count, -0.95...0.95, seed: seed(rows, H, 4))
            let hn = uniform(count, -2...2, seed: seed(rows, H, 5))
            let previous = hasPrevious ? uniform(count, seed: seed(rows, H, 6)) : nil
            var eDxw = [Double](repeating: 0, count: rows * 3 * H)
            var eDhw = [Double](repeating: 0, count: rows * 3 * H)
            var eDhPrev = [Double](repeating: 0, count: count)
            for b in 0..<rows {
              for j in 0..<H {
                let i = b * H + j
                let (d, rv, zv, nv, hnv) = (Double(dh[i]), Double(r[i]), Double(z[i]), Double(n[i]), Double(hn[i]))
                let prev = previous.map { Double($0[i]) } ?? 0
                let dn = d * (1 - zv) * (1 - nv * nv)
                let dz = d * (prev - nv) * zv * (1 - zv)
                let dr = dn * hnv * rv * (1 - rv)
                let o = b * 3 * H + j
                eDxw[o] = dr
                eDxw[o + H] = dz
                eDxw[o + 2 * H] = dn
                eDhw[o] = dr
                eDhw[o + H] = dz
                eDhw[o + 2 * H] = dn * rv
                eDhPrev[i] = d * zv
              }
            }
            var dxw = [Float](repeating: sentinel, count: rows * stride + padding)
            for b in 0..<rows { for j in 0..<(3 * H) { dxw[b * stride + j] = .nan } }
            var dhw = output(rows * 3 * H)
            var dhPrev = output(count)
            withOptionalPointer(previous.map(input)) { previousPointer in
              ssm_gru_backward_step(
                input(dh), input(r), input(z), input(n), input(hn), previousPointer, rows, H, &dxw, stride, &dhw,
                &dhPrev)
            }
            let dxwRows = (0..<rows).flatMap { b in dxw[(b * stride)..<(b * stride + 3 * H)] }
            // Products of four or five rounded factors; 1 − n² ≥ 0.0975 loses at most a factor 10.
            assertMatches(dxwRows, eDxw, rtol: 2e-6, atol: 0, "dxw")
            assertMatches(dhw, eDhw, rtol: 2e-6, atol: 0, "dhw")
            assertMatches(dhPrev, eDhPrev, rtol: oneUlp, atol: 0, "dh_prev")
            var gaps = [Float]()
            for b in 0..<rows { gaps += dxw[(b * stride + 3 * H)..<((b + 1) * stride)] }
            gaps += dxw[(rows * stride)...]
            XCTAssertTrue(
              gaps.allSatisfy { $0.bitPattern == sentinel.bitPattern }, "dxw written between rows\(TestContext.description)")
            assertPaddingIntact(dhw, after: rows * 3 * H, "dhw")
            assertPaddingIntact(dhPrev, after: count, "dh_prev")
          }
        }
      }
    }
  }

  // MARK: Dropout

  /// The mask is the header's rule (SSMTestSupport's DropoutRule), the same at every level, and
  /// the same when the range is computed in pieces; y = x∘mask.
  func testDropoutFollowsTheRuleAtEveryLevelAndForAnySplit() {
    let key: UInt64 = 0xD1B5_4A32_D192_ED03
    var firstLevelMasks: [String: [Float]] = [:]
    atEveryLevel {
      withEvery("p", in: [Float(0), 0.3, 0.5, 0.9]) { p in
        withEvery("n", in: sizes + [1000]) { n in
          let scale = 1 / (1 - p)
          let x = input(uniform(n, 0.5...2, seed: seed(n, 1)))
          var y = output(n)
          var mask = output(n)
          ssm_dropout(key, p, scale, x, &y, &mask, 0, n)
          let expected = (0..<n).map { DropoutRule.keeps(key: key, index: $0, probability: p) ? scale : 0 }
          XCTAssertEqual(Array(mask.prefix(n)), expected, "mask\(TestContext.description)")
          XCTAssertEqual(Array(y.prefix(n)), (0..<n).map { x[$0] * expected[$0] }, "y\(TestContext.description)")
          assertPaddingIntact(mask, after: n, "mask")
          assertPaddingIntact(y, after: n, "y")

          var piecewiseY = output(n)
          var piecewiseMask = output(n)
          let cuts = [0, n / 3, Swift.min(n, (2 * n) / 3 + 1), n]
          for k in 0..<3 { ssm_dropout(key, p, scale, x, &piecewiseY, &piecewiseMask, cuts[k], cuts[k + 1]) }
          XCTAssertEqual(piecewiseMask, mask, "mask computed in pieces\(TestContext.description)")
          XCTAssertEqual(piecewiseY, y, "y computed in pieces\(TestContext.description)")

          let id = "p=\(p) n=\(n)"
          if let first = firstLevelMasks[id] {
            XCTAssertEqual(mask, first, "mask differs from level \(levels[0])\(TestContext.description)")
          } else {
            firstLevelMasks[id] = mask
          }
        }
      }
    }
  }

  /// Element indices past 2³² fold their high half into the hash as the rule says. The kernel
  /// indexes x, y and mask by absolute element index, so small buffers are passed shifted back by
  /// `begin`; only elements [begin, begin + count) are touched.
  func testDropoutIndicesPast32BitsFollowTheRule() {
    let key: UInt64 = 0x0123_4567_89AB_CDEF
    let (begin, count) = ((1 << 32) - 7, 40)
    let x = uniform(count, 0.5...2, seed: 3)
    atEveryLevel {
      var y = output(count)
      var mask = output(count)
      x.withUnsafeBufferPointer { xp in
        y.withUnsafeMutableBufferPointer { yp in
          mask.withUnsafeMutableBufferPointer { mp in
            ssm_dropout(
              key, 0.5, 2, xp.baseAddress! - begin, yp.baseAddress! - begin, mp.baseAddress! - begin, begin, begin + count)
          }
        }
      }
      let expected = (0..<count).map { DropoutRule.keeps(key: key, index: begin + $0, probability: 0.5) ? Float(2) : 0 }
      XCTAssertEqual(Array(mask.prefix(count)), expected, "mask\(TestContext.description)")
      XCTAssertEqual(Array(y.prefix(count)), (0..<count).map { x[$0] * expected[$0] }, "y\(TestContext.description)")
      assertPaddingIntact(mask, after: count, "mask")
      assertPaddingIntact(y, after: count, "y")
    }
  }
}
