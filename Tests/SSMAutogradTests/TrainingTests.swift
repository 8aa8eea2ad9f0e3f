import SSMAutograd
import SSMTestSupport
import XCTest

/// A two-layer MLP built from the differentiable ops, for end-to-end tests of the tape.
final class TinyMLP: ParameterContainer {
  let w1: Parameter, b1: Parameter, w2: Parameter, b2: Parameter

  init(inputs: Int, hidden: Int, outputs: Int, seed: UInt64) {
    var rng = SplitMix64(seed: seed)
    w1 = Parameter(Tensor.xavierUniform([hidden, inputs], using: &rng))
    b1 = Parameter(Tensor(zeros: [hidden]))
    w2 = Parameter(Tensor.xavierUniform([outputs, hidden], using: &rng))
    b2 = Parameter(Tensor(zeros: [outputs]))
  }

  func namedParameters() -> [(path: String, parameter: Parameter)] {
    [("fc1.weight", w1), ("fc1.bias", b1), ("fc2.weight", w2), ("fc2.bias", b2)]
  }

  func callAsFunction(_ x: Variable) -> Variable {
    let h = (Variable.matmul(x, w1.variable, transposeB: true) + b1.variable).gelu()
    return Variable.matmul(h, w2.variable, transposeB: true) + b2.variable
  }
}

final class TrainingTests: XCTestCase {
  /// 16 random points, each its own class among 4: learnable to near-zero loss.
  func toyTask() -> (Tensor, IndexTensor) {
    (Tensor.random([16, 8], seed: 3), IndexTensor((0..<16).map { $0 % 4 }))
  }

  func trainStep(_ model: TinyMLP, _ optimizer: Optimizer, _ x: Tensor, _ y: IndexTensor) -> Float {
    model.zeroGradients()
    let loss = Variable.softmaxCrossEntropy(logits: model(Variable(x)), targets: y)
    loss.backward()
    optimizer.step()
    return loss.value.scalar
  }

  func testMLPTrainsToNearZeroLoss() {
    let model = TinyMLP(inputs: 8, hidden: 32, outputs: 4, seed: 1)
    XCTAssertEqual(model.parameterCount, 32 * 8 + 32 + 4 * 32 + 4)
    let adam = Adam(parameters: model.namedParameters(), learningRate: 0.01)
    let (x, y) = toyTask()
    let first = trainStep(model, adam, x, y)
    var last = first
    for _ in 0..<300 { last = trainStep(model, adam, x, y) }
    XCTAssertGreaterThan(first, 1)
    XCTAssertLessThan(last, 0.01, "loss went from \(first) to \(last)")
  }

  func testGraphIsFreedAndMemoryDoesNotGrowOver1000Steps() {
    let model = TinyMLP(inputs: 8, hidden: 32, outputs: 4, seed: 2)
    let adam = Adam(parameters: model.namedParameters(), learningRate: 0.001)
    let (x, y) = toyTask()
    for _ in 0..<100 { _ = trainStep(model, adam, x, y) }
    let nodesBefore = Tape.liveNodeCount
    let residentBefore = Benchmark.currentResidentKiB
    for _ in 0..<1000 { _ = trainStep(model, adam, x, y) }
    let residentAfter = Benchmark.currentResidentKiB
    print(
      "MEMORY resident_kib_before=\(residentBefore) resident_kib_after_1000_steps=\(residentAfter) live_nodes=\(Tape.liveNodeCount)"
    )
    XCTAssertEqual(Tape.liveNodeCount, nodesBefore, "graph nodes outlived their step")
    XCTAssertLessThan(residentAfter - residentBefore, 1024, "resident memory grew by \(residentAfter - residentBefore) KiB")
  }

  func testNoGradientModeRecordsNothing() {
    let model = TinyMLP(inputs: 8, hidden: 32, outputs: 4, seed: 3)
    let (x, _) = toyTask()
    let before = Tape.nodeCount
    let out = withoutGradients { model(Variable(x)).softmax() }
    XCTAssertEqual(Tape.nodeCount, before, "no-gradient mode created graph nodes")
    XCTAssertFalse(out.requiresGradient)
    let recorded = model(Variable(x))
    XCTAssertTrue(recorded.requiresGradient)
    XCTAssertGreaterThan(Tape.nodeCount, before)
    XCTAssertEqual(out.value, recorded.value.softmax())
  }

  func testTiedParameterAccumulatesBothUses() {
    let p = Parameter(Tensor([1, 2, 3]))
    let loss = (p.variable * p.variable).sum() + p.variable.sum()
    loss.backward()
    XCTAssertEqual(p.gradient!.scalars, [3, 5, 7])
    (p.variable * 2).sum().backward()
    XCTAssertEqual(p.gradient!.scalars, [5, 7, 9], "gradients accumulate until zeroGradient()")
    p.zeroGradient()
    XCTAssertNil(p.gradient)
  }

  func testLongChainNeedsNoRecursion() {
    let p = Parameter(Tensor([1]))
    var x = p.variable
    for _ in 0..<100_000 { x = x * 1.0 }
    x.sum().backward()
    XCTAssertEqual(p.gradient!.scalar, 1)
  }

  func testDroppingADeepGraphWithoutBackwardDoesNotOverflowTheStack() {
    let p = Parameter(Tensor([1]))
    var x = p.variable
    for _ in 0..<200_000 { x = x + 1 }
    let live = Tape.liveNodeCount
    x = Variable(Tensor([0]))
    XCTAssertLessThan(Tape.liveNodeCount, live - 199_000)
  }

  func testCustomOpIsOneNode() {
    let x = Variable(Tensor([1, 2, 3]), requiresGradient: true)
    let before = Tape.nodeCount
    let y = Variable.record(value: x.value.squared(), inputs: [x]) { [xv = x.value] in { g in [g * xv * 2] } }
    XCTAssertEqual(Tape.nodeCount - before, 1)
    y.sum().backward()
    XCTAssertEqual(x.gradient!.scalars, [2, 4, 6])
  }
}
