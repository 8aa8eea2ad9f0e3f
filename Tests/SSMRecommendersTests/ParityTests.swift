import Foundation
import SSMAutograd
import SSMLayers
import SSMMetrics
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

/// PyTorch parity: every fixture in `Tests/Fixtures` (and in `$SSMREC_FIXTURES` when set) is
/// rebuilt from its stored configuration, loaded by the official parameter names, run, and
/// compared with the stored outputs, loss and gradients under the fixtures' README tolerances.
final class ParityTests: XCTestCase {
  /// The fixtures that ship with the repository; a missing one fails the test instead of
  /// shrinking it.
  static let shippedFixtures = [
    "gru4rec", "mamba2_block", "mamba2_block_packed", "mamba4rec", "mamba4rec_2layers", "mamba_block", "sasrec",
    "sigma", "sigma_2layers", "ssd4rec",
  ].map { $0 + ".safetensors" }

  static var shippedFolder: URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
  }

  /// Further folders of fixtures (other seeds and shapes), separated by `:`.
  static var extraFolders: [URL] {
    (ProcessInfo.processInfo.environment["SSMREC_FIXTURES"] ?? "").split(separator: ":").map { URL(fileURLWithPath: String($0)) }
  }

  func testEveryFixtureMatchesPyTorch() throws {
    var files = Self.shippedFixtures.map { Self.shippedFolder.appendingPathComponent($0) }
    for file in files where !FileManager.default.fileExists(atPath: file.path) {
      XCTFail("parity fixture \(file.lastPathComponent) is missing from \(Self.shippedFolder.path)")
    }
    for folder in Self.extraFolders {
      guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else {
        XCTFail("SSMREC_FIXTURES names \(folder.path), which is not a readable folder")
        continue
      }
      files += names.filter { $0.hasSuffix(".safetensors") }.sorted().map { folder.appendingPathComponent($0) }
    }
    files = files.filter { FileManager.default.fileExists(atPath: $0.path) }
    for file in files {
      do {
        let fixture = try SafeTensorsFile(contentsOf: file)
        let report = try Parity.check(fixture)
        print("PARITY \(file.lastPathComponent) model=\(fixture.metadata["model"] ?? "?") \(report.summary)")
        for failure in report.failures { XCTFail("\(file.lastPathComponent): \(failure)") }
      } catch {
        XCTFail("\(file.lastPathComponent): \(error)")
      }
    }
  }
}

/// The comparison of one fixture.
struct ParityReport {
  var failures: [String] = []
  var worstOutput = 0.0
  var lossError = 0.0
  var worstGradient = 0.0
  var worstGradientName = ""
  var gradientsChecked = 0

  var summary: String {
    "outputs=\(fmt(worstOutput)) loss=\(fmt(lossError)) gradients=\(fmt(worstGradient)) (\(gradientsChecked) tensors, worst \(worstGradientName))"
  }
  func fmt(_ v: Double) -> String { String(format: "%.2e", v) }

  /// Outputs: max|a − e| / max|e| ≤ 1e-4.
  mutating func output(_ name: String, _ actual: Tensor, _ expected: Tensor) {
    guard actual.shape == expected.shape else {
      failures.append("\(name): shape \(actual.shape) vs \(expected.shape)")
      return
    }
    let e = normalizedError(actual, expected)
    if !(e <= worstOutput) { worstOutput = e }
    if !(e <= 1e-4) { failures.append("\(name): relative error \(e) > 1e-4") }
  }

  /// Loss: |a − e| ≤ 1e-5·scale.
  mutating func loss(_ actual: Float, _ expected: Float, scale: Double) {
    let e = Swift.abs(Double(actual) - Double(expected)) / Swift.max(scale, 1e-30)
    lossError = e
    if !(e <= 1e-5) { failures.append("loss: \(actual) vs \(expected), relative \(e) > 1e-5") }
  }

  /// Gradients: max|a − e| ≤ 1e-3·max(‖e‖₂, 1e-3·G).
  mutating func gradients(_ actual: [String: Tensor], _ expected: [String: Tensor]) {
    let largestNorm = largest(expected.values.map { norm($0) })
    for (name, e) in expected.sorted(by: { $0.key < $1.key }) {
      guard let a = actual[name] else {
        failures.append("no gradient computed for \(name)")
        continue
      }
      guard a.shape == e.shape else {
        failures.append("gradient \(name): shape \(a.shape) vs \(e.shape)")
        continue
      }
      // NaN-propagating: a NaN gradient entry makes `worst` NaN and fails the check below.
      let worst = largest(zip(a.scalars, e.scalars).map { Swift.abs(Double($0) - Double($1)) })
      let ratio = worst / Swift.max(norm(e), 1e-3 * largestNorm, 1e-30)
      gradientsChecked += 1
      if ratio > worstGradient || ratio.isNaN { (worstGradient, worstGradientName) = (ratio, name) }
      if !(ratio <= 1e-3) { failures.append("gradient \(name): max error \(worst) is \(ratio) of its norm (> 1e-3)") }
    }
  }

  func norm(_ t: Tensor) -> Double { t.scalars.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }
}

enum Parity {

  static func check(_ fixture: SafeTensorsFile) throws -> ParityReport {
    guard let model = fixture.metadata["model"], let configText = fixture.metadata["config"],
      let config = try JSONSerialization.jsonObject(with: Data(configText.utf8)) as? [String: Any]
    else { throw SafeTensorsError.malformedHeader("fixture lacks model or config metadata") }
    let parameterNames = fixture.names.filter { !$0.hasPrefix("input.") && !$0.hasPrefix("expected.") }
    var parameters: [String: Tensor] = [:]
    for name in parameterNames { parameters[name] = try fixture.tensor(name) }
    var expectedGradients: [String: Tensor] = [:]
    for name in fixture.names where name.hasPrefix("expected.grad.") {
      expectedGradients[String(name.dropFirst("expected.grad.".count))] = try fixture.tensor(name)
    }
    var generator = SplitMix64(seed: 0)
    switch model {
    case "mamba_block", "mamba2_block":
      let block: any BlockUnderTest =
        model == "mamba_block"
        ? MambaBlock(
          modelDimension: config.int("d_model"), stateSize: config.int("d_state"), convolutionWidth: config.int("d_conv"),
          expansion: config.int("expand"), deltaRank: config.int("dt_rank"), convolutionBias: config.bool("conv_bias"),
          projectionBias: config.bool("bias"), using: &generator)
        : Mamba2Block(configuration: try Mamba2Block.Configuration(fixtureConfig: config), using: &generator)
      try block.loadParameters(parameters)
      let x = Variable(try fixture.tensor("input.x"), requiresGradient: true)
      let sequenceIndex = fixture.entries["input.seq_idx"] != nil ? try fixture.indices("input.seq_idx") : nil
      let y = block.run(x, sequenceIndex: sequenceIndex)
      let cotangent = try fixture.tensor("input.cotangent")
      var report = ParityReport()
      let expectedY = try fixture.tensor("expected.y")
      report.output("y", y.value, expectedY)
      let loss = (y * cotangent).sum()
      let scale = zip(expectedY.scalars, cotangent.scalars).reduce(0.0) { $0 + Swift.abs(Double($1.0) * Double($1.1)) }
      report.loss(loss.value.scalar, try fixture.tensor("expected.loss").scalar, scale: scale)
      block.zeroGradients()
      loss.backward()
      var actual = Dictionary(
        uniqueKeysWithValues: block.namedParameters().map {
          ($0.path, $0.parameter.gradient ?? Tensor(zeros: $0.parameter.shape))
        })
      actual["input.x"] = x.gradient
      report.gradients(actual, expectedGradients)
      return report
    default:
      return try RecommenderParity.check(
        model: model, config: config, fixture: fixture, parameters: parameters, expectedGradients: expectedGradients)
    }
  }
}

/// A bare block the parity test can run.
protocol BlockUnderTest: Layer {
  func run(_ x: Variable, sequenceIndex: IndexTensor?) -> Variable
}

extension MambaBlock: BlockUnderTest {
  func run(_ x: Variable, sequenceIndex: IndexTensor?) -> Variable { self(x) }
}

extension Dictionary where Key == String, Value == Any {
  func int(_ key: String) -> Int { (self[key] as? NSNumber)?.intValue ?? 0 }
  func float(_ key: String) -> Float { (self[key] as? NSNumber)?.floatValue ?? 0 }
  func bool(_ key: String) -> Bool { (self[key] as? NSNumber)?.boolValue ?? false }
}

extension Mamba2Block: BlockUnderTest {
  func run(_ x: Variable, sequenceIndex: IndexTensor?) -> Variable { self(x, sequenceIndex: sequenceIndex) }
}

extension Mamba2Block.Configuration {
  /// From a fixture's `config` (official key names).
  init(fixtureConfig c: [String: Any]) throws {
    self.init(modelDimension: c.int("d_model") == 0 ? c.int("hidden_size") : c.int("d_model"))
    stateSize = c.int("d_state")
    convolutionWidth = c.int("d_conv")
    expansion = c.int("expand")
    headDimension = c.int("headdim")
    groups = c.int("ngroups")
    chunkSize = c.int("chunk_size")
    normEpsilon = c.float("rmsnorm_eps") == 0 ? 1e-5 : c.float("rmsnorm_eps")
    convolutionBias = c.bool("conv_bias")
    projectionBias = c.bool("bias")
    try validate()
  }
}

enum RecommenderParity {
  static func build(model: String, config c: [String: Any]) throws -> any SequentialRecommender {
    switch model {
    case "mamba4rec":
      var m = Mamba4Rec.Configuration(itemCount: c.int("n_items"))
      m.hiddenSize = c.int("hidden_size")
      m.layers = c.int("num_layers")
      m.dropout = c.float("dropout_prob")
      m.stateSize = c.int("d_state")
      m.convolutionWidth = c.int("d_conv")
      m.expansion = c.int("expand")
      m.innerSize = c.int("inner_size")
      m.layerNormEpsilon = c.float("layer_norm_eps")
      return try Mamba4Rec(configuration: m)
    case "sigma":
      var m = SIGMA.Configuration(itemCount: c.int("n_items"))
      m.hiddenSize = c.int("hidden_size")
      m.layers = c.int("num_layers")
      m.dropout = c.float("dropout_prob")
      m.gateDropout = c.float("gate_dropout_prob")
      m.stateSize = c.int("d_state")
      m.convolutionWidth = c.int("d_conv")
      m.expansion = c.int("expand")
      m.innerSize = c.int("inner_size")
      m.layerNormEpsilon = c.float("layer_norm_eps")
      m.flip = .prefix(count: c.int("n_f"))
      m.featureKernelSize = c.int("fe_conv_kernel")
      m.gruBias = c.bool("gru_bias")
      guard (c["combining_weights_roles"] as? [String]) == ["gru", "flipped", "forward"] else {
        throw SafeTensorsError.malformedHeader("unexpected combining_weights_roles")
      }
      return try SIGMA(configuration: m)
    case "ssd4rec":
      var m = SSD4Rec.Configuration(itemCount: c.int("n_items"))
      m.hiddenSize = c.int("hidden_size")
      m.layers = c.int("num_layers")
      m.dropout = c.float("dropout_prob")
      m.stateSize = c.int("d_state")
      m.convolutionWidth = c.int("d_conv")
      m.expansion = c.int("expand")
      m.headDimension = c.int("headdim")
      m.chunkSize = c.int("chunk_size")
      m.backwardWeight = c.float("beta")
      m.normalizeEmbeddings = c.bool("norm_embedding")
      m.maskRatio = c.float("maskratio")
      m.innerSize = c.int("inner_size")
      m.layerNormEpsilon = c.float("layer_norm_eps")
      return try SSD4Rec(configuration: m)
    case "sasrec":
      var m = SASRec.Configuration(itemCount: c.int("n_items"))
      m.maximumLength = c.int("max_seq_length")
      m.hiddenSize = c.int("hidden_size")
      m.layers = c.int("n_layers")
      m.heads = c.int("n_heads")
      m.innerSize = c.int("inner_size")
      m.hiddenDropout = c.float("hidden_dropout_prob")
      m.attentionDropout = c.float("attn_dropout_prob")
      m.layerNormEpsilon = c.float("layer_norm_eps")
      return try SASRec(configuration: m)
    case "gru4rec":
      var m = GRU4Rec.Configuration(itemCount: c.int("n_items"))
      m.embeddingSize = c.int("embedding_size")
      m.hiddenSize = c.int("hidden_size")
      m.layers = c.int("num_layers")
      m.dropout = c.float("dropout_prob")
      return try GRU4Rec(configuration: m)
    default:
      throw SafeTensorsError.malformedHeader("unknown model kind \(model)")
    }
  }

  static func check(
    model kind: String, config: [String: Any], fixture: SafeTensorsFile, parameters: [String: Tensor],
    expectedGradients: [String: Tensor]
  ) throws -> ParityReport {
    let model = try build(model: kind, config: config)
    try model.loadParameters(parameters)
    let lengths = try fixture.indices("input.item_seq_len").values.map(Int.init)
    let batch = try SequenceBatch(
      items: try fixture.indices("input.item_seq"), lengths: lengths, targets: try fixture.indices("input.target"))
    var report = ParityReport()
    if model is SSD4Rec, fixture.entries["input.item_id_list"] != nil {
      let packed = SSD4Rec.pack(batch)
      if packed.items.values != (try fixture.indices("input.item_id_list")).values {
        report.failures.append("packed items differ from input.item_id_list")
      }
      if packed.sequenceIndex.values != (try fixture.indices("input.seq_idx")).values {
        report.failures.append("segment ids differ from input.seq_idx")
      }
    }
    var evaluation = ForwardContext.evaluation
    let sequenceOutput = withoutGradients { model.encode(batch, context: &evaluation).value }
    report.output("seq_output", sequenceOutput, try fixture.tensor("expected.seq_output"))
    report.output("scores", model.scores(batch), try fixture.tensor("expected.scores"))
    // Training-mode values with every dropout at 0 are the evaluation-mode function.
    model.zeroGradients()
    let loss = model.loss(batch, context: &evaluation)
    let expectedLoss = try fixture.tensor("expected.loss").scalar
    report.loss(loss.value.scalar, expectedLoss, scale: Swift.abs(Double(expectedLoss)))
    loss.backward()
    let actual = Dictionary(
      uniqueKeysWithValues: model.namedParameters().map {
        ($0.path, $0.parameter.gradient ?? Tensor(zeros: $0.parameter.shape))
      })
    report.gradients(actual, expectedGradients)
    return report
  }
}
