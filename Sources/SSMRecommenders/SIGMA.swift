import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// SIGMA (Liu et al., arXiv 2408.11451), as the official code computes it (Docs/Models.md §3–§4):
/// G-Mamba blocks (partially flipped Mamba, DS gate, FE-GRU, mixing) and the feed-forward
/// network.
///
///     H = LN(Drop(E[items]))
///     per layer: H = LN(Drop(GMamba(H)) [+ H if more than one layer]);  H = PFFN(H)
///     s = H[b, ℓ_b − 1]
public final class SIGMA: SequentialRecommender {
  /// Hyperparameters; defaults are the official configuration (Docs/Models.md §10).
  public struct Configuration: Codable, Sendable, Equatable {
    /// V: item ids including the padding id 0.
    public var itemCount: Int
    /// D (64).
    public var hiddenSize: Int = 64
    /// Number of G-Mamba layers (1).
    public var layers: Int = 1
    /// Dropout probability (0.2 in the released config; the paper uses 0.3 for Amazon and Yelp).
    public var dropout: Float = 0.2
    /// The DS gate's dropout, hard-coded 0.2 in the official code.
    public var gateDropout: Float = 0.2
    /// SSM state size N (32).
    public var stateSize: Int = 32
    /// Causal convolution width K (4).
    public var convolutionWidth: Int = 4
    /// Inner expansion (2).
    public var expansion: Int = 2
    /// Feed-forward inner width (4·D).
    public var innerSize: Int = 256
    /// LayerNorm epsilon (1e-12).
    public var layerNormEpsilon: Float = 1e-12
    /// The partial flip: official `.prefix(count: 45)` or the paper's `.keepingLast(keep: 5)`.
    public var flip: FlipStrategy = .prefix(count: 45)
    /// FE-GRU convolution kernel (3).
    public var featureKernelSize: Int = 3
    /// Whether the FE-GRU's GRU has biases (false officially).
    public var gruBias: Bool = false

    /// The official defaults for a dataset of `itemCount` item ids (the padding id included).
    public init(itemCount: Int) { self.itemCount = itemCount }

    /// Throws `ConfigurationError.invalid` naming the first out-of-range value.
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
        ["convolutionWidth": convolutionWidth, "expansion": expansion, "featureKernelSize": featureKernelSize],
        atMost: ConfigurationLimits.kernelWidth)
      try check(layerNormEpsilon > 0, "layerNormEpsilon must be positive")
      try check(dropout >= 0 && dropout < 1 && gateDropout >= 0 && gateDropout < 1, "dropout must be in [0, 1)")
      try check(featureKernelSize > 0 && featureKernelSize % 2 == 1, "featureKernelSize must be odd")
      switch flip {
      case .prefix(let count):
        try check(count >= 0 && count <= ConfigurationLimits.length, "flip prefix must be in 0...\(ConfigurationLimits.length)")
      case .keepingLast(let keep):
        try check(keep >= 0 && keep <= ConfigurationLimits.length, "flip keep must be in 0...\(ConfigurationLimits.length)")
      }
    }
  }

  /// One SIGMA layer: the G-Mamba block, its LayerNorm and the feed-forward network.
  public final class SIGMALayer: StackLayer {
    /// The G-Mamba block (`gmamba`), `[B, L, D]` to `[B, L, D]`.
    public let gMamba: PartiallyFlippedMambaBlock
    /// The LayerNorm after the block's dropout and, with more than one layer, the residual
    /// (`LayerNorm`).
    public let norm: LayerNorm
    /// The position-wise feed-forward network (`ffn`), post-norm with a residual.
    public let feedForward: FeedForward

    init(_ c: Configuration, using generator: inout some RandomNumberGenerator) {
      gMamba = PartiallyFlippedMambaBlock(
        dimension: c.hiddenSize, stateSize: c.stateSize, convolutionWidth: c.convolutionWidth, expansion: c.expansion,
        flip: c.flip, gateDropout: c.gateDropout, featureKernelSize: c.featureKernelSize, gruBias: c.gruBias, using: &generator)
      norm = LayerNorm(dimension: c.hiddenSize, epsilon: c.layerNormEpsilon)
      feedForward = FeedForward(
        dimension: c.hiddenSize, innerDimension: c.innerSize, dropout: c.dropout, epsilon: c.layerNormEpsilon, using: &generator)
    }

    /// `gmamba.*`, `LayerNorm.*` and `ffn.*`, the official names under `mamba_layers.<i>`.
    public func namedParameters() -> [(path: String, parameter: Parameter)] {
      prefixed("gmamba", gMamba.namedParameters()) + prefixed("LayerNorm", norm.namedParameters())
        + prefixed("ffn", feedForward.namedParameters())
    }

    func block(_ h: Variable, lengths: [Int], context: inout ForwardContext) -> Variable {
      gMamba(h, lengths: lengths, context: &context)
    }
    func packedBlock(_ h: Variable, lengths: [Int], sequenceIndex: IndexTensor, context: inout ForwardContext) -> Variable {
      gMamba(packed: h, lengths: lengths, sequenceIndex: sequenceIndex, context: &context)
    }
  }

  /// `"sigma"`: the `model` tag of its checkpoints, its name in ``ModelRegistry``.
  public static let kind = "sigma"
  /// The validated width, layer count, Mamba sizes, dropouts and flip strategy; checkpoints store them as
  /// their `config` JSON.
  public let configuration: Configuration
  let stack: EncoderStack<SIGMALayer>
  /// Item embeddings `[V, D]` (`item_embedding`, padding row 0), also used to score every item.
  public var items: Embedding { stack.items }
  /// The SIGMA layers in order (`mamba_layers.<i>`, the official name).
  public var layers: [SIGMALayer] { stack.layers }
  /// The table of ``items``, `[V, D]` (`item_embedding.weight`), used both to embed histories and to score
  /// items.
  public var itemEmbedding: Parameter { stack.items.weight }

  /// Builds the model with the official initialisation (module defaults, then the blanket init).
  public init(configuration: Configuration, seed: UInt64 = 2020) throws {
    try configuration.validate()
    var generator = SplitMix64(seed: seed)
    self.configuration = configuration
    stack = EncoderStack(
      itemCount: configuration.itemCount, hiddenSize: configuration.hiddenSize, layerCount: configuration.layers,
      dropout: configuration.dropout, epsilon: configuration.layerNormEpsilon, layerPrefix: "mamba_layers",
      using: &generator
    ) { SIGMALayer(configuration, using: &$0) }
    applyBlanketInitialization(using: &generator)
  }

  /// `item_embedding`, `LayerNorm` and `mamba_layers.<i>.*` (the official name, though the blocks are
  /// G-Mamba), so official checkpoints load unchanged.
  public func namedParameters() -> [(path: String, parameter: Parameter)] { stack.namedParameters() }

  /// The last layer's output (after its feed-forward network) at each sequence's last real position,
  /// `[B, D]`; `batch.lengths` also drives the paper's `.keepingLast` flip. A packed batch
  /// (``SequenceBatch/isPacked``, the paper's flip only) is computed on its histories end to
  /// end, every operation that reads neighbouring positions restarting at each history, so a
  /// history's result is what it gets in a batch of its own.
  public func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    batch.isPacked ? stack.encodePacked(batch, context: &context) : stack.encode(batch, context: &context)
  }
}

extension SIGMA {
  /// The official prefix flip reads the padded window, so its batches are padded to it: the
  /// requested length, or the window the flip was built for (its prefix and the 5 slots it keeps).
  /// The paper's per-history flip needs no padding, and its batches are computed packed.
  public func batching(maximumLength: Int?) -> BatchingPolicy {
    switch configuration.flip {
    case .prefix(let count): return .fixedWindow(maximumLength ?? count + 5)
    case .keepingLast: return .packed(upTo: maximumLength)
    }
  }
}

extension SIGMA {
  /// Pins every size that allocates (the item table, the Mamba block's state, convolution and
  /// projections, the feed-forward width, the layer count) to the checkpoint's stored shapes,
  /// before anything is allocated.
  public static func checkConfiguration(_ c: Configuration, storedShapes: [String: Shape]) throws {
    try requireValid(c.validate)
    try requireStoredShape("item_embedding.weight", [c.itemCount, c.hiddenSize], in: storedShapes)
    try requireStoredMambaStack(
      block: "gmamba.mamba.", hiddenSize: c.hiddenSize, expansion: c.expansion, stateSize: c.stateSize,
      convolutionWidth: c.convolutionWidth, innerSize: c.innerSize, layers: c.layers, in: storedShapes)
    try requireStoredShape(
      "mamba_layers.0.gmamba.conv1d.weight", [c.hiddenSize, c.hiddenSize, c.featureKernelSize], in: storedShapes)
  }
}
