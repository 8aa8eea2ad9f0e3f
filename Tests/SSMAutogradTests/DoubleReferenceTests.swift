import Foundation
import SSMAutograd
import SSMTestSupport
import XCTest

/// The fused ops' gradients against central differences of Double reference implementations
/// (h = 1e-6), where Float evaluation would blur the comparison.
final class DoubleReferenceTests: XCTestCase {
  func layerNormReference(_ x: [Double], _ gamma: [Double], _ beta: [Double], rows: Int, n: Int, eps: Double) -> [Double] {
    var out = [Double]()
    for r in 0..<rows {
      let row = Array(x[(r * n)..<((r + 1) * n)])
      let mean = row.reduce(0, +) / Double(n)
      let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n)
      out += row.enumerated().map { ($0.element - mean) / (variance + eps).squareRoot() * gamma[$0.offset] + beta[$0.offset] }
    }
    return out
  }

  func testLayerNormAgainstDouble() {
    let (rows, n) = (4, 9)
    let x = Tensor.random([rows, n], in: -2...2, seed: 1)
    let gamma = Tensor.random([n], in: 0.5...1.5, seed: 2)
    let beta = Tensor.random([n], seed: 3)
    let c = Tensor.random([rows, n], seed: 4)
    let (xv, gv, bv) = (
      Variable(x, requiresGradient: true), Variable(gamma, requiresGradient: true), Variable(beta, requiresGradient: true)
    )
    xv.layerNorm(gamma: gv, beta: bv, epsilon: 1e-5).backward(seed: c)
    let cd = c.doubles
    let loss = { (xs: [Double], gs: [Double], bs: [Double]) in
      zip(self.layerNormReference(xs, gs, bs, rows: rows, n: n, eps: 1e-5), cd).reduce(0) { $0 + $1.0 * $1.1 }
    }
    FiniteDifference.assertGradient(
      xv.gradient!.doubles, matches: { loss($0, gamma.doubles, beta.doubles) }, at: x.doubles, tolerance: 1e-4, name: "x")
    FiniteDifference.assertGradient(
      gv.gradient!.doubles, matches: { loss(x.doubles, $0, beta.doubles) }, at: gamma.doubles, tolerance: 1e-4, name: "gamma")
    FiniteDifference.assertGradient(
      bv.gradient!.doubles, matches: { loss(x.doubles, gamma.doubles, $0) }, at: beta.doubles, tolerance: 1e-4, name: "beta")
  }

  func testSoftmaxCrossEntropyAgainstDouble() {
    let (rows, n) = (5, 37)
    let logits = Tensor.random([rows, n], in: -5...5, seed: 5)
    let targets = IndexTensor([0, 36, 7, 7, 20])
    let v = Variable(logits, requiresGradient: true)
    let loss = Variable.softmaxCrossEntropy(logits: v, targets: targets)
    loss.backward()
    let reference = { (xs: [Double]) -> Double in
      var total = 0.0
      for r in 0..<rows {
        let row = Array(xs[(r * n)..<((r + 1) * n)])
        let m = row.max()!
        total += m + Foundation.log(row.map { Foundation.exp($0 - m) }.reduce(0, +)) - row[Int(targets.values[r])]
      }
      return total / Double(rows)
    }
    XCTAssertEqual(Double(loss.value.scalar), reference(logits.doubles), accuracy: 1e-5)
    FiniteDifference.assertGradient(v.gradient!.doubles, matches: reference, at: logits.doubles, tolerance: 1e-4, name: "logits")
  }

  func testSoftmaxAgainstDouble() {
    let (rows, n) = (3, 11)
    let x = Tensor.random([rows, n], in: -3...3, seed: 6)
    let c = Tensor.random([rows, n], seed: 7)
    let v = Variable(x, requiresGradient: true)
    v.softmax().backward(seed: c)
    let cd = c.doubles
    let reference = { (xs: [Double]) -> Double in
      var total = 0.0
      for r in 0..<rows {
        let row = Array(xs[(r * n)..<((r + 1) * n)])
        let m = row.max()!
        let e = row.map { Foundation.exp($0 - m) }
        let s = e.reduce(0, +)
        for j in 0..<n { total += e[j] / s * cd[r * n + j] }
      }
      return total
    }
    FiniteDifference.assertGradient(v.gradient!.doubles, matches: reference, at: x.doubles, tolerance: 1e-4, name: "x")
  }
}
