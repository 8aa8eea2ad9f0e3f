import SSMAutograd
import SSMLayers
import SSMTensor

/// How a model's answer follows a history that grows by one event (Docs/Models.md §12).
public enum StreamingUpdate: String, Sendable, Codable, CustomStringConvertible {
  /// A constant-size state updated in O(1) per event (a recurrence: Mamba4Rec, GRU4Rec); it can
  /// also carry on past the training window (``StreamingWindow/unbounded``).
  case recurrent
  /// A cache that grows by one row per event (a Transformer's keys and values: SASRec), so an
  /// event costs time proportional to the history; bounded by the model's positions.
  case keyValueCache
  /// No incremental state: every answer encodes the (windowed) history again, as a
  /// bidirectional model must (SIGMA, SSD4Rec), and as any model that declares no state does.
  case reencode

  /// `recurrent`, `key-value cache` or `re-encode`.
  public var description: String {
    switch self {
    case .recurrent: return "recurrent"
    case .keyValueCache: return "key-value cache"
    case .reencode: return "re-encode"
    }
  }
}

/// What a stream answers once a history is longer than the training window.
public enum StreamingWindow: String, Sendable, Codable, CaseIterable {
  /// Exactly what evaluation computes: the representation of the most recent
  /// `maximumLength` items. Incremental up to the window; past it every event encodes the
  /// window again (a recurrence cannot forget its oldest item).
  case exact
  /// The recurrent state carries on past the window, so every event stays O(1) and the answer
  /// depends on the whole history (only for ``StreamingUpdate/recurrent`` models).
  case unbounded
}

/// Why a stream refused a request.
public enum StreamingError: Error, Equatable, CustomStringConvertible {
  /// An item id outside `1..<itemCount` (0 is the padding id).
  case invalidItem(Int, itemCount: Int)
  /// The unbounded window needs a recurrent state, which this model does not have.
  case unboundedNeedsRecurrentState(model: String, update: StreamingUpdate)
  /// A recommendation for a history without items.
  case emptyHistory

  /// One line, for command-line and server errors.
  public var description: String {
    switch self {
    case .invalidItem(let item, let count): return "item id \(item) is outside 1..<\(count)"
    case .unboundedNeedsRecurrentState(let model, let update):
      return "\(model) streams by \(update), so it cannot carry a history past its window (unbounded needs a recurrent state)"
    case .emptyHistory: return "the history has no items"
    }
  }
}

/// The stream state of a model that declares none: the most recent items, encoded again on
/// every request under the batching policy the stream was made with.
public struct ReencodedHistory: Sendable, Equatable {
  /// How the items are batched (the checkpoint's policy: SIGMA's fixed window, for instance).
  public let batching: BatchingPolicy
  /// The most recent items, oldest first: at most twice the policy's maximum length (trimmed
  /// in bulk so that appending stays O(1) amortised).
  public private(set) var items: [Int] = []

  /// An empty history batched by `batching`.
  public init(batching: BatchingPolicy) { self.batching = batching }

  /// Adds the newest item.
  public mutating func append(_ item: Int) {
    items.append(item)
    if let n = batching.maximumLength, items.count > 2 * n { items.removeFirst(items.count - n) }
  }
}

extension SequentialRecommender where StreamState == ReencodedHistory {
  /// Every answer encodes the history again.
  public var streamingUpdate: StreamingUpdate { .reencode }

  /// An empty ``ReencodedHistory``.
  public func makeStreamState(batching: BatchingPolicy) -> ReencodedHistory { ReencodedHistory(batching: batching) }

  /// Keeps the item for the next encoding.
  public func append(_ item: Int, to state: inout ReencodedHistory) { state.append(item) }

  /// ``encodeHistory(_:batching:)`` of the kept items.
  public func representation(of state: ReencodedHistory) -> [Float] {
    encodeHistory(state.items, batching: state.batching)
  }
}

extension SequentialRecommender {
  /// The representation `[D]` of one history (valid ids, oldest first) batched by `batching`, in
  /// evaluation mode: the row ``encode(_:context:)`` gives it in a batch of its own.
  public func encodeHistory(_ items: [Int], batching: BatchingPolicy) -> [Float] {
    precondition(!items.isEmpty, "encodeHistory: an empty history")
    let batch: SequenceBatch
    do { batch = try batching.batch([items]) } catch { preconditionFailure("encodeHistory: \(error)") }
    return withoutGradients {
      var context = ForwardContext.evaluation
      return encode(batch, context: &context).value.scalars
    }
  }

  /// The `k` best items for each representation (rows of `representations`, `[B, D]`), scored by
  /// ``scores(representations:items:)`` a block of `itemsPerBlock` items at a time and merged
  /// (`TopKAccumulator`): the padding id never, and `excluding[b]` never for row `b`. Ties go to
  /// the lower id.
  public func topItems(
    for representations: Tensor, k: Int, excluding: [Set<Int>]? = nil, itemsPerBlock: Int = 16_384
  ) -> [[ScoredItem]] {
    let b = representations.shape[0]
    let skip = (excluding ?? Array(repeating: [], count: b)).map { $0.union([0]) }
    // No more than the catalogue holds, whatever k asks.
    var top = TopKAccumulator(rows: b, k: Swift.min(k, itemCount), excluding: skip)
    if k > 0 {
      for start in stride(from: 0, to: itemCount, by: Swift.max(1, itemsPerBlock)) {
        let items = start..<Swift.min(itemCount, start + Swift.max(1, itemsPerBlock))
        top.offer(scores(representations: representations, items: items), startingAt: start)
      }
    }
    return top.results().map { row in row.map { ScoredItem(item: $0.index, score: $0.value) } }
  }
}

/// An item and its score.
public struct ScoredItem: Sendable, Equatable, Codable {
  /// The item id.
  public var item: Int
  /// Its score, the dot product of the history's representation with the item's embedding.
  public var score: Float

  /// An item and its score.
  public init(item: Int, score: Float) { (self.item, self.score) = (item, score) }
}

/// One history that grows by one event at a time, with the model's answer kept current: for a
/// recurrent model each event costs O(1) whatever the history's length (Docs/Models.md §12).
///
///     var stream = try HistoryStream(model: model, batching: contents.batching(for: model))
///     try stream.append(contentsOf: [17, 4])
///     let top = try stream.recommend(k: 10, excludingSeen: true)
///
/// Within the training window the representation equals ``SequentialRecommender/encode(_:context:)``
/// of the history (the tests hold it to 1e-5 for every causal model); past it,
/// ``StreamingWindow`` chooses between the windowed answer and the unbounded recurrence.
///
/// A stream reads the model's parameters; it must not be used while the model trains.
public struct HistoryStream {
  /// The model whose state this is.
  public let model: any SequentialRecommender
  /// How histories are batched: the training window (a checkpoint's ``Checkpoint/Contents/batching``).
  public let batching: BatchingPolicy
  /// What the stream answers past the window.
  public let window: StreamingWindow
  /// The number of items appended.
  public private(set) var count = 0
  /// Every item appended, for excluding them from recommendations.
  public private(set) var seen: Set<Int> = []
  /// The most recent items (up to twice the window), to encode the window again once the
  /// history has outgrown it.
  private var recent: [Int] = []
  /// The model's state: the model's own `StreamState`, erased.
  private var state: any Sendable
  /// The windowed representation, once an exact stream is past its window.
  private var windowed: [Float]?

  /// An empty history of `model`, batched by `batching` (cut to the model's own longest window
  /// when `batching` asks for more, as SASRec's position table requires).
  /// - Throws: ``StreamingError/unboundedNeedsRecurrentState(model:update:)`` for an unbounded
  ///   window on a model without a recurrent state; `ConfigurationError` for an invalid policy.
  public init(model: any SequentialRecommender, batching: BatchingPolicy, window: StreamingWindow = .exact) throws {
    try batching.validate()
    if window == .unbounded && model.streamingUpdate != .recurrent {
      throw StreamingError.unboundedNeedsRecurrentState(model: type(of: model).kind, update: model.streamingUpdate)
    }
    // Never a longer window than the model can take (SASRec's position table).
    var policy = batching
    let bounded = model.batching(maximumLength: batching.maximumLength)
    if let limit = bounded.maximumLength, batching.maximumLength.map({ $0 > limit }) ?? true { policy = bounded }
    (self.model, self.batching, self.window) = (model, policy, window)
    state = model.makeStreamState(batching: policy)
  }

  /// Whether the history is longer than the window and the answer is the window's, encoded again.
  private var pastWindow: Bool {
    guard window == .exact, model.streamingUpdate != .reencode, let n = batching.maximumLength else { return false }
    return count > n
  }

  /// Appends one event. - Throws: ``StreamingError/invalidItem(_:itemCount:)``; nothing changes.
  public mutating func append(_ item: Int) throws { try append(contentsOf: [item]) }

  /// Appends events, oldest first; past the window the window is encoded once, after the last.
  /// - Throws: ``StreamingError/invalidItem(_:itemCount:)`` before anything changes.
  public mutating func append(contentsOf items: [Int]) throws {
    let itemCount = model.itemCount
    if let bad = items.first(where: { $0 < 1 || $0 >= itemCount }) {
      throw StreamingError.invalidItem(bad, itemCount: itemCount)
    }
    for item in items {
      count += 1
      seen.insert(item)
      if let n = batching.maximumLength, window == .exact {
        recent.append(item)
        if recent.count > 2 * n { recent.removeFirst(recent.count - n) }
      }
      // Past an exact window the state is no longer read: the window is encoded instead.
      if !pastWindow { Self.advance(model, &state, item) }
    }
    if pastWindow, !items.isEmpty {
      windowed = model.encodeHistory(Array(recent.suffix(batching.maximumLength!)), batching: batching)
    }
  }

  private static func advance<Model: SequentialRecommender>(_ model: Model, _ state: inout any Sendable, _ item: Int) {
    var typed = state as! Model.StreamState
    // Release the erased copy first, so the model mutates a uniquely referenced state in place.
    state = 0
    model.append(item, to: &typed)
    state = typed
  }

  private static func represent<Model: SequentialRecommender>(_ model: Model, _ state: any Sendable) -> [Float] {
    model.representation(of: state as! Model.StreamState)
  }

  /// The history's representation `[D]`, or `nil` before the first event.
  public var representation: [Float]? {
    guard count > 0 else { return nil }
    if pastWindow, let windowed { return windowed }
    return Self.represent(model, state)
  }

  /// The `k` best items for the history, best first (ties to the lower id), never the padding
  /// id, and with `excludingSeen` never an item already in the history.
  /// - Throws: ``StreamingError/emptyHistory`` before the first event.
  public func recommend(k: Int, excludingSeen: Bool = false) throws -> [ScoredItem] {
    guard let representation else { throw StreamingError.emptyHistory }
    let query = Tensor(shape: [1, representation.count], scalars: representation)
    return model.topItems(for: query, k: k, excluding: excludingSeen ? [seen] : nil)[0]
  }
}
