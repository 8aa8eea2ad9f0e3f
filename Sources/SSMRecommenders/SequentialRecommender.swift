import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// A batch of item histories, right-padded with id 0 (RecBole's layout, Docs/Models.md §7.4).
public struct SequenceBatch: Sendable {
  /// Histories, oldest first: row `b` holds `lengths[b]` items, then zeros. Shape `[B, L]`.
  public var items: IndexTensor
  /// The number of real items in each row, each in `1...L`.
  public var lengths: [Int]
  /// The next item of each history, shape `[B]`, when the batch is for training or evaluation.
  public var targets: IndexTensor?
  /// For the all-position objective, the item each position is trained to predict, shape
  /// `[B, L]`, 0 where a position trains nothing (padding); `nil` otherwise. A batch that has
  /// them trains every position of a causal model at once (``SequentialRecommender/positionStates(_:context:)``).
  public var positionTargets: IndexTensor?
  /// Negatives shared by the batch's rows, when the run trains a sampled loss
  /// (``CatalogueLoss``); `nil` trains the full softmax. The trainer draws them; the default
  /// ``SequentialRecommender/loss(_:context:)`` uses them.
  public var negatives: NegativeSample?
  /// Whether the model should compute the batch packed: its histories laid end to end with their
  /// boundaries, so that no work goes to padding (``BatchingPolicy/Padding/packed``). The
  /// layout in `items` is padded either way; a model that cannot pack ignores this.
  public var isPacked = false

  /// - Throws: ``SequenceBatchError`` if shapes disagree, a length is out of range, or an id
  ///   is negative.
  public init(items: IndexTensor, lengths: [Int], targets: IndexTensor? = nil) throws {
    guard items.shape.rank == 2 else { throw SequenceBatchError.shape("items must be [B, L], got \(items.shape)") }
    let (batch, width) = (items.shape[0], items.shape[1])
    guard lengths.count == batch else { throw SequenceBatchError.shape("\(lengths.count) lengths for \(batch) rows") }
    if let bad = lengths.first(where: { $0 < 1 || $0 > width }) {
      throw SequenceBatchError.emptyOrTooLong("length \(bad) is outside 1...\(width)")
    }
    if let targets, targets.shape != [batch] { throw SequenceBatchError.shape("targets \(targets.shape) must be [\(batch)]") }
    if items.values.contains(where: { $0 < 0 }) { throw SequenceBatchError.invalidItem("negative item id") }
    self.items = items
    self.lengths = lengths
    self.targets = targets
  }

  /// A batch from histories of different lengths, right-padded to `width` (default: the
  /// longest); histories longer than `width` keep their most recent items.
  public init(histories: [[Int]], targets: [Int]? = nil, width: Int? = nil) throws {
    let w = width ?? (histories.map(\.count).max() ?? 0)
    var values = [Int]()
    var lengths = [Int]()
    for h in histories {
      let kept = Array(h.suffix(w))
      lengths.append(kept.count)
      values += kept + Array(repeating: 0, count: w - kept.count)
    }
    try self.init(
      items: IndexTensor(shape: [histories.count, w], values: values), lengths: lengths, targets: targets.map { IndexTensor($0) })
  }

  /// A batch of all-position training windows, right-padded to the longest: row `b` holds
  /// `windows[b].items` and at each of their positions the item that followed.
  public init(windows: [TrainingWindow]) throws {
    let width = windows.map(\.items.count).max() ?? 0
    var targets = [Int32]()
    targets.reserveCapacity(windows.count * width)
    for w in windows { targets += w.targets + [Int32](repeating: 0, count: width - w.targets.count) }
    try self.init(histories: windows.map { $0.items.map(Int.init) }, width: width)
    if targets.contains(where: { $0 < 0 }) { throw SequenceBatchError.invalidItem("negative target id") }
    positionTargets = IndexTensor(shape: [windows.count, width], values: targets)
  }

  /// The number of sequences.
  public var count: Int { lengths.count }
  /// The padded width L.
  public var width: Int { items.shape[1] }
}

/// Why a batch is not valid.
public enum SequenceBatchError: Error, Equatable, CustomStringConvertible {
  /// `items` is not `[B, L]`, or `lengths` or `targets` do not have one entry per row.
  case shape(String)
  /// A length is outside `1...L`: an empty history, or one longer than the padded width.
  case emptyOrTooLong(String)
  /// An item id is negative.
  case invalidItem(String)

  /// The message after `invalid batch: `, one line for command-line errors.
  public var description: String {
    switch self {
    case .shape(let m), .emptyOrTooLong(let m), .invalidItem(let m): return "invalid batch: \(m)"
    }
  }
}

/// How histories are cut and padded into batches: a fact about a model that training,
/// evaluation, checkpoints and serving all need, declared by the model
/// (``SequentialRecommender/batching(maximumLength:)``) and stored in checkpoints.
public struct BatchingPolicy: Codable, Sendable, Equatable, CustomStringConvertible {
  /// Where a batch's padding ends.
  public enum Padding: String, Codable, Sendable {
    /// Every row padded to exactly `maximumLength` (SIGMA's official flip reads the padded window).
    case toWindow
    /// Rows padded to the longest history of the batch (padding changes nothing for the model).
    case toLongest
    /// As ``toLongest``, and the model computes the batch packed (``SequenceBatch/isPacked``):
    /// the histories end to end, each stateful operation restarting at every boundary, so the
    /// encoder's work is proportional to the batch's items, not to rows × longest. (The
    /// all-position objective's windows, batched by length, are computed padded.)
    case packed
  }

  /// The most recent items kept of each history; `nil` keeps whole histories.
  public var maximumLength: Int?
  /// Where the padding of a batch ends.
  public var padding: Padding

  /// Histories cut to their `length` most recent items and padded to exactly `length`.
  public static func fixedWindow(_ length: Int) -> BatchingPolicy { BatchingPolicy(maximumLength: length, padding: .toWindow) }
  /// Histories cut to at most `length` items and padded to the longest of each batch.
  public static func upTo(_ length: Int) -> BatchingPolicy { BatchingPolicy(maximumLength: length, padding: .toLongest) }
  /// Whole histories, padded to the longest of each batch (SSD4Rec's `var_len`).
  public static let wholeHistories = BatchingPolicy(maximumLength: nil, padding: .toLongest)
  /// Histories cut to at most `length` items (`nil`: whole), computed packed.
  public static func packed(upTo length: Int?) -> BatchingPolicy { BatchingPolicy(maximumLength: length, padding: .packed) }

  /// A policy; ``validate()`` checks it (a fixed window needs a length).
  public init(maximumLength: Int?, padding: Padding) {
    (self.maximumLength, self.padding) = (maximumLength, padding)
  }

  /// Throws `ConfigurationError.invalid` for a non-positive or huge length, or a window without one.
  public func validate() throws {
    if let maximumLength, !(1...ConfigurationLimits.length).contains(maximumLength) {
      throw ConfigurationError.invalid("maximum length \(maximumLength) is outside 1...\(ConfigurationLimits.length)")
    }
    if padding == .toWindow && maximumLength == nil { throw ConfigurationError.invalid("a fixed window needs a maximum length") }
  }

  /// The padded width of a batch whose (already cut) histories have these lengths.
  public func width(forLengths lengths: [Int]) -> Int {
    let longest = lengths.max() ?? 1
    switch padding {
    case .toWindow: return maximumLength ?? longest
    case .toLongest, .packed: return maximumLength.map { Swift.min($0, longest) } ?? longest
    }
  }

  /// A batch of `histories` (oldest first) under this policy.
  public func batch(_ histories: [[Int]], targets: [Int]? = nil) throws -> SequenceBatch {
    let kept = maximumLength.map { n in histories.map { Array($0.suffix(n)) } } ?? histories
    var batch = try SequenceBatch(histories: kept, targets: targets, width: width(forLengths: kept.map(\.count)))
    batch.isPacked = padding == .packed
    return batch
  }

  /// `window 50`, `up to 50`, `whole histories`, `packed up to 50` or `packed whole histories`.
  public var description: String {
    switch (padding, maximumLength) {
    case (.toWindow, let n?): return "window \(n)"
    case (.packed, let n?): return "packed up to \(n)"
    case (.packed, nil): return "packed whole histories"
    case (_, let n?): return "up to \(n)"
    case (_, nil): return "whole histories"
    }
  }
}

/// The small protocol every recommender implements — built-in or written by a user — to get
/// training, evaluation, checkpoints and top-K recommendation from SSMRec.
///
/// A model encodes each history into one vector; scores are that vector's dot products with
/// every item embedding (tied input/output embeddings, as all five reference models do), and
/// the default training loss is softmax cross-entropy over all items (Docs/Models.md §4.3).
///
///     final class MeanPooling: SequentialRecommender {
///       struct Configuration: Codable, Sendable { var itemCount = 100; var dimension = 32 }
///       static let kind = "mean-pooling"
///       let configuration: Configuration
///       let items: Embedding
///       var itemEmbedding: Parameter { items.weight }
///       init(configuration: Configuration, seed: UInt64) {
///         var rng = SplitMix64(seed: seed)
///         self.configuration = configuration
///         items = Embedding(count: configuration.itemCount, dimension: configuration.dimension, paddingIndex: 0, using: &rng)
///       }
///       func namedParameters() -> [(path: String, parameter: Parameter)] { prefixed("item_embedding", items.namedParameters()) }
///       func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
///         items(batch.items).mean(alongAxis: 1)
///       }
///     }
public protocol SequentialRecommender: Layer {
  /// The model's hyperparameters, stored with checkpoints.
  associatedtype Configuration: Codable & Sendable
  /// A short, stable name for the model kind (checkpoints record it).
  static var kind: String { get }
  /// The hyperparameters this model was built with.
  var configuration: Configuration { get }
  /// The item table, `[V, D]`, shared by the input lookup and the output scores.
  var itemEmbedding: Parameter { get }
  /// One vector per history, shape `[B, D]`.
  func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable
  /// Scores of every item id for each history, `[B, V]`, in evaluation mode and without
  /// recording a graph. The default is ``scores(representations:items:)`` of the batch's
  /// encoding over every item.
  func scores(_ batch: SequenceBatch) -> Tensor
  /// Scores of the items `items` for histories whose ``encode(_:context:)`` representations are
  /// the rows of `representations` (`[B, D]`), `[B, items.count]`, without recording a graph. The
  /// default is `representations · E[items]ᵀ`. Evaluation, recommendation and streams score a
  /// block of items at a time through this, so a catalogue of a million items never needs its
  /// `[B, V]` scores at once; a model that scores items another way overrides this (and it must
  /// give an item the same score whichever block it is in).
  func scores(representations: Tensor, items: Range<Int>) -> Tensor
  /// The training objective on a batch with targets, a scalar. The default is the mean softmax
  /// cross-entropy of `encode · Eᵀ` over all items; a model may train another objective. A
  /// causal model that overrides it must also handle batches with
  /// ``SequenceBatch/positionTargets`` (and `targets` `nil`) to train with the all-position
  /// objective.
  func loss(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable
  /// A training batch as the model wants to see it (SSD4Rec masks history items); evaluation
  /// never calls this. The default returns the batch unchanged.
  func prepareTrainingBatch(_ batch: SequenceBatch, using generator: inout SplitMix64) -> SequenceBatch
  /// Whether the model is causal: its representation at position `t` of a history depends on
  /// the items at positions `0…t` only, so one pass over a history gives the representations of
  /// all its prefixes (``positionStates(_:context:)``). Causal models can train with the
  /// all-position objective. The default is `false`.
  var isCausal: Bool { get }
  /// For a causal model, the representation at every position, `[B, L, D]`, where position `t`
  /// of row `b` is what ``encode(_:context:)`` returns for the history of its first `t + 1`
  /// items; `nil` for a model that is not causal (the default).
  func positionStates(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable?
  /// How this model's histories are cut and padded when the run asks for `maximumLength`
  /// (`nil`: no limit). The default keeps up to `maximumLength` items and pads to each batch's
  /// longest; SIGMA pads to its fixed window, SASRec never exceeds its position table.
  func batching(maximumLength: Int?) -> BatchingPolicy
  /// Checks a configuration read from a checkpoint against the shapes of the parameters stored
  /// with it, before the model is built, so that a corrupt configuration (a huge `itemCount`, say)
  /// is refused instead of allocated. The default accepts every configuration; the built-in
  /// models pin their item table (and SASRec its position table) to the stored one.
  /// - Throws: ``CheckpointError/invalidConfiguration(_:)`` naming the mismatch.
  static func checkConfiguration(_ configuration: Configuration, storedShapes: [String: Shape]) throws

  // MARK: Streaming (Docs/Models.md §12)

  /// What the model remembers of a history between events, for ``HistoryStream``. A causal
  /// model with a recurrence keeps a constant-size state (Mamba4Rec: each layer's convolution
  /// window and scan state); the default, ``ReencodedHistory``, keeps the recent items and
  /// encodes them again on every event.
  associatedtype StreamState: Sendable = ReencodedHistory
  /// How an event changes the model's answer: ``StreamingUpdate/recurrent`` for a constant-size
  /// state, ``StreamingUpdate/keyValueCache`` for one that grows with the history,
  /// ``StreamingUpdate/reencode`` (the default) for a model that reads the whole window at
  /// once (a bidirectional one, or one that provides no state).
  var streamingUpdate: StreamingUpdate { get }
  /// The state of an empty history whose batches follow `batching`.
  func makeStreamState(batching: BatchingPolicy) -> StreamState
  /// Adds the next item (a valid id, not 0) to a history's state.
  func append(_ item: Int, to state: inout StreamState)
  /// The history's representation, `[D]`: what ``encode(_:context:)`` returns for the items
  /// appended to `state` (for a state that is not ``StreamingUpdate/reencode``, all of them, even
  /// beyond the training window). Precondition: at least one item was appended.
  func representation(of state: StreamState) -> [Float]
}

extension SequentialRecommender {
  /// Accepts every configuration (a model that knows its parameter shapes may do better).
  public static func checkConfiguration(_ configuration: Configuration, storedShapes: [String: Shape]) throws {}

  /// Throws unless the checkpoint stores `name` with exactly `dimensions`; compares numbers only,
  /// so a corrupt configuration is caught before anything of its size exists.
  static func requireStoredShape(_ name: String, _ dimensions: [Int], in shapes: [String: Shape]) throws {
    guard let stored = shapes[name] else { throw CheckpointError.invalidConfiguration("the checkpoint stores no \(name)") }
    guard stored.dimensions == dimensions else {
      throw CheckpointError.invalidConfiguration(
        "the configuration implies \(name) of shape \(dimensions), the checkpoint stores \(stored)")
    }
  }

  /// Throws unless the checkpoint stores `probe` under `prefix.i` for every layer `i` below
  /// `count` and not for `count` itself: the stored layer count is the configuration's.
  static func requireStoredLayers(_ prefix: String, count: Int, probe: String, in shapes: [String: Shape]) throws {
    for i in 0...count where (shapes["\(prefix).\(i).\(probe)"] != nil) != (i < count) {
      throw CheckpointError.invalidConfiguration(
        "the configuration implies \(count) layers, the checkpoint stores another number")
    }
  }

  /// Runs a configuration's own bounds check before its sizes are multiplied.
  static func requireValid(_ validate: () throws -> Void) throws {
    do { try validate() } catch let e as ConfigurationError { throw CheckpointError.invalidConfiguration("\(e)") }
  }

  /// The number of item ids, the padding id 0 included.
  public var itemCount: Int { itemEmbedding.shape[0] }

  /// Up to `maximumLength` items, padded to the longest of each batch; whole histories without one.
  public func batching(maximumLength: Int?) -> BatchingPolicy {
    maximumLength.map(BatchingPolicy.upTo) ?? .wholeHistories
  }

  /// Not causal: no per-position states.
  public var isCausal: Bool { false }

  /// No per-position states.
  public func positionStates(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable? { nil }

  /// The batch unchanged.
  public func prepareTrainingBatch(_ batch: SequenceBatch, using generator: inout SplitMix64) -> SequenceBatch { batch }

  /// Scores of every item id for each history, `[B, V]`: ``scores(representations:items:)`` of
  /// ``representations(_:)`` over every item.
  public func scores(_ batch: SequenceBatch) -> Tensor {
    scores(representations: representations(batch), items: 0..<itemCount)
  }

  /// `representations · E[items]ᵀ`, the dot products with a range of the item table's rows.
  public func scores(representations: Tensor, items: Range<Int>) -> Tensor {
    withoutGradients { Tensor.products(queries: representations, table: itemEmbedding.value, rows: items) }
  }

  /// The batch's ``encode(_:context:)`` in evaluation mode, without recording a graph, `[B, D]`.
  public func representations(_ batch: SequenceBatch) -> Tensor {
    withoutGradients {
      var context = ForwardContext.evaluation
      return encode(batch, context: &context).value
    }
  }

  /// The training objective: mean softmax cross-entropy of `encode · Eᵀ` against the targets,
  /// through `Variable.linearSoftmaxCrossEntropy(hidden:weight:targets:rowsPerBlock:classesPerBlock:)`, or the
  /// sampled loss of the batch's ``SequenceBatch/negatives``
  /// (`Variable.sampledCatalogueLoss(hidden:weight:targets:negatives:)`); for a batch with
  /// ``SequenceBatch/positionTargets``, the same over every position that has one, from
  /// ``positionStates(_:context:)``.
  /// - Precondition: the batch has targets (or position targets, for a causal model).
  public func loss(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    if let positionTargets = batch.positionTargets {
      guard let states = positionStates(batch, context: &context) else {
        preconditionFailure("loss: a batch with position targets for \(Self.kind), which is not causal")
      }
      // Every position with a target is one (context → target) pair; padding trains nothing.
      let (rows, width) = (states.shape[0] * states.shape[1], states.shape[2])
      var positions = [Int32]()
      var targets = [Int32]()
      for (p, t) in positionTargets.values.enumerated() where t != 0 {
        positions.append(Int32(p))
        targets.append(t)
      }
      let selected = states.reshaped(to: [rows, width]).gatherRows(IndexTensor(shape: [positions.count], values: positions))
      return catalogueLoss(hidden: selected, targets: IndexTensor(shape: [targets.count], values: targets), batch.negatives)
    }
    guard let targets = batch.targets else { preconditionFailure("loss needs a batch with targets") }
    return catalogueLoss(hidden: encode(batch, context: &context), targets: targets, batch.negatives)
  }

  /// The full softmax, blocked over rows so that a large catalogue never holds all `[B, V]`
  /// logits at once, or the sampled loss the batch's negatives are for.
  func catalogueLoss(hidden: Variable, targets: IndexTensor, _ negatives: NegativeSample?) -> Variable {
    guard let negatives else {
      return Variable.linearSoftmaxCrossEntropy(hidden: hidden, weight: itemEmbedding.variable, targets: targets)
    }
    return Variable.sampledCatalogueLoss(hidden: hidden, weight: itemEmbedding.variable, targets: targets, negatives: negatives)
  }
}
