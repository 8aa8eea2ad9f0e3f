import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// SSD4Rec (Zhang et al., arXiv 2409.01192), as the official code computes it (Docs/Models.md §6):
/// histories packed into one row without padding, with per-token segment ids (the "sequence
/// registers") that restart the convolution and the SSD state at every boundary, and
/// bidirectional Mamba-2 blocks sharing one module for both directions.
///
///     X = E[packed items]  (then LN(Drop(X)) if normEmbedding)
///     per layer: F = Mamba2(X);  Bw = Mamba2(reverse each segment of X)   (not re-ordered back)
///                X = PFFN(Drop(LN(F + β·Bw + X)))
///     s_b = X[last token of segment b]
public final class SSD4Rec: SequentialRecommender {
  /// Hyperparameters; defaults are the official ML-1M configuration (Docs/Models.md §10).
  public struct Configuration: Codable, Sendable, Equatable {
    /// V: item ids including id 0 (SSD4Rec's trainable mask token; there is no padding).
    public var itemCount: Int
    /// D (256).
    public var hiddenSize: Int = 256
    /// Bidirectional SSD layers (2 on ML-1M, 1 on Beauty and Games).
    public var layers: Int = 2
    /// Dropout probability (0.2 ML-1M, 0.4 Beauty and Games).
    public var dropout: Float = 0.2
    /// SSD state size N (64).
    public var stateSize: Int = 64
    /// Causal convolution width K (4).
    public var convolutionWidth: Int = 4
    /// Inner expansion (2).
    public var expansion: Int = 2
    /// Head dimension P (16).
    public var headDimension: Int = 16
    /// SSD chunk length; any value gives the same function (SSMRec's CPU default 64; official 256).
    public var chunkSize: Int = 64
    /// Weight β of the backward direction (0.1).
    public var backwardWeight: Float = 0.1
    /// Whether embeddings go through dropout and LayerNorm (true on ML-1M and KuaiRand).
    public var normalizeEmbeddings: Bool = true
    /// Training-time rate at which history items are replaced by id 0 (0.1 ML-1M); applied to
    /// training batches by ``prepareTrainingBatch(_:using:)``, never in evaluation.
    public var maskRatio: Float = 0.1
    /// Feed-forward inner width (4·D).
    public var innerSize: Int = 1024
    /// LayerNorm epsilon (1e-12).
    public var layerNormEpsilon: Float = 1e-12

    /// The official ML-1M defaults for a dataset of `itemCount` item ids (id 0 included).
    public init(itemCount: Int) { self.itemCount = itemCount }

    var block: Mamba2Block.Configuration {
      var c = Mamba2Block.Configuration(modelDimension: hiddenSize)
      c.stateSize = stateSize
      c.convolutionWidth = convolutionWidth
      c.expansion = expansion
      c.headDimension = headDimension
      c.chunkSize = chunkSize
      return c
    }

    /// Throws `ConfigurationError.invalid` naming the first out-of-range value, the Mamba-2 block's
    /// settings included.
    public func validate() throws {
      func check(_ ok: Bool, _ m: String) throws { if !ok { throw ConfigurationError.invalid(m) } }
      try check(
        itemCount >= 2 && itemCount <= ConfigurationLimits.itemCount,
        "itemCount must count id 0 and at least one item, and fit in 32 bits")
      try ConfigurationError.checkSizes(["hiddenSize": hiddenSize], atMost: ConfigurationLimits.width)
      try ConfigurationError.checkSizes(["innerSize": innerSize], atMost: ConfigurationLimits.innerWidth)
      try ConfigurationError.checkSizes(["layers": layers], atMost: ConfigurationLimits.layers)
      try check(backwardWeight.isFinite, "backwardWeight must be finite")
      try check(layerNormEpsilon > 0, "layerNormEpsilon must be positive")
      try check(dropout >= 0 && dropout < 1, "dropout must be in [0, 1)")
      try check(maskRatio >= 0 && maskRatio < 1, "maskRatio must be in [0, 1)")
      try block.validate()
    }
  }

  /// `"ssd4rec"`: the `model` tag of its checkpoints, its name in ``ModelRegistry``.
  public static let kind = "ssd4rec"
  /// The validated width, layer count, Mamba-2 sizes, dropout and mask ratio; checkpoints store them as their
  /// `config` JSON.
  public let configuration: Configuration
  /// Item embeddings `[V, D]` (`item_embedding`), also used to score every item; row 0 is the
  /// trainable mask token, not padding.
  public let items: Embedding
  /// LayerNorm of the embeddings after dropout (`LayerNorm`); used only when `normalizeEmbeddings`
  /// is set.
  public let embeddingNorm: LayerNorm
  /// The bidirectional SSD layers in order (`BiSSD_layers.<i>`).
  public let layers: [BidirectionalSSD]
  /// Dropout on the embeddings before `embeddingNorm`; used only when `normalizeEmbeddings` is set.
  public let dropout: Dropout
  /// The table of ``items``, `[V, D]` (`item_embedding.weight`, row 0 the mask token), used both to embed
  /// histories and to score items.
  public var itemEmbedding: Parameter { items.weight }

  /// Builds the model with the official initialisation (module defaults, then the blanket init,
  /// which leaves Mamba-2's bare `dt_bias`, `A_log`, `D` and norm weight alone).
  public init(configuration: Configuration, seed: UInt64 = 2024) throws {
    try configuration.validate()
    var generator = SplitMix64(seed: seed)
    self.configuration = configuration
    items = Embedding(count: configuration.itemCount, dimension: configuration.hiddenSize, paddingIndex: nil, using: &generator)
    embeddingNorm = LayerNorm(dimension: configuration.hiddenSize, epsilon: configuration.layerNormEpsilon)
    layers = (0..<configuration.layers).map { _ in
      BidirectionalSSD(
        block: configuration.block, innerSize: configuration.innerSize, dropout: configuration.dropout,
        backwardWeight: configuration.backwardWeight, epsilon: configuration.layerNormEpsilon, using: &generator)
    }
    dropout = Dropout(probability: configuration.dropout)
    applyBlanketInitialization(using: &generator)
  }

  /// `item_embedding`, `LayerNorm` and `BiSSD_layers.<i>.*`, the official SSD4Rec names.
  public func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("item_embedding", items.namedParameters()) + prefixed("LayerNorm", embeddingNorm.namedParameters())
      + layers.enumerated().flatMap { prefixed("BiSSD_layers.\($0.offset)", $0.element.namedParameters()) }
  }

  /// The packed form of a padded batch (Docs/Models.md §6.1): the concatenated items `[1, T]`, their
  /// segment ids `[1, T]` and the position of each segment's last token.
  public static func pack(_ batch: SequenceBatch) -> (items: IndexTensor, sequenceIndex: IndexTensor, lastTokens: [Int]) {
    var items = [Int32]()
    var ids = [Int32]()
    var last = [Int]()
    for (b, l) in batch.lengths.enumerated() {
      let row = batch.items.values[(b * batch.width)..<(b * batch.width + l)]
      items += row
      ids += Array(repeating: Int32(b), count: l)
      last.append(items.count - 1)
    }
    return (IndexTensor(shape: [1, items.count], values: items), IndexTensor(shape: [1, ids.count], values: ids), last)
  }

  /// The training-time item masking of the official collate function: every history item is
  /// replaced by id 0 with probability `ratio`.
  public static func masked(_ batch: SequenceBatch, ratio: Float, using generator: inout some RandomNumberGenerator)
    -> SequenceBatch
  {
    var result = batch
    var values = batch.items.values
    for b in 0..<batch.count {
      for t in 0..<batch.lengths[b] where generator.nextUnitFloat() < ratio { values[b * batch.width + t] = 0 }
    }
    result.items = IndexTensor(shape: batch.items.shape, values: values)
    return result
  }

  /// The official collate function's item masking at ``Configuration/maskRatio``.
  public func prepareTrainingBatch(_ batch: SequenceBatch, using generator: inout SplitMix64) -> SequenceBatch {
    configuration.maskRatio > 0 ? Self.masked(batch, ratio: configuration.maskRatio, using: &generator) : batch
  }

  /// Packs the batch into one unpadded row (``pack(_:)``) and returns the last layer's output at each
  /// history's last token, `[B, D]`.
  public func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    let (packedItems, sequenceIndex, lastTokens) = Self.pack(batch)
    var x = items(packedItems)
    if configuration.normalizeEmbeddings { x = embeddingNorm(dropout(x, context: &context)) }
    for layer in layers {
      x = layer(x, sequenceIndex: sequenceIndex, segmentLengths: batch.lengths, context: &context)
    }
    return x.reshaped(to: [sequenceIndex.elementCount, configuration.hiddenSize]).gatherRows(IndexTensor(lastTokens))
  }
}

extension SSD4Rec {
  /// Pins every size that allocates (the item table, the Mamba-2 projections and convolution,
  /// the feed-forward width, the layer count) to the checkpoint's stored shapes, before anything
  /// is allocated.
  public static func checkConfiguration(_ c: Configuration, storedShapes: [String: Shape]) throws {
    try requireValid(c.validate)
    let b = c.block
    let (e, gn) = (b.innerDimension, b.groups * b.stateSize)
    try requireStoredShape("item_embedding.weight", [c.itemCount, c.hiddenSize], in: storedShapes)
    try requireStoredShape(
      "BiSSD_layers.0.forward_ssd.in_proj.weight", [2 * e + 2 * gn + b.heads, c.hiddenSize], in: storedShapes)
    try requireStoredShape("BiSSD_layers.0.forward_ssd.conv1d.weight", [e + 2 * gn, 1, b.convolutionWidth], in: storedShapes)
    try requireStoredShape("BiSSD_layers.0.ffn.w_1.weight", [c.innerSize, c.hiddenSize], in: storedShapes)
    try requireStoredLayers("BiSSD_layers", count: c.layers, probe: "LayerNorm.weight", in: storedShapes)
  }
}
