import CKernels
import SSMKernels
import SSMTestSupport
import XCTest

final class CausalConv1dTests: XCTestCase {
  /// Fast at every instruction-set level against the Double reference, plain and packed
  /// (tolerance 1e-4 relative to the largest magnitude: K-term float sums carry ~1e-7 rounding).
  func testFastMatchesReference() {
    withEvery("length", in: [1, 2, 7, 50]) { length in
      withEvery("batch", in: [1, 3]) { batch in
        withEvery("packed", in: [false, true]) { packed in
          withEvery("bias", in: [false, true]) { hasBias in
            let channels = 19
            let width = 4
            let x = Tensor.random([batch, length, channels], seed: UInt64(length + batch))
            let w = Tensor.random([channels, 1, width], seed: 2)
            let bias = hasBias ? Tensor.random([channels], seed: 3) : nil
            // Packed: segments of lengths 1, 2, 3, … along each row.
            var ids = [Int]()
            for _ in 0..<batch {
              var segment = 0
              var left = 1
              for _ in 0..<length {
                ids.append(segment)
                left -= 1
                if left == 0 {
                  segment += 1
                  left = segment + 1
                }
              }
            }
            let seq = packed ? IndexTensor(shape: [batch, length], values: ids) : nil
            let refY = CausalConv1d.reference(x, weight: w, bias: bias, sequenceIndex: seq)
            let g = Tensor.random(x.shape, seed: 4)
            let ref = CausalConv1d.referenceBackward(outputGradient: g, x, weight: w, hasBias: hasBias, sequenceIndex: seq)
            defer { _ = ssm_isa_force(-1) }
            withEvery("isa", in: Array(0...ssm_isa_supported())) { level in
              _ = ssm_isa_force(level)
              let y = CausalConv1d.forward(x, weight: w, bias: bias, sequenceIndex: seq)
              assertNormalizedError(y, refY, below: 1e-4, "y")
              let fast = CausalConv1d.backward(outputGradient: g, x, weight: w, hasBias: hasBias, sequenceIndex: seq)
              assertNormalizedError(fast.x, ref.x, below: 1e-4, "dx")
              assertNormalizedError(fast.weight, ref.weight, below: 1e-4, "dweight")
              if hasBias { assertNormalizedError(fast.bias!, ref.bias!, below: 1e-4, "dbias") }
            }
          }
        }
      }
    }
  }

  func testReferenceBackwardMatchesFiniteDifferences() {
    let x = Tensor.random([2, 6, 3], seed: 1)
    let w = Tensor.random([3, 3], seed: 2)
    let b = Tensor.random([3], seed: 3)
    let seq = IndexTensor(shape: [2, 6], values: [0, 0, 1, 1, 1, 2, 0, 0, 0, 0, 1, 1])
    let c = Tensor.random(x.shape, seed: 4)
    let g = CausalConv1d.referenceBackward(outputGradient: c, x, weight: w, hasBias: true, sequenceIndex: seq)
    func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {
      // A Double evaluation of the definition, independent of the Float reference's rounding.
      var total = 0.0
      for bi in 0..<2 {
        for t in 0..<6 {
          for ch in 0..<3 {
            var acc = b[ch]
            for k in 0..<3 {
              let s = t - 2 + k
              if s < 0 || seq[bi, s] != seq[bi, t] { continue }
              acc += w[ch * 3 + k] * x[(bi * 6 + s) * 3 + ch]
            }
            total += acc * Double(c.scalars[(bi * 6 + t) * 3 + ch])
          }
        }
      }
      return total
    }
    FiniteDifference.assertGradient(
      g.x.doubles, matches: { loss($0, w.doubles, b.doubles) }, at: x.doubles, tolerance: 1e-6, name: "x")
    FiniteDifference.assertGradient(
      g.weight.doubles, matches: { loss(x.doubles, $0, b.doubles) }, at: w.doubles, tolerance: 1e-6, name: "w")
    FiniteDifference.assertGradient(
      g.bias!.doubles, matches: { loss(x.doubles, w.doubles, $0) }, at: b.doubles, tolerance: 1e-6, name: "b")
  }

  func testPackedSegmentsEqualRunningEachAlone() {
    let lengths = [3, 1, 5]
    let x = Tensor.random([1, 9, 4], seed: 7)
    let w = Tensor.random([4, 4], seed: 8)
    let seq = IndexTensor(shape: [1, 9], values: [0, 0, 0, 1, 2, 2, 2, 2, 2])
    let packed = CausalConv1d.forward(x, weight: w, bias: nil, sequenceIndex: seq)
    var start = 0
    for l in lengths {
      let alone = CausalConv1d.forward(x.slice(alongAxis: 1, start..<(start + l)), weight: w, bias: nil)
      assertClose(packed.slice(alongAxis: 1, start..<(start + l)), alone, rtol: 1e-6, atol: 1e-6)
      start += l
    }
  }
}

final class PartialFlipTests: XCTestCase {
  func testPrefixFlipMatchesDefinitionAndIdentities() {
    let x = Tensor.random([3, 12, 4], seed: 1)
    withEvery("count", in: [0, 1, 5, 9, 12, 45]) { count in
      let y = PartialFlip.prefix(x, count: count)
      XCTAssertEqual(y, PartialFlip.referencePrefix(x, count: count))
      XCTAssertEqual(PartialFlip.prefix(y, count: count), x, "the flip is an involution")
    }
    XCTAssertEqual(PartialFlip.prefix(x, count: 0), x)
    XCTAssertEqual(PartialFlip.prefix(x, count: 12), x.flipped(alongAxis: 1))
    XCTAssertEqual(PartialFlip.prefix(x, count: 100), x.flipped(alongAxis: 1))
  }

  func testPerSequenceFlipKeepsTheLastItems() {
    let x = Tensor.random([4, 8, 2], seed: 2)
    let lengths = [8, 5, 2, 0]
    withEvery("keep", in: [0, 1, 3, 5, 9]) { keep in
      let y = PartialFlip.keepingLast(x, keep: keep, lengths: lengths)
      XCTAssertEqual(y, PartialFlip.referenceKeepingLast(x, keep: keep, lengths: lengths))
      XCTAssertEqual(PartialFlip.keepingLast(y, keep: keep, lengths: lengths), x)
    }
    // keep = 0 reverses exactly the items; padding stays.
    let full = PartialFlip.keepingLast(x, keep: 0, lengths: lengths)
    XCTAssertEqual(full[1, 0, 0], x[1, 4, 0])
    XCTAssertEqual(full[1, 6, 1], x[1, 6, 1])
  }

  func testSegmentFlipReversesEachSegmentInPlace() {
    let x = Tensor.random([1, 6, 3], seed: 3)
    let y = PartialFlip.segments(x, segmentLengths: [[2, 1, 3]])
    let order = [1, 0, 2, 5, 4, 3]
    for (p, s) in order.enumerated() { for d in 0..<3 { XCTAssertEqual(y[0, p, d], x[0, s, d]) } }
    XCTAssertEqual(PartialFlip.segments(y, segmentLengths: [[2, 1, 3]]), x)
  }
}
