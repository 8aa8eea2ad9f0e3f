import Foundation
import SSMTestSupport
import XCTest

final class ReductionTests: XCTestCase {
  /// Naive reduction of `[outer, n, inner]` in Double.
  static func reduce(_ x: Tensor, axis: Int, _ body: ([Double]) -> Double) -> [Double] {
    let a = x.shape.normalizedAxis(axis)
    let outer = x.shape.dimensions[..<a].reduce(1, *)
    let n = x.shape[a]
    let inner = x.shape.dimensions[(a + 1)...].reduce(1, *)
    var result = [Double]()
    for o in 0..<outer {
      for i in 0..<inner {
        result.append(body((0..<n).map { Double(x.scalars[(o * n + $0) * inner + i]) }))
      }
    }
    return result
  }

  static func reducedShape(_ shape: Shape, _ axis: Int, keep: Bool) -> Shape {
    var d = shape.dimensions
    let a = shape.normalizedAxis(axis)
    if keep { d[a] = 1 } else { d.remove(at: a) }
    return Shape(d)
  }

  func testAxisReductionsMatchReference() {
    let shapes: [Shape] = [[7], [3, 17], [1, 7, 3], [3, 1031], [2, 3, 4, 5], [1000, 3]]
    withEvery("shape", in: shapes) { shape in
      let x = Tensor.random(shape, in: -2...2, seed: UInt64(shape.elementCount))
      withEvery("axis", in: Array(-1..<shape.rank)) { axis in
        withEvery("keep", in: [false, true]) { keep in
          let outShape = Self.reducedShape(shape, axis, keep: keep)
          let sums = Self.reduce(x, axis: axis) { $0.reduce(0, +) }
          assertClose(x.sum(alongAxis: axis, keepingDimension: keep), expected: sums, shape: outShape, rtol: 1e-5, atol: 1e-5)
          let means = Self.reduce(x, axis: axis) { $0.reduce(0, +) / Double($0.count) }
          assertClose(x.mean(alongAxis: axis, keepingDimension: keep), expected: means, shape: outShape, rtol: 1e-5, atol: 1e-6)
          let variances = Self.reduce(x, axis: axis) { v in
            let m = v.reduce(0, +) / Double(v.count)
            return v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count)
          }
          assertClose(
            x.variance(alongAxis: axis, keepingDimension: keep), expected: variances, shape: outShape, rtol: 1e-4, atol: 1e-6)
          let maxima = Self.reduce(x, axis: axis) { $0.max()! }
          assertClose(x.max(alongAxis: axis, keepingDimension: keep), expected: maxima, shape: outShape, rtol: 0, atol: 0)
          let argmaxima = Self.reduce(x, axis: axis) { v in Double(v.firstIndex(of: v.max()!)!) }
          XCTAssertEqual(x.argmax(alongAxis: axis, keepingDimension: keep).values.map(Double.init), argmaxima)
        }
      }
    }
  }

  /// Few sums over many rows (a bias's gradient) split the summed axis between the workers:
  /// awkward row counts and widths, one or several sums, against the Double reference.
  func testLongSumsSplitAcrossWorkersMatchReference() {
    let shapes: [Shape] = [[4099, 131], [1, 2053, 257], [1, 9001, 61], [20011, 3, 13]]
    withEvery("shape", in: shapes) { shape in
      let x = Tensor.random(shape, in: -2...2, seed: UInt64(shape.elementCount))
      let axis = shape.rank == 3 && shape[0] == 1 ? 1 : 0
      let expected = Self.reduce(x, axis: axis) { $0.reduce(0, +) }
      // A Float sum of n terms of magnitude ≤ 2 may be off by about n·ε·2; a row dropped or
      // counted twice moves a sum by up to 2, a lost partial by tens.
      let rows = Double(shape[axis])
      assertClose(
        x.sum(alongAxis: axis), expected: expected, shape: Self.reducedShape(shape, axis, keep: false), rtol: 0,
        atol: 2 * rows * Double(Float.ulpOfOne))
    }
  }

  func testArgmaxPrefersTheFirstOfEqualMaxima() {
    let x = Tensor(rows: [[1, 3, 3, 2], [5, 5, 5, 5]])
    XCTAssertEqual(x.argmax(alongAxis: 1).values, [1, 0])
    XCTAssertEqual(x.transposed().argmax(alongAxis: 0).values, [1, 0])
  }

  func testTotals() {
    withEvery("count", in: [1, 3, 7, 17, 1031, 100_003]) { n in
      let x = Tensor.random([n], in: -1...3, seed: UInt64(n))
      let d = x.doubles
      let sum = d.reduce(0, +)
      XCTAssertEqual(Double(x.sum()), sum, accuracy: 1e-6 * Swift.max(1, Swift.abs(sum)) + 1e-5)
      XCTAssertEqual(Double(x.mean()), sum / Double(n), accuracy: 1e-6)
      XCTAssertEqual(x.max(), d.max().map(Float.init))
      let m = sum / Double(n)
      XCTAssertEqual(Double(x.variance()), d.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(n), accuracy: 1e-5)
    }
  }

  func testSoftmaxFamilyMatchesReference() {
    withEvery("shape", in: [[1], [3, 7], [2, 3, 17], [4, 3417]] as [Shape]) { shape in
      let x = Tensor.random(shape, in: -10...10, seed: UInt64(shape.elementCount))
      let n = shape[shape.rank - 1]
      let rows = x.elementCount / n
      var lse = [Double]()
      var softmax = [Double]()
      var logSoftmax = [Double]()
      for r in 0..<rows {
        let row = Array(x.doubles[(r * n)..<((r + 1) * n)])
        let m = row.max()!
        let s = row.map { Foundation.exp($0 - m) }.reduce(0, +)
        lse.append(m + Foundation.log(s))
        softmax += row.map { Foundation.exp($0 - m) / s }
        logSoftmax += row.map { $0 - m - Foundation.log(s) }
      }
      assertClose(x.logSumExp(), expected: lse, shape: Shape(Array(shape.dimensions.dropLast())), rtol: 1e-6, atol: 1e-6)
      assertClose(x.softmax(), expected: softmax, shape: shape, rtol: 1e-5, atol: 1e-7)
      assertClose(x.logSoftmax(), expected: logSoftmax, shape: shape, rtol: 1e-6, atol: 1e-5)
    }
  }

  func testSoftmaxStaysFiniteForHugeInputs() {
    let x = Tensor(rows: [[1e4, -1e4, 0, 1e4 - 1], [-1e4, -1e4, -1e4, -1e4]])
    for t in [x.softmax(), x.logSoftmax(), x.logSumExp()] {
      XCTAssertTrue(t.scalars.allSatisfy { $0.isFinite }, "\(t)")
    }
    XCTAssertEqual(x.softmax()[0, 0], Float(1 / (1 + Foundation.exp(-1.0))), accuracy: 1e-6)
    XCTAssertEqual(x.logSumExp()[1], -1e4 + Float(Foundation.log(4.0)), accuracy: 1e-2)
    XCTAssertEqual(x.softmax()[1, 2], 0.25, accuracy: 1e-7)
  }
}
