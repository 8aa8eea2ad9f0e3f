import SSMAutograd
import SSMTensor
import SSMTestSupport
import XCTest

/// The comparison helpers of SSMTestSupport fail on NaN and infinity: every helper is run on
/// inputs holding one, and the failure it reports is caught here instead of failing this test.
final class NaNProofAssertionTests: XCTestCase {
  private var captured: [String]?

  override func recordFailure(
    withDescription description: String, inFile filePath: String, atLine lineNumber: Int, expected: Bool
  ) {
    if captured != nil {
      captured!.append(description)
    } else {
      super.recordFailure(withDescription: description, inFile: filePath, atLine: lineNumber, expected: expected)
    }
  }

  /// The failures `body` reported, captured instead of failing this test.
  private func failures(of body: () -> Void) -> [String] {
    captured = []
    body()
    defer { captured = nil }
    return captured!
  }

  /// Runs `body` and fails unless it reported at least one failure.
  private func expectFailure(_ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () -> Void) {
    XCTAssertFalse(failures(of: body).isEmpty, "\(what) passed", file: file, line: line)
  }

  /// Runs `body` and fails if it reported any failure.
  private func expectPass(_ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () -> Void) {
    let reported = failures(of: body)
    XCTAssertTrue(reported.isEmpty, "\(what) failed: \(reported)", file: file, line: line)
  }

  static let specials: [Float] = [.nan, .infinity, -.infinity]

  func testAssertCloseRefusesNonFiniteValuesInEitherOperand() {
    let finite = Tensor(shape: [4], scalars: [1, 2, 3, 4])
    for special in Self.specials {
      var poisoned = finite
      poisoned[flat: 2] = special
      expectFailure("assertClose(actual \(special))") { assertClose(poisoned, finite, rtol: 1e30, atol: 1e30) }
      expectFailure("assertClose(expected \(special))") { assertClose(finite, poisoned, rtol: 1e30, atol: 1e30) }
      expectFailure("assertClose(both \(special))") { assertClose(poisoned, poisoned) }
      expectFailure("assertClose([Double] \(special))") { assertClose(poisoned.doubles, finite.doubles, rtol: 1e30, atol: 1e30) }
      expectFailure("assertClose(expected: [Double] \(special))") {
        assertClose(finite, expected: poisoned.doubles, shape: [4], rtol: 1e30, atol: 1e30)
      }
      // Only where the test says the value is expected, and only the same value.
      expectPass("assertClose(both \(special), mustMatch)") { assertClose(poisoned, poisoned, nonFinite: .mustMatch) }
      expectFailure("assertClose(\(special) vs finite, mustMatch)") { assertClose(poisoned, finite, nonFinite: .mustMatch) }
    }
    var plus = finite
    var minus = finite
    (plus[flat: 0], minus[flat: 0]) = (.infinity, -.infinity)
    expectFailure("+∞ against −∞, mustMatch") { assertClose(plus, minus, nonFinite: .mustMatch) }
    expectPass("finite values within tolerance") { assertClose(finite, finite) }
  }

  func testNormalizedErrorRefusesNonFiniteValues() {
    let finite = Tensor(shape: [2, 3], scalars: [1, -2, 3, 4, 5, 6])
    for special in Self.specials {
      var poisoned = finite
      poisoned[flat: 4] = special
      XCTAssertEqual(normalizedError(poisoned, finite), .infinity)
      XCTAssertEqual(normalizedError(finite, poisoned), .infinity)
      XCTAssertEqual(normalizedError(poisoned, poisoned), .infinity)
      XCTAssertEqual(normalizedError(poisoned, poisoned, nonFinite: .mustMatch), 0)
      expectFailure("assertNormalizedError(\(special))") { assertNormalizedError(poisoned, finite, below: 1e30, "x") }
    }
    let nan = Tensor(shape: [3], scalars: [.nan, .nan, .nan])
    expectFailure("an all-NaN kernel against an all-NaN reference") { assertNormalizedError(nan, nan, below: 1, "nan") }
  }

  func testGradientChecksRefuseNonFiniteGradients() {
    let point = [0.5, -0.25, 1]
    let (error, index) = FiniteDifference.worstRelativeError([1, .nan, 3], [1, 2, 3])
    XCTAssertEqual(error, .infinity)
    XCTAssertEqual(index, 1)
    XCTAssertEqual(FiniteDifference.worstRelativeError([1, 2, 3], [1, 2, .infinity]).error, .infinity)
    expectFailure("assertGradient with a NaN analytic gradient") {
      FiniteDifference.assertGradient([.nan, .nan, .nan], matches: { $0.reduce(0, +) }, at: point)
    }
    expectFailure("assertGradient of a function that is NaN") {
      FiniteDifference.assertGradient([1, 1, 1], matches: { _ in .nan }, at: point)
    }
    expectPass("assertGradient of a sum") { FiniteDifference.assertGradient([1, 1, 1], matches: { $0.reduce(0, +) }, at: point) }
    let x = Tensor(shape: [3], scalars: [0.5, -0.25, 1])
    expectFailure("GradientCheck of an op whose value is NaN") { GradientCheck.assertGradients([x]) { $0[0] * Float.nan } }
    expectPass("GradientCheck of x·x") { GradientCheck.assertGradients([x]) { $0[0] * $0[0] } }
  }

  func testLargestPropagatesNaN() {
    XCTAssertTrue(largest([1, .nan, 3]).isNaN)
    XCTAssertTrue(largest([.nan, 1]).isNaN)
    XCTAssertEqual(largest([1, 5, 3]), 5)
    XCTAssertEqual(largest([-2, -1]), -1)
    XCTAssertEqual(largest([Double]()), 0)
    XCTAssertEqual(worstDiscrepancy([1, .nan], [1, .nan], rtol: 0, atol: 0)?.ratio, .infinity)
  }
}
