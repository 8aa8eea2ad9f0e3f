import Foundation
import SSMAutograd
import SSMTensor
import SSMTestSupport
import XCTest

/// The blocked linear + softmax cross-entropy against a Double statement of its definition and
/// against the materialised op, for catalogues of 1 to 100,000 classes.
final class LinearCrossEntropyTests: XCTestCase {
  /// Loss and gradients of `mean_r(logsumexp(h_r·Wᵀ) − h_r·W[t_r])` in Double, from the logits.
  func reference(hidden: Tensor, weight: Tensor, targets: [Int]) -> (loss: Double, hidden: [Double], weight: [Double]) {
    let (n, d, v) = (hidden.shape[0], hidden.shape[1], weight.shape[0])
    let (h, w) = (hidden.doubles, weight.doubles)
    var loss = 0.0
    var dh = [Double](repeating: 0, count: n * d)
    var dw = [Double](repeating: 0, count: v * d)
    for r in 0..<n {
      let logits = (0..<v).map { c in (0..<d).reduce(0.0) { $0 + h[r * d + $1] * w[c * d + $1] } }
      let top = logits.max()!
      let total = logits.reduce(0.0) { $0 + Foundation.exp($1 - top) }
      loss += top + Foundation.log(total) - logits[targets[r]]
      for c in 0..<v {
        let g = (Foundation.exp(logits[c] - top) / total - (c == targets[r] ? 1 : 0)) / Double(n)
        for k in 0..<d {
          dh[r * d + k] += g * w[c * d + k]
          dw[c * d + k] += g * h[r * d + k]
        }
      }
    }
    return (loss / Double(n), dh, dw)
  }

  func testMatchesTheDefinitionForCatalogueSizesFromOneToOneHundredThousand() {
    withEvery("classes", in: [1, 2, 7, 33, 1000, 100_000]) { classes in
      let rows = classes >= 1000 ? 5 : 9
      let d = 6
      let hidden = Tensor.random([rows, d], in: -1...1, seed: UInt64(classes))
      let weight = Tensor.random([classes, d], in: -1...1, seed: UInt64(classes) + 1)
      var rng = SplitMix64(seed: 3)
      let targets = (0..<rows).map { _ in Int(rng.next() % UInt64(classes)) }
      let expected = reference(hidden: hidden, weight: weight, targets: targets)
      // Whole rows, and blocks of classes too (the two-pass form large catalogues take).
      withEvery("rowsPerBlock", in: [1, 2, 4, nil as Int?]) { block in
        withEvery("classesPerBlock", in: [nil, 1, 3, 1024] as [Int?]) { classBlock in
          let h = Variable(hidden, requiresGradient: true)
          let w = Variable(weight, requiresGradient: true)
          let loss = Variable.linearSoftmaxCrossEntropy(
            hidden: h, weight: w, targets: IndexTensor(targets), rowsPerBlock: block, classesPerBlock: classBlock)
          loss.backward(seed: Tensor(2))
          assertClose([Double(loss.value.scalar)], [expected.loss], rtol: 1e-5, atol: 1e-6, "loss")
          assertClose(
            h.gradient!, expected: expected.hidden.map { 2 * $0 }, shape: hidden.shape, rtol: 1e-4, atol: 1e-6, "∂hidden")
          assertClose(
            w.gradient!, expected: expected.weight.map { 2 * $0 }, shape: weight.shape, rtol: 1e-4, atol: 1e-6, "∂weight")
        }
      }
    }
  }

  func testEqualsTheMaterialisedCrossEntropy() {
    let hidden = Tensor.random([37, 8], seed: 1)
    let weight = Tensor.random([301, 8], seed: 2)
    var rng = SplitMix64(seed: 4)
    let targets = IndexTensor((0..<37).map { _ in Int(rng.next() % 301) })
    let (h1, w1) = (Variable(hidden, requiresGradient: true), Variable(weight, requiresGradient: true))
    let blocked = Variable.linearSoftmaxCrossEntropy(hidden: h1, weight: w1, targets: targets, rowsPerBlock: 5)
    blocked.backward()
    let (h2, w2) = (Variable(hidden, requiresGradient: true), Variable(weight, requiresGradient: true))
    let materialised = Variable.softmaxCrossEntropy(logits: Variable.matmul(h2, w2, transposeB: true), targets: targets)
    materialised.backward()
    assertClose([Double(blocked.value.scalar)], [Double(materialised.value.scalar)], rtol: 1e-6, atol: 0)
    assertClose(h1.gradient!, h2.gradient!, rtol: 1e-5, atol: 1e-7)
    assertClose(w1.gradient!, w2.gradient!, rtol: 1e-5, atol: 1e-7)
  }

  func testGradientsMatchFiniteDifferences() {
    let targets = IndexTensor([3, 0, 6, 6])
    for classBlock in [nil, 2] as [Int?] {
      GradientCheck.assertGradients([Tensor.random([4, 3], seed: 8), Tensor.random([7, 3], seed: 9)]) { v in
        Variable.linearSoftmaxCrossEntropy(
          hidden: v[0], weight: v[1], targets: targets, rowsPerBlock: 3, classesPerBlock: classBlock)
      }
    }
  }

  /// A class block whose logits are all −∞ leaves the running logsumexp to the other blocks,
  /// and a NaN logit makes the loss NaN: the two-pass form agrees with whole rows on both.
  func testClassBlocksCarryInfinitiesAndNaNAsWholeRowsDo() {
    // Every hidden row has a positive first entry, so −∞ weights give −∞ logits, never NaN.
    let hidden = Tensor(rows: [[1, 0], [2, 1]])
    let targets = IndexTensor([2, 3])
    func losses(_ weight: Tensor) -> (whole: Float, blocked: Float) {
      let whole = Variable.linearSoftmaxCrossEntropy(hidden: Variable(hidden), weight: Variable(weight), targets: targets)
      let blocked = Variable.linearSoftmaxCrossEntropy(
        hidden: Variable(hidden), weight: Variable(weight), targets: targets, classesPerBlock: 2)
      return (whole.value.scalar, blocked.value.scalar)
    }
    let infinite = losses(Tensor(rows: [[-.infinity, 0], [-.infinity, 0], [2, 0], [1, 1]]))
    XCTAssertTrue(infinite.whole.isFinite)
    XCTAssertEqual(Double(infinite.blocked), Double(infinite.whole), accuracy: 1e-6)
    let nan = losses(Tensor(rows: [[-1, 0], [.nan, 0], [2, 0], [1, 1]]))
    XCTAssertTrue(nan.whole.isNaN && nan.blocked.isNaN, "a NaN logit: \(nan)")
  }

  func testWithoutATapeNothingIsKept() {
    let loss = withoutGradients {
      Variable.linearSoftmaxCrossEntropy(
        hidden: Variable(Tensor.random([4, 3], seed: 1)), weight: Variable(Tensor.random([5, 3], seed: 2)),
        targets: IndexTensor([0, 1, 2, 3]))
    }
    XCTAssertTrue(loss.value.scalar.isFinite)
    XCTAssertFalse(loss.requiresGradient)
  }
}
