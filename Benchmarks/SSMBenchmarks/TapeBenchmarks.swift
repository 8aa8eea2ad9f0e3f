import Foundation
import SSMAutograd
import SSMTestSupport
import XCTest

/// What recording costs: a training step of many small ops through the tape against the same
/// forward and hand-written backward math on plain tensors, and a chain of tiny ops recorded
/// against the same chain with recording off.
final class TapeBenchmarks: XCTestCase {
  /// The allocator setting the `ssmrec` command uses, so the figures match it.
  override class func setUp() {
    super.setUp()
    AllocatorTuning.applyForTraining()
  }

  override func setUpWithError() throws {
    #if DEBUG
      throw XCTSkip("Benchmarks run in release builds: swift test -c release --filter SSMBenchmarks")
    #endif
  }

  /// A two-layer MLP step (batch 16, 8 → 32 → 4, GELU, softmax cross-entropy), forward + backward.
  func testMLPStepTapeAgainstHandWrittenBackward() {
    var rng = SplitMix64(seed: 1)
    let x = Tensor.randomNormal([16, 8], using: &rng)
    let targets = IndexTensor((0..<16).map { $0 % 4 })
    let w1 = Parameter(Tensor.randomNormal([32, 8], using: &rng))
    let b1 = Parameter(Tensor(zeros: [32]))
    let w2 = Parameter(Tensor.randomNormal([4, 32], using: &rng))
    let b2 = Parameter(Tensor(zeros: [4]))
    var onehot = Tensor(zeros: [16, 4])
    for i in 0..<16 { onehot[i, i % 4] = 1 }

    func taped() {
      for p in [w1, b1, w2, b2] { p.zeroGradient() }
      let h = (Variable.matmul(Variable(x), w1.variable, transposeB: true) + b1.variable).gelu()
      let logits = Variable.matmul(h, w2.variable, transposeB: true) + b2.variable
      Variable.softmaxCrossEntropy(logits: logits, targets: targets).backward()
      blackHole(w1.gradient)
    }
    func manual() {
      let pre = Tensor.matmul(x, w1.value, transposeB: true) + b1.value
      let h = pre.gelu()
      let logits = Tensor.matmul(h, w2.value, transposeB: true) + b2.value
      let dLogits = (logits.softmax() - onehot) * (1 / 16)
      let dW2 = Tensor.matmul(dLogits, h, transposeA: true)
      let dB2 = dLogits.sum(alongAxis: 0)
      let dH = Tensor.matmul(dLogits, w2.value)
      let dPre = Tensor.elementwiseGradient(of: .gelu, at: pre, outputGradient: dH)
      let dW1 = Tensor.matmul(dPre, x, transposeA: true)
      let dB1 = dPre.sum(alongAxis: 0)
      blackHole((dW2, dB2, dW1, dB1))
    }
    let t = Benchmark.interleaved(repeats: 201, warmup: 20, [taped, manual])
    Benchmark.report(
      "tape_mlp_step_16x8x32x4", t[0], ["manual_ms": t[1].median * 1e3, "overhead_ratio": t[0].median / t[1].median])
  }

  /// 1,000 elementwise ops on 64-element tensors: recorded (forward + backward) against forward
  /// only with recording off, and against the same forward recorded without backward.
  func testSmallOpChainRecordingOverhead() {
    let p = Parameter(Tensor.random([64], seed: 2))
    func chain() -> Variable {
      var v = p.variable
      for i in 0..<1000 { v = i % 2 == 0 ? v * 0.999 : v + 0.001 }
      return v
    }
    let t = Benchmark.interleaved(
      repeats: 31, warmup: 3,
      [
        {
          p.zeroGradient()
          chain().sum().backward()
        },
        { blackHole(chain()) },
        { blackHole(withoutGradients { chain() }) },
      ])
    Benchmark.report(
      "tape_1000_small_ops", t[0],
      [
        "forward_recorded_ms": t[1].median * 1e3, "forward_unrecorded_ms": t[2].median * 1e3,
        "recording_us_per_op": (t[1].median - t[2].median) * 1e3, "forward_backward_us_per_op": t[0].median * 1e3,
      ])
  }
}
