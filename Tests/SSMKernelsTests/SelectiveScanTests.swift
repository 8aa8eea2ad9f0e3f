import CKernels
import SSMKernels
import SSMTestSupport
import XCTest

final class SelectiveScanTests: XCTestCase {
  static func inputs(
    batch: Int, length: Int, channels: Int, state: Int, gated: Bool, skip: Bool, bias: Bool, softplus: Bool = true,
    growingModes: Bool = false, seed: UInt64
  ) -> SelectiveScan.Inputs {
    var rng = SplitMix64(seed: seed)
    let shape: Shape = [batch, length, channels]
    // A < 0 as in Mamba (A = −exp(A_log)); δ around softplus⁻¹ of typical step sizes, or
    // positive step sizes directly when there is no softplus (Δ > 0 keeps the scan stable).
    // With growingModes some A entries are slightly positive, which the kernels' cheaper
    // exponential for non-positive arguments must not be used for.
    let a = -Tensor.randomUniform([channels, state], lowerBound: growingModes ? -0.05 : 0.5, upperBound: 4, using: &rng)
    let delta =
      softplus
      ? Tensor.randomUniform(shape, lowerBound: -3, upperBound: 1, using: &rng)
      : Tensor.randomUniform(shape, lowerBound: 0.01, upperBound: 0.5, using: &rng)
    return SelectiveScan.Inputs(
      u: Tensor.randomNormal(shape, using: &rng), delta: delta,
      A: a, B: Tensor.randomNormal([batch, length, state], using: &rng),
      C: Tensor.randomNormal([batch, length, state], using: &rng),
      D: skip ? Tensor.randomNormal([channels], using: &rng) : nil, z: gated ? Tensor.randomNormal(shape, using: &rng) : nil,
      deltaBias: bias ? Tensor.randomUniform([channels], lowerBound: -1, upperBound: 1, using: &rng) : nil,
      deltaSoftplus: softplus)
  }

  /// Compares the fast scan with the Double reference on `x`, forward and every gradient (for an
  /// output gradient drawn with seed 9), each at a normalised error below 1e-4; returns the worst.
  @discardableResult
  static func assertFastMatchesReference(_ x: SelectiveScan.Inputs, comparingLastState: Bool = true, _ label: String = "")
    -> Double
  {
    let fast = SelectiveScan.forward(x, returnLastState: comparingLastState)
    let ref = SelectiveScan.reference(x, returnLastState: comparingLastState)
    var worst = assertNormalizedError(fast.output, ref.output, below: 1e-4, "y\(label)")
    if comparingLastState {
      worst = Swift.max(worst, assertNormalizedError(fast.lastState!, ref.lastState!, below: 1e-4, "last state\(label)"))
    }
    let g = Tensor.random(x.u.shape, seed: 9)
    let fg = SelectiveScan.backward(outputGradient: g, x)
    let rg = SelectiveScan.referenceBackward(outputGradient: g, x)
    for (name, a, b) in [
      ("du", fg.u, rg.u), ("ddelta", fg.delta, rg.delta), ("dA", fg.A, rg.A), ("dB", fg.B, rg.B), ("dC", fg.C, rg.C),
    ] {
      worst = Swift.max(worst, assertNormalizedError(a, b, below: 1e-4, name + label))
    }
    for (name, a, b) in [("dD", fg.D, rg.D), ("dz", fg.z, rg.z), ("dbias", fg.deltaBias, rg.deltaBias)] {
      XCTAssertEqual(a == nil, b == nil, name + label)
      if let a, let b { worst = Swift.max(worst, assertNormalizedError(a, b, below: 1e-4, name + label)) }
    }
    return worst
  }

  /// Fast Float32 kernel against the Double reference, forward and every gradient. The state
  /// sizes cover the backward kernel's chunks of 8 states: less than one, exactly one, and one or
  /// two full chunks followed by the 4-, 2- and 1-state remainders.
  ///
  /// Tolerance 1e-4 of the largest magnitude: Float32 rounding (6e-8 per operation) accumulates
  /// over at most L = 200 decaying recurrence steps and N-term sums, and the polynomial exp adds
  /// ~1e-7 per factor; measured errors stay near 1e-6, so 1e-4 flags any formula error while
  /// leaving room for summation order.
  func testFastMatchesReferenceOverGrid() {
    let levels = Array(0...ssm_isa_supported())
    defer { _ = ssm_isa_force(-1) }
    withEvery("isa", in: levels) { level in
      _ = ssm_isa_force(level)
      withEvery("length", in: [1, 2, 7, 50, 200]) { length in
        withEvery("batch", in: [1, 3]) { batch in
          withEvery("variant", in: 0..<4) { variant in
            let channels = [5, 19, 16, 16][variant]
            let x = Self.inputs(
              batch: batch, length: length, channels: channels, state: [3, 8, 13, 21][variant], gated: variant != 1,
              skip: variant != 2, bias: variant == 0, softplus: variant != 2, growingModes: variant == 3,
              seed: UInt64(length * 10 + batch + variant * 1000))
            let worst = Self.assertFastMatchesReference(x)
            if level == levels.last && batch == 3 {
              print(
                "GRID selective_scan isa=\(level) L=\(length) B=\(batch) E=\(channels) N=\(x.dimensions.state) worst_normalized_error=\(worst)"
              )
            }
          }
        }
      }
    }
  }

  /// Shapes large enough that the scans are cut into more pieces than workers (claimed one at a
  /// time, each worker accumulating its own ∂A, ∂D and bias gradients): by batch element (21 of
  /// them) and, with one batch element, by block of channels; against the Double reference.
  func testScansInClaimedPiecesMatchReference() {
    for (batch, channels) in [(21, 37), (1, 200)] {
      let x = Self.inputs(
        batch: batch, length: 64, channels: channels, state: 16, gated: true, skip: true, bias: true,
        seed: UInt64(batch * 1000 + channels))
      Self.assertFastMatchesReference(x, ", B \(batch)")
    }
  }

  /// Decay factors exp(Δ·A) in and below the subnormal range (Δ·A from −80 to −110): the kernels
  /// flush subnormals to zero while they run, which must not move any result at the test's
  /// tolerance, and must leave the calling thread's floating-point mode as it was.
  func testSubnormalDecaysMatchTheReferenceAndLeaveTheThreadAlone() {
    let levels = Array(0...ssm_isa_supported())
    defer { _ = ssm_isa_force(-1) }
    withEvery("isa", in: levels) { level in
      _ = ssm_isa_force(level)
      var x = Self.inputs(batch: 2, length: 9, channels: 19, state: 4, gated: true, skip: true, bias: false, seed: 91)
      var rng = SplitMix64(seed: 92)
      // Without a softplus Δ is used as given: Δ·A spans −110…−80 with A in [−2, −1].
      x.deltaSoftplus = false
      x.delta = Tensor.randomUniform(x.u.shape, lowerBound: 55, upperBound: 80, using: &rng)
      x.A = -Tensor.randomUniform(x.A.shape, lowerBound: 1, upperBound: 1.4, using: &rng)
      let g = Tensor.random(x.u.shape, seed: 93)
      let (fast, reference) = (SelectiveScan.forward(x).output, SelectiveScan.reference(x).output)
      assertNormalizedError(fast, reference, below: 1e-4, "y")
      let (fg, rg) = (SelectiveScan.backward(outputGradient: g, x), SelectiveScan.referenceBackward(outputGradient: g, x))
      for (name, a, b) in [("du", fg.u, rg.u), ("ddelta", fg.delta, rg.delta), ("dA", fg.A, rg.A), ("dB", fg.B, rg.B)] {
        assertNormalizedError(a, b, below: 1e-4, name)
      }
      // Half the smallest normal float is a subnormal, not zero, once the kernel has returned.
      let half = Float(x.dimensions.batch) / 4
      XCTAssertGreaterThan(Float.leastNormalMagnitude * half, 0, "the kernel left flush-to-zero on")
    }
  }

  /// Central differences of the Double reference forward against its hand-written backward, with
  /// Δ = softplus(δ + bias) and with Δ = δ + bias (h = 1e-6; tolerance 1e-6 relative: the h²
  /// truncation term of the exp-heavy Δ path reaches ~1e-7 on small entries, rounding ~1e-9).
  func testReferenceBackwardMatchesFiniteDifferences() {
    withEvery("softplus", in: [true, false]) { softplus in
      let x = Self.inputs(
        batch: 2, length: 5, channels: 3, state: 2, gated: true, skip: true, bias: true, softplus: softplus, seed: 42)
      let r = SelectiveScan.ReferenceInputs<Double>(x)
      XCTAssertEqual(r.deltaSoftplus, softplus)
      var rng = SplitMix64(seed: 9)
      let cotangent = rng.doubles(r.u.count)
      let g = SelectiveScan.referenceBackward(r, outputGradient: cotangent)
      func loss(_ r: SelectiveScan.ReferenceInputs<Double>) -> Double {
        zip(SelectiveScan.referenceForward(r).output, cotangent).reduce(0) { $0 + $1.0 * $1.1 }
      }
      let fields: [(String, WritableKeyPath<SelectiveScan.ReferenceInputs<Double>, [Double]>, [Double])] = [
        ("u", \.u, g.u), ("delta", \.delta, g.delta), ("A", \.A, g.A), ("B", \.B, g.B), ("C", \.C, g.C),
        ("D", \.D!, g.D!), ("z", \.z!, g.z!), ("deltaBias", \.deltaBias!, g.deltaBias!),
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

  func testScanWithScalarAPerChannelIsTheDiscreteRecurrence() {
    // L = 1: y = C·(Δ·B·u) + D·u exactly.
    let x = Self.inputs(
      batch: 1, length: 1, channels: 2, state: 3, gated: false, skip: true, bias: false, softplus: false, seed: 3)
    let y = SelectiveScan.forward(x).output
    for e in 0..<2 {
      let dt = x.delta[0, 0, e]
      var expected = x.D![e] * x.u[0, 0, e]
      for n in 0..<3 { expected += x.C[0, 0, n] * dt * x.B[0, 0, n] * x.u[0, 0, e] }
      XCTAssertEqual(y[0, 0, e], expected, accuracy: 1e-5)
    }
  }
}

/// Sequences packed end to end in a row, with segment ids, scan as if each were alone.
final class PackedScanTests: XCTestCase {
  /// Segment lengths of one row, boundaries at awkward places: sequences of one step, a
  /// sequence ending exactly at a channel block's worth of steps, one long sequence.
  static let rows: [[Int]] = [[1, 16, 3, 1, 1, 9], [15, 16], [2, 1]]

  static func packed(_ segments: [[Int]], channels: Int, state: Int, seed: UInt64) -> SelectiveScan.Inputs {
    let length = segments.map { $0.reduce(0, +) }.max()!
    var ids: [Int32] = []
    for (r, row) in segments.enumerated() {
      var rowIds: [Int32] = []
      for (s, l) in row.enumerated() { rowIds += Array(repeating: Int32(r * 100 + s), count: l) }
      // The rest of a shorter row is padding: one more segment.
      rowIds += Array(repeating: -1, count: length - rowIds.count)
      ids += rowIds
    }
    var x = SelectiveScanTests.inputs(
      batch: segments.count, length: length, channels: channels, state: state, gated: true, skip: true, bias: true,
      seed: seed)
    x.sequenceIndex = IndexTensor(shape: [segments.count, length], values: ids)
    return x
  }

  /// Fast against the Double reference with segment ids, forward and every gradient, at every
  /// instruction-set level.
  func testPackedScanMatchesReferenceAtEveryLevel() {
    let levels = Array(0...ssm_isa_supported())
    defer { _ = ssm_isa_force(-1) }
    withEvery("isa", in: levels) { level in
      _ = ssm_isa_force(level)
      withEvery("channels", in: [5, 16, 19]) { channels in
        let x = Self.packed(Self.rows, channels: channels, state: 11, seed: UInt64(channels))
        SelectiveScanTests.assertFastMatchesReference(x, comparingLastState: false)
      }
    }
  }

  /// The reference with segment ids equals the reference run on each sequence alone.
  func testPackedReferenceIsEachSequenceAlone() {
    let x = Self.packed([[1, 4, 2]], channels: 3, state: 2, seed: 4)
    let packed = SelectiveScan.reference(x).output
    let g = Tensor.random(x.u.shape, seed: 2)
    let packedGrads = SelectiveScan.referenceBackward(outputGradient: g, x)
    var start = 0
    var dA = Tensor(zeros: x.A.shape)
    for l in [1, 4, 2] {
      func cut(_ t: Tensor) -> Tensor {
        let w = t.shape[2]
        return Tensor(shape: [1, l, w], scalars: Array(t.scalars[(start * w)..<((start + l) * w)]))
      }
      let alone = SelectiveScan.Inputs(
        u: cut(x.u), delta: cut(x.delta), A: x.A, B: cut(x.B), C: cut(x.C), D: x.D, z: cut(x.z!), deltaBias: x.deltaBias)
      assertClose(SelectiveScan.reference(alone).output, cut(packed), rtol: 1e-6, atol: 1e-7)
      let grads = SelectiveScan.referenceBackward(outputGradient: cut(g), alone)
      assertClose(grads.u, cut(packedGrads.u), rtol: 1e-6, atol: 1e-7)
      assertClose(grads.B, cut(packedGrads.B), rtol: 1e-6, atol: 1e-7)
      dA += grads.A
      start += l
    }
    assertClose(dA, packedGrads.A, rtol: 1e-5, atol: 1e-7)
  }
}
