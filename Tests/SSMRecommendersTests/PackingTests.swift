import SSMAutograd
import SSMLayers
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

/// A model computing a batch packed (its histories end to end) gives what it gives padded.
final class PackingTests: XCTestCase {
  /// Histories of awkward lengths: one item, the full width, and lengths around the scan's
  /// channel blocks.
  func batches(itemCount: Int) throws -> [SequenceBatch] {
    var rng = SplitMix64(seed: 21)
    func history(_ n: Int) -> [Int] { (0..<n).map { _ in 1 + Int(rng.next() % UInt64(itemCount - 1)) } }
    let lengthSets = [[1], [1, 1, 1], [12, 1, 5, 12, 2], [3, 16, 1, 9, 16, 7, 1]]
    return try lengthSets.map { lengths in
      try SequenceBatch(
        histories: lengths.map(history), targets: lengths.map { _ in 1 + Int(rng.next() % UInt64(itemCount - 1)) })
    }
  }

  func assertPackedEqualsPadded(_ model: some SequentialRecommender, file: StaticString = #filePath, line: UInt = #line) throws {
    for var batch in try batches(itemCount: model.itemCount) {
      var results: [(encoded: Tensor, loss: Tensor, gradients: [String: Tensor])] = []
      for packed in [false, true] {
        batch.isPacked = packed
        model.zeroGradients()
        var context = ForwardContext.training(seed: 1)
        let encoded = model.encode(batch, context: &context).value
        let loss = model.loss(batch, context: &context)
        loss.backward()
        var gradients: [String: Tensor] = [:]
        for (path, p) in model.namedParameters() { gradients[path] = p.gradient ?? Tensor(zeros: p.shape) }
        results.append((encoded, loss.value, gradients))
      }
      let (padded, packed) = (results[0], results[1])
      let lengths = "lengths \(batch.lengths)"
      assertClose(packed.encoded, padded.encoded, rtol: 1e-5, atol: 1e-6, "encode, \(lengths)", file: file, line: line)
      assertClose(packed.loss, padded.loss, rtol: 1e-5, atol: 1e-6, "loss, \(lengths)", file: file, line: line)
      for (path, g) in padded.gradients {
        assertClose(packed.gradients[path]!, g, rtol: 1e-5, atol: 1e-6, "∂\(path), \(lengths)", file: file, line: line)
      }
    }
  }

  func testMamba4RecPackedEqualsPadded() throws {
    for layers in [1, 2] {
      var c = Mamba4Rec.Configuration(itemCount: 30)
      // Dropout off: packed and padded batches draw their masks in different shapes.
      (c.hiddenSize, c.stateSize, c.innerSize, c.layers, c.dropout) = (8, 4, 16, layers, 0)
      try assertPackedEqualsPadded(try Mamba4Rec(configuration: c, seed: UInt64(layers)))
    }
  }

  func testGRU4RecPackedEqualsPadded() throws {
    for layers in [1, 2] {
      var c = GRU4Rec.Configuration(itemCount: 30)
      // Dropout off: packed and padded batches draw their masks in different shapes.
      (c.embeddingSize, c.hiddenSize, c.layers, c.dropout) = (8, 12, layers, 0)
      let model = try GRU4Rec(configuration: c, seed: UInt64(layers))
      XCTAssertEqual(model.batching(maximumLength: 50), .packed(upTo: 50))
      try assertPackedEqualsPadded(model)
    }
  }

  func testSASRecPackedEqualsPadded() throws {
    for (layers, heads) in [(1, 1), (2, 2)] {
      var c = SASRec.Configuration(itemCount: 30)
      // Dropout off: packed and padded batches draw their masks in different shapes.
      (c.hiddenSize, c.innerSize, c.layers, c.heads, c.maximumLength) = (8, 12, layers, heads, 16)
      (c.hiddenDropout, c.attentionDropout) = (0, 0)
      let model = try SASRec(configuration: c, seed: UInt64(layers))
      XCTAssertEqual(model.batching(maximumLength: 50), .packed(upTo: 16))
      try assertPackedEqualsPadded(model)
    }
  }

  /// Every token has one slot, in a bucket of histories within a factor of two of its widest,
  /// and a slot holds the token placed there.
  func testPackedAttentionLayoutCoversEveryTokenOnce() {
    let lengths = [12, 1, 5, 12, 2, 7, 6, 1, 3]
    for budget in [1, 16, 16_384] {
      let layout = PackedAttentionLayout(lengths: lengths, slotsPerBucket: budget)
      XCTAssertEqual(layout.tokenCount, lengths.reduce(0, +))
      var slots = [Int32]()
      for bucket in layout.buckets {
        XCTAssertTrue(bucket.count == 1 || bucket.count * bucket.width <= budget, "budget \(budget)")
        slots += bucket.slots.values
      }
      XCTAssertEqual(layout.buckets.map(\.count).reduce(0, +), lengths.count)
      XCTAssertEqual(Set(layout.tokenSlots.values).count, layout.tokenCount, "budget \(budget)")
      for (token, slot) in layout.tokenSlots.values.enumerated() { XCTAssertEqual(Int(slots[Int(slot)]), token) }
    }
    XCTAssertEqual(PackedAttentionLayout(lengths: lengths).buckets.map(\.width), [12, 6, 3, 1])
  }

  /// SIGMA with the paper's flip: a packed batch gives each history what a batch of its own
  /// gives (its FE-GRU convolution reads zeros past the history's end, where a padded batch's
  /// shorter rows read the padding's normalised embedding), outputs, the mean loss and every
  /// gradient.
  func testSIGMAPaperFlipPackedEqualsEachHistoryAlone() throws {
    for layers in [1, 2] {
      var c = SIGMA.Configuration(itemCount: 30)
      (c.hiddenSize, c.innerSize, c.stateSize, c.layers, c.flip) = (8, 16, 4, layers, .keepingLast(keep: 2))
      (c.dropout, c.gateDropout) = (0, 0)
      let model = try SIGMA(configuration: c, seed: UInt64(layers))
      XCTAssertEqual(model.batching(maximumLength: 50), .packed(upTo: 50))
      func run(_ batch: SequenceBatch) -> (encoded: [Float], loss: Float, gradients: [String: Tensor]) {
        model.zeroGradients()
        var context = ForwardContext.training(seed: 1)
        let encoded = model.encode(batch, context: &context).value.scalars
        let loss = model.loss(batch, context: &context)
        loss.backward()
        var gradients: [String: Tensor] = [:]
        for (path, p) in model.namedParameters() { gradients[path] = p.gradient ?? Tensor(zeros: p.shape) }
        return (encoded, loss.value.scalars[0], gradients)
      }
      for var batch in try batches(itemCount: model.itemCount) {
        batch.isPacked = true
        let packed = run(batch)
        var (encoded, loss, gradients) = ([Float](), Float(0), [String: Tensor]())
        for b in 0..<batch.count {
          let history = (0..<batch.lengths[b]).map { Int(batch.items.values[b * batch.width + $0]) }
          let alone = run(try SequenceBatch(histories: [history], targets: [Int(batch.targets!.values[b])]))
          encoded += alone.encoded
          loss += alone.loss / Float(batch.count)
          for (path, g) in alone.gradients {
            gradients[path] = (gradients[path] ?? Tensor(zeros: g.shape)) + g / Float(batch.count)
          }
        }
        let lengths = "layers \(layers), lengths \(batch.lengths)"
        assertClose(
          Tensor(shape: [encoded.count], scalars: packed.encoded), Tensor(shape: [encoded.count], scalars: encoded),
          rtol: 1e-5, atol: 1e-6, "encode, \(lengths)")
        assertClose(Tensor(packed.loss), Tensor(loss), rtol: 1e-5, atol: 1e-6, "loss, \(lengths)")
        for (path, g) in gradients { assertClose(packed.gradients[path]!, g, rtol: 1e-5, atol: 1e-6, "∂\(path), \(lengths)") }
      }
    }
  }

  /// PyTorch's packed-sequence order: all first items longest history first, then all second
  /// items, …
  func testTimeMajorPackingOrder() {
    let packing = TimeMajorPacking(lengths: [2, 3, 1])
    XCTAssertEqual(packing.stepSizes, [3, 2, 1])
    XCTAssertEqual(packing.stepStarts, [0, 3, 5])
    XCTAssertEqual(packing.tokenCount, 6)
    XCTAssertEqual(
      packing.packed(["a0", "a1", "-", "b0", "b1", "b2", "c0", "-", "-"], width: 3), ["b0", "a0", "c0", "b1", "a1", "b2"])
    XCTAssertEqual(packing.token(row: 0, step: 1), 4)
    XCTAssertEqual(packing.token(row: 2, step: 0), 2)
  }

  /// The policy declares packing and its batches carry it; checkpoints keep the policy.
  func testMamba4RecDeclaresPackedBatches() throws {
    let model = try Mamba4Rec(configuration: .init(itemCount: 10))
    let policy = model.batching(maximumLength: 50)
    XCTAssertEqual(policy, .packed(upTo: 50))
    XCTAssertTrue(try policy.batch([[1, 2], [3]]).isPacked)
    XCTAssertFalse(try BatchingPolicy.upTo(50).batch([[1, 2], [3]]).isPacked)
    let decoded = try JSONDecoder().decode(BatchingPolicy.self, from: try JSONEncoder().encode(policy))
    XCTAssertEqual(decoded, policy)
  }
}
