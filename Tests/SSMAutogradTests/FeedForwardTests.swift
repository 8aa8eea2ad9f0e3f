import SSMAutograd
import SSMTensor
import SSMTestSupport
import XCTest

/// The fused position-wise feed-forward network (`Variable.feedForward`) against the separate
/// operations it replaces, and its gradients against finite differences.
final class FeedForwardTests: XCTestCase {
  /// `Drop(f(x·W₁ᵀ + b₁))·W₂ᵀ + b₂` from matmul, addition, the activation and dropout, the key
  /// drawn from `generator` as the fused operation draws it.
  func separate(
    _ v: [Variable], activation: ElementwiseFunction, dropout: Float, using generator: inout SplitMix64
  ) -> Variable {
    let hidden = (Variable.matmul(v[0], v[1], transposeB: true) + v[2]).applying(activation)
      .dropout(probability: dropout, training: true, using: &generator)
    return Variable.matmul(hidden, v[3], transposeB: true) + v[4]
  }

  func fused(_ v: [Variable], activation: ElementwiseFunction, dropout: Float, using generator: inout SplitMix64) -> Variable {
    Variable.feedForward(
      v[0], first: v[1], firstBias: v[2], second: v[3], secondBias: v[4], activation: activation, dropout: dropout,
      training: true, using: &generator)
  }

  func inputs(shape: [Int], inner: Int, seed: UInt64) -> [Tensor] {
    var rng = SplitMix64(seed: seed)
    let d = shape[shape.count - 1]
    return [
      Tensor.randomNormal(Shape(shape), using: &rng), Tensor.randomNormal([inner, d], using: &rng),
      Tensor.randomNormal([inner], using: &rng), Tensor.randomNormal([d, inner], using: &rng),
      Tensor.randomNormal([d], using: &rng),
    ]
  }

  /// Values and the gradients of all five inputs equal the separate operations' for row counts
  /// below, at and past one block (256 rows) and over several blocks on both workers, with and
  /// without dropout, for GELU and ReLU, in rank 2 and 3.
  func testFusedFeedForwardEqualsSeparateOperations() {
    for (shape, inner) in [([1, 3], 4), ([7, 5], 12), ([256, 6], 9), ([3, 100, 5], 7), ([530, 8], 33)] {
      for activation: ElementwiseFunction in [.gelu, .relu] {
        for dropout: Float in [0, 0.3] {
          let label = "shape \(shape) inner \(inner) \(activation) dropout \(dropout)"
          let x = inputs(shape: shape, inner: inner, seed: UInt64(shape.reduce(1, *) + inner))
          let (a, b) = (x.map { Variable($0, requiresGradient: true) }, x.map { Variable($0, requiresGradient: true) })
          var (ga, gb) = (SplitMix64(seed: 9), SplitMix64(seed: 9))
          let ya = fused(a, activation: activation, dropout: dropout, using: &ga)
          let yb = separate(b, activation: activation, dropout: dropout, using: &gb)
          XCTAssertEqual(ga.next(), gb.next(), "the same draws, \(label)")
          assertClose(ya.value, yb.value, rtol: 1e-5, atol: 1e-5, label)
          let cotangent = Tensor.random(ya.shape, in: -1...1, seed: 4)
          ya.backward(seed: cotangent)
          yb.backward(seed: cotangent)
          for i in 0..<5 {
            guard let da = a[i].gradient, let db = b[i].gradient else {
              XCTFail("missing gradient of input \(i), \(label)")
              continue
            }
            assertClose(da, db, rtol: 1e-4, atol: 1e-4, "input \(i), \(label)")
          }
        }
      }
    }
  }

  /// Gradients of every input against central differences, dropout on (its key fixed by the
  /// seed), over two blocks' worth of rows would be too many evaluations: 9 rows.
  func testFusedFeedForwardGradientsMatchFiniteDifferences() {
    for dropout: Float in [0, 0.4] {
      let x = inputs(shape: [9, 3], inner: 5, seed: 21)
      GradientCheck.assertGradients(x, step: 1e-2, tolerance: 2e-2) { v in
        var generator = SplitMix64(seed: 5)
        return fused(v, activation: .gelu, dropout: dropout, using: &generator)
      }
    }
  }

  /// Without gradients the fused operation gives the recorded one's value, and a NaN in the
  /// input reaches the output.
  func testUnrecordedFeedForwardEqualsRecordedAndKeepsNaN() {
    var x = inputs(shape: [300, 4], inner: 6, seed: 2)
    var generator = SplitMix64(seed: 1)
    let recorded = fused(x.map { Variable($0, requiresGradient: true) }, activation: .gelu, dropout: 0, using: &generator)
    let unrecorded = withoutGradients { fused(x.map { Variable($0) }, activation: .gelu, dropout: 0, using: &generator) }
    assertClose(unrecorded.value, recorded.value, rtol: 0, atol: 0, "unrecorded")
    x[0][299, 2] = .nan
    let poisoned = withoutGradients { fused(x.map { Variable($0) }, activation: .gelu, dropout: 0, using: &generator) }
    XCTAssertTrue(poisoned.value[299, 0].isNaN)
    XCTAssertFalse(poisoned.value[298, 0].isNaN)
  }
}
