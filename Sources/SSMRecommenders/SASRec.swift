import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// SASRec as RecBole implements it (Docs/Models.md §9.1): learned positions, post-LN Transformer layers
/// with causal, key-padding-masked multi-head self-attention.
public final class SASRec: SequentialRecommender {
  /// Hyperparameters; defaults are RecBole's `SASRec.yaml` (SIGMA's baseline config uses 8
  /// heads and dropout 0.2).
  public struct Configuration: Codable, Sendable, Equatable {
    /// V: item ids including the padding id 0.
    public var itemCount: Int
    /// The longest history (rows of the position table, `MAX_ITEM_LIST_LENGTH`).
    public var maximumLength: Int = 50
    /// D (64).
    public var hiddenSize: Int = 64
    /// Transformer layers (2).
    public var layers: Int = 2
    /// Attention heads (2); must divide D.
    public var heads: Int = 2
    /// Feed-forward inner width (256).
    public var innerSize: Int = 256
    /// Dropout on hidden states (0.5).
    public var hiddenDropout: Float = 0.5
    /// Dropout on attention probabilities (0.5).
    public var attentionDropout: Float = 0.5
    /// LayerNorm epsilon (1e-12).
    public var layerNormEpsilon: Float = 1e-12

    /// RecBole's defaults for a dataset of `itemCount` item ids (the padding id included).
    public init(itemCount: Int) { self.itemCount = itemCount }

    /// Throws `ConfigurationError.invalid` naming the first out-of-range value (`heads` must divide
    /// `hiddenSize`).
    public func validate() throws {
      func check(_ ok: Bool, _ m: String) throws { if !ok { throw ConfigurationError.invalid(m) } }
      try check(
        itemCount >= 2 && itemCount <= ConfigurationLimits.itemCount,
        "itemCount must count the padding id and at least one item, and fit in 32 bits")
      try ConfigurationError.checkSizes(["hiddenSize": hiddenSize, "heads": heads], atMost: ConfigurationLimits.width)
      try ConfigurationError.checkSizes(["innerSize": innerSize], atMost: ConfigurationLimits.innerWidth)
      try ConfigurationError.checkSizes(["layers": layers], atMost: ConfigurationLimits.layers)
      try ConfigurationError.checkSizes(["maximumLength": maximumLength], atMost: ConfigurationLimits.length)
      try check(layerNormEpsilon > 0, "layerNormEpsilon must be positive")
      try check(heads > 0 && hiddenSize % heads == 0, "heads must divide hiddenSize")
      try check(
        hiddenDropout >= 0 && hiddenDropout < 1 && attentionDropout >= 0 && attentionDropout < 1, "dropout must be in [0, 1)")
    }
  }

  /// `"sasrec"`: the `model` tag of its checkpoints, its name in ``ModelRegistry``.
  public static let kind = "sasrec"
  /// The validated width, maximum length, layer and head counts and dropouts; checkpoints store them as their
  /// `config` JSON.
  public let configuration: Configuration
  /// Item embeddings `[V, D]` (`item_embedding`, padding row 0), also used to score every item.
  public let items: Embedding
  /// Learned position embeddings `[maximumLength, D]` (`position_embedding`); row `t` is added to
  /// the `t`-th history slot, oldest first.
  public let positions: Embedding
  /// LayerNorm of the item plus position embeddings (`LayerNorm`), before the input dropout.
  public let embeddingNorm: LayerNorm
  /// Each layer's self-attention sublayer (`trm_encoder.layer.<i>.multi_head_attention`).
  public let attention: [MultiHeadAttention]
  /// Each layer's feed-forward sublayer (`trm_encoder.layer.<i>.feed_forward`).
  public let feedForward: [TransformerFeedForward]
  /// Dropout on the normalised input embeddings (`hiddenDropout`).
  public let dropout: Dropout
  /// The table of ``items``, `[V, D]` (`item_embedding.weight`), used both to embed histories and to score
  /// items; the position table is not scored.
  public var itemEmbedding: Parameter { items.weight }

  /// RecBole's initialisation (blanket init with std 0.02, the position table included).
  public init(configuration: Configuration, seed: UInt64 = 2020) throws {
    try configuration.validate()
    var generator = SplitMix64(seed: seed)
    self.configuration = configuration
    items = Embedding(count: configuration.itemCount, dimension: configuration.hiddenSize, paddingIndex: 0, using: &generator)
    positions = Embedding(count: configuration.maximumLength, dimension: configuration.hiddenSize, using: &generator)
    embeddingNorm = LayerNorm(dimension: configuration.hiddenSize, epsilon: configuration.layerNormEpsilon)
    let c = configuration
    attention = (0..<c.layers).map { _ in
      MultiHeadAttention(
        dimension: c.hiddenSize, heads: c.heads, attentionDropout: c.attentionDropout, hiddenDropout: c.hiddenDropout,
        epsilon: c.layerNormEpsilon, using: &generator)
    }
    feedForward = (0..<c.layers).map { _ in
      TransformerFeedForward(
        dimension: c.hiddenSize, innerDimension: c.innerSize, dropout: c.hiddenDropout, epsilon: c.layerNormEpsilon,
        using: &generator)
    }
    dropout = Dropout(probability: configuration.hiddenDropout)
    applyBlanketInitialization(using: &generator)
  }

  /// `item_embedding`, `position_embedding`, `LayerNorm` and
  /// `trm_encoder.layer.<i>.{multi_head_attention,feed_forward}.*`, RecBole's SASRec names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    var result =
      prefixed("item_embedding", items.namedParameters()) + prefixed("position_embedding", positions.namedParameters())
      + prefixed("LayerNorm", embeddingNorm.namedParameters())
    for i in 0..<configuration.layers {
      result += prefixed("trm_encoder.layer.\(i).multi_head_attention", attention[i].namedParameters())
      result += prefixed("trm_encoder.layer.\(i).feed_forward", feedForward[i].namedParameters())
    }
    return result
  }

  /// The additive mask: 0 where key `j ≤ i` and item `j` is not padding, −10000 elsewhere.
  package static func attentionMask(_ batch: SequenceBatch) -> Tensor {
    let (b, l) = (batch.count, batch.width)
    return batch.items.values.withUnsafeBufferPointer { items in
      nonisolated(unsafe) let items = items.baseAddress!
      // [B, L, L] floats (41 MB at B 256, L 200) written once, each sequence's block by one worker.
      return Tensor(shape: [b, 1, l, l]) { mask in
        nonisolated(unsafe) let m = mask.baseAddress!
        Parallel.forEachChunk(count: b, minimumPerWorker: Swift.max(1, Parallel.elementwiseThreshold / Swift.max(l * l, 1))) {
          sequences in
          withUnsafeTemporaryAllocation(of: Float.self, capacity: l) { keys in
            for s in sequences {
              // Query i sees keys 0…i that are items (0), not padding (−10000).
              for j in 0..<l { keys[j] = items[s * l + j] != 0 ? 0 : -10000 }
              for i in 0..<l {
                let row = m + (s * l + i) * l
                row.update(from: keys.baseAddress!, count: i + 1)
                (row + i + 1).update(repeating: -10000, count: l - i - 1)
              }
            }
          }
        }
      }
    }
  }

  /// The transformer's output at each sequence's last real position, `[B, D]`; traps if the batch is wider
  /// than `maximumLength`. A packed batch (``SequenceBatch/isPacked``) is computed on its
  /// histories' tokens end to end, positions restarting at every history and attention within
  /// each history only (the `MultiHeadAttention` layer's packed call), so padding
  /// costs nothing; the result is the padded one.
  public func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    if batch.isPacked { return packedLastStates(batch, context: &context) }
    return states(batch, lastOnly: true, context: &context)
  }

  /// The packed form of ``encode(_:context:)``: every position-wise operation on the T tokens,
  /// the last layer (its queries, output projection and feed-forward network) on the B last
  /// tokens.
  func packedLastStates(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    precondition(
      batch.width <= configuration.maximumLength,
      "SASRec: batch width \(batch.width) exceeds maximumLength \(configuration.maximumLength)")
    let (packedItems, _, _) = SSD4Rec.pack(batch)
    let positionIds = IndexTensor(shape: packedItems.shape, values: batch.lengths.flatMap { 0..<$0 })
    let tokens = packedItems.elementCount
    let layout = PackedAttentionLayout(lengths: batch.lengths)
    var x = dropout(embeddingNorm(items(packedItems) + positions(positionIds)), context: &context)
      .reshaped(to: [tokens, configuration.hiddenSize])
    for i in 0..<configuration.layers {
      let isLast = i == configuration.layers - 1
      x =
        isLast
        ? attention[i].lastTokenOutputs(x, layout: layout, context: &context) : attention[i](x, layout: layout, context: &context)
      x = feedForward[i](x, context: &context)
    }
    return x
  }

  /// Causal: the attention mask lets position `t` attend to positions `0…t` only.
  public var isCausal: Bool { true }

  /// The last layer's output at every position, `[B, L, D]`.
  public func positionStates(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable? {
    states(batch, lastOnly: false, context: &context)
  }

  /// The transformer at every position (`[B, L, D]`), or with its last layer (position-wise
  /// everywhere but in its keys and values) at each history's last position only (`[B, D]`).
  func states(_ batch: SequenceBatch, lastOnly: Bool, context: inout ForwardContext) -> Variable {
    precondition(
      batch.width <= configuration.maximumLength,
      "SASRec: batch width \(batch.width) exceeds maximumLength \(configuration.maximumLength)")
    let positionIds = IndexTensor(shape: [batch.width], values: Array(0..<batch.width))
    var x = dropout(embeddingNorm(items(batch.items) + positions(positionIds)), context: &context)
    let mask = Self.attentionMask(batch)
    let last = batch.lengths.map { $0 - 1 }
    for i in 0..<configuration.layers {
      let isLast = lastOnly && i == configuration.layers - 1
      x = isLast ? attention[i](x, mask: mask, at: last, context: &context) : attention[i](x, mask: mask, context: &context)
      x = feedForward[i](x, context: &context)
    }
    return x
  }
}

extension SASRec {
  /// Packed, and never more positions than the position table holds.
  public func batching(maximumLength: Int?) -> BatchingPolicy {
    .packed(upTo: Swift.min(maximumLength ?? configuration.maximumLength, configuration.maximumLength))
  }
}

extension SASRec {
  /// Pins every size that allocates (the item and position tables, the feed-forward width, the
  /// layer count) to the checkpoint's stored shapes, before anything is allocated.
  public static func checkConfiguration(_ c: Configuration, storedShapes: [String: Shape]) throws {
    try requireValid(c.validate)
    try requireStoredShape("item_embedding.weight", [c.itemCount, c.hiddenSize], in: storedShapes)
    try requireStoredShape("position_embedding.weight", [c.maximumLength, c.hiddenSize], in: storedShapes)
    try requireStoredShape("trm_encoder.layer.0.feed_forward.dense_1.weight", [c.innerSize, c.hiddenSize], in: storedShapes)
    try requireStoredLayers("trm_encoder.layer", count: c.layers, probe: "feed_forward.LayerNorm.weight", in: storedShapes)
  }

}

extension SASRec {
  /// A history's state between events: every layer's keys and values, which grow by a row per
  /// event (attention has no constant-size state), and the newest position's output.
  public struct StreamState: Sendable, Equatable {
    /// Each layer's key/value cache, layer 0 first.
    public internal(set) var caches: [MultiHeadAttention.KeyValueCache]
    /// The last layer's output at the newest position, `[D]`.
    public internal(set) var output: [Float]
    /// The positions seen, at most `maximumLength` (the position table's rows).
    public internal(set) var length = 0
  }

  /// A key/value cache: an event costs time proportional to the history, up to the window.
  public var streamingUpdate: StreamingUpdate { .keyValueCache }

  /// Empty caches.
  public func makeStreamState(batching: BatchingPolicy) -> StreamState {
    StreamState(
      caches: Array(repeating: MultiHeadAttention.KeyValueCache(), count: configuration.layers),
      output: [Float](repeating: 0, count: configuration.hiddenSize))
  }

  /// One position: the item and position embeddings and their LayerNorm, then every layer's
  /// attention over the cached positions and feed-forward network.
  /// - Precondition: fewer than `maximumLength` items were appended (the position table's size).
  public func append(_ item: Int, to state: inout StreamState) {
    let d = configuration.hiddenSize
    precondition(item > 0 && item < itemCount, "SASRec.append: item \(item) is outside 1..<\(itemCount)")
    precondition(
      state.length < configuration.maximumLength,
      "SASRec.append: position \(state.length) is past the position table (\(configuration.maximumLength) rows)")
    withUnsafeTemporaryAllocation(of: Float.self, capacity: d) { scratch in
      let x = scratch.baseAddress!
      items.weight.value.withUnsafeBufferPointer { table in
        positions.weight.value.withUnsafeBufferPointer { p in
          for j in 0..<d { x[j] = table[item * d + j] + p[state.length * d + j] }
        }
      }
      embeddingNorm.apply(x, into: x)
      for i in 0..<configuration.layers {
        attention[i].step(x, cache: &state.caches[i], into: x)
        feedForward[i].apply(x, into: x)
      }
      state.output.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: x, count: d) }
    }
    state.length += 1
  }

  /// The newest position's output.
  public func representation(of state: StreamState) -> [Float] { state.output }
}
