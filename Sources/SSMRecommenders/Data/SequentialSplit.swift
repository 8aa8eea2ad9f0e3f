import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// One next-item prediction instance: a history (oldest first) and the item that followed it.
public struct SequenceInstance: Sendable, Equatable {
  /// The (remapped) id of the user whose sequence the instance comes from.
  public var user: Int32
  /// The items before the target, oldest first; never empty in a split, and truncated to the most
  /// recent `maximumLength` items when the split has one.
  public var history: [Int32]
  /// The item to predict: the interaction that followed `history`.
  public var target: Int32

  /// An instance of `user`: `history` (oldest first; batching needs at least one item), then
  /// `target`.
  public init(user: Int32, history: [Int32], target: Int32) {
    (self.user, self.history, self.target) = (user, history, target)
  }
}

/// RecBole's sequential protocol (Docs/Models.md §7.3–§7.5): interactions sorted by (user, time) with ties
/// in file order, every prefix of a user's sequence an instance (history truncated to the most
/// recent `maximumLength` items, or not at all), and leave-one-out by time: each user's last
/// instance is the test instance, the one before the validation instance.
public struct SequentialSplit: Sendable {
  /// Training instances: every prefix of each user's sequence except those held out for validation
  /// and test.
  public var train: [SequenceInstance]
  /// Each user's second-to-last instance (users with at least four interactions); selects the best
  /// epoch and drives early stopping.
  public var validation: [SequenceInstance]
  /// Each user's last instance (users with at least three interactions), for the reported metrics.
  public var test: [SequenceInstance]
  /// Item ids including padding (`V`).
  public var itemCount: Int

  /// - Parameters:
  ///   - dataset: filtered, remapped interactions.
  ///   - maximumLength: `MAX_ITEM_LIST_LENGTH`; `nil` keeps whole histories (SSD4Rec's `var_len`).
  public init(_ dataset: InteractionDataset, maximumLength: Int?) {
    precondition(maximumLength.map { $0 > 0 } ?? true, "maximumLength must be positive")
    itemCount = dataset.itemCount
    // Stable sort by (user, timestamp): equal keys keep file order.
    let order = dataset.users.indices.sorted { a, b in
      let (ua, ub) = (dataset.users[a], dataset.users[b])
      if ua != ub { return ua < ub }
      let (ta, tb) = (dataset.timestamps[a], dataset.timestamps[b])
      return ta != tb ? ta < tb : a < b
    }
    var train: [SequenceInstance] = []
    var validation: [SequenceInstance] = []
    var test: [SequenceInstance] = []
    var start = 0
    while start < order.count {
      let user = dataset.users[order[start]]
      var end = start
      while end < order.count && dataset.users[order[end]] == user { end += 1 }
      let sequence = order[start..<end].map { dataset.items[$0] }
      var instances: [SequenceInstance] = []
      for k in 1..<Swift.max(sequence.count, 1) {
        let from = maximumLength.map { Swift.max(0, k - $0) } ?? 0
        instances.append(SequenceInstance(user: user, history: Array(sequence[from..<k]), target: sequence[k]))
      }
      // RecBole's leave-one-out: min(2, count − 1) instances leave, the last to test.
      let leaving = Swift.min(2, Swift.max(instances.count - 1, 0))
      let kept = instances.count - leaving
      train += instances[0..<kept]
      if leaving == 2 { validation.append(instances[kept]) }
      if leaving >= 1 { test.append(instances[instances.count - 1]) }
      start = end
    }
    (self.train, self.validation, self.test) = (train, validation, test)
  }
}

/// Mini-batches of instances, right-padded with 0 to the longest history of the batch (or a
/// fixed width), in a seeded shuffled or in the given order.
public struct BatchSequence: Sequence, Sendable {
  /// The instances to batch, in the order given (`order` indexes into them).
  public let instances: [SequenceInstance]
  /// Instances per batch; the last batch may be smaller.
  public let batchSize: Int
  /// The visiting order as indices into `instances`: shuffled when a seed was given, else
  /// `0..<instances.count`.
  public let order: [Int]
  /// How each batch's histories are cut and padded.
  public let batching: BatchingPolicy

  /// - Parameters:
  ///   - instances: the instances to batch.
  ///   - batchSize: instances per batch (the last batch may be smaller).
  ///   - shuffleSeed: shuffles with SplitMix64 when given (a new seed per epoch gives a new order).
  ///   - batching: how histories are cut and padded (default: whole, to each batch's longest).
  public init(
    _ instances: [SequenceInstance], batchSize: Int, shuffleSeed: UInt64? = nil, batching: BatchingPolicy = .wholeHistories
  ) {
    precondition(batchSize > 0, "batchSize must be positive")
    self.instances = instances
    self.batchSize = batchSize
    self.batching = batching
    var order = Array(instances.indices)
    if let shuffleSeed {
      var rng = SplitMix64(seed: shuffleSeed)
      order.shuffle(using: &rng)
    }
    self.order = order
  }

  /// The number of batches (the last one may be partial).
  public var count: Int { (instances.count + batchSize - 1) / batchSize }

  /// Batches of up to ``batchSize`` instances in ``order``, with targets, cut and padded by
  /// ``batching``.
  public func makeIterator() -> AnyIterator<SequenceBatch> {
    var start = 0
    return AnyIterator {
      guard start < order.count else { return nil }
      let chosen = order[start..<Swift.min(start + batchSize, order.count)].map { instances[$0] }
      start += batchSize
      // Instances always have a history of at least one item, so a failure here is a bug in the
      // split, not bad input: trap instead of ending the epoch early.
      do {
        return try batching.batch(chosen.map { $0.history.map(Int.init) }, targets: chosen.map { Int($0.target) })
      } catch {
        preconditionFailure("BatchSequence: \(error)")
      }
    }
  }
}
