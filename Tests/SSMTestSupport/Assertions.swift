import SSMTensor
import XCTest

/// The combinations a `withEvery` loop is currently inside, printed with every failure.
public enum TestContext {
  nonisolated(unsafe) static var stack: [String] = []

  /// The current combination as `name=value, …`, or an empty string.
  public static var description: String {
    stack.isEmpty ? "" : " [" + stack.joined(separator: ", ") + "]"
  }
}

/// Runs `body` once per value, recording `name=value` so that failures say which case failed
/// (swift-collections' `withEvery`).
public func withEvery<S: Sequence>(
  _ name: String, in values: S, _ body: (S.Element) throws -> Void
) rethrows {
  for value in values {
    TestContext.stack.append("\(name)=\(value)")
    defer { TestContext.stack.removeLast() }
    try body(value)
  }
}

/// How a comparison treats NaN and infinite values.
public enum NonFiniteValues: Sendable {
  /// Any NaN or infinity in either operand fails the comparison: the default, so that a kernel
  /// that writes NaN (or a reference that overflows) can never pass.
  case refused
  /// The test expects non-finite values: one passes only where the other operand holds the same
  /// one (NaN with NaN, +∞ with +∞, −∞ with −∞).
  case mustMatch
}

/// Whether a pair holding a NaN or an infinity passes under `policy` (only for such pairs).
@inlinable
func nonFinitePairPasses(_ a: Double, _ e: Double, _ policy: NonFiniteValues) -> Bool {
  policy == .mustMatch && ((a.isNaN && e.isNaN) || a == e)
}

/// The largest value, NaN if any value is NaN (`Sequence.max()` and `Swift.max` may drop NaN);
/// 0 for an empty sequence.
public func largest<S: Sequence>(_ values: S) -> Double where S.Element == Double {
  var result = 0.0
  var first = true
  for v in values {
    if v.isNaN { return .nan }
    if first || v > result { (result, first) = (v, false) }
  }
  return result
}

/// The worst elementwise error of `actual` against `expected` under `|a − e| ≤ atol + rtol·|e|`.
public struct Discrepancy: CustomStringConvertible {
  /// Flat index of the worst element.
  public var index: Int
  /// Its value in the actual and the expected tensor.
  public var actual: Double
  public var expected: Double
  /// How far past the tolerance it is: `|a − e| / (atol + rtol·|e|)` (≤ 1 passes); infinite for
  /// a non-finite value the policy refuses.
  public var ratio: Double

  public var description: String {
    "worst at flat index \(index): actual \(actual), expected \(expected), |Δ| = \(Swift.abs(actual - expected)) (\(ratio)× tolerance)"
  }
}

/// Compares element by element, returning the worst element relative to the tolerance; a NaN or
/// infinity in either operand is the worst possible element unless `nonFinite` says it is
/// expected there.
public func worstDiscrepancy(
  _ actual: [Double], _ expected: [Double], rtol: Double, atol: Double, nonFinite: NonFiniteValues = .refused
) -> Discrepancy? {
  precondition(actual.count == expected.count, "worstDiscrepancy: counts differ")
  var worst: Discrepancy?
  for i in actual.indices {
    let (a, e) = (actual[i], expected[i])
    let ratio: Double
    if !a.isFinite || !e.isFinite {
      ratio = nonFinitePairPasses(a, e, nonFinite) ? 0 : .infinity
    } else if a == e {
      ratio = 0
    } else {
      ratio = Swift.abs(a - e) / Swift.max(atol + rtol * Swift.abs(e), .leastNonzeroMagnitude)
    }
    if worst == nil || ratio > worst!.ratio {
      worst = Discrepancy(index: i, actual: a, expected: e, ratio: ratio)
    }
  }
  return worst
}

/// Asserts that two tensors have the same shape and agree within `atol + rtol·|expected|`
/// everywhere, reporting the worst index on failure.
public func assertClose(
  _ actual: Tensor, _ expected: Tensor, rtol: Double = 1e-5, atol: Double = 1e-6,
  nonFinite: NonFiniteValues = .refused,
  _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line
) {
  assertClose(
    actual, expected: expected.scalars.map(Double.init), shape: expected.shape, rtol: rtol, atol: atol,
    nonFinite: nonFinite, message(), file: file, line: line)
}

/// Asserts that a tensor has `shape` and agrees with Double reference values.
public func assertClose(
  _ actual: Tensor, expected: [Double], shape: Shape, rtol: Double = 1e-5, atol: Double = 1e-6,
  nonFinite: NonFiniteValues = .refused, _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
  line: UInt = #line
) {
  guard actual.shape == shape else {
    XCTFail(
      "shape \(actual.shape) != expected \(shape)\(TestContext.description) \(message())",
      file: file, line: line)
    return
  }
  guard expected.count == actual.elementCount else {
    XCTFail("expected has \(expected.count) values for shape \(shape)", file: file, line: line)
    return
  }
  if let worst = worstDiscrepancy(actual.scalars.map(Double.init), expected, rtol: rtol, atol: atol, nonFinite: nonFinite),
    !(worst.ratio <= 1)
  {
    XCTFail("not close: \(worst)\(TestContext.description) \(message())", file: file, line: line)
  }
}

/// Asserts that two arrays agree within `atol + rtol·|expected|`, reporting the worst index.
public func assertClose(
  _ actual: [Double], _ expected: [Double], rtol: Double = 1e-5, atol: Double = 1e-6,
  nonFinite: NonFiniteValues = .refused, _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
  line: UInt = #line
) {
  guard actual.count == expected.count else {
    XCTFail("count \(actual.count) != expected \(expected.count)\(TestContext.description)", file: file, line: line)
    return
  }
  if let worst = worstDiscrepancy(actual, expected, rtol: rtol, atol: atol, nonFinite: nonFinite), !(worst.ratio <= 1) {
    XCTFail("not close: \(worst)\(TestContext.description) \(message())", file: file, line: line)
  }
}

/// Keeps a value alive and opaque to the optimiser, so benchmarked work is not removed.
@_optimize(none)
public func blackHole<T>(_ value: T) {}

/// Returns its argument through an opaque call, hiding constants from the optimiser.
@_optimize(none)
public func identity<T>(_ value: T) -> T { value }

/// `max|a − e| / max|e|` over a tensor: the error of a whole result relative to its scale, the
/// measure used for fast-versus-reference kernel comparisons. Infinite when either tensor holds a
/// NaN or an infinity that `nonFinite` does not expect.
public func normalizedError(_ actual: Tensor, _ expected: Tensor, nonFinite: NonFiniteValues = .refused) -> Double {
  precondition(actual.shape == expected.shape, "normalizedError: shapes \(actual.shape) and \(expected.shape) differ")
  var worst = 0.0
  var scale = 0.0
  for (a, e) in zip(actual.scalars.map(Double.init), expected.scalars.map(Double.init)) {
    if !a.isFinite || !e.isFinite {
      if nonFinitePairPasses(a, e, nonFinite) { continue }
      return .infinity
    }
    worst = Swift.max(worst, Swift.abs(a - e))
    scale = Swift.max(scale, Swift.abs(e))
  }
  return scale == 0 ? worst : worst / scale
}

/// Asserts ``normalizedError(_:_:)`` is below `bound` (shape first), and returns it for reports.
@discardableResult
public func assertNormalizedError(
  _ actual: Tensor, _ expected: Tensor, below bound: Double, _ name: String, nonFinite: NonFiniteValues = .refused,
  file: StaticString = #filePath, line: UInt = #line
) -> Double {
  guard actual.shape == expected.shape else {
    XCTFail("\(name): shape \(actual.shape) != expected \(expected.shape)\(TestContext.description)", file: file, line: line)
    return .infinity
  }
  let error = normalizedError(actual, expected, nonFinite: nonFinite)
  if !(error < bound) {
    XCTFail("\(name): normalized error \(error) ≥ \(bound)\(TestContext.description)", file: file, line: line)
  }
  return error
}
