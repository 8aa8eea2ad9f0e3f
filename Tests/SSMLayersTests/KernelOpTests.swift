import SSMAutograd
import SSMKernels
import SSMLayers
import SSMTensor
import SSMTestSupport
import XCTest

/// The kernel wrappers are one tape node each and pass finite-difference checks end to end.
final class KernelOpTests: XCTestCase {
  func testSelectiveScanOpGradients() {
    var rng = SplitMix64(seed: 1)
    let (b, l, e, n) = (2, 4, 3, 2)
    let u = Tensor.randomNormal([b, l, e], using: &rng)
    let delta = Tensor.randomUniform([b, l, e], lowerBound: -2, upperBound: 0.5, using: &rng)
    let a = -Tensor.randomUniform([e, n], lowerBound: 0.5, upperBound: 2, using: &rng)
    let bm = Tensor.randomNormal([b, l, n], using: &rng)
    let cm = Tensor.randomNormal([b, l, n], using: &rng)
    let d = Tensor.randomNormal([e], using: &rng)
    let z = Tensor.randomNormal([b, l, e], using: &rng)
    let bias = Tensor.randomNormal([e], using: &rng)
    GradientCheck.assertGradients([u, delta, a, bm, cm, d, z, bias], step: 1e-3) { v in
      Variable.selectiveScan(u: v[0], delta: v[1], A: v[2], B: v[3], C: v[4], D: v[5], z: v[6], deltaBias: v[7])
    }
    let before = Tape.nodeCount
    let leaves = [u, delta, a, bm, cm].map { Variable($0, requiresGradient: true) }
    let created = Tape.nodeCount - before
    _ = Variable.selectiveScan(u: leaves[0], delta: leaves[1], A: leaves[2], B: leaves[3], C: leaves[4])
    XCTAssertEqual(Tape.nodeCount - before - created, 1, "a scan is one tape node")
  }

  func testChunkedSSDOpGradients() {
    var rng = SplitMix64(seed: 2)
    let (b, l, h, p, n) = (1, 7, 2, 2, 3)
    let x = Tensor.randomNormal([b, l, h, p], using: &rng)
    let dt = Tensor.randomUniform([b, l, h], lowerBound: -2, upperBound: 0.5, using: &rng)
    let a = -Tensor.randomUniform([h], lowerBound: 1, upperBound: 3, using: &rng)
    let bm = Tensor.randomNormal([b, l, 1, n], using: &rng)
    let cm = Tensor.randomNormal([b, l, 1, n], using: &rng)
    let d = Tensor.randomNormal([h], using: &rng)
    let bias = Tensor.randomNormal([h], using: &rng)
    let seq = IndexTensor(shape: [1, 7], values: [0, 0, 0, 1, 1, 2, 2])
    GradientCheck.assertGradients([x, dt, a, bm, cm, d, bias], step: 1e-3) { v in
      Variable.chunkedSSD(x: v[0], dt: v[1], A: v[2], B: v[3], C: v[4], D: v[5], dtBias: v[6], sequenceIndex: seq, chunkSize: 3)
    }
  }

  func testConvolutionAndFlipOpGradients() {
    let x = Tensor.random([2, 6, 3], seed: 3)
    let w = Tensor.random([3, 1, 4], seed: 4)
    let bias = Tensor.random([3], seed: 5)
    GradientCheck.assertGradients([x, w, bias]) { v in v[0].causalConv1d(weight: v[1], bias: v[2]) }
    GradientCheck.assertGradients([x]) { v in v[0].partialFlip(prefix: 4) * Variable(Tensor.random([2, 6, 3], seed: 6)) }
    GradientCheck.assertGradients([x]) { v in v[0].partialFlip(keepingLast: 2, lengths: [6, 3]) * 2 }
    GradientCheck.assertGradients([x]) { v in v[0].flippingSegments([[2, 4], [6]]) * 3 }
  }
}
