import SSMTensor
import XCTest

/// Finite-difference gradient checking in Double.
public enum FiniteDifference {
  /// The central-difference gradient of a scalar function: `(f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h`.
  public static func gradient(
    of function: ([Double]) -> Double, at point: [Double], step: Double = 1e-6
  ) -> [Double] {
    var x = point
    var result = [Double](repeating: 0, count: point.count)
    for i in point.indices {
      let saved = x[i]
      x[i] = saved + step
      let plus = function(x)
      x[i] = saved - step
      let minus = function(x)
      x[i] = saved
      result[i] = (plus - minus) / (2 * step)
    }
    return result
  }

  /// The largest symmetric relative error `|a − n| / max(|a| + |n|, floor)` and where it is; a
  /// NaN or infinity in either gradient (or a non-finite floor) is an infinite error.
  public static func worstRelativeError(
    _ analytic: [Double], _ numeric: [Double], floor: Double = 1e-12
  ) -> (error: Double, index: Int) {
    precondition(analytic.count == numeric.count, "gradient sizes differ")
    guard floor.isFinite else { return (.infinity, 0) }
    var worst = (error: 0.0, index: 0)
    for i in analytic.indices {
      let (a, n) = (analytic[i], numeric[i])
      guard a.isFinite && n.isFinite else { return (.infinity, i) }
      let e = Swift.abs(a - n) / Swift.max(Swift.abs(a) + Swift.abs(n), floor)
      if e > worst.error { worst = (e, i) }
    }
    return worst
  }

  /// Asserts that an analytic gradient matches central differences.
  ///
  /// The comparison uses an absolute floor: entries more than 1e4 times smaller than the largest
  /// entry are compared against that floor, because a central difference of a
  /// function of magnitude `F` carries rounding noise of about `ε·F/h`.
  public static func assertGradient(
    _ analytic: [Double], matches function: ([Double]) -> Double, at point: [Double],
    step: Double = 1e-6, tolerance: Double = 1e-6, name: String = "",
    file: StaticString = #filePath, line: UInt = #line
  ) {
    let numeric = gradient(of: function, at: point, step: step)
    let scale = Swift.max(largest(numeric.map(Swift.abs)), largest(analytic.map(Swift.abs)), 1e-300)
    let (error, index) = worstRelativeError(analytic, numeric, floor: 1e-4 * scale)
    if !(error <= tolerance) {
      XCTFail(
        "gradient \(name) mismatch: relative error \(error) at index \(index) (analytic \(analytic[index]), numeric \(numeric[index]))\(TestContext.description)",
        file: file, line: line)
    }
  }
}

extension SplitMix64 {
  /// `count` uniform Doubles in `[low, high)`.
  public mutating func doubles(_ count: Int, in range: ClosedRange<Double> = -1...1) -> [Double] {
    (0..<count).map { _ in range.lowerBound + (range.upperBound - range.lowerBound) * nextUnitDouble() }
  }
}

extension Tensor {
  /// A tensor of uniform random values in `[low, high)`, for tests.
  public static func random(_ shape: Shape, in range: ClosedRange<Float> = -1...1, seed: UInt64) -> Tensor {
    var rng = SplitMix64(seed: seed)
    return Tensor.randomUniform(shape, lowerBound: range.lowerBound, upperBound: range.upperBound, using: &rng)
  }

  /// The elements as Doubles.
  public var doubles: [Double] { scalars.map(Double.init) }
}
