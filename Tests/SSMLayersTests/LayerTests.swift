import CKernels
import SSMAutograd
import SSMKernels
import SSMLayers
import SSMTensor
import SSMTestSupport
import XCTest

/// Every layer: finite-difference gradients at tiny sizes, and its parameter list (names,
/// shapes, and no stored parameter left out).
final class LayerTests: XCTestCase {
  /// Counts the `Parameter` values a layer stores directly, and in arrays of parameters, by
  /// reflection (tests only).
  func storedParameterCount(_ object: Any) -> Int {
    Mirror(reflecting: object).children.reduce(0) { count, child in
      if child.value is Parameter { return count + 1 }
      if let optional = child.value as? Parameter?, optional != nil { return count + 1 }
      if let list = child.value as? [Parameter] { return count + list.count }
      if let list = child.value as? [Parameter]? { return count + (list?.count ?? 0) }
      return count
    }
  }

  /// The direct entries of `namedParameters()` (paths without a child prefix of a sub-layer).
  func assertParameters(
    _ layer: Layer, _ expected: [(String, Shape)], direct: Int, file: StaticString = #filePath, line: UInt = #line
  ) {
    let listed = layer.namedParameters()
    let text = listed.map { "\($0.path) \($0.parameter.shape)" }.sorted().joined(separator: "\n")
    let want = expected.map { "\($0.0) \($0.1)" }.sorted().joined(separator: "\n")
    XCTAssertEqual(text, want, file: file, line: line)
    XCTAssertEqual(storedParameterCount(layer), direct, "stored Parameter properties", file: file, line: line)
    XCTAssertEqual(
      Set(listed.map { ObjectIdentifier($0.parameter) }).count, listed.count, "a parameter listed twice", file: file, line: line)
  }

  /// Gradient check of a layer's output with respect to its input and every parameter.
  func checkLayer(
    _ layer: Layer, input: Tensor, step: Float = 1e-2, file: StaticString = #filePath, line: UInt = #line,
    _ run: (Variable) -> Variable
  ) {
    GradientCheck.assertLayerGradients(layer, input: input, step: step, file: file, line: line, run)
  }

  func testLinearEmbeddingNorms() {
    var rng = SplitMix64(seed: 1)
    let linear = Linear(inputSize: 3, outputSize: 4, using: &rng)
    assertParameters(linear, [("weight", [4, 3]), ("bias", [4])], direct: 2)
    checkLayer(linear, input: Tensor.random([2, 5, 3], seed: 2)) { linear($0) }
    // A range of the outputs: the full output's slice, with gradients of its own.
    let x = Variable(Tensor.random([2, 5, 3], seed: 12))
    assertClose(
      linear(x, outputs: 1..<3).value, expected: linear(x).value.slice(alongAxis: 2, 1..<3).doubles, shape: [2, 5, 2],
      rtol: 1e-6, atol: 1e-6)
    checkLayer(linear, input: Tensor.random([2, 5, 3], seed: 2)) { linear($0, outputs: 1..<3) }
    // Unrecorded, the bias is written first and the product added onto it: the same values.
    for input in [x, Variable(Tensor.random([7, 3], seed: 13))] {
      let recorded = linear(input).value
      assertClose(
        withoutGradients { linear(input).value }, expected: recorded.doubles, shape: recorded.shape, rtol: 1e-6, atol: 1e-6)
    }
    let noBias = Linear(inputSize: 3, outputSize: 2, bias: false, using: &rng)
    assertParameters(noBias, [("weight", [2, 3])], direct: 1)

    let embedding = Embedding(count: 7, dimension: 3, paddingIndex: 0, using: &rng)
    assertParameters(embedding, [("weight", [7, 3])], direct: 1)
    XCTAssertEqual((0..<3).map { embedding.weight.value[0, $0] }, [0, 0, 0], "padding row starts at zero")

    let norm = LayerNorm(dimension: 4)
    assertParameters(norm, [("weight", [4]), ("bias", [4])], direct: 2)
    norm.weight.value = Tensor.random([4], in: 0.5...1.5, seed: 3)
    norm.bias.value = Tensor.random([4], seed: 4)
    checkLayer(norm, input: Tensor.random([3, 4], in: -2...2, seed: 5)) { norm($0) }

    let rms = GatedRMSNorm(dimension: 4)
    assertParameters(rms, [("weight", [4])], direct: 1)
    rms.weight.value = Tensor.random([4], in: 0.5...1.5, seed: 6)
    let gate = Tensor.random([3, 4], seed: 7)
    checkLayer(rms, input: Tensor.random([3, 4], seed: 8)) { rms($0, gate: Variable(gate)) }
  }

  func testGRUAndConvolution() {
    var rng = SplitMix64(seed: 2)
    let gru = GRU(inputSize: 3, hiddenSize: 4, layers: 2, bias: true, using: &rng)
    assertParameters(
      gru,
      [
        ("weight_ih_l0", [12, 3]), ("weight_hh_l0", [12, 4]), ("bias_ih_l0", [12]), ("bias_hh_l0", [12]),
        ("weight_ih_l1", [12, 4]), ("weight_hh_l1", [12, 4]), ("bias_ih_l1", [12]), ("bias_hh_l1", [12]),
      ], direct: 8)
    let plain = GRU(inputSize: 3, hiddenSize: 3, bias: false, using: &rng)
    // The GRU step kernels are dispatched per instruction-set level: every level is checked.
    do {
      defer { _ = ssm_isa_force(-1) }
      withEvery("isa", in: Array(0...ssm_isa_supported())) { level in
        _ = ssm_isa_force(level)
        checkLayer(gru, input: Tensor.random([2, 4, 3], seed: 9)) { gru($0) }
        // Without a tape the recurrence keeps only h; the states must not change.
        let sequence = Variable(Tensor.random([3, 6, 3], seed: 12))
        XCTAssertEqual(withoutGradients { gru(sequence) }.value, gru(sequence).value)
        checkLayer(plain, input: Tensor.random([1, 5, 3], seed: 10)) { plain($0) }
      }
    }

    let conv = Conv1d(inputChannels: 3, outputChannels: 2, kernelSize: 3, using: &rng)
    assertParameters(conv, [("weight", [2, 3, 3]), ("bias", [2])], direct: 2)
    checkLayer(conv, input: Tensor.random([2, 5, 3], seed: 11)) { conv($0) }
  }

  func testFeedForwardBothArrangements() {
    var rng = SplitMix64(seed: 3)
    for arrangement in [FeedForward.Arrangement.postNormResidual, .normThenDropout] {
      let ffn = FeedForward(dimension: 4, innerDimension: 8, dropout: 0.3, arrangement: arrangement, using: &rng)
      assertParameters(
        ffn,
        [
          ("w_1.weight", [8, 4]), ("w_1.bias", [8]), ("w_2.weight", [4, 8]), ("w_2.bias", [4]), ("LayerNorm.weight", [4]),
          ("LayerNorm.bias", [4]),
        ],
        direct: 0)
      checkLayer(ffn, input: Tensor.random([2, 3, 4], seed: 12)) { x in
        var context = ForwardContext.evaluation
        return ffn(x, context: &context)
      }
    }
  }

  func testMambaBlocks() {
    var rng = SplitMix64(seed: 4)
    let mamba = MambaBlock(modelDimension: 4, stateSize: 3, convolutionWidth: 2, expansion: 2, using: &rng)
    assertParameters(
      mamba,
      [
        ("in_proj.weight", [16, 4]), ("conv1d.weight", [8, 1, 2]), ("conv1d.bias", [8]), ("x_proj.weight", [7, 8]),
        ("dt_proj.weight", [8, 1]), ("dt_proj.bias", [8]), ("A_log", [8, 3]), ("D", [8]), ("out_proj.weight", [4, 8]),
      ],
      direct: 4)
    // The reference Δ initialisation: softplus(dt_proj.bias) within [dt_min, dt_max].
    for b in mamba.deltaProjection.bias!.value.scalars {
      let dt = Float(log1p(exp(Double(b))))
      XCTAssertTrue(dt >= 0.0009 && dt <= 0.1001, "initial Δ \(dt)")
    }
    XCTAssertEqual(mamba.logA.value[5, 2], Float(log(3.0)), accuracy: 1e-6)
    checkLayer(mamba, input: Tensor.random([2, 4, 4], seed: 13)) { mamba($0) }

    var c = Mamba2Block.Configuration(modelDimension: 4)
    (c.stateSize, c.headDimension, c.chunkSize, c.convolutionWidth) = (3, 2, 2, 3)
    let mamba2 = Mamba2Block(configuration: c, using: &rng)
    assertParameters(
      mamba2,
      [
        ("in_proj.weight", [26, 4]), ("conv1d.weight", [14, 1, 3]), ("conv1d.bias", [14]), ("dt_bias", [4]), ("A_log", [4]),
        ("D", [4]), ("norm.weight", [8]), ("out_proj.weight", [4, 8]),
      ], direct: 5)
    XCTAssertTrue(mamba2.logA.value.scalars.allSatisfy { exp(Double($0)) >= 1 && exp(Double($0)) <= 16 })
    let seq = IndexTensor(shape: [1, 5], values: [0, 0, 1, 1, 1])
    checkLayer(mamba2, input: Tensor.random([1, 5, 4], seed: 14), step: 3e-3) { mamba2($0, sequenceIndex: seq) }
    var bad = c
    bad.headDimension = 3
    XCTAssertThrowsError(try bad.validate())
  }

  func testBidirectionalSSD() {
    var rng = SplitMix64(seed: 6)
    var c = Mamba2Block.Configuration(modelDimension: 4)
    (c.stateSize, c.headDimension, c.chunkSize) = (2, 2, 3)
    let layer = BidirectionalSSD(block: c, innerSize: 8, dropout: 0.1, using: &rng)
    XCTAssertEqual(layer.namedParameters().count, 8 + 2 + 6)
    XCTAssertEqual(storedParameterCount(layer), 0)
    let seq = IndexTensor(shape: [1, 6], values: [0, 0, 0, 1, 1, 1])
    checkLayer(layer, input: Tensor.random([1, 6, 4], seed: 22), step: 3e-3) { x in
      var context = ForwardContext.evaluation
      return layer(x, sequenceIndex: seq, segmentLengths: [3, 3], context: &context)
    }
  }

  func testSIGMAComponents() {
    var rng = SplitMix64(seed: 5)
    let gate = DenseSelectiveGate(dimension: 3, using: &rng)
    assertParameters(
      gate,
      [
        ("selective_gate_sig.1.weight", [3, 3]), ("selective_gate_sig.1.bias", [3]), ("selective_gate_si.1.weight", [3, 3]),
        ("selective_gate_si.1.bias", [3]),
      ],
      direct: 0)
    let other = Tensor.random([2, 3], seed: 15)
    checkLayer(gate, input: Tensor.random([2, 3], seed: 16)) { h in
      var context = ForwardContext.evaluation
      return gate(h, sigmoidInput: Variable(other), context: &context)
    }
    let fe = FeatureExtractionGRU(dimension: 3, using: &rng)
    assertParameters(
      fe, [("gru.weight_ih_l0", [9, 3]), ("gru.weight_hh_l0", [9, 3]), ("conv1d.weight", [3, 3, 3]), ("conv1d.bias", [3])],
      direct: 0)
    checkLayer(fe, input: Tensor.random([2, 4, 3], seed: 17)) { fe($0) }
    let mixing = BranchMixing(dimension: 3, using: &rng)
    assertParameters(mixing, [("combining_weights", [3]), ("projection.weight", [3, 3]), ("projection.bias", [3])], direct: 1)
    let (flippedBranch, featureBranch) = (Tensor.random([2, 3], seed: 19), Tensor.random([2, 3], seed: 20))
    checkLayer(mixing, input: Tensor.random([2, 3], seed: 21)) { x in
      mixing(forward: x, flipped: Variable(flippedBranch), features: Variable(featureBranch))
    }
    for flip in [FlipStrategy.prefix(count: 3), .keepingLast(keep: 1)] {
      let block = PartiallyFlippedMambaBlock(
        dimension: 4, stateSize: 2, convolutionWidth: 2, expansion: 1, flip: flip, gateDropout: 0.2, featureKernelSize: 3,
        gruBias: false, using: &rng)
      XCTAssertEqual(block.namedParameters().count, 1 + 6 + 9 + 4 + 4)
      XCTAssertEqual(storedParameterCount(block), 0)
      checkLayer(block, input: Tensor.random([2, 5, 4], seed: 18)) { x in
        var context = ForwardContext.evaluation
        return block(x, lengths: [5, 3], context: &context)
      }
    }
  }
}
