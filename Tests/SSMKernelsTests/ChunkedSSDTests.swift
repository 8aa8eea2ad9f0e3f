import CKernels
import Foundation
import SSMKernels
import SSMTestSupport
import XCTest

final class ChunkedSSDTests: XCTestCase {
  static func inputs(
    batch: Int, length: Int, heads: Int = 2, headDim: Int = 3, groups: Int = 1, state: Int = 4, chunk: Int,
    segments: [Int]? = nil, initial: Bool = false, seed: UInt64
  ) -> ChunkedSSD.Inputs {
    var rng = SplitMix64(seed: seed)
    var ids: IndexTensor?
    if let segments {
      precondition(segments.reduce(0, +) == length)
      var row = [Int]()
      for (i, l) in segments.enumerated() { row += Array(repeating: i, count: l) }
      ids = IndexTensor(shape: [batch, length], values: Array((0..<batch).map { _ in row }.joined()))
    }
    return ChunkedSSD.Inputs(
      x: Tensor.randomNormal([batch, length, heads, headDim], using: &rng),
      dt: Tensor.randomUniform([batch, length, heads], lowerBound: -3, upperBound: 0.5, using: &rng),
      A: -Tensor.randomUniform([heads], lowerBound: 1, upperBound: 8, using: &rng),
      B: Tensor.randomNormal([batch, length, groups, state], using: &rng),
      C: Tensor.randomNormal([batch, length, groups, state], using: &rng),
      D: Tensor.randomNormal([heads], using: &rng),
      dtBias: Tensor.randomUniform([heads], lowerBound: -1, upperBound: 1, using: &rng),
      initialState: initial ? Tensor.randomNormal([batch, heads, headDim, state], using: &rng) : nil,
      sequenceIndex: ids, chunkSize: chunk)
  }

  /// The fast path at every instruction-set level against the Double references, which are
  /// computed once (they dominate the time).
  func check(_ x: ChunkedSSD.Inputs, label: String) -> Double {
    let ref = ChunkedSSD.reference(x, returnFinalState: true)
    let quadratic = ChunkedSSD.referenceQuadratic(ChunkedSSD.ReferenceInputs<Double>(x))
    var worst = assertNormalizedError(
      Tensor(shape: x.x.shape, scalars: quadratic.map(Float.init)), ref.output, below: 1e-6, "quadratic vs recurrent")
    let g = Tensor.random(x.x.shape, seed: 11)
    let gFinal = Tensor.random(ref.finalState!.shape, seed: 12)
    let rg = ChunkedSSD.referenceBackward(outputGradient: g, finalStateGradient: gFinal, x)
    defer { _ = ssm_isa_force(-1) }
    withEvery("isa", in: Array(0...ssm_isa_supported())) { level in
      _ = ssm_isa_force(level)
      let fast = ChunkedSSD.forward(x, returnFinalState: true)
      worst = Swift.max(worst, assertNormalizedError(fast.output, ref.output, below: 1e-4, "y"))
      worst = Swift.max(worst, assertNormalizedError(fast.finalState!, ref.finalState!, below: 1e-4, "final state"))
      let fg = ChunkedSSD.backward(outputGradient: g, finalStateGradient: gFinal, x)
      for (name, a, b) in [("dx", fg.x, rg.x), ("ddt", fg.dt, rg.dt), ("dA", fg.A, rg.A), ("dB", fg.B, rg.B), ("dC", fg.C, rg.C)]
      {
        worst = Swift.max(worst, assertNormalizedError(a, b, below: 1e-4, name))
      }
      for (name, a, b) in [("dD", fg.D, rg.D), ("dbias", fg.dtBias, rg.dtBias), ("dinitial", fg.initialState, rg.initialState)] {
        XCTAssertEqual(a == nil, b == nil, name)
        if let a, let b { worst = Swift.max(worst, assertNormalizedError(a, b, below: 1e-4, name)) }
      }
    }
    print("GRID chunked_ssd \(label) worst_normalized_error=\(worst)")
    return worst
  }

  /// A chunk's cumulative decays (decreasing; from q 40 on a drop of 100 at position 30, so the
  /// decays from before it to after it underflow to 0 in Float), segment ids with boundaries
  /// every 7 positions, and scores with ∞ and NaN wherever the Float decay is 0 (above the
  /// diagonal, across segments, underflowed).
  static func maskInputs(q: Int, ld: Int) -> (cs: [Float], seq: [Int32], scores: [Float]) {
    var rng = SplitMix64(seed: UInt64(q * 31 + ld))
    var cs = [Float](repeating: 0, count: q)
    var running: Float = 0
    for l in 0..<q {
      running -= Float.random(in: 0...0.5, using: &rng) + (l == 30 ? 100 : 0)
      cs[l] = running
    }
    let seq = (0..<q).map { Int32($0 / 7) }
    var scores = [Float](repeating: .nan, count: q * ld)
    for l in 0..<q {
      for s in 0..<q {
        let kept = s <= l && seq[s] == seq[l] && cs[l] - cs[s] > -80
        scores[l * ld + s] = kept ? Float.random(in: -2...2, using: &rng) : ((l + s) % 2 == 0 ? .infinity : .nan)
      }
    }
    return (cs, seq, scores)
  }

  /// The decay-mask kernel (with and without the masked scores M) against its definition in
  /// Double, at every instruction-set level, for chunk lengths around the vector width, row
  /// strides past the chunk, segment boundaries inside the chunk, and ∞/NaN scores where the
  /// mask is 0 (which must not reach M). Entries past q in a row must stay untouched.
  func testDecayMaskMatchesDefinition() {
    atEveryLevel {
      withEvery("q", in: [1, 3, 16, 17, 40, 64]) { q in
        let ld = q + 3
        let (cs, seq, scores) = Self.maskInputs(q: q, ld: ld)
        var mask = [Float](repeating: 7, count: q * ld)
        var masked = [Float](repeating: 7, count: q * ld)
        var maskAlone = [Float](repeating: 7, count: q * ld)
        ssm_ssd_decay_mask(cs, seq, scores, q, ld, &mask, &masked)
        ssm_ssd_decay_mask(cs, seq, nil, q, ld, &maskAlone, nil)
        var expected = [Double](repeating: 0, count: q * q)
        var expectedM = [Double](repeating: 0, count: q * q)
        var (actual, actualM, actualAlone) = ([Float](), [Float](), [Float]())
        for l in 0..<q {
          for s in 0..<q {
            let kept = s <= l && seq[s] == seq[l]
            expected[l * q + s] = kept ? Foundation.exp(Double(cs[l]) - Double(cs[s])) : 0
            // Where the Float decay underflows, M is 0 whatever the score (∞ or NaN there).
            expectedM[l * q + s] = kept && mask[l * ld + s] != 0 ? expected[l * q + s] * Double(scores[l * ld + s]) : 0
            actual.append(mask[l * ld + s])
            actualM.append(masked[l * ld + s])
            actualAlone.append(maskAlone[l * ld + s])
          }
          for s in q..<ld {
            XCTAssertEqual(mask[l * ld + s], 7, "L past q at \(l), \(s)\(TestContext.description)")
            XCTAssertEqual(masked[l * ld + s], 7, "M past q at \(l), \(s)\(TestContext.description)")
          }
        }
        assertClose(Tensor(shape: [q, q], scalars: actual), expected: expected, shape: [q, q], rtol: 1e-6, atol: 1e-7)
        assertClose(Tensor(shape: [q, q], scalars: actualAlone), expected: expected, shape: [q, q], rtol: 1e-6, atol: 1e-7)
        assertClose(Tensor(shape: [q, q], scalars: actualM), expected: expectedM, shape: [q, q], rtol: 1e-6, atol: 1e-7)
      }
    }
  }

  /// The masked scores' backward kernel against its definition in Double at every
  /// instruction-set level: dG accumulates dM∘L, dcs the row sums minus the column sums of
  /// dM∘L∘G, over the lower triangle; ∞/NaN scores where L is 0 stay out, and entries past q
  /// in a row stay untouched.
  func testScoresBackwardMatchesDefinition() {
    atEveryLevel {
      withEvery("q", in: [1, 3, 16, 17, 40, 64]) { q in
        let ld = q + 5
        let (cs, seq, scores) = Self.maskInputs(q: q, ld: ld)
        var rng = SplitMix64(seed: UInt64(q))
        var mask = [Float](repeating: 0, count: q * ld)
        ssm_ssd_decay_mask(cs, seq, nil, q, ld, &mask, nil)
        let dM = (0..<(q * ld)).map { _ in Float.random(in: -1...1, using: &rng) }
        let dG0 = (0..<(q * ld)).map { _ in Float.random(in: -1...1, using: &rng) }
        let dcs0 = (0..<q).map { _ in Float.random(in: -1...1, using: &rng) }
        var (dG, dcs) = (dG0, dcs0)
        ssm_ssd_scores_backward(dM, mask, scores, q, ld, &dG, &dcs)
        var expectedG = dG0.map(Double.init)
        var expectedCS = dcs0.map(Double.init)
        for l in 0..<q {
          for s in 0...l where mask[l * ld + s] != 0 {
            let i = l * ld + s
            let d = Double(dM[i]) * Double(mask[i])
            expectedG[i] += d
            expectedCS[l] += d * Double(scores[i])
            expectedCS[s] -= d * Double(scores[i])
          }
        }
        assertClose(Tensor(shape: [q * ld], scalars: dG), expected: expectedG, shape: [q * ld], rtol: 1e-6, atol: 1e-6)
        assertClose(Tensor(shape: [q], scalars: dcs), expected: expectedCS, shape: [q], rtol: 1e-5, atol: 1e-5)
      }
    }
  }

  /// Row dot products against Double sums at every instruction-set level, for widths around the
  /// vector width and row strides wider than the rows.
  func testRowDotsMatchDefinition() {
    atEveryLevel {
      withEvery("n", in: [1, 5, 16, 17, 33, 64, 100]) { n in
        var rng = SplitMix64(seed: UInt64(n))
        let (rows, lda, ldb) = (7, n + 3, n + 1)
        let a = (0..<(rows * lda)).map { _ in Float.random(in: -1...1, using: &rng) }
        let b = (0..<(rows * ldb)).map { _ in Float.random(in: -1...1, using: &rng) }
        var out = [Float](repeating: .nan, count: rows)
        ssm_row_dots(a, lda, b, ldb, rows, n, &out)
        let expected = (0..<rows).map { r in (0..<n).reduce(0.0) { $0 + Double(a[r * lda + $1]) * Double(b[r * ldb + $1]) } }
        assertClose(Tensor(shape: [rows], scalars: out), expected: expected, shape: [rows], rtol: 1e-5, atol: 1e-5)
      }
    }
  }

  /// Chunked fast path at every instruction-set level against the Double recurrence (and the
  /// quadratic form against the recurrence), forward and every gradient, over lengths, chunk
  /// sizes (lengths not divisible by the chunk included) and batches. Tolerance 1e-4 relative to
  /// the largest magnitude: the Float32 chunk products sum ≤ Q terms of decaying factors,
  /// measured errors ~1e-6.
  func testFastMatchesReferencesOverGrid() {
    withEvery("length", in: [1, 2, 7, 50, 200]) { length in
      withEvery("chunk", in: [1, 4, 16, 64]) { chunk in
        withEvery("batch", in: [1, 3]) { batch in
          if length == 200 && chunk < 4 { return }  // the slow Double reference dominates; covered at L = 50
          let x = Self.inputs(
            batch: batch, length: length, chunk: chunk, initial: batch == 3, seed: UInt64(length * 100 + chunk + batch))
          _ = check(x, label: "L=\(length) Q=\(chunk) B=\(batch)")
        }
      }
    }
  }

  func testPackedBatchesOverGrid() {
    let layouts: [[Int]] = [[23], [9, 14], [1, 5, 2, 9, 6]]
    withEvery("segments", in: layouts) { segments in
      withEvery("chunk", in: [1, 4, 8, 64]) { chunk in
        let x = Self.inputs(
          batch: 1, length: 23, heads: 4, headDim: 2, state: 3, chunk: chunk, segments: segments, seed: UInt64(chunk))
        _ = check(x, label: "packed segments=\(segments) Q=\(chunk)")
      }
    }
  }

  func testGroupsSharedByHeads() {
    let x = Self.inputs(batch: 2, length: 11, heads: 4, headDim: 2, groups: 2, state: 3, chunk: 4, seed: 5)
    _ = check(x, label: "groups=2")
  }

  /// An infinite `B` in one packed sequence leaves the outputs and gradients of the sequences
  /// before it in the same chunk unchanged: masked terms are dropped, not multiplied by 0.
  func testNonFiniteValuesStayInTheirSequence() {
    let segments = [5, 4, 7]
    var x = Self.inputs(batch: 1, length: 16, heads: 2, headDim: 3, state: 4, chunk: 16, segments: segments, seed: 5)
    let clean = ChunkedSSD.forward(x).output
    let g = Tensor.random(x.x.shape, seed: 6)
    let cleanGradient = ChunkedSSD.backward(outputGradient: g, x).x
    var b = x.B.scalars
    b[12 * 4 + 1] = .infinity  // position 12, in the third sequence
    x.B = Tensor(shape: x.B.shape, scalars: b)
    let first = 0..<9
    assertClose(ChunkedSSD.forward(x).output.slice(alongAxis: 1, first), clean.slice(alongAxis: 1, first), rtol: 1e-6, atol: 1e-6)
    let gradient = ChunkedSSD.backward(outputGradient: g, x).x
    assertClose(gradient.slice(alongAxis: 1, first), cleanGradient.slice(alongAxis: 1, first), rtol: 1e-6, atol: 1e-6)
  }

  func testPackedBatchEqualsEachSequenceAlone() {
    let segments = [1, 5, 2, 9, 6]
    let x = Self.inputs(batch: 1, length: 23, heads: 2, headDim: 3, state: 4, chunk: 8, segments: segments, seed: 77)
    let packed = ChunkedSSD.forward(x).output
    var start = 0
    for l in segments {
      let r = start..<(start + l)
      let alone = ChunkedSSD.Inputs(
        x: x.x.slice(alongAxis: 1, r), dt: x.dt.slice(alongAxis: 1, r), A: x.A, B: x.B.slice(alongAxis: 1, r),
        C: x.C.slice(alongAxis: 1, r), D: x.D, dtBias: x.dtBias, chunkSize: 8)
      assertClose(packed.slice(alongAxis: 1, r), ChunkedSSD.forward(alone).output, rtol: 1e-5, atol: 1e-5)
      start += l
    }
  }

  func testPaddingAfterASequenceChangesNothingAtItsPositions() {
    let x = Self.inputs(batch: 2, length: 13, chunk: 4, seed: 8)
    let longer = Self.inputs(batch: 2, length: 20, chunk: 4, seed: 9)
    func splice(_ a: Tensor, _ b: Tensor) -> Tensor {
      Tensor.concatenate([a, b.slice(alongAxis: 1, 13..<20)], alongAxis: 1)
    }
    let padded = ChunkedSSD.Inputs(
      x: splice(x.x, longer.x), dt: splice(x.dt, longer.dt), A: x.A, B: splice(x.B, longer.B), C: splice(x.C, longer.C),
      D: x.D, dtBias: x.dtBias, chunkSize: 4)
    assertClose(
      ChunkedSSD.forward(padded).output.slice(alongAxis: 1, 0..<13), ChunkedSSD.forward(x).output, rtol: 1e-5, atol: 1e-5)
  }

  func testResultDoesNotDependOnChunkSize() {
    let base = Self.inputs(batch: 2, length: 37, chunk: 1, initial: true, seed: 4)
    let reference = ChunkedSSD.forward(base).output
    for q in [2, 5, 16, 37, 64] {
      var x = base
      x.chunkSize = q
      assertClose(ChunkedSSD.forward(x).output, reference, rtol: 1e-4, atol: 1e-5)
    }
  }

  /// Chunked SSD equals the selective scan when A is one scalar per head and Δ is shared by the
  /// head's channels.
  func testEqualsSelectiveScanWithScalarAPerHead() {
    let (batch, length, heads, headDim, state) = (2, 19, 3, 2, 4)
    let x = Self.inputs(batch: batch, length: length, heads: heads, headDim: headDim, state: state, chunk: 8, seed: 21)
    let channels = heads * headDim
    var delta = [Float]()
    var aRows = [Float]()
    var d = [Float]()
    var bias = [Float]()
    for i in 0..<(batch * length) { for h in 0..<heads { for _ in 0..<headDim { delta.append(x.dt.scalars[i * heads + h]) } } }
    for h in 0..<heads {
      for _ in 0..<headDim {
        aRows += Array(repeating: x.A.scalars[h], count: state)
        d.append(x.D!.scalars[h])
        bias.append(x.dtBias!.scalars[h])
      }
    }
    let scan = SelectiveScan.Inputs(
      u: x.x.reshaped(to: [batch, length, channels]), delta: Tensor(shape: [batch, length, channels], scalars: delta),
      A: Tensor(shape: [channels, state], scalars: aRows), B: x.B.reshaped(to: [batch, length, state]),
      C: x.C.reshaped(to: [batch, length, state]), D: Tensor(d), deltaBias: Tensor(bias))
    assertClose(
      ChunkedSSD.forward(x).output.reshaped(to: [batch, length, channels]), SelectiveScan.forward(scan).output,
      rtol: 1e-4, atol: 1e-5)
  }

  /// Central differences of the Double recurrence against its hand-written backward.
  func testReferenceBackwardMatchesFiniteDifferences() {
    let x = Self.inputs(batch: 1, length: 7, heads: 2, headDim: 2, state: 2, chunk: 3, segments: [3, 4], initial: true, seed: 31)
    let r = ChunkedSSD.ReferenceInputs<Double>(x)
    var rng = SplitMix64(seed: 3)
    let cotangent = rng.doubles(r.x.count)
    let finalCotangent = rng.doubles(r.initialState!.count)
    let g = ChunkedSSD.referenceRecurrentBackward(r, outputGradient: cotangent, finalStateGradient: finalCotangent)
    func loss(_ r: ChunkedSSD.ReferenceInputs<Double>) -> Double {
      let out = ChunkedSSD.referenceRecurrent(r)
      return zip(out.output, cotangent).reduce(0) { $0 + $1.0 * $1.1 }
        + zip(out.finalState, finalCotangent).reduce(0) { $0 + $1.0 * $1.1 }
    }
    let fields: [(String, WritableKeyPath<ChunkedSSD.ReferenceInputs<Double>, [Double]>, [Double])] = [
      ("x", \.x, g.x), ("dt", \.dt, g.dt), ("A", \.A, g.A), ("B", \.B, g.B), ("C", \.C, g.C), ("D", \.D!, g.D!),
      ("dtBias", \.dtBias!, g.dtBias!), ("initial", \.initialState!, g.initialState!),
    ]
    for (name, path, analytic) in fields {
      FiniteDifference.assertGradient(
        analytic,
        matches: { values in
          var p = r
          p[keyPath: path] = values
          return loss(p)
        }, at: r[keyPath: path], tolerance: 1e-6, name: name)
    }
  }
}
