import SSMAutograd
import SSMLayers
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

/// A history followed one event at a time gives what encoding it whole gives (Docs/Models.md §12).
final class StreamingTests: XCTestCase {
  let itemCount = 37
  let window = 7

  /// Small causal models with their dropout on (streams compute in evaluation mode regardless):
  /// Mamba4Rec with one and two layers (the residual), a two-layer GRU4Rec with biases off, and
  /// SASRec whose position table is exactly the window.
  func causalModels() throws -> [any SequentialRecommender] {
    var mamba = Mamba4Rec.Configuration(itemCount: itemCount)
    (mamba.hiddenSize, mamba.stateSize, mamba.innerSize) = (8, 4, 16)
    var mamba2 = mamba
    (mamba2.layers, mamba2.convolutionWidth) = (2, 3)
    var gru = GRU4Rec.Configuration(itemCount: itemCount)
    (gru.embeddingSize, gru.hiddenSize, gru.layers) = (8, 12, 2)
    var sasrec = SASRec.Configuration(itemCount: itemCount)
    (sasrec.hiddenSize, sasrec.innerSize, sasrec.maximumLength, sasrec.heads) = (8, 16, window, 2)
    return [
      try Mamba4Rec(configuration: mamba, seed: 11), try Mamba4Rec(configuration: mamba2, seed: 12),
      try GRU4Rec(configuration: gru, seed: 13), try SASRec(configuration: sasrec, seed: 14),
    ]
  }

  /// A history of 2·L items (repeats included).
  func history(seed: UInt64) -> [Int] {
    var rng = SplitMix64(seed: seed)
    return (0..<(2 * window)).map { _ in 1 + Int(rng.next() % UInt64(itemCount - 1)) }
  }

  func assertSameRecommendations(
    _ stream: HistoryStream, _ model: any SequentialRecommender, _ items: [Int], batching: BatchingPolicy,
    _ message: String, file: StaticString = #filePath, line: UInt = #line
  ) throws {
    let streamed = try stream.recommend(k: 10).map(\.item)
    let encoded = model.recommend(try batching.batch([items]), k: 10)[0]
    XCTAssertEqual(streamed, encoded, message, file: file, line: line)
    let unseen = try stream.recommend(k: 10, excludingSeen: true).map(\.item)
    XCTAssertTrue(Set(unseen).isDisjoint(with: items), message, file: file, line: line)
    XCTAssertEqual(unseen.count, 10, message, file: file, line: line)
  }

  func testExactStreamEqualsEncodingTheWindowAtEveryLength() throws {
    for model in try causalModels() {
      let batching = model.batching(maximumLength: window)
      XCTAssertNotEqual(model.streamingUpdate, .reencode, "\(type(of: model).kind)")
      let items = history(seed: 7)
      var stream = try HistoryStream(model: model, batching: batching)
      XCTAssertNil(stream.representation)
      for length in 1...items.count {
        try stream.append(items[length - 1])
        let prefix = Array(items[..<length])
        let expected = model.encodeHistory(prefix, batching: batching)
        let message = "\(type(of: model).kind) \(model.parameterCount) at length \(length)"
        assertClose(
          Tensor(stream.representation!), Tensor(expected), rtol: 1e-5, atol: 1e-5, message)
        try assertSameRecommendations(stream, model, prefix, batching: batching, message)
      }
      XCTAssertEqual(stream.count, items.count)
    }
  }

  func testUnboundedStreamEqualsEncodingTheWholeHistory() throws {
    for model in try causalModels() {
      let kind = type(of: model).kind
      guard model.streamingUpdate == .recurrent else {
        XCTAssertThrowsError(try HistoryStream(model: model, batching: .upTo(window), window: .unbounded)) {
          XCTAssertEqual(
            $0 as? StreamingError, .unboundedNeedsRecurrentState(model: kind, update: model.streamingUpdate))
        }
        continue
      }
      var stream = try HistoryStream(model: model, batching: .upTo(window), window: .unbounded)
      let items = history(seed: 8)
      for length in 1...items.count {
        try stream.append(items[length - 1])
        let expected = model.encodeHistory(Array(items[..<length]), batching: .wholeHistories)
        assertClose(Tensor(stream.representation!), Tensor(expected), rtol: 1e-5, atol: 1e-5, "\(kind) at \(length)")
        try assertSameRecommendations(stream, model, Array(items[..<length]), batching: .wholeHistories, "\(kind) \(length)")
      }
    }
  }

  /// Appending several events at once is appending them one by one.
  func testBulkAppendEqualsOneByOne() throws {
    for model in try causalModels() {
      let items = history(seed: 9)
      var one = try HistoryStream(model: model, batching: model.batching(maximumLength: window))
      var bulk = one
      for item in items { try one.append(item) }
      try bulk.append(contentsOf: Array(items[..<3]))
      try bulk.append(contentsOf: Array(items[3...]))
      XCTAssertEqual(one.representation, bulk.representation, "\(type(of: model).kind)")
      XCTAssertEqual(one.seen, Set(items))
    }
  }

  /// SIGMA and SSD4Rec read the window at once: their streams encode it again, under the
  /// checkpoint's policy (SIGMA's fixed window).
  func testBidirectionalModelsReencodeUnderTheirPolicy() throws {
    var sigma = SIGMA.Configuration(itemCount: itemCount)
    (sigma.hiddenSize, sigma.stateSize, sigma.innerSize, sigma.flip) = (8, 4, 16, .prefix(count: 5))
    var ssd = SSD4Rec.Configuration(itemCount: itemCount)
    (ssd.hiddenSize, ssd.stateSize, ssd.headDimension, ssd.innerSize, ssd.layers, ssd.chunkSize) = (8, 4, 4, 16, 1, 4)
    let models: [any SequentialRecommender] = [
      try SIGMA(configuration: sigma, seed: 1), try SSD4Rec(configuration: ssd, seed: 2),
    ]
    for model in models {
      XCTAssertEqual(model.streamingUpdate, .reencode)
      let batching = model.batching(maximumLength: window)
      var stream = try HistoryStream(model: model, batching: batching)
      let items = history(seed: 10)
      for length in 1...items.count {
        try stream.append(items[length - 1])
        XCTAssertEqual(stream.representation, model.encodeHistory(Array(items[..<length]), batching: batching))
      }
    }
  }

  /// A policy longer than SASRec's position table is cut to it, and a k beyond the catalogue
  /// returns the whole catalogue instead of reserving k slots.
  func testStreamsStayWithinWhatTheModelTakes() throws {
    let sasrec = try causalModels()[3]
    var stream = try HistoryStream(model: sasrec, batching: .wholeHistories)
    XCTAssertEqual(stream.batching.maximumLength, window)
    let items = history(seed: 12)
    try stream.append(contentsOf: items)
    XCTAssertEqual(stream.representation, sasrec.encodeHistory(Array(items.suffix(window)), batching: .upTo(window)))
    let all = try stream.recommend(k: Int.max / 2)
    XCTAssertEqual(all.count, itemCount - 1)
    XCTAssertEqual(Set(all.map(\.item)), Set(1..<itemCount))
  }

  func testInvalidItemsAreRefusedAndChangeNothing() throws {
    let model = try causalModels()[0]
    var stream = try HistoryStream(model: model, batching: .upTo(window))
    try stream.append(contentsOf: [3, 4])
    let before = stream.representation
    for bad in [0, -1, itemCount, Int.max] {
      XCTAssertThrowsError(try stream.append(contentsOf: [5, bad])) {
        XCTAssertEqual($0 as? StreamingError, .invalidItem(bad, itemCount: itemCount))
      }
    }
    XCTAssertEqual(stream.count, 2)
    XCTAssertEqual(stream.representation, before)
    let empty = try HistoryStream(model: model, batching: .upTo(window))
    XCTAssertThrowsError(try empty.recommend(k: 3)) { XCTAssertEqual($0 as? StreamingError, .emptyHistory) }
  }

  /// The blocked top-K over products against the plain one: a full product and ``Tensor/topK(_:)``,
  /// exclusions applied by hand, at awkward sizes and block lengths, with ties.
  func testBlockedTopKEqualsTheFullProduct() {
    var rng = SplitMix64(seed: 5)
    for (b, d, v) in [(1, 1, 1), (3, 5, 17), (2, 8, 100), (4, 3, 1000)] {
      // Rounded values make ties common.
      let queries = Tensor(shape: [b, d], scalars: (0..<(b * d)).map { _ in Float(Int(rng.next() % 5)) - 2 })
      let table = Tensor(shape: [v, d], scalars: (0..<(v * d)).map { _ in Float(Int(rng.next() % 3)) - 1 })
      let excluded = (0..<b).map { r in Set((0..<v).filter { ($0 + r) % 3 == 0 }) }
      let scores = Tensor.matmul(queries, table, transposeB: true)
      for k in [0, 1, 5, v] {
        for block in [1, 7, 64, 100_000] {
          let blocked = Tensor.topKProducts(queries: queries, table: table, k: k, excluding: excluded, rowsPerBlock: block)
          for r in 0..<b {
            let allowed: [Int] = (0..<v).filter { !excluded[r].contains($0) }
            let ranked: [Int] = allowed.sorted { (i: Int, j: Int) -> Bool in
              let (si, sj) = (scores[r, i], scores[r, j])
              return si > sj || (si == sj && i < j)
            }
            let plain = Array(ranked.prefix(k))
            XCTAssertEqual(blocked[r].map { $0.index }, plain, "b \(b) d \(d) v \(v) k \(k) block \(block) row \(r)")
            XCTAssertEqual(blocked[r].map { $0.value }, plain.map { scores[r, $0] })
          }
          let unexcluded = Tensor.topKProducts(queries: queries, table: table, k: k, rowsPerBlock: block)
          let full = scores.topK(Swift.min(k, v))
          for r in 0..<b {
            let expected: [Int] = (0..<full.indices.shape[1]).map { full.indices[r, $0] }
            XCTAssertEqual(unexcluded[r].map { $0.index }, expected)
          }
        }
      }
    }
  }
}

extension Tensor {
  fileprivate init(_ values: [Float]) { self.init(shape: [values.count], scalars: values) }
}

/// A catalogue of a million items, scored a block at a time.
final class LargeCatalogueTests: XCTestCase {
  func testEvaluationAndTopKAtAMillionItemsEqualTheUnblockedOnes() throws {
    var configuration = GRU4Rec.Configuration(itemCount: 1_000_000)
    (configuration.embeddingSize, configuration.hiddenSize) = (4, 4)
    let model = try GRU4Rec(configuration: configuration, seed: 3)
    var rng = SplitMix64(seed: 4)
    let instances = (0..<6).map { u in
      SequenceInstance(
        user: Int32(u), history: (0..<(1 + u)).map { _ in Int32(1 + rng.next() % 999_999) },
        target: Int32(1 + rng.next() % 999_999))
    }
    var blocked = Evaluator(cutoffs: [10, 1000, 100_000])
    blocked.itemsPerBlock = 65_536
    var whole = blocked
    whole.itemsPerBlock = 1_000_000
    XCTAssertEqual(blocked.evaluate(model, on: instances).results, whole.evaluate(model, on: instances).results)
    let batch = try SequenceBatch(histories: instances.map { $0.history.map(Int.init) })
    let representations = model.representations(batch)
    let top = model.topItems(for: representations, k: 20, itemsPerBlock: 100_000)
    let single = model.topItems(for: representations, k: 20, itemsPerBlock: 1_000_000)
    XCTAssertEqual(top, single)
    XCTAssertEqual(top.map(\.count), Array(repeating: 20, count: 6))
  }
}
