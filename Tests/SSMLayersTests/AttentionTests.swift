import Foundation
import SSMAutograd
import SSMLayers
import SSMTensor
import SSMTestSupport
import XCTest

/// The Transformer sublayers against plain Double statements of their equations, and their
/// gradients against finite differences.
final class AttentionTests: XCTestCase {
  /// `x·Wᵀ + b` for one row in Double.
  func linear(_ layer: Linear, _ row: [Double]) -> [Double] {
    let w = layer.weight.value.doubles
    let out = layer.weight.shape[0]
    let b = layer.bias?.value.doubles ?? [Double](repeating: 0, count: out)
    return (0..<out).map { o in b[o] + zip(w[(o * row.count)..<((o + 1) * row.count)], row).reduce(0) { $0 + $1.0 * $1.1 } }
  }

  /// LayerNorm of one row in Double (biased variance).
  func layerNorm(_ norm: LayerNorm, _ row: [Double]) -> [Double] {
    let mean = row.reduce(0, +) / Double(row.count)
    let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(row.count)
    let (g, b) = (norm.weight.value.doubles, norm.bias.value.doubles)
    return row.indices.map { (row[$0] - mean) / (variance + Double(norm.epsilon)).squareRoot() * g[$0] + b[$0] }
  }

  /// A layer with every parameter moved off its initial value, so a swapped or forgotten one shows.
  func perturbed<L: Layer>(_ layer: L, seed: UInt64) -> L {
    var rng = SplitMix64(seed: seed)
    for (_, p) in layer.namedParameters() {
      p.value = p.value + Tensor.randomUniform(p.shape, lowerBound: -0.3, upperBound: 0.3, using: &rng)
    }
    return layer
  }

  /// A causal mask with the last key of sequence 1 masked out as padding (right padding, as in
  /// RecBole), `[B, 1, L, L]`. Every query keeps a visible key: a fully masked row is a softmax
  /// of −10000 + s whose Float rounding (ulp 0.001 at 10⁴) no reference reproduces.
  func mask(batch: Int, length: Int) -> Tensor {
    var values = [Float](repeating: -10000, count: batch * length * length)
    for b in 0..<batch {
      for i in 0..<length {
        for j in 0...i where !(b == 1 && j == length - 1) { values[(b * length + i) * length + j] = 0 }
      }
    }
    return Tensor(shape: [batch, 1, length, length], scalars: values)
  }

  /// Recorded for a backward pass (the separate operations) and not (the fused
  /// ``Tensor/attention(queries:keys:values:heads:mask:scale:)``), both against the equations.
  func testMultiHeadAttentionMatchesItsEquations() {
    withEvery("heads", in: [1, 2, 4]) { heads in
      withEvery("recorded", in: [true, false]) { recorded in
        multiHeadAttentionMatchesItsEquations(heads: heads, recorded: recorded)
      }
    }
  }

  func multiHeadAttentionMatchesItsEquations(heads: Int, recorded: Bool) {
    let (batch, length, d) = (2, 5, 8)
    var rng = SplitMix64(seed: UInt64(heads))
    let layer = perturbed(MultiHeadAttention(dimension: d, heads: heads, using: &rng), seed: 3)
    let x = Tensor.random([batch, length, d], seed: 11)
    let m = mask(batch: batch, length: length)
    var context = ForwardContext.evaluation
    let y =
      recorded
      ? layer(Variable(x), mask: m, context: &context).value
      : withoutGradients {
        layer(Variable(x), mask: m, context: &context).value
      }
    var expected: [Double] = []
    let size = d / heads
    for b in 0..<batch {
      let rows = (0..<length).map { t in Array(x.doubles[((b * length + t) * d)..<((b * length + t + 1) * d)]) }
      let (q, k, v) = (
        rows.map { linear(layer.query, $0) }, rows.map { linear(layer.key, $0) }, rows.map { linear(layer.value, $0) }
      )
      for i in 0..<length {
        var joined = [Double](repeating: 0, count: d)
        for h in 0..<heads {
          let span = (h * size)..<((h + 1) * size)
          let logits = (0..<length).map { j in
            zip(q[i][span], k[j][span]).reduce(0) { $0 + $1.0 * $1.1 } / Double(size).squareRoot()
              + Double(m.scalars[(b * length + i) * length + j])
          }
          let top = logits.max()!
          let weights = logits.map { Foundation.exp($0 - top) }
          let total = weights.reduce(0, +)
          for j in 0..<length { for c in span { joined[c] += weights[j] / total * v[j][c] } }
        }
        let projected = linear(layer.dense, joined)
        expected += layerNorm(layer.norm, zip(projected, rows[i]).map { $0 + $1 })
      }
    }
    assertClose(y, expected: expected, shape: [batch, length, d], rtol: 1e-5, atol: 1e-5)
  }

  /// The fused attention against a Double statement of its definition: one query or several,
  /// one key or many, heads of width 1 and 5, a mask per row or one for all rows, masked keys
  /// among visible ones.
  func testFusedAttentionMatchesItsDefinition() {
    for (batch, lq, l, d, heads, sharedMask) in [
      (1, 1, 1, 3, 3, false), (3, 1, 50, 10, 2, false), (2, 7, 7, 12, 3, true), (4, 5, 19, 5, 1, false),
    ] {
      var rng = SplitMix64(seed: UInt64(batch * 100 + l))
      let (q, k, v) = (
        Tensor.randomNormal([batch, lq, d], using: &rng), Tensor.randomNormal([batch, l, d], using: &rng),
        Tensor.randomNormal([batch, l, d], using: &rng)
      )
      let maskRows = sharedMask ? 1 : batch
      // About a third of the keys masked, never all of a query's.
      let mask = Tensor(
        shape: [maskRows, 1, lq, l],
        scalars: (0..<(maskRows * lq * l)).map { i in i % l != 0 && rng.next() % 3 == 0 ? -10000 : Float(rng.next() % 3) * 0.5 })
      let scale: Float = 0.7
      let y = Tensor.attention(queries: q, keys: k, values: v, heads: heads, mask: mask, scale: scale)
      let size = d / heads
      var expected = [Double](repeating: 0, count: batch * lq * d)
      let (qd, kd, vd, md) = (q.doubles, k.doubles, v.doubles, mask.doubles)
      for b in 0..<batch {
        for h in 0..<heads {
          for i in 0..<lq {
            let logits = (0..<l).map { j in
              Double(scale)
                * (0..<size).reduce(0.0) { $0 + qd[(b * lq + i) * d + h * size + $1] * kd[(b * l + j) * d + h * size + $1] }
                + md[((sharedMask ? 0 : b) * lq + i) * l + j]
            }
            let top = logits.max()!
            let weights = logits.map { Foundation.exp($0 - top) }
            let total = weights.reduce(0, +)
            for c in 0..<size {
              expected[(b * lq + i) * d + h * size + c] = (0..<l).reduce(0.0) {
                $0 + weights[$1] / total * vd[(b * l + $1) * d + h * size + c]
              }
            }
          }
        }
      }
      assertClose(y, expected: expected, shape: [batch, lq, d], rtol: 1e-5, atol: 1e-5)
    }
  }

  /// The recorded fused attention (``Variable/attention(queries:keys:values:heads:mask:scale:dropout:training:using:)``)
  /// against the separate operations it replaces, with the same dropout key: outputs and the
  /// gradients of queries, keys and values, with and without dropout, one query or several,
  /// heads of width 1 to 5, masks per row and shared, masked keys among visible ones; and its
  /// gradients against finite differences (dropout on, the key fixed by the seed).
  func testRecordedFusedAttentionEqualsSeparateOperations() {
    for (batch, lq, l, d, heads, sharedMask) in [
      (1, 1, 1, 3, 3, false), (3, 1, 50, 10, 2, false), (2, 7, 7, 12, 3, true), (4, 5, 19, 5, 1, false),
    ] {
      for dropout: Float in [0, 0.5] {
        var rng = SplitMix64(seed: UInt64(batch * 100 + l))
        let inputs = [
          Tensor.randomNormal([batch, lq, d], using: &rng), Tensor.randomNormal([batch, l, d], using: &rng),
          Tensor.randomNormal([batch, l, d], using: &rng),
        ]
        let maskRows = sharedMask ? 1 : batch
        let mask = Tensor(
          shape: [maskRows, 1, lq, l],
          scalars: (0..<(maskRows * lq * l)).map { i in i % l != 0 && rng.next() % 3 == 0 ? -10000 : Float(rng.next() % 3) * 0.5 }
        )
        let scale = Float(0.7)
        let label = "B \(batch) Lq \(lq) L \(l) D \(d) heads \(heads) dropout \(dropout)"
        let fused = assertFusedAttentionEqualsSeparateOperations(
          inputs, heads: heads, mask: mask, scale: scale, dropout: dropout, tolerances: (1e-5, 1e-4), label)
        if batch * l <= 40 {
          GradientCheck.assertGradients(inputs, step: 1e-2, tolerance: 2e-2) { fused($0) }
        }
      }
    }
  }

  /// Queries in blocks whose later keys the mask hides are computed over the earlier keys only;
  /// everything else falls back to every key. Causal masks with padding, a row hidden entirely,
  /// a mask that hides too little for the scores' size, one query against many keys, and a
  /// mask that hides nothing, at lengths across the query blocks' edges.
  func testAttentionSkipsOnlyKeysThatWeighNothing() {
    let block = Tensor.attentionQueryBlock
    enum MaskKind: CaseIterable { case causal, causalHidingOneRow, causalTooShallow, lastQuery, open }
    for (batch, l, d, heads) in [(3, block + 1, 8, 2), (2, 2 * block + 22, 6, 1)] {
      for kind in MaskKind.allCases {
        for dropout: Float in [0, 0.5] {
          var rng = SplitMix64(seed: UInt64(l * 10 + d))
          let lq = kind == .lastQuery ? 1 : l
          var inputs = [
            Tensor.randomNormal([batch, lq, d], using: &rng), Tensor.randomNormal([batch, l, d], using: &rng),
            Tensor.randomNormal([batch, l, d], using: &rng),
          ]
          if kind == .causalTooShallow {
            // Keys after the first block 1,000× longer: −1,001 might not hide them.
            let keys = inputs[1].scalars
            inputs[1] = Tensor(
              shape: inputs[1].shape, scalars: keys.indices.map { (($0 / d) % l) >= block ? 1000 * keys[$0] : keys[$0] })
          }
          var scalars = [Float](repeating: 0, count: batch * lq * l)
          for row in 0..<batch {
            let length = l - row * 7  // the keys past it are padding
            for i in 0..<lq {
              for j in 0..<l {
                let hidden: Bool
                switch kind {
                case .causal, .causalTooShallow: hidden = j > i || j >= length
                case .causalHidingOneRow: hidden = j > i || j >= length || (row == 1 && i == 3)
                case .lastQuery: hidden = j >= row + 1
                case .open: hidden = false
                }
                scalars[(row * lq + i) * l + j] = hidden ? (kind == .causalTooShallow ? -1001 : -10000) : 0
              }
            }
          }
          let mask = Tensor(shape: [batch, 1, lq, l], scalars: scalars)
          let scale = Float(0.6)
          var record = Tensor.AttentionRecord(probabilities: Tensor(0))
          _ = Tensor.attention(
            queries: inputs[0], keys: inputs[1], values: inputs[2], heads: heads, mask: mask, scale: scale, keeping: &record)
          let skipped = record.keyCounts.contains { $0 < l }
          XCTAssertEqual(skipped, kind == .causal || kind == .causalHidingOneRow || kind == .lastQuery, "\(kind) L \(l)")
          if kind == .causalHidingOneRow {
            XCTAssertEqual(record.keyCounts[1 * heads * ((lq + block - 1) / block)], Int32(l), "the block with the hidden row")
          }

          _ = assertFusedAttentionEqualsSeparateOperations(
            inputs, heads: heads, mask: mask, scale: scale, dropout: dropout, tolerances: (1e-4, 1e-3),
            "\(kind) B \(batch) L \(l) D \(d) heads \(heads) dropout \(dropout)")
        }
      }
    }
  }

  /// Runs `Variable.attention` and the separate operations it replaces (split the heads,
  /// product, scale, mask, softmax, dropout with the same key, product, join) on `inputs`
  /// (queries, keys, values) and compares their outputs and the three inputs' gradients for one
  /// random cotangent (relative tolerances `tolerances.output` and `tolerances.gradients`).
  /// Returns the fused function, for further checks.
  @discardableResult
  func assertFusedAttentionEqualsSeparateOperations(
    _ inputs: [Tensor], heads: Int, mask: Tensor, scale: Float, dropout: Float,
    tolerances: (output: Double, gradients: Double), _ label: String, file: StaticString = #filePath, line: UInt = #line
  ) -> ([Variable]) -> Variable {
    let (batch, lq, d) = (inputs[0].shape[0], inputs[0].shape[1], inputs[0].shape[2])
    let size = d / heads
    func fused(_ x: [Variable]) -> Variable {
      var generator = SplitMix64(seed: 42)
      return Variable.attention(
        queries: x[0], keys: x[1], values: x[2], heads: heads, mask: mask, scale: scale, dropout: dropout, training: true,
        using: &generator)
    }
    func separate(_ x: [Variable]) -> Variable {
      var generator = SplitMix64(seed: 42)
      func split(_ v: Variable) -> Variable { v.reshaped(to: [batch, v.shape[1], heads, size]).permuted([0, 2, 1, 3]) }
      let weights = (Variable.matmul(split(x[0]), split(x[1]), transposeB: true) * scale + mask).softmax()
        .dropout(probability: dropout, training: true, using: &generator)
      return Variable.matmul(weights, split(x[2])).permuted([0, 2, 1, 3]).reshaped(to: [batch, lq, d])
    }
    let (a, b) = (inputs.map { Variable($0, requiresGradient: true) }, inputs.map { Variable($0, requiresGradient: true) })
    let (ya, yb) = (fused(a), separate(b))
    assertClose(ya.value, yb.value, rtol: tolerances.output, atol: 1e-5, label, file: file, line: line)
    let cotangent = Tensor.random(ya.shape, in: -1...1, seed: 3)
    ya.backward(seed: cotangent)
    yb.backward(seed: cotangent)
    for i in 0..<3 {
      guard let ga = a[i].gradient, let gb = b[i].gradient else {
        XCTFail("missing gradient of input \(i), \(label)", file: file, line: line)
        continue
      }
      assertClose(
        ga, gb, rtol: tolerances.gradients, atol: tolerances.gradients / 10, "input \(i), \(label)", file: file,
        line: line)
    }
    return fused
  }

  func testTransformerFeedForwardMatchesItsEquations() {
    var rng = SplitMix64(seed: 5)
    let layer = perturbed(TransformerFeedForward(dimension: 6, innerDimension: 10, using: &rng), seed: 8)
    let x = Tensor.random([3, 4, 6], seed: 2)
    var context = ForwardContext.evaluation
    let y = layer(Variable(x), context: &context).value
    var expected: [Double] = []
    for r in 0..<12 {
      let row = Array(x.doubles[(r * 6)..<((r + 1) * 6)])
      let inner = linear(layer.first, row).map { $0 * 0.5 * (1 + Foundation.erf($0 / 2.0.squareRoot())) }
      expected += layerNorm(layer.norm, zip(linear(layer.second, inner), row).map { $0 + $1 })
    }
    assertClose(y, expected: expected, shape: [3, 4, 6], rtol: 1e-5, atol: 1e-5)
  }

  func testGradientsMatchFiniteDifferences() {
    var rng = SplitMix64(seed: 9)
    let attention = perturbed(MultiHeadAttention(dimension: 4, heads: 2, using: &rng), seed: 4)
    let m = mask(batch: 2, length: 3)
    GradientCheck.assertLayerGradients(attention, input: Tensor.random([2, 3, 4], seed: 6)) { x in
      var context = ForwardContext.evaluation
      return attention(x, mask: m, context: &context)
    }
    let feedForward = perturbed(TransformerFeedForward(dimension: 4, innerDimension: 6, using: &rng), seed: 7)
    GradientCheck.assertLayerGradients(feedForward, input: Tensor.random([2, 3, 4], seed: 1)) { x in
      var context = ForwardContext.evaluation
      return feedForward(x, context: &context)
    }
  }

  /// The output at one position per row (padded, and at each history's last token packed) is
  /// the full layer's output there, and the gradients of a loss on those positions are the same.
  func testOutputsAtOnePositionPerRowAreTheFullLayers() {
    var rng = SplitMix64(seed: 12)
    let attention = perturbed(MultiHeadAttention(dimension: 6, heads: 3, using: &rng), seed: 5)
    let (batch, length) = (3, 5)
    let m = mask(batch: batch, length: length)
    let x = Tensor.random([batch, length, 6], seed: 8)
    let readOut = Tensor.random([batch, 6], seed: 9)
    let packedReadOut = Tensor.random([4, 6], seed: 11)
    // The output, every parameter's gradient and the input's for a loss Σ y ∘ readOut.
    func gradients(
      of input: Tensor, readOut: Tensor, _ body: (Variable) -> Variable
    ) -> (Tensor, [Tensor], Tensor) {
      for (_, p) in attention.namedParameters() { p.gradient = nil }
      let input = Variable(input, requiresGradient: true)
      let y = body(input)
      (y * Variable(readOut)).sum().backward()
      return (y.value, attention.namedParameters().map { $0.parameter.gradient! }, input.gradient!)
    }
    for positions in [[4, 3, 0], [0, 2, 4], [1, 1, 1]] {
      var context = ForwardContext.evaluation
      let full = gradients(of: x, readOut: readOut) { attention($0, mask: m, context: &context).gatherTimeSteps(positions) }
      let rows = gradients(of: x, readOut: readOut) { attention($0, mask: m, at: positions, context: &context) }
      assertClose(rows.0, full.0, rtol: 1e-6, atol: 1e-6, "output at \(positions)")
      for (a, b) in zip(rows.1, full.1) { assertClose(a, b, rtol: 1e-5, atol: 1e-6, "∂parameters at \(positions)") }
      assertClose(rows.2, full.2, rtol: 1e-5, atol: 1e-6, "∂x at \(positions)")
    }
    // Packed: histories of lengths 3, 2, 5 and 4 end to end, in two buckets (5 and 4, 3 and 2)
    // that each pad a history; each one's last token.
    let lengths = [3, 2, 5, 4]
    let layout = PackedAttentionLayout(lengths: lengths, slotsPerBucket: 10)
    let tokens = Tensor.random([lengths.reduce(0, +), 6], seed: 10)
    var context = ForwardContext.evaluation
    let full = gradients(of: tokens, readOut: packedReadOut) {
      attention($0, layout: layout, context: &context).gatherRows(layout.lastTokens)
    }
    let last = gradients(of: tokens, readOut: packedReadOut) {
      attention.lastTokenOutputs($0, layout: layout, context: &context)
    }
    XCTAssertEqual(layout.buckets.map(\.histories), [[2, 3], [0, 1]])
    XCTAssertEqual(layout.lastTokens.values, [2, 4, 9, 13])
    assertClose(last.0, full.0, rtol: 1e-6, atol: 1e-6, "packed output")
    for (a, b) in zip(last.1, full.1) { assertClose(a, b, rtol: 1e-5, atol: 1e-6, "packed ∂parameters") }
    assertClose(last.2, full.2, rtol: 1e-5, atol: 1e-6, "packed ∂x")
  }

  func testParameterNamesAreRecBoles() {
    var rng = SplitMix64(seed: 1)
    let attention = MultiHeadAttention(dimension: 8, heads: 2, using: &rng)
    XCTAssertEqual(
      attention.namedParameters().map(\.path),
      [
        "query.weight", "query.bias", "key.weight", "key.bias", "value.weight", "value.bias", "dense.weight", "dense.bias",
        "LayerNorm.weight", "LayerNorm.bias",
      ])
    let feedForward = TransformerFeedForward(dimension: 8, innerDimension: 16, using: &rng)
    XCTAssertEqual(
      feedForward.namedParameters().map(\.path),
      ["dense_1.weight", "dense_1.bias", "dense_2.weight", "dense_2.bias", "LayerNorm.weight", "LayerNorm.bias"])
  }
}
