import Foundation
import SSMRecommenders
import SSMTestSupport
import XCTest

final class TrainerTests: XCTestCase {
  var folder: URL!

  override func setUpWithError() throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-train-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

  /// 30 users walking a cycle of 12 items from different starting points: the next item is
  /// always the current one plus one, which a sequence model learns quickly.
  func cyclicSplit() throws -> SequentialSplit {
    var lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in 0..<30 {
      for t in 0..<8 { lines.append("u\(u)\ti\((u + t) % 12)\t\(t)") }
    }
    let url = folder.appendingPathComponent("cycle.inter")
    try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
    return SequentialSplit(try InteractionDataset(contentsOf: url), maximumLength: 5)
  }

  func tinyModel(_ split: SequentialSplit) throws -> Mamba4Rec {
    var c = Mamba4Rec.Configuration(itemCount: split.itemCount)
    (c.hiddenSize, c.stateSize, c.innerSize, c.dropout) = (16, 4, 32, 0.1)
    return try Mamba4Rec(configuration: c)
  }

  func testTrainingLearnsLogsCheckpointsAndResumes() throws {
    let split = try cyclicSplit()
    XCTAssertEqual(split.validation.count, 30)
    var settings = TrainingConfiguration()
    (settings.epochs, settings.batchSize, settings.learningRate, settings.cutoffs) = (6, 32, 0.01, [1, 5])
    settings.validationMetric = "hit@5"
    var seen: [EpochRecord] = []
    let trainer = try Trainer(model: try tinyModel(split), split: split, configuration: settings, outputFolder: folder)
    let result = try trainer.fit { seen.append($0) }
    XCTAssertEqual(result.epochs, 6)
    XCTAssertEqual(seen.count, 6)
    XCTAssertLessThan(seen.last!.trainLoss, seen.first!.trainLoss)
    XCTAssertGreaterThan(result.test["hit@5"]!, 0.5, "\(result.test)")
    for name in ["best.safetensors", "last.safetensors", "log.jsonl"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent(name).path), name)
    }
    let log = try String(contentsOf: folder.appendingPathComponent("log.jsonl"), encoding: .utf8)
    XCTAssertEqual(log.split(separator: "\n").count, 6)

    // Resuming with a larger epoch budget continues at epoch 6.
    settings.epochs = 8
    let resumed = try Trainer(model: try tinyModel(split), split: split, configuration: settings, outputFolder: folder)
    XCTAssertTrue(try resumed.resume())
    var resumedEpochs: [Int] = []
    let more = try resumed.fit { resumedEpochs.append($0.epoch) }
    XCTAssertEqual(resumedEpochs, [6, 7])
    XCTAssertEqual(more.epochs, 8)
  }

  func testEarlyStoppingFollowsRecBolePatience() throws {
    let split = try cyclicSplit()
    var settings = TrainingConfiguration()
    // A learning rate too small to change the ranking: every epoch ties the first, and ties
    // count as improvements, so training runs to the epoch limit …
    (settings.epochs, settings.batchSize, settings.learningRate, settings.stoppingStep) = (4, 64, 1e-9, 0)
    var result = try Trainer(model: try tinyModel(split), split: split, configuration: settings).fit()
    XCTAssertFalse(result.stoppedEarly)
    XCTAssertEqual(result.bestEpoch, 3)
    // … while a learning rate that wrecks the model stops after stoppingStep + 1 worse epochs.
    (settings.learningRate, settings.epochs) = (5, 20)
    result = try Trainer(model: try tinyModel(split), split: split, configuration: settings).fit()
    XCTAssertTrue(result.stoppedEarly)
    XCTAssertLessThan(result.epochs, 20)
  }

  func testRecommendExcludesPaddingAndReturnsK() throws {
    let split = try cyclicSplit()
    let model = try tinyModel(split)
    let batch = try SequenceBatch(histories: [[1, 2, 3], [4]])
    let top = model.recommend(batch, k: 5)
    XCTAssertEqual(top.count, 2)
    XCTAssertTrue(top.allSatisfy { $0.count == 5 && !$0.contains(0) })
  }

  func testCheckpointsRecordTheBatchingOfTheirRun() throws {
    let split = try cyclicSplit()
    var settings = TrainingConfiguration()
    (settings.epochs, settings.batchSize, settings.maximumLength) = (1, 32, 200)
    let trainer = try Trainer(model: try tinyModel(split), split: split, configuration: settings, outputFolder: folder)
    let result = try trainer.fit()
    for name in ["best.safetensors", "last.safetensors"] {
      let contents = try Checkpoint.Contents(contentsOf: folder.appendingPathComponent(name))
      XCTAssertEqual(contents.batching, .packed(upTo: 200), name)
    }
    // Evaluating the checkpoint with its recorded batching reproduces the trainer's test metrics.
    let contents = try Checkpoint.Contents(contentsOf: folder.appendingPathComponent("best.safetensors"))
    let model = try Checkpoint.loadModel(from: contents)
    let again = Evaluator(batching: contents.batching).evaluate(model, on: split.test).results
    XCTAssertEqual(again["ndcg@10"], result.test["ndcg@10"])
    // SIGMA declares a fixed window, SASRec its position table, SSD4Rec whole histories.
    var sigma = SIGMA.Configuration(itemCount: 20)
    (sigma.hiddenSize, sigma.innerSize, sigma.stateSize) = (8, 16, 4)
    XCTAssertEqual(try SIGMA(configuration: sigma).batching(maximumLength: nil), .fixedWindow(50))
    XCTAssertEqual(try SIGMA(configuration: sigma).batching(maximumLength: 30), .fixedWindow(30))
    var sasrec = SASRec.Configuration(itemCount: 20)
    (sasrec.hiddenSize, sasrec.innerSize, sasrec.maximumLength) = (8, 16, 10)
    XCTAssertEqual(try SASRec(configuration: sasrec).batching(maximumLength: 200), .packed(upTo: 10))
    XCTAssertEqual(try tinyModel(split).batching(maximumLength: nil), .packed(upTo: nil))
  }
}
