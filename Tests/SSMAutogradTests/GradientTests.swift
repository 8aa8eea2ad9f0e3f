import SSMAutograd
import SSMTestSupport
import XCTest

/// A finite-difference check for every differentiable op (SSMTestSupport.GradientCheck).
final class GradientTests: XCTestCase {
  func r(_ shape: Shape, _ seed: UInt64, _ range: ClosedRange<Float> = -1...1) -> Tensor {
    Tensor.random(shape, in: range, seed: seed)
  }

  func testArithmeticWithBroadcasting() {
    let pairs: [(Shape, Shape)] = [
      ([3, 4], [3, 4]), ([3, 4], [4]), ([4], [3, 4]), ([2, 1, 4], [3, 1]), ([], [3]), ([3, 1], [1, 5]),
    ]
    withEvery("shapes", in: pairs.indices) { p in
      let (a, b) = (r(pairs[p].0, 1), r(pairs[p].1, 2, 0.5...2))
      withEvery("op", in: ["+", "-", "*", "/"]) { op in
        GradientCheck.assertGradients([a, b]) { v in
          switch op {
          case "+": return v[0] + v[1]
          case "-": return v[0] - v[1]
          case "*": return v[0] * v[1]
          default: return v[0] / v[1]
          }
        }
      }
    }
  }

  func testScalarFormsAndConstants() {
    let x = r([3, 5], 3, 0.5...2)
    let constant = r([5], 4)
    GradientCheck.assertGradients([x]) { v in ((v[0] + 2) * 3 - 1) / 4 }
    GradientCheck.assertGradients([x]) { v in 2 - v[0] }
    GradientCheck.assertGradients([x]) { v in 1.5 / v[0] }
    GradientCheck.assertGradients([x]) { v in -v[0] * constant + constant }
    GradientCheck.assertGradients([x]) { v in v[0] / constant.abs() + 0.5 }
  }

  func testActivations() {
    withEvery("function", in: ElementwiseFunction.allCases) { f in
      // Inputs away from kinks (relu, abs at 0) and inside each domain.
      let positive: Set<ElementwiseFunction> = [.log, .sqrt, .rsqrt, .reciprocal, .log1p]
      var x = positive.contains(f) ? r([2, 7], 5, 0.5...2) : r([2, 7], 5, -3...3)
      if f == .relu || f == .abs {
        // |v| ≥ 0.2 with alternating signs keeps every point away from the kink at 0.
        x = (x.abs() + 0.2) * Tensor(shape: x.shape, scalars: (0..<14).map { $0 % 2 == 0 ? 1 : -1 })
      }
      GradientCheck.assertGradients([x], step: 1e-3) { v in v[0].applying(f) }
    }
  }

  func testMatmulEveryTranspositionAndBatching() {
    withEvery("transposeA", in: [false, true]) { ta in
      withEvery("transposeB", in: [false, true]) { tb in
        let (m, k, n) = (3, 4, 5)
        let a2 = r(ta ? [k, m] : [m, k], 1)
        let b2 = r(tb ? [n, k] : [k, n], 2)
        let a3 = r(ta ? [2, k, m] : [2, m, k], 3)
        let b3 = r(tb ? [2, n, k] : [2, k, n], 4)
        GradientCheck.assertGradients([a2, b2]) { v in Variable.matmul(v[0], v[1], transposeA: ta, transposeB: tb) }
        GradientCheck.assertGradients([a3, b3]) { v in Variable.matmul(v[0], v[1], transposeA: ta, transposeB: tb) }
        GradientCheck.assertGradients([a3, b2]) { v in Variable.matmul(v[0], v[1], transposeA: ta, transposeB: tb) }
        GradientCheck.assertGradients([a2, b3]) { v in Variable.matmul(v[0], v[1], transposeA: ta, transposeB: tb) }
      }
    }
  }

  func testShapeOperations() {
    let x = r([2, 3, 4], 6)
    GradientCheck.assertGradients([x]) { v in v[0].reshaped(to: [6, -1]) * v[0].reshaped(to: [6, 4]) }
    GradientCheck.assertGradients([x]) { v in v[0].permuted([2, 0, 1]) * Variable(r([4, 2, 3], 7)) }
    GradientCheck.assertGradients([x]) { v in v[0].transposed() * Variable(r([2, 4, 3], 8)) }
    withEvery("axis", in: [0, 1, 2]) { axis in
      GradientCheck.assertGradients([x]) { v in v[0].slice(alongAxis: axis, 1..<2) * 3 }
      GradientCheck.assertGradients([x]) { v in v[0].flipped(alongAxis: axis) * Variable(r([2, 3, 4], 9)) }
      GradientCheck.assertGradients([x]) { v in v[0].padded(alongAxis: axis, before: 1, after: 2, value: 5) * 2 }
    }
    // Splits: every piece used, one piece unused (its part of the gradient is zero), a piece of
    // extent 0, a piece used twice, and the pieces equal to slices.
    withEvery("axis", in: [0, 1, 2]) { axis in
      let extent = x.shape[axis]
      let sizes = [1, 0, extent - 1]
      GradientCheck.assertGradients([x]) { v in
        let p = v[0].split(alongAxis: axis, sizes: sizes)
        return Variable.concatenate([p[2] * 3, p[0], p[2] * p[2]], alongAxis: axis)
      }
      GradientCheck.assertGradients([x]) { v in v[0].split(alongAxis: axis, sizes: sizes)[2] * 2 }
      let pieces = Variable(x).split(alongAxis: axis, sizes: sizes)
      XCTAssertEqual(pieces[2].value, x.slice(alongAxis: axis, 1..<extent))
      XCTAssertEqual(pieces[1].shape[axis], 0)
    }
    let y = r([2, 5, 4], 10)
    GradientCheck.assertGradients([x, y]) { v in Variable.concatenate([v[0], v[1] * 2, v[0]], alongAxis: 1) }
    GradientCheck.assertGradients([x, x * 2]) { v in Variable.stack([v[0], v[1]], alongAxis: 1) }
  }

  func testGatherRowsWithPaddingIndex() {
    let table = r([6, 3], 11)
    let ids = IndexTensor(rows: [[1, 0, 3], [3, 5, 0]])
    // Every row but the padding row 0 is checked by finite differences …
    GradientCheck.assertGradients([table]) { v in v[0].gatherRows(ids) }
    let t = Variable(table, requiresGradient: true)
    let out = t.gatherRows(ids, paddingIndex: 0)
    out.backward(seed: Tensor(ones: out.shape))
    // … and with padding index 0 the padding row gets nothing through the lookup, the others all.
    let g = t.gradient!
    XCTAssertEqual((0..<3).map { g[0, $0] }, [0, 0, 0])
    XCTAssertEqual((0..<3).map { g[3, $0] }, [2, 2, 2])
    XCTAssertEqual((0..<3).map { g[2, $0] }, [0, 0, 0])
    XCTAssertEqual((0..<3).map { g[5, $0] }, [1, 1, 1])
  }

  func testReductions() {
    let x = r([3, 4, 5], 12)
    GradientCheck.assertGradients([x]) { v in v[0].sum() }
    GradientCheck.assertGradients([x]) { v in v[0].mean() }
    withEvery("axis", in: [0, 1, 2, -1]) { axis in
      withEvery("keep", in: [false, true]) { keep in
        GradientCheck.assertGradients([x]) { v in v[0].sum(alongAxis: axis, keepingDimension: keep) }
        GradientCheck.assertGradients([x]) { v in v[0].mean(alongAxis: axis, keepingDimension: keep) }
      }
    }
  }

  func testDropoutUsesItsMaskInBothDirections() {
    let x = r([4, 6], 13)
    GradientCheck.assertGradients([x]) { v in
      var rng = SplitMix64(seed: 99)
      return v[0].dropout(probability: 0.3, training: true, using: &rng)
    }
    var rng = SplitMix64(seed: 1)
    let y = Variable(x).dropout(probability: 0.5, training: true, using: &rng).value
    for (a, b) in zip(x.scalars, y.scalars) { XCTAssertTrue(b == 0 || Swift.abs(b - 2 * a) < 1e-6) }
    XCTAssertEqual(Variable(x).dropout(probability: 0.5, training: false, using: &rng).value, x)
  }

  /// The C fast path for SplitMix64 draws exactly the masks of the generic loop.
  /// The mask is a function of one generator draw and the element index: the same for any
  /// split between workers, close to the asked keep rate, independent between neighbours, and
  /// different for the next draw.
  func testDropoutMaskIsAHashOfOneDrawAndTheIndex() {
    let x = Tensor(repeating: 1, shape: [300, 700])  // split between workers
    var rng = SplitMix64(seed: 5)
    let first = Variable(x).dropout(probability: 0.3, training: true, using: &rng).value
    XCTAssertEqual(
      rng,
      {
        var r = SplitMix64(seed: 5)
        _ = r.next()
        return r
      }(), "one draw per op")
    let again = Variable(x).dropout(probability: 0.3, training: true, using: &rng).value
    XCTAssertNotEqual(first, again, "a new draw gives a new mask")
    var sameKey = SplitMix64(seed: 5)
    XCTAssertEqual(Variable(x).dropout(probability: 0.3, training: true, using: &sameKey).value, first)
    // The first 100 elements computed on their own equal the same elements of the whole.
    var keyGenerator = SplitMix64(seed: 5)
    let key = keyGenerator.next()
    let head = Variable.dropoutMask(key: key, probability: 0.3, applyingTo: Tensor(repeating: 1, shape: [100])).mask
    XCTAssertEqual(head.scalars, Array(first.scalars.prefix(100)))
    // The C kernel against the plain Swift statement of the rule (two rounds of murmur3's
    // 32-bit finaliser over (index + low key) ^ high key, kept when ≥ p·2³²), shared with the
    // kernel's per-level tests.
    let expected = (0..<2000).map { i -> Float in
      DropoutRule.keeps(key: key, index: i, probability: 0.3) ? Float(1) / 0.7 : 0
    }
    XCTAssertEqual(Array(first.scalars.prefix(2000)), expected)
    // Keep rate: 210,000 Bernoulli(0.7) draws have σ ≈ 0.001; pairs of neighbours are kept
    // together at 0.49 if independent.
    let kept = first.scalars.map { $0 > 0 ? 1.0 : 0.0 }
    let rate = kept.reduce(0, +) / Double(kept.count)
    XCTAssertEqual(rate, 0.7, accuracy: 0.005)
    let both = zip(kept.dropFirst(), kept).map { $0 * $1 }.reduce(0, +) / Double(kept.count - 1)
    XCTAssertEqual(both, 0.49, accuracy: 0.006)
    XCTAssertEqual(Set(first.scalars), [0, Float(1) / 0.7])
  }

  func testFusedLayerNormSoftmaxAndCrossEntropy() {
    let x = r([5, 7], 14, -2...2)
    let gamma = r([7], 15, 0.5...1.5)
    let beta = r([7], 16)
    GradientCheck.assertGradients([x, gamma, beta], step: 1e-3) { v in v[0].layerNorm(gamma: v[1], beta: v[2], epsilon: 1e-5) }
    GradientCheck.assertGradients([x]) { v in v[0].softmax() }
    GradientCheck.assertGradients([x]) { v in v[0].logSoftmax() }
    let targets = IndexTensor([0, 6, 3, 3, 1])
    GradientCheck.assertGradients([x]) { v in Variable.softmaxCrossEntropy(logits: v[0], targets: targets) }
  }

  func testCompositionWithFanOutAndTiedWeights() {
    // x feeds three branches; the embedding table is both looked up and used as output layer.
    let x = r([3, 4], 17)
    let w = r([4, 4], 18)
    let table = r([6, 4], 19)
    let ids = IndexTensor([2, 5, 1])
    let targets = IndexTensor([1, 2, 3])
    // The step sits between two errors: at 1e-3 the Float loss (≈ 5) resolves a derivative only to
    // ≈ ε·L/h ≈ 1.5e-4, as large as the smallest entries checked; at 1e-2 the truncation error of
    // tanh and sigmoid is.
    GradientCheck.assertGradients([x, w, table], step: 3e-3) { v in
      let h = Variable.matmul(v[0], v[1]).tanh() + v[0].sigmoid() * v[0]
      let e = v[2].gatherRows(ids) + h
      let logits = Variable.matmul(
        e.layerNorm(gamma: Variable(Tensor(ones: [4])), beta: Variable(Tensor(zeros: [4]))), v[2], transposeB: true)
      return Variable.softmaxCrossEntropy(logits: logits, targets: targets) * 3
    }
  }
}
