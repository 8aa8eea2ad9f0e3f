import Foundation
import SSMAutograd
import SSMLayers
import SSMMetrics
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

/// A model must not look good by failing: NaN scores, constant scores and diverged training.
final class HonestMetricsTests: XCTestCase {
  var folder: URL!

  override func setUpWithError() throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-honest-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

  /// 30 users walking a cycle of 12 items (the split of `TrainerTests`).
  func cyclicSplit(users: Int = 30, length: Int = 8) throws -> SequentialSplit {
    var lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in 0..<users {
      for t in 0..<length { lines.append("u\(u)\ti\((u + t) % 12)\t\(t)") }
    }
    let url = folder.appendingPathComponent("cycle-\(users)-\(length).inter")
    try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
    return SequentialSplit(try InteractionDataset(contentsOf: url), maximumLength: 5)
  }

  func tinyModel(_ split: SequentialSplit) throws -> Mamba4Rec {
    var c = Mamba4Rec.Configuration(itemCount: split.itemCount)
    (c.hiddenSize, c.stateSize, c.innerSize, c.dropout) = (16, 4, 32, 0)
    return try Mamba4Rec(configuration: c)
  }

  func fill(_ parameter: Parameter, with value: Float) {
    parameter.value = Tensor(shape: parameter.shape, scalars: [Float](repeating: value, count: parameter.shape.elementCount))
  }

  func testNaNScoresRankLastAndTiesCountAgainstTheTarget() {
    let v = 7
    let nan = Tensor(shape: [2, v], scalars: [Float](repeating: .nan, count: 2 * v))
    XCTAssertEqual(FullRanking.ranks(scores: nan, targets: IndexTensor([1, 6])), [FullRanking.unranked, FullRanking.unranked])
    let constant = Tensor(shape: [2, v], scalars: [Float](repeating: 0.25, count: 2 * v))
    XCTAssertEqual(FullRanking.ranks(scores: constant, targets: IndexTensor([1, 6])), [v - 1, v - 1])
    // An infinite target score is as suspect as a NaN one; a NaN competitor counts above.
    let mixed = Tensor(rows: [[9, 0.1, .infinity, 0.3, 0.2, 0, 0], [0, 0.9, .nan, 0.3, 0.2, 0, 0]])
    XCTAssertEqual(FullRanking.ranks(scores: mixed, targets: IndexTensor([2, 1])), [FullRanking.unranked, 2])
    // Even when the cut-off covers the whole catalogue, a NaN target is a miss.
    var small = MetricAccumulator(cutoffs: [10])
    small.add(rank: FullRanking.ranks(scores: Tensor(rows: [[0, .nan]]), targets: IndexTensor([1]))[0], historyLength: 1)
    XCTAssertEqual(small.results["hit@10"], 0)
    XCTAssertEqual(small.results["ndcg@10"], 0)
    // Without an excluded id every id is a candidate.
    XCTAssertEqual(FullRanking.ranks(scores: constant, targets: IndexTensor([0, 3]), excluding: nil), [v, v])
  }

  func testAllNaNItemEmbeddingScoresZeroNotOne() throws {
    let split = try cyclicSplit()
    let model = try tinyModel(split)
    fill(model.itemEmbedding, with: .nan)
    let url = folder.appendingPathComponent("nan.safetensors")
    try Checkpoint.save(model, to: url)
    let loaded = try Checkpoint.loadModel(from: url)
    let results = Evaluator(cutoffs: [1, 10]).evaluate(loaded, on: split.test).results
    for key in ["hit@10", "ndcg@10", "mrr@10", "hit@1"] { XCTAssertEqual(results[key], 0, key) }
  }

  func testConstantScoresRankEveryTargetLast() throws {
    let split = try cyclicSplit()
    let model = try tinyModel(split)
    fill(model.itemEmbedding, with: 0.5)
    let batch = try SequenceBatch(histories: [[1, 2], [3]], targets: [4, 5])
    let ranks = FullRanking.ranks(scores: model.scores(batch), targets: batch.targets!)
    XCTAssertEqual(ranks, [split.itemCount - 1, split.itemCount - 1], "every real item ties: the target is last of V − 1")
  }

  func testNonFiniteLossStopsWithTypedErrorAndKeepsTheLastCheckpoint() throws {
    let split = try cyclicSplit()
    var settings = TrainingConfiguration()
    (settings.epochs, settings.batchSize, settings.learningRate) = (1, 32, 0.01)
    let model = try tinyModel(split)
    _ = try Trainer(model: model, split: split, configuration: settings, outputFolder: folder).fit()
    let last = folder.appendingPathComponent("last.safetensors")
    let best = folder.appendingPathComponent("best.safetensors")
    let (lastBytes, bestBytes) = (try Data(contentsOf: last), try Data(contentsOf: best))

    settings.epochs = 3
    let resumed = try Trainer(model: try tinyModel(split), split: split, configuration: settings, outputFolder: folder)
    XCTAssertTrue(try resumed.resume())
    fill(resumed.model.itemEmbedding, with: .infinity)
    XCTAssertThrowsError(try resumed.fit()) { error in
      guard case .nonFiniteLoss(let epoch, let step, let loss)? = error as? TrainingError else {
        return XCTFail("expected a non-finite loss error, got \(error)")
      }
      XCTAssertEqual([epoch, step], [1, 1])
      XCTAssertFalse(loss.isFinite)
      XCTAssertTrue("\(error)".contains("epoch 1, step 1"), "\(error)")
    }
    XCTAssertEqual(try Data(contentsOf: last), lastBytes, "last.safetensors is the last good epoch's")
    XCTAssertEqual(try Data(contentsOf: best), bestBytes)
  }

  func testSkipPolicyLeavesWeightsUntouchedAndCounts() throws {
    let split = try cyclicSplit()
    var settings = TrainingConfiguration()
    (settings.epochs, settings.batchSize, settings.nonFiniteLoss) = (1, 8, .skip)
    let poisoned = PoisonedRecommender(try tinyModel(split), poison: 3)
    var records: [EpochRecord] = []
    _ = try Trainer(model: poisoned, split: split, configuration: settings).fit { records.append($0) }
    let batches = BatchSequence(split.train, batchSize: 8, shuffleSeed: settings.seed).map { $0 }
    let expected = batches.filter { $0.items.values.contains(3) }.count
    XCTAssertGreaterThan(expected, 0)
    XCTAssertLessThan(expected, batches.count)
    XCTAssertEqual(records.map(\.skippedBatches), [expected])
    XCTAssertTrue(records[0].trainLoss.isFinite)
    XCTAssertTrue(poisoned.namedParameters().allSatisfy { $0.parameter.value.scalars.allSatisfy(\.isFinite) })

    // With every batch poisoned, skipping cannot train at all: a typed error, not a silent epoch.
    let everywhere = PoisonedRecommender(try tinyModel(split), poison: nil)
    XCTAssertThrowsError(try Trainer(model: everywhere, split: split, configuration: settings).fit()) { error in
      XCTAssertEqual(error as? TrainingError, .everyBatchSkipped(epoch: 0))
    }
  }

  func testANonFiniteGradientBehindAFiniteLossStopsTraining() throws {
    let split = try cyclicSplit()
    var settings = TrainingConfiguration()
    (settings.epochs, settings.batchSize) = (1, 32)
    let model = GradientPoisonedRecommender(try tinyModel(split))
    let before = model.namedParameters().map(\.parameter.value)
    XCTAssertThrowsError(try Trainer(model: model, split: split, configuration: settings).fit()) { error in
      guard case .nonFiniteGradient(let epoch, let step, _)? = error as? TrainingError else {
        return XCTFail("expected a non-finite gradient error, got \(error)")
      }
      XCTAssertEqual([epoch, step], [0, 1])
    }
    XCTAssertEqual(model.namedParameters().map(\.parameter.value), before, "no update reached the weights")
    settings.nonFiniteLoss = .skip
    XCTAssertThrowsError(try Trainer(model: model, split: split, configuration: settings).fit()) {
      XCTAssertEqual($0 as? TrainingError, .everyBatchSkipped(epoch: 0))
    }
  }

  func testSplitsWithoutTrainingOrValidationInstancesAreRefused() throws {
    var settings = TrainingConfiguration()
    settings.epochs = 1
    // One interaction per user: no instance at all.
    let none = try cyclicSplit(users: 5, length: 1)
    XCTAssertTrue(none.train.isEmpty)
    XCTAssertThrowsError(try Trainer(model: try tinyModel(none), split: none, configuration: settings)) {
      XCTAssertEqual($0 as? TrainingError, .noTrainingInstances)
    }
    var noValidation = try cyclicSplit()
    noValidation.validation = []
    XCTAssertThrowsError(try Trainer(model: try tinyModel(noValidation), split: noValidation, configuration: settings)) {
      XCTAssertEqual($0 as? TrainingError, .noValidationInstances)
    }
  }
}

/// A Mamba4Rec whose encoding is NaN for every batch holding item `poison` (every batch when
/// `poison` is nil), to drive the trainer's non-finite-loss handling.
final class PoisonedRecommender: SequentialRecommender {
  typealias Configuration = Mamba4Rec.Configuration
  static let kind = "poisoned-mamba4rec"
  let inner: Mamba4Rec
  let poison: Int32?
  var configuration: Configuration { inner.configuration }
  var itemEmbedding: Parameter { inner.itemEmbedding }

  init(_ inner: Mamba4Rec, poison: Int32?) { (self.inner, self.poison) = (inner, poison) }

  func namedParameters() -> [(path: String, parameter: Parameter)] { inner.namedParameters() }

  func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    let encoded = inner.encode(batch, context: &context)
    guard poison.map(batch.items.values.contains) ?? true else { return encoded }
    return encoded * Float.nan
  }
}

/// A Mamba4Rec whose encoding passes a NaN gradient back: every loss is finite, every gradient
/// NaN.
final class GradientPoisonedRecommender: SequentialRecommender {
  typealias Configuration = Mamba4Rec.Configuration
  static let kind = "gradient-poisoned-mamba4rec"
  let inner: Mamba4Rec
  var configuration: Configuration { inner.configuration }
  var itemEmbedding: Parameter { inner.itemEmbedding }

  init(_ inner: Mamba4Rec) { self.inner = inner }

  func namedParameters() -> [(path: String, parameter: Parameter)] { inner.namedParameters() }

  func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    let encoded = inner.encode(batch, context: &context)
    return Variable.record(value: encoded.value, inputs: [encoded]) { { g in [g * Float.nan] } }
  }
}
