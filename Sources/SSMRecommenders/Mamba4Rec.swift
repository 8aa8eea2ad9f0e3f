import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// Mamba4Rec (Liu et al., arXiv 2403.03900), as the official code computes it (Docs/Models.md §5).
///
///     H = LN(Drop(E[items]))
///     per layer: H = LN(Drop(Mamba(H)) [+ H if more than one layer]);  H = PFFN(H)
///     s = H[b, ℓ_b − 1]
public final class Mamba4Rec: SequentialRecommender {
  /// Hyperparameters; defaults are the official configuration (Docs/Models.md §10).
  public struct Configuration: Codable, Sendable, Equatable {
    /// V: item ids including the padding id 0.
    public var itemCount: Int
    /// D, the embedding and model width (64).
    public var hiddenSize: Int = 64
    /// Number of Mamba layers (1; more layers add a residual around each block).
    public var layers: Int = 1
    /// Dropout probability (0.2).
    public var dropout: Float = 0.2
    /// SSM state size N (32).
    public var stateSize: Int = 32
    /// Causal convolution width K (4).
    public var convolutionWidth: Int = 4
    /// Inner expansion E / D (2).
    public var expansion: Int = 2
    /// Feed-forward inner width (4·D = 256).
    public var innerSize: Int = 256
    /// LayerNorm epsilon (1e-12).
    public var layerNormEpsilon: Float = 1e-12

    /// The official defaults for a dataset of `itemCount` item ids (the padding id included).
    public init(itemCount: Int) { self.itemCount = itemCount }

    /// Reports the first out-of-range value.
    public func validate() throws {
      func check(_ ok: Bool, _ m: String) throws { if !ok { throw ConfigurationError.invalid(m) } }
      try check(
        itemCount >= 2 && itemCount <= ConfigurationLimits.itemCount,
        "itemCount must count the padding id and at least one item, and fit in 32 bits")
      try ConfigurationError.checkSizes(["hiddenSize": hiddenSize], atMost: ConfigurationLimits.width)
      try ConfigurationError.checkSizes(["innerSize": innerSize], atMost: ConfigurationLimits.innerWidth)
      try ConfigurationError.checkSizes(["layers": layers], atMost: ConfigurationLimits.layers)
      try ConfigurationError.checkSizes(["stateSize": stateSize], atMost: ConfigurationLimits.stateSize)
      try ConfigurationError.checkSizes(
        ["convolutionWidth": convolutionWidth, "expansion": expansion], atMost: ConfigurationLimits.kernelWidth)
      try check(dropout >= 0 && dropout < 1, "dropout must be in [0, 1)")
      try check(layerNormEpsilon > 0, "layerNormEpsilon must be positive")
    }
  }

  /// One Mamba layer: the block, its LayerNorm and the feed-forward network.
  public final class MambaLayer: StackLayer {
    /// The Mamba block (`mamba`), `[B, L, D]` to `[B, L, D]`.
    public let mamba: MambaBlock
    /// The LayerNorm after the block's dropout and, with more than one layer, the residual
    /// (`LayerNorm`).
    public let norm: LayerNorm
    /// The position-wise feed-forward network (`ffn`), post-norm with a residual.
    public let feedForward: FeedForward

    init(_ c: Configuration, using generator: inout some RandomNumberGenerator) {
      mamba = MambaBlock(
        modelDimension: c.hiddenSize, stateSize: c.stateSize, convolutionWidth: c.convolutionWidth, expansion: c.expansion,
        using: &generator)
      norm = LayerNorm(dimension: c.hiddenSize, epsilon: c.layerNormEpsilon)
      feedForward = FeedForward(
        dimension: c.hiddenSize, innerDimension: c.innerSize, dropout: c.dropout, epsilon: c.layerNormEpsilon, using: &generator)
    }

    /// `mamba.*`, `LayerNorm.*` and `ffn.*`, the official names under `mamba_layers.<i>`.
    public func namedParameters() -> [(path: String, parameter: Parameter)] {
      prefixed("mamba", mamba.namedParameters()) + prefixed("LayerNorm", norm.namedParameters())
        + prefixed("ffn", feedForward.namedParameters())
    }

    func block(_ h: Variable, lengths: [Int], context: inout ForwardContext) -> Variable { mamba(h) }
    func packedBlock(_ h: Variable, lengths: [Int], sequenceIndex: IndexTensor, context: inout ForwardContext) -> Variable {
      mamba(h, sequenceIndex: sequenceIndex)
    }
  }

  /// `"mamba4rec"`: the `model` tag of its checkpoints, its name in ``ModelRegistry``.
  public static let kind = "mamba4rec"
  /// The validated width, layer count, Mamba sizes and dropout; checkpoints store them as their `config`
  /// JSON.
  public let configuration: Configuration
  let stack: EncoderStack<MambaLayer>
  /// Item embeddings `[V, D]` (`item_embedding`, padding row 0), also used to score every item.
  public var items: Embedding { stack.items }
  /// The Mamba layers in order (`mamba_layers.<i>`).
  public var layers: [MambaLayer] { stack.layers }
  /// The table of ``items``, `[V, D]` (`item_embedding.weight`), used both to embed histories and to score
  /// items.
  public var itemEmbedding: Parameter { stack.items.weight }

  /// Builds the model with the official initialisation (module defaults, then RecBole's blanket
  /// init over every Linear, Embedding and LayerNorm, which zeroes `dt_proj.bias`).
  public init(configuration: Configuration, seed: UInt64 = 2020) throws {
    try configuration.validate()
    var generator = SplitMix64(seed: seed)
    self.configuration = configuration
    stack = EncoderStack(
      itemCount: configuration.itemCount, hiddenSize: configuration.hiddenSize, layerCount: configuration.layers,
      dropout: configuration.dropout, epsilon: configuration.layerNormEpsilon, layerPrefix: "mamba_layers",
      using: &generator
    ) { MambaLayer(configuration, using: &$0) }
    applyBlanketInitialization(using: &generator)
  }

  /// `item_embedding`, `mamba_layers.<i>.*` and `LayerNorm` under the official Mamba4Rec names, so official
  /// checkpoints load unchanged.
  public func namedParameters() -> [(path: String, parameter: Parameter)] { stack.namedParameters() }

  /// The last layer's output (after its feed-forward network) at each sequence's last real position,
  /// `[B, D]`. A packed batch (``SequenceBatch/isPacked``) is computed as one row of its histories
  /// end to end, the convolution and the scan restarting at every boundary and every other
  /// operation position-wise, so padding costs nothing; the result is the same.
  public func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    batch.isPacked ? stack.encodePacked(batch, context: &context) : stack.encode(batch, context: &context)
  }

  /// Packed: up to `maximumLength` items of each history, laid end to end.
  public func batching(maximumLength: Int?) -> BatchingPolicy { .packed(upTo: maximumLength) }
  /// Causal: the causal convolution and the scan read only earlier positions, and every other
  /// operation is position-wise.
  public var isCausal: Bool { true }

  /// The last layer's output (after its feed-forward network) at every position, `[B, L, D]`.
  public func positionStates(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable? {
    stack.positionStates(batch, context: &context)
  }

}

extension Mamba4Rec {
  /// Pins every size that allocates (the item table, the Mamba block's state, convolution and
  /// projections, the feed-forward width, the layer count) to the checkpoint's stored shapes,
  /// before anything is allocated.
  public static func checkConfiguration(_ c: Configuration, storedShapes: [String: Shape]) throws {
    try requireValid(c.validate)
    try requireStoredShape("item_embedding.weight", [c.itemCount, c.hiddenSize], in: storedShapes)
    try requireStoredMambaStack(
      block: "mamba.", hiddenSize: c.hiddenSize, expansion: c.expansion, stateSize: c.stateSize,
      convolutionWidth: c.convolutionWidth, innerSize: c.innerSize, layers: c.layers, in: storedShapes)
  }
}

extension Mamba4Rec {
  /// A history's state between events: each layer's convolution window and scan state, and the
  /// last position's output. Its size does not depend on the history's length.
  public struct StreamState: Sendable, Equatable {
    /// Each Mamba block's state, layer 0 first.
    public internal(set) var layers: [MambaBlock.StepState]
    /// The encoder's output at the newest position, `[D]`.
    public internal(set) var output: [Float]
  }

  /// A recurrence: O(1) per event.
  public var streamingUpdate: StreamingUpdate { .recurrent }

  /// Every block's empty state (the window only matters to ``HistoryStream``).
  public func makeStreamState(batching: BatchingPolicy) -> StreamState {
    StreamState(layers: layers.map { $0.mamba.makeStepState() }, output: [Float](repeating: 0, count: configuration.hiddenSize))
  }

  /// One position through the encoder: the embedding and its LayerNorm, then per layer the
  /// block's step, the residual (with more than one layer), the LayerNorm and the feed-forward
  /// network, as ``positionStates(_:context:)`` computes them in evaluation mode.
  public func append(_ item: Int, to state: inout StreamState) {
    let d = configuration.hiddenSize
    precondition(item > 0 && item < itemCount, "Mamba4Rec.append: item \(item) is outside 1..<\(itemCount)")
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * d) { scratch in
      let (h, m) = (scratch.baseAddress!, scratch.baseAddress! + d)
      items.weight.value.withUnsafeBufferPointer { table in h.update(from: table.baseAddress! + item * d, count: d) }
      stack.embeddingNorm.apply(h, into: h)
      for (i, layer) in layers.enumerated() {
        layer.mamba.step(h, state: &state.layers[i], into: m)
        if layers.count > 1 { for j in 0..<d { m[j] += h[j] } }
        layer.norm.apply(m, into: h)
        layer.feedForward.apply(h, into: h)
      }
      state.output.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: h, count: d) }
    }
  }

  /// The newest position's output.
  public func representation(of state: StreamState) -> [Float] { state.output }
}
