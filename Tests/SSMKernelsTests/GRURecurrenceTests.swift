import CKernels
import SSMKernels
import SSMTestSupport
import XCTest

final class GRURecurrenceTests: XCTestCase {
  static func inputs(batch: Int, length: Int, hidden: Int, bias: Bool, seed: UInt64) -> GRURecurrence.Inputs {
    var rng = SplitMix64(seed: seed)
    // Projections of the size a trained GRU sees (|a| ≲ 2) so that the gates are neither all
    // saturated nor all linear; W_hh at PyTorch's initial scale 1/√H and above.
    let scale = 1.5 / Float(hidden).squareRoot()
    return GRURecurrence.Inputs(
      inputProjection: Tensor.randomUniform([batch, length, 3 * hidden], lowerBound: -2, upperBound: 2, using: &rng),
      hiddenWeight: Tensor.randomUniform([3 * hidden, hidden], lowerBound: -scale, upperBound: scale, using: &rng),
      hiddenBias: bias ? Tensor.randomUniform([3 * hidden], lowerBound: -0.5, upperBound: 0.5, using: &rng) : nil)
  }

  /// Fast Float32 kernel against the Double reference, forward and every gradient, at every
  /// instruction-set level and at widths below, at and just above the vector width.
  ///
  /// Tolerance 1e-5 of the largest magnitude: each step is a sum of H products and a handful of
  /// transcendental gates (kernels accurate to ~2e-7), and a GRU's state is bounded by 1, so the
  /// errors measured stay near 1e-7 over 40 steps.
  func testFastMatchesReferenceOverGrid() {
    defer { _ = ssm_isa_force(-1) }
    withEvery("isa", in: Array(0...ssm_isa_supported())) { level in
      _ = ssm_isa_force(level)
      withEvery("length", in: [1, 2, 7, 40]) { length in
        // 19 rows: two bands of rows between the workers.
        withEvery("batch", in: length == 40 ? [1, 3] : [1, 3, 19]) { batch in
          withEvery("hidden", in: [1, 3, 8, 9, 16, 17, 33]) { hidden in
            withEvery("bias", in: [false, true]) { bias in
              let x = Self.inputs(
                batch: batch, length: length, hidden: hidden, bias: bias, seed: UInt64(7 * length + 31 * hidden + batch))
              let reference = GRURecurrence.ReferenceInputs(x)
              let (output, saved) = GRURecurrence.forward(x, saveForBackward: true)
              let expected = Tensor(
                shape: [batch, length, hidden], scalars: GRURecurrence.referenceForward(reference).map(Float.init))
              assertNormalizedError(output, expected, below: 1e-5, "h")
              // Without saving, the same states.
              assertNormalizedError(GRURecurrence.forward(x, saveForBackward: false).output, output, below: 1e-7, "h unsaved")
              var rng = SplitMix64(seed: 99)
              let dy = Tensor.randomNormal([batch, length, hidden], using: &rng)
              let fast = GRURecurrence.backward(outputGradient: dy, x, saved: saved!)
              let slow = GRURecurrence.referenceBackward(reference, outputGradient: dy.doubles)
              assertNormalizedError(
                fast.inputProjection, Tensor(shape: [batch, length, 3 * hidden], scalars: slow.inputProjection.map(Float.init)),
                below: 1e-5, "∂xw")
              assertNormalizedError(
                fast.hiddenWeight, Tensor(shape: [3 * hidden, hidden], scalars: slow.hiddenWeight.map(Float.init)), below: 1e-5,
                "∂W_hh")
              if bias {
                assertNormalizedError(
                  fast.hiddenBias ?? Tensor(zeros: [1]), Tensor(shape: [3 * hidden], scalars: slow.hiddenBias.map(Float.init)),
                  below: 1e-5, "∂b_hh")
              } else {
                XCTAssertNil(fast.hiddenBias)
              }
            }
          }
        }
      }
    }
  }

  /// Enough rows, longest first, for the recurrence to split them into bands between workers,
  /// the bands ending at awkward places (many length-1 rows, one long row).
  static let manyLengths = [23, 9, 9, 8, 8, 7, 6, 5, 5, 4, 3, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]

  /// The bands of rows the workers run: contiguous, covering every row, none under the
  /// minimum, and each within one row's steps of an equal share of the work.
  func testRowBandsShareTheWork() {
    withEvery("lengths", in: [Self.manyLengths, Array(repeating: 5, count: 40), [50] + Array(repeating: 1, count: 60), [3, 2]]) {
      lengths in
      withEvery("workers", in: [1, 2, 3, 8]) { workers in
        var inputs = Self.inputs(batch: lengths.count, length: lengths[0], hidden: 2, bias: false, seed: 1)
        inputs.lengths = lengths
        let bands = inputs.layout.rowBands(workers: workers, minimumRows: 4)
        XCTAssertEqual(bands.first?.lowerBound, 0)
        XCTAssertEqual(bands.last?.upperBound, lengths.count)
        XCTAssertTrue(zip(bands, bands.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "\(bands)")
        XCTAssertLessThanOrEqual(bands.count, workers)
        XCTAssertEqual(bands.count, min(workers, max(1, lengths.count / 4)), "\(bands)")
        XCTAssertTrue(bands.count == 1 || bands.allSatisfy { $0.count >= 4 }, "\(bands)")
        let work = bands.map { lengths[$0].reduce(0, +) }
        let share = Double(lengths.reduce(0, +)) / Double(bands.count)
        // A band exceeds an equal share by at most its last row, unless the minimum forced its rows.
        XCTAssertTrue(
          zip(bands, work).allSatisfy { band, w in band.count == 4 || Double(w) <= share + Double(lengths.max()!) },
          "\(bands) \(work)")
      }
    }
  }

  /// Rows of different lengths, longest first (a packed batch): within each length the states
  /// and, for an output gradient that is 0 past the lengths, every gradient equal the full
  /// recurrence's; past its length a row outputs 0 and its inputs get no gradient.
  func testLengthsGiveTheFullRecurrenceWithinEachRow() {
    defer { _ = ssm_isa_force(-1) }
    withEvery("isa", in: Array(0...ssm_isa_supported())) { level in
      _ = ssm_isa_force(level)
      withEvery("lengths", in: [[7, 7, 4, 1, 0], [3, 2, 2, 1], [6], [0, 0], Self.manyLengths + [0, 0, 0]]) { lengths in
        let (batch, length, hidden) = (lengths.count, lengths.max()! + 1, 9)
        var full = Self.inputs(batch: batch, length: length, hidden: hidden, bias: true, seed: UInt64(batch * 13 + length))
        var rows = full
        rows.lengths = lengths
        full.lengths = nil
        let (expected, fullSaved) = GRURecurrence.forward(full, saveForBackward: true)
        let (output, saved) = GRURecurrence.forward(rows, saveForBackward: true)
        var mask = [Float](repeating: 0, count: batch * length * hidden)
        for b in 0..<batch { for i in 0..<(lengths[b] * hidden) { mask[(b * length) * hidden + i] = 1 } }
        let inside = Tensor(shape: [batch, length, hidden], scalars: mask)
        assertNormalizedError(output, expected * inside, below: 1e-6, "h")
        var rng = SplitMix64(seed: 17)
        let dy = Tensor.randomNormal([batch, length, hidden], using: &rng) * inside
        let (fast, reference) = (
          GRURecurrence.backward(outputGradient: dy, rows, saved: saved!),
          GRURecurrence.backward(outputGradient: dy, full, saved: fullSaved!)
        )
        assertNormalizedError(fast.inputProjection, reference.inputProjection, below: 1e-6, "∂xw")
        assertNormalizedError(fast.hiddenWeight, reference.hiddenWeight, below: 1e-6, "∂W_hh")
        assertNormalizedError(fast.hiddenBias!, reference.hiddenBias!, below: 1e-6, "∂b_hh")
      }
    }
  }

  /// Packed time-major projections give the padded recurrence's states and gradients (with the
  /// histories' lengths), token for token, at every instruction-set level.
  func testPackedTimeMajorEqualsPaddedWithLengths() {
    defer { _ = ssm_isa_force(-1) }
    withEvery("isa", in: Array(0...ssm_isa_supported())) { level in
      _ = ssm_isa_force(level)
      withEvery("lengths", in: [[7, 7, 4, 1, 1], [3, 2, 2, 1], [6], [1], [17, 16, 1], Self.manyLengths]) { lengths in
        withEvery("bias", in: [false, true]) { bias in
          let (batch, length, hidden) = (lengths.count, lengths[0], 9)
          var padded = Self.inputs(batch: batch, length: length, hidden: hidden, bias: bias, seed: UInt64(batch * 7 + length))
          padded.lengths = lengths
          let sizes = (0..<length).map { t in lengths.filter { $0 > t }.count }
          // Token (t, b) of the packed layout is row b's step t of the padded one.
          let order = sizes.enumerated().flatMap { t, size in (0..<size).map { b in b * length + t } }
          func pack(_ x: Tensor, width: Int) -> Tensor {
            let rows = x.reshaped(to: [batch * length, width])
            return Tensor(
              shape: [order.count, width], scalars: order.flatMap { rows.scalars[($0 * width)..<(($0 + 1) * width)] })
          }
          let packed = GRURecurrence.Inputs(
            packedInputProjection: pack(padded.inputProjection, width: 3 * hidden), stepSizes: sizes,
            hiddenWeight: padded.hiddenWeight, hiddenBias: padded.hiddenBias)
          let (expected, paddedSaved) = GRURecurrence.forward(padded, saveForBackward: true)
          let (output, saved) = GRURecurrence.forward(packed, saveForBackward: true)
          assertNormalizedError(output, pack(expected, width: hidden), below: 1e-6, "h")
          assertNormalizedError(
            GRURecurrence.forward(packed, saveForBackward: false).output, output, below: 1e-7, "h unsaved")
          var mask = [Float](repeating: 0, count: batch * length * hidden)
          for b in 0..<batch { for i in 0..<(lengths[b] * hidden) { mask[(b * length) * hidden + i] = 1 } }
          var rng = SplitMix64(seed: 5)
          let dy =
            Tensor.randomNormal([batch, length, hidden], using: &rng) * Tensor(shape: [batch, length, hidden], scalars: mask)
          let (fast, reference) = (
            GRURecurrence.backward(outputGradient: pack(dy, width: hidden), packed, saved: saved!),
            GRURecurrence.backward(outputGradient: dy, padded, saved: paddedSaved!)
          )
          assertNormalizedError(fast.inputProjection, pack(reference.inputProjection, width: 3 * hidden), below: 1e-6, "∂xw")
          assertNormalizedError(fast.hiddenWeight, reference.hiddenWeight, below: 1e-6, "∂W_hh")
          if bias { assertNormalizedError(fast.hiddenBias!, reference.hiddenBias!, below: 1e-6, "∂b_hh") }
        }
      }
    }
  }

  /// The Double reference's backward against central differences of the reference's forward,
  /// for every input (1e-5: central differences at h = 1e-6 resolve ~1e-10 absolute, which is
  /// 1e-6 relative on the smallest entries).
  func testReferenceBackwardMatchesFiniteDifferences() {
    withEvery("hidden", in: [1, 3, 5]) { hidden in
      withEvery("length", in: [1, 4]) { length in
        let x = Self.inputs(batch: 2, length: length, hidden: hidden, bias: true, seed: UInt64(hidden * 13 + length))
        let base = GRURecurrence.ReferenceInputs(x)
        var rng = SplitMix64(seed: 5)
        let dy = (0..<(2 * length * hidden)).map { _ in rng.nextUnitDouble() * 2 - 1 }
        func loss(_ r: GRURecurrence.ReferenceInputs) -> Double {
          zip(GRURecurrence.referenceForward(r), dy).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let analytic = GRURecurrence.referenceBackward(base, outputGradient: dy)
        FiniteDifference.assertGradient(
          analytic.inputProjection,
          matches: { v in
            var r = base
            r.inputProjection = v
            return loss(r)
          }, at: base.inputProjection, tolerance: 1e-5, name: "xw")
        FiniteDifference.assertGradient(
          analytic.hiddenWeight,
          matches: { v in
            var r = base
            r.hiddenWeight = v
            return loss(r)
          }, at: base.hiddenWeight, tolerance: 1e-5, name: "W_hh")
        FiniteDifference.assertGradient(
          analytic.hiddenBias,
          matches: { v in
            var r = base
            r.hiddenBias = v
            return loss(r)
          }, at: base.hiddenBias, tolerance: 1e-5, name: "b_hh")
      }
    }
  }
}
