import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// GRU4Rec as RecBole implements it (Docs/Models.md §9.2): item embeddings, dropout, a GRU without biases
/// and a dense layer back to the embedding width; the last valid hidden state scores all items.
public final class GRU4Rec: SequentialRecommender {
  /// Hyperparameters; defaults are RecBole's (Docs/Models.md §9.2).
  public struct Configuration: Codable, Sendable, Equatable {
    /// V: item ids including the padding id 0.
    public var itemCount: Int
    /// Item embedding width (64).
    public var embeddingSize: Int = 64
    /// GRU width (128).
    public var hiddenSize: Int = 128
    /// GRU layers (1).
    public var layers: Int = 1
    /// Embedding dropout (0.3).
    public var dropout: Float = 0.3

    /// RecBole's defaults for a dataset of `itemCount` item ids (the padding id included).
    public init(itemCount: Int) { self.itemCount = itemCount }

    /// Throws `ConfigurationError.invalid` naming the first out-of-range value.
    public func validate() throws {
      func check(_ ok: Bool, _ m: String) throws { if !ok { throw ConfigurationError.invalid(m) } }
      try check(
        itemCount >= 2 && itemCount <= ConfigurationLimits.itemCount,
        "itemCount must count the padding id and at least one item, and fit in 32 bits")
      try ConfigurationError.checkSizes(
        ["embeddingSize": embeddingSize, "hiddenSize": hiddenSize], atMost: ConfigurationLimits.width)
      try ConfigurationError.checkSizes(["layers": layers], atMost: ConfigurationLimits.layers)
      try check(dropout >= 0 && dropout < 1, "dropout must be in [0, 1)")
    }
  }

  /// `"gru4rec"`: the `model` tag of its checkpoints, its name in ``ModelRegistry``.
  public static let kind = "gru4rec"
  /// The validated embedding and GRU widths, layer count and dropout; checkpoints store them as their
  /// `config` JSON.
  public let configuration: Configuration
  /// Item embeddings `[V, embeddingSize]` (`item_embedding`, padding row 0), also used to score
  /// every item.
  public let items: Embedding
  /// The bias-free GRU from the embedding width to `hiddenSize` (`gru_layers`).
  public let gru: GRU
  /// Projects GRU states back to the embedding width (`dense`), so they can be scored against the
  /// item embeddings.
  public let dense: Linear
  /// Dropout on the item embeddings before the GRU (RecBole `emb_dropout`,
  /// `configuration.dropout`).
  public let dropout: Dropout
  /// The table of ``items``, `[V, embeddingSize]` (`item_embedding.weight`), used both to embed histories and
  /// to score items.
  public var itemEmbedding: Parameter { items.weight }

  /// RecBole's initialisation: `xavier_normal_` item embeddings, `xavier_uniform_` for the first
  /// GRU layer's weights, PyTorch defaults elsewhere.
  public init(configuration: Configuration, seed: UInt64 = 2020) throws {
    try configuration.validate()
    var generator = SplitMix64(seed: seed)
    self.configuration = configuration
    items = Embedding(count: configuration.itemCount, dimension: configuration.embeddingSize, paddingIndex: 0, using: &generator)
    items.weight.value = Tensor.xavierNormal(items.weight.shape, using: &generator)
    gru = GRU(
      inputSize: configuration.embeddingSize, hiddenSize: configuration.hiddenSize, layers: configuration.layers, bias: false,
      using: &generator)
    gru.inputWeights[0].value = Tensor.xavierUniform(gru.inputWeights[0].shape, using: &generator)
    gru.hiddenWeights[0].value = Tensor.xavierUniform(gru.hiddenWeights[0].shape, using: &generator)
    dense = Linear(inputSize: configuration.hiddenSize, outputSize: configuration.embeddingSize, using: &generator)
    dropout = Dropout(probability: configuration.dropout)
  }

  /// `item_embedding.weight`, `gru_layers.weight_ih_l<k>` / `weight_hh_l<k>` and `dense.*`, RecBole's GRU4Rec
  /// names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("item_embedding", items.namedParameters()) + prefixed("gru_layers", gru.namedParameters())
      + prefixed("dense", dense.namedParameters())
  }

  /// The `dense` projection of the GRU state at each sequence's last real position, `[B, embeddingSize]`
  /// (`dense` is position-wise, so it runs on those B states only). A packed batch
  /// (``SequenceBatch/isPacked``) is computed in PyTorch's packed-sequence layout
  /// (`TimeMajorPacking`): the embedding, the dropout, every input projection and every step of
  /// the recurrence run on the batch's items only; the result is the padded one.
  public func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    guard batch.isPacked else {
      return dense(hiddenStates(batch, context: &context).gatherTimeSteps(batch.lengths.map { $0 - 1 }))
    }
    let packing = TimeMajorPacking(lengths: batch.lengths)
    let tokens = IndexTensor(shape: [packing.tokenCount], values: packing.packed(batch.items.values, width: batch.width))
    let states = gru(dropout(items(tokens), context: &context), packing: packing)
    let last = batch.lengths.indices.map { packing.token(row: $0, step: batch.lengths[$0] - 1) }
    return dense(states.gatherRows(IndexTensor(last)))
  }

  /// Causal: a GRU reads its input in order.
  public var isCausal: Bool { true }

  /// The dense layer's output at every position, `[B, L, embeddingSize]`.
  public func positionStates(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable? {
    states(batch, context: &context)
  }

  func states(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    dense(hiddenStates(batch, context: &context))
  }

  /// The last GRU layer's states, `[B, L, hiddenSize]`.
  func hiddenStates(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    gru(dropout(items(batch.items), context: &context), lengths: batch.isPacked ? batch.lengths : nil)
  }

  /// Packed: up to `maximumLength` items of each history, in PyTorch's packed-sequence layout,
  /// so padding costs no work; the result is the padded one.
  public func batching(maximumLength: Int?) -> BatchingPolicy { .packed(upTo: maximumLength) }
}

extension GRU4Rec {
  /// Pins every size that allocates (the item table, every GRU layer, the layer count) to the
  /// checkpoint's stored shapes, before anything is allocated.
  public static func checkConfiguration(_ c: Configuration, storedShapes: [String: Shape]) throws {
    try requireValid(c.validate)
    try requireStoredShape("item_embedding.weight", [c.itemCount, c.embeddingSize], in: storedShapes)
    try requireStoredShape("gru_layers.weight_ih_l0", [3 * c.hiddenSize, c.embeddingSize], in: storedShapes)
    for k in 0...c.layers where (storedShapes["gru_layers.weight_hh_l\(k)"] != nil) != (k < c.layers) {
      throw CheckpointError.invalidConfiguration(
        "the configuration implies \(c.layers) GRU layers, the checkpoint stores another number")
    }
    try requireStoredShape("gru_layers.weight_hh_l0", [3 * c.hiddenSize, c.hiddenSize], in: storedShapes)
  }
}

extension GRU4Rec {
  /// A history's state between events: every GRU layer's hidden state and the newest position's
  /// projected output. Its size does not depend on the history's length.
  public struct StreamState: Sendable, Equatable {
    /// The GRU's hidden states.
    public internal(set) var recurrence: GRU.StepState
    /// The `dense` projection of the last hidden state, `[embeddingSize]`.
    public internal(set) var output: [Float]
  }

  /// A recurrence: O(1) per event.
  public var streamingUpdate: StreamingUpdate { .recurrent }

  /// Zero hidden states (the window only matters to ``HistoryStream``).
  public func makeStreamState(batching: BatchingPolicy) -> StreamState {
    StreamState(recurrence: gru.makeStepState(), output: [Float](repeating: 0, count: configuration.embeddingSize))
  }

  /// One position: the item's embedding through every GRU layer, then `dense`.
  public func append(_ item: Int, to state: inout StreamState) {
    let (d, h) = (configuration.embeddingSize, configuration.hiddenSize)
    precondition(item > 0 && item < itemCount, "GRU4Rec.append: item \(item) is outside 1..<\(itemCount)")
    withUnsafeTemporaryAllocation(of: Float.self, capacity: d + h) { scratch in
      let (x, hidden) = (scratch.baseAddress!, scratch.baseAddress! + d)
      items.weight.value.withUnsafeBufferPointer { table in x.update(from: table.baseAddress! + item * d, count: d) }
      gru.step(x, state: &state.recurrence, into: hidden)
      state.output.withUnsafeMutableBufferPointer { dense.apply(hidden, into: $0.baseAddress!) }
    }
  }

  /// The newest position's output.
  public func representation(of state: StreamState) -> [Float] { state.output }
}
