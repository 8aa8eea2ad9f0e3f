import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// Full-ranking evaluation (Docs/Models.md §7.6): every item id is scored, the padding id 0 excluded,
/// history items not masked, and metrics come from each target's rank under the deterministic
/// tie rule of `FullRanking`. Scores are computed a batch at a time and never sorted.
public struct Evaluator: Sendable {
  /// The metrics to compute, each at every cut-off.
  public var metrics: [RankingMetric]
  /// The cut-offs K; results are keyed `metric@K`, such as `ndcg@10`.
  public var cutoffs: [Int]
  /// Instances scored at a time; bounds the `[B, V]` score matrix held in memory.
  public var batchSize: Int
  /// How histories are batched: the policy the model was trained with (a checkpoint's
  /// ``Checkpoint/Contents/batching``); `nil` takes the model's policy without a maximum length.
  public var batching: BatchingPolicy?
  /// Items scored at a time: with `batchSize`, bounds the scores held in memory
  /// (`batchSize × itemsPerBlock` floats) for a catalogue of any size. Does not change a metric.
  public var itemsPerBlock: Int = 65_536

  /// An evaluator; the defaults report HR, NDCG and MRR at 10, scoring 256 instances at a time.
  public init(
    metrics: [RankingMetric] = [.hit, .ndcg, .mrr], cutoffs: [Int] = [10], batchSize: Int = 256, batching: BatchingPolicy? = nil
  ) {
    (self.metrics, self.cutoffs, self.batchSize, self.batching) = (metrics, cutoffs, batchSize, batching)
  }

  /// Metrics of `model` on `instances`.
  public func evaluate(_ model: some SequentialRecommender, on instances: [SequenceInstance]) -> MetricAccumulator {
    var accumulator = MetricAccumulator(metrics: metrics, cutoffs: cutoffs)
    for batch in BatchSequence(instances, batchSize: batchSize, batching: batching ?? model.batching(maximumLength: nil)) {
      let ranks = self.ranks(model, model.representations(batch), targets: batch.targets!)
      for (rank, length) in zip(ranks, batch.lengths) { accumulator.add(rank: rank, historyLength: length) }
    }
    return accumulator
  }

  /// The targets' ranks, the items scored ``itemsPerBlock`` at a time.
  func ranks(_ model: some SequentialRecommender, _ representations: Tensor, targets: IndexTensor) -> [Int] {
    FullRanking.ranks(targets: targets, itemCount: model.itemCount, itemsPerBlock: Swift.max(1, itemsPerBlock)) {
      model.scores(representations: representations, items: $0)
    }
  }
}

extension Evaluator {
  /// Metrics of `model` on `instances` when each history arrives one event at a time through a
  /// ``HistoryStream`` with `window` (``batching`` is the stream's policy): with
  /// ``StreamingWindow/exact`` the same ranks as ``evaluate(_:on:)``; with
  /// ``StreamingWindow/unbounded`` those of the recurrence carried over the whole history (give
  /// instances whose histories are not cut, a split without a maximum length). Results are
  /// grouped by each history's whole length.
  /// - Throws: ``StreamingError`` for a window the model cannot stream or an invalid item.
  public func evaluateStreaming(
    _ model: any SequentialRecommender, on instances: [SequenceInstance], window: StreamingWindow
  ) throws -> MetricAccumulator {
    let policy = batching ?? model.batching(maximumLength: nil)
    var accumulator = MetricAccumulator(metrics: metrics, cutoffs: cutoffs)
    for start in stride(from: 0, to: instances.count, by: Swift.max(1, batchSize)) {
      let chunk = instances[start..<Swift.min(instances.count, start + Swift.max(1, batchSize))]
      var representations: [Float] = []
      for instance in chunk {
        var stream = try HistoryStream(model: model, batching: policy, window: window)
        try stream.append(contentsOf: instance.history.map(Int.init))
        guard let representation = stream.representation else { throw StreamingError.emptyHistory }
        representations += representation
      }
      let queries = Tensor(shape: [chunk.count, representations.count / chunk.count], scalars: representations)
      let ranks = self.ranks(model, queries, targets: IndexTensor(shape: [chunk.count], values: chunk.map(\.target)))
      for (rank, instance) in zip(ranks, chunk) { accumulator.add(rank: rank, historyLength: instance.history.count) }
    }
    return accumulator
  }
}

extension SequentialRecommender {
  /// The `k` best item ids for each history, best first: the padding id never, `excluding[b]`
  /// never for row `b` (a user's seen items), ties to the lower id. Scores a block of items at a
  /// time (``topItems(for:k:excluding:itemsPerBlock:)``), so a large catalogue's `[B, V]` scores
  /// are never held at once.
  public func recommend(_ batch: SequenceBatch, k: Int, excluding: [Set<Int>]? = nil) -> [[Int]] {
    topItems(for: representations(batch), k: k, excluding: excluding).map { $0.map(\.item) }
  }
}
