import Foundation
import SSMAutograd
import SSMLayers
import SSMMetrics
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

final class CheckpointTests: XCTestCase {
  var folder: URL!

  override func setUpWithError() throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-ckpt-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

  func tinyMamba(seed: UInt64) throws -> Mamba4Rec {
    var c = Mamba4Rec.Configuration(itemCount: 20)
    (c.hiddenSize, c.stateSize, c.innerSize) = (8, 4, 16)
    return try Mamba4Rec(configuration: c, seed: seed)
  }

  func testRoundTripRestoresModelAndOptimizer() throws {
    let model = try tinyMamba(seed: 1)
    let batch = try SequenceBatch(histories: [[1, 2, 3], [4]], targets: [5, 6])
    let adam = Adam(parameters: model.namedParameters(), learningRate: 0.01)
    var context = ForwardContext.training(seed: 3)
    for _ in 0..<3 {
      model.zeroGradients()
      model.loss(batch, context: &context).backward()
      adam.step()
    }
    let url = folder.appendingPathComponent("model.safetensors")
    try Checkpoint.save(model, optimizer: adam, metadata: ["epoch": "3"], to: url)

    let loaded = try Checkpoint.loadModel(from: url)
    XCTAssertTrue(loaded is Mamba4Rec)
    XCTAssertEqual(loaded.scores(batch), model.scores(batch))
    let contents = try Checkpoint.Contents(contentsOf: url)
    XCTAssertEqual(contents.metadata["epoch"], "3")
    // Resume: a fresh model and optimizer continue exactly where the first left off.
    let resumed = try tinyMamba(seed: 99)
    try contents.apply(to: resumed)
    let resumedAdam = Adam(parameters: resumed.namedParameters(), learningRate: 0.5)
    XCTAssertTrue(try contents.restore(resumedAdam))
    XCTAssertEqual(resumedAdam.stepCount, 3)
    var c1 = ForwardContext.training(seed: 8)
    var c2 = ForwardContext.training(seed: 8)
    for (m, o, c) in [(model, adam, 1), (resumed, resumedAdam, 2)] as [(Mamba4Rec, Adam, Int)] {
      m.zeroGradients()
      if c == 1 { m.loss(batch, context: &c1).backward() } else { m.loss(batch, context: &c2).backward() }
      o.step()
    }
    XCTAssertEqual(resumed.scores(batch), model.scores(batch))
  }

  func testBadCheckpointsGiveClearErrors() throws {
    let model = try tinyMamba(seed: 1)
    let url = folder.appendingPathComponent("m.safetensors")
    try Checkpoint.save(model, to: url)
    // Another model kind.
    var sasrecConfig = SASRec.Configuration(itemCount: 20)
    (sasrecConfig.hiddenSize, sasrecConfig.innerSize) = (8, 16)
    let sasrec = try SASRec(configuration: sasrecConfig)
    XCTAssertThrowsError(try Checkpoint.Contents(contentsOf: url).apply(to: sasrec)) {
      XCTAssertEqual($0 as? CheckpointError, .modelKindMismatch(expected: "sasrec", found: "mamba4rec"))
    }
    // Cut in half.
    let bytes = try Data(contentsOf: url)
    let half = folder.appendingPathComponent("half.safetensors")
    try bytes.prefix(bytes.count / 2).write(to: half)
    XCTAssertThrowsError(try Checkpoint.loadModel(from: half)) { error in
      guard case .file = error as? CheckpointError else { return XCTFail("\(error)") }
    }
    // A safetensors file that is not a checkpoint.
    var writer = SafeTensorsWriter()
    writer.add("w", Tensor(zeros: [2]))
    let plain = folder.appendingPathComponent("plain.safetensors")
    try writer.write(to: plain)
    XCTAssertThrowsError(try Checkpoint.loadModel(from: plain)) {
      XCTAssertEqual($0 as? CheckpointError, .notACheckpoint("format is missing"))
    }
    // Parameters that do not fit (a model of another size).
    let bigger = try Mamba4Rec(configuration: .init(itemCount: 20))
    XCTAssertThrowsError(try Checkpoint.Contents(contentsOf: url).apply(to: bigger)) { error in
      guard case .parameters(.shapeMismatch) = error as? CheckpointError else { return XCTFail("\(error)") }
    }
  }

  /// The checkpoint at `url` rewritten with its configuration JSON edited by `edit`.
  func withConfiguration(of url: URL, _ edit: (inout [String: Any]) -> Void) throws -> URL {
    let file = try SafeTensorsFile(contentsOf: url)
    var writer = SafeTensorsWriter(metadata: file.metadata)
    for name in file.names { writer.add(name, try file.tensor(name)) }
    var config = try JSONSerialization.jsonObject(with: Data(file.metadata["config"]!.utf8)) as! [String: Any]
    edit(&config)
    writer.metadata["config"] = String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)
    let edited = folder.appendingPathComponent("edited-\(UUID().uuidString).safetensors")
    try writer.write(to: edited)
    return edited
  }

  func testCorruptConfigurationsAreRefusedBeforeAllocating() throws {
    let url = folder.appendingPathComponent("m.safetensors")
    try Checkpoint.save(try tinyMamba(seed: 1), to: url)
    var sasrecConfig = SASRec.Configuration(itemCount: 20)
    (sasrecConfig.hiddenSize, sasrecConfig.innerSize, sasrecConfig.maximumLength) = (8, 16, 6)
    let sasrecURL = folder.appendingPathComponent("s.safetensors")
    try Checkpoint.save(try SASRec(configuration: sasrecConfig), to: sasrecURL)
    // Each would allocate gigabytes (or overflow) if the model were built from it.
    let edits: [(String, URL, (inout [String: Any]) -> Void)] = [
      ("huge itemCount", url, { $0["itemCount"] = 2_000_000_000 }),
      ("itemCount beyond 32 bits", url, { $0["itemCount"] = 1 << 40 }),
      ("huge hiddenSize", url, { $0["hiddenSize"] = 1 << 30 }),
      ("huge innerSize", url, { $0["innerSize"] = 1 << 40 }),
      ("huge layer count", url, { $0["layers"] = 1 << 30 }),
      ("huge state size", url, { $0["stateSize"] = 1 << 30 }),
      ("expansion that overflows a product", url, { $0["expansion"] = Int.max }),
      ("negative width", url, { $0["hiddenSize"] = -8 }),
      ("huge position table", sasrecURL, { $0["maximumLength"] = 1 << 34 }),
      (
        "sizes each within their limits, huge together", url,
        { ($0["layers"], $0["expansion"], $0["stateSize"]) = (256, 256, 4096) }
      ),
      ("one layer more than stored", url, { $0["layers"] = 2 }),
      ("a wider feed-forward than stored", url, { $0["innerSize"] = 65536 }),
      ("a wider state than stored", url, { $0["stateSize"] = 8 }),
      ("a SASRec feed-forward wider than stored", sasrecURL, { $0["innerSize"] = 65536 }),
      ("more SASRec layers than stored", sasrecURL, { $0["layers"] = 256 }),
    ]
    for (name, source, edit) in edits {
      let edited = try withConfiguration(of: source, edit)
      XCTAssertThrowsError(try Checkpoint.loadModel(from: edited), name) { error in
        guard case .invalidConfiguration = error as? CheckpointError else { return XCTFail("\(name): \(error)") }
      }
    }
  }

  func testRegistryBuildsLoadsAndRefusesDuplicates() throws {
    let registry = ModelRegistry()
    XCTAssertThrowsError(try registry.descriptor(named: "gru4rec")) {
      XCTAssertEqual($0 as? ModelRegistryError, .unknownModel("gru4rec", known: []))
    }
    let descriptor = try ModelRegistry.shared.descriptor(named: Mamba4Rec.kind)
    try registry.register(descriptor)
    XCTAssertThrowsError(try registry.register(descriptor)) {
      XCTAssertEqual($0 as? ModelRegistryError, .duplicateName("mamba4rec"))
    }
    XCTAssertEqual(ModelRegistry.shared.names, ["mamba4rec", "sigma", "ssd4rec", "sasrec", "gru4rec"])

    let model = try descriptor.makeModel(itemCount: 20, overrides: .init(hiddenSize: 8, layers: 2, dropout: 0), seed: 4)
    XCTAssertEqual((model as? Mamba4Rec)?.configuration.innerSize, 32)
    XCTAssertEqual((model as? Mamba4Rec)?.configuration.layers, 2)
    let url = folder.appendingPathComponent("registered.safetensors")
    try Checkpoint.save(model as! Mamba4Rec, batching: .upTo(9), to: url)
    let batch = try SequenceBatch(histories: [[1, 2, 3], [4]])
    XCTAssertEqual(try Checkpoint.loadModel(from: url, registry: registry).scores(batch), model.scores(batch))
    XCTAssertEqual(try Checkpoint.Contents(contentsOf: url).batching, .upTo(9))
    XCTAssertThrowsError(try Checkpoint.loadModel(from: url, registry: ModelRegistry())) {
      XCTAssertEqual($0 as? CheckpointError, .unknownModelKind("mamba4rec"))
    }
  }

  /// Every built-in model's checkpoint passes its own configuration check and reloads to the
  /// same scores (the check pins each allocating size to a stored shape).
  func testEveryBuiltInModelReloadsThroughItsConfigurationCheck() throws {
    let registry = ModelRegistry.shared
    let batch = try SequenceBatch(histories: [[1, 2, 3], [4]])
    for name in registry.names {
      let model = try registry.descriptor(named: name).makeModel(
        itemCount: 20, overrides: .init(hiddenSize: 16, layers: 2, dropout: 0, maximumLength: 8), seed: 1)
      let url = folder.appendingPathComponent("\(name).safetensors")
      try save(model, to: url)
      let loaded = try Checkpoint.loadModel(from: url)
      XCTAssertEqual(loaded.scores(batch), model.scores(batch), name)
    }
  }

  func save<M: SequentialRecommender>(_ model: M, to url: URL) throws { try Checkpoint.save(model, to: url) }
}
