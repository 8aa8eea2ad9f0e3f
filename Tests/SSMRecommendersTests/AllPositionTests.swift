import Foundation
import SSMAutograd
import SSMLayers
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

/// The all-position objective trains exactly the official protocol's (context → target) pairs,
/// with one pass per window, and gives the same losses as the prefix instances.
final class AllPositionTests: XCTestCase {
  var folder: URL!

  override func setUpWithError() throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-allpos-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

  /// Users of 1 to 14 interactions over 15 items in a scrambled cycle.
  func split(maximumLength: Int?) throws -> SequentialSplit {
    var lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in 0..<24 {
      for t in 0..<(1 + u % 14) { lines.append("u\(u)\ti\((u * 7 + t * 4) % 15)\t\(t)") }
    }
    let url = folder.appendingPathComponent("users.inter")
    try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
    return SequentialSplit(try InteractionDataset(contentsOf: url), maximumLength: maximumLength)
  }

  func testWindowsTrainExactlyTheTrainingPairsEachOnce() throws {
    for maximumLength in [nil, 1, 3, 5, 50] as [Int?] {
      let s = try split(maximumLength: maximumLength)
      let windows = s.trainingWindows(maximumLength: maximumLength)
      XCTAssertEqual(windows.reduce(0) { $0 + $1.targets.count }, s.train.count, "every training target once")
      var byUser: [Int32: [Int32]] = [:]
      for w in windows {
        XCTAssertLessThanOrEqual(w.items.count, maximumLength ?? .max)
        // Within a window, position p's target is the item at p + 1.
        XCTAssertEqual(Array(w.items.dropFirst()), Array(w.targets.dropLast()))
        byUser[w.user, default: []] += w.targets
      }
      var expected: [Int32: [Int32]] = [:]
      for instance in s.train { expected[instance.user, default: []].append(instance.target) }
      XCTAssertEqual(byUser, expected, "maximumLength \(String(describing: maximumLength))")
      // Against each user's whole sequence (its test history and target): the trained targets
      // are the items after the first and before the held-out ones, so neither the validation
      // nor the test item is ever a training target.
      let whole = try split(maximumLength: nil)
      let validated = Set(whole.validation.map(\.user))
      for test in whole.test {
        let sequence = test.history + [test.target]
        let heldOut = validated.contains(test.user) ? 2 : 1
        XCTAssertEqual(byUser[test.user] ?? [], Array(sequence[1..<(sequence.count - heldOut)]), "user \(test.user)")
      }
    }
  }

  /// Tiny models of the three causal kinds, dropout off.
  func causalModels(itemCount: Int) throws -> [any SequentialRecommender] {
    var m = Mamba4Rec.Configuration(itemCount: itemCount)
    (m.hiddenSize, m.stateSize, m.innerSize, m.dropout, m.layers) = (8, 4, 16, 0, 2)
    var s = SASRec.Configuration(itemCount: itemCount)
    (s.hiddenSize, s.innerSize, s.maximumLength, s.hiddenDropout, s.attentionDropout) = (8, 16, 20, 0, 0)
    var g = GRU4Rec.Configuration(itemCount: itemCount)
    (g.embeddingSize, g.hiddenSize, g.dropout) = (8, 12, 0)
    return [
      try Mamba4Rec(configuration: m, seed: 3), try SASRec(configuration: s, seed: 4), try GRU4Rec(configuration: g, seed: 5),
    ]
  }

  func testPerPositionLossesEqualTheLastPositionLossesOfTheSamePairs() throws {
    let s = try split(maximumLength: nil)
    let windows = s.trainingWindows(maximumLength: nil)
    let allBatch = try SequenceBatch(windows: windows)
    let prefixBatch = try SequenceBatch(
      histories: s.train.map { $0.history.map(Int.init) }, targets: s.train.map { Int($0.target) })
    for model in try causalModels(itemCount: s.itemCount) {
      XCTAssertTrue(model.isCausal)
      var context = ForwardContext.evaluation
      let all = withoutGradients { model.loss(allBatch, context: &context).value.scalar }
      let prefixes = withoutGradients { model.loss(prefixBatch, context: &context).value.scalar }
      assertClose([Double(all)], [Double(prefixes)], rtol: 1e-5, atol: 1e-6, "\(type(of: model).kind)")
      // Position by position: each window's state at p is the encoding of its first p + 1 items.
      let states = withoutGradients { model.positionStates(allBatch, context: &context)!.value }
      let (l, d) = (states.shape[1], states.shape[2])
      let values = states.doubles
      var flat: [Double] = []
      var histories: [[Int]] = []
      for (row, w) in windows.enumerated() {
        for p in w.items.indices {
          let start: Int = (row * l + p) * d
          flat += values[start..<(start + d)]
          histories.append(w.items[0...p].map(Int.init))
        }
      }
      let encoded = withoutGradients { model.encode(try! SequenceBatch(histories: histories), context: &context).value }
      assertClose(encoded, expected: flat, shape: [histories.count, d], rtol: 1e-5, atol: 1e-5, "\(type(of: model).kind)")
    }
  }

  func testTrainingWithTheAllPositionObjective() throws {
    let s = try split(maximumLength: 5)
    var settings = TrainingConfiguration()
    (settings.epochs, settings.batchSize, settings.learningRate, settings.maximumLength) = (4, 40, 0.01, 5)
    settings.objective = .allPositions
    for model in try causalModels(itemCount: s.itemCount) {
      var records: [EpochRecord] = []
      let result = try train(model, s, settings) { records.append($0) }
      XCTAssertLessThan(records.last!.trainLoss, records.first!.trainLoss, "\(type(of: model).kind) learns")
      XCTAssertTrue(result.test["ndcg@10"]!.isFinite)
    }
    // A model that is not causal cannot take the objective.
    var c = SIGMA.Configuration(itemCount: s.itemCount)
    (c.hiddenSize, c.innerSize, c.stateSize) = (8, 16, 4)
    XCTAssertThrowsError(try Trainer(model: try SIGMA(configuration: c), split: s, configuration: settings)) {
      XCTAssertEqual($0 as? TrainingError, .objectiveNeedsCausalModel("sigma"))
    }
  }

  func train<M: SequentialRecommender>(
    _ model: M, _ s: SequentialSplit, _ settings: TrainingConfiguration, progress: (EpochRecord) -> Void
  ) throws -> TrainingResult {
    try Trainer(model: model, split: s, configuration: settings).fit(progress: progress)
  }

  func testWindowBatchesStayWithinTheirTargetBudget() throws {
    let windows = try split(maximumLength: 4).trainingWindows(maximumLength: 4)
    let batches = WindowBatchSequence(windows, targetsPerBatch: 9, shuffleSeed: 1)
    XCTAssertEqual(batches.batches.flatMap { $0 }.sorted(), Array(windows.indices))
    for (batch, indices) in zip(batches, batches.batches) {
      XCTAssertLessThanOrEqual(indices.reduce(0) { $0 + windows[$1].targets.count }, 9)
      XCTAssertEqual(batch.positionTargets!.values.filter { $0 != 0 }.count, indices.reduce(0) { $0 + windows[$1].targets.count })
    }
  }
}
