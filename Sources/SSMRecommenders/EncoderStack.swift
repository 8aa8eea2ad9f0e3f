import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// A layer of the encoder stack Mamba4Rec and SIGMA share: a sequence block, a LayerNorm and a
/// feed-forward network.
protocol StackLayer: Layer {
  var norm: LayerNorm { get }
  var feedForward: FeedForward { get }
  /// The layer's sequence block (Mamba, or SIGMA's G-Mamba) applied to `[B, L, D]`.
  func block(_ h: Variable, lengths: [Int], context: inout ForwardContext) -> Variable
  /// The sequence block on a packed row `[1, T, D]`: the histories of `lengths` end to end,
  /// `sequenceIndex` `[1, T]` giving each token's history.
  func packedBlock(_ h: Variable, lengths: [Int], sequenceIndex: IndexTensor, context: inout ForwardContext) -> Variable
}

/// The encoder of Mamba4Rec and SIGMA (Docs/Models.md §4.3, §5.2):
///
///     H = LN(Drop(E[items]))
///     per layer: H = LN(Drop(block(H)) [+ H if more than one layer]);  H = PFFN(H)
///     s = H[b, ℓ_b − 1]
struct EncoderStack<Layer: StackLayer> {
  let items: Embedding
  let embeddingNorm: LayerNorm
  let layers: [Layer]
  let dropout: Dropout
  let layerPrefix: String

  /// The item table (padding id 0), the embedding LayerNorm and `layerCount` layers from
  /// `makeLayer`, in construction order (so a seeded generator reproduces the initialisation).
  init(
    itemCount: Int, hiddenSize: Int, layerCount: Int, dropout: Float, epsilon: Float, layerPrefix: String,
    using generator: inout SplitMix64, makeLayer: (inout SplitMix64) -> Layer
  ) {
    items = Embedding(count: itemCount, dimension: hiddenSize, paddingIndex: 0, using: &generator)
    embeddingNorm = LayerNorm(dimension: hiddenSize, epsilon: epsilon)
    layers = (0..<layerCount).map { _ in makeLayer(&generator) }
    self.dropout = Dropout(probability: dropout)
    self.layerPrefix = layerPrefix
  }

  func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("item_embedding", items.namedParameters()) + prefixed("LayerNorm", embeddingNorm.namedParameters())
      + layers.enumerated().flatMap { prefixed("\(layerPrefix).\($0.offset)", $0.element.namedParameters()) }
  }

  /// The last layer's output at each history's last position, `[B, D]`.
  func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    let last = batch.lengths.map { $0 - 1 }
    return run(batch, context: &context, lastLayerRows: { $0.gatherTimeSteps(last) })
  }

  /// The last layer's output at every position, `[B, L, D]`.
  func positionStates(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    run(batch, context: &context, lastLayerRows: { $0 })
  }

  /// The stack, with the last layer's norm and feed-forward network (position-wise) applied to
  /// `lastLayerRows` of its block's output only.
  /// ``encode(_:context:)`` of a packed batch: the histories end to end in one row, every
  /// position-wise operation on its T tokens, and the last layer's norm and feed-forward network
  /// on the B last tokens only.
  func encodePacked(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    let (packedItems, sequenceIndex, lastTokens) = SSD4Rec.pack(batch)
    var h = embeddingNorm(dropout(items(packedItems), context: &context))
    for (i, layer) in layers.enumerated() {
      let block = layer.packedBlock(h, lengths: batch.lengths, sequenceIndex: sequenceIndex, context: &context)
      let m = dropout(block, context: &context)
      var sum = layers.count == 1 ? m : m + h
      if i == layers.count - 1 {
        sum = sum.reshaped(to: [sequenceIndex.elementCount, sum.shape[2]]).gatherRows(IndexTensor(lastTokens))
      }
      h = layer.feedForward(layer.norm(sum), context: &context)
    }
    return h
  }

  private func run(
    _ batch: SequenceBatch, context: inout ForwardContext, lastLayerRows: (Variable) -> Variable
  ) -> Variable {
    var h = embeddingNorm(dropout(items(batch.items), context: &context))
    for (i, layer) in layers.enumerated() {
      let m = dropout(layer.block(h, lengths: batch.lengths, context: &context), context: &context)
      let sum = layers.count == 1 ? m : m + h
      h = layer.feedForward(layer.norm(i == layers.count - 1 ? lastLayerRows(sum) : sum), context: &context)
    }
    return h
  }
}

extension SequentialRecommender {
  /// The stored-shape checks Mamba4Rec and SIGMA share: their encoder stack (`mamba_layers.<i>`)
  /// with a Mamba block under `mamba_layers.0.<block>`, its feed-forward width and the layer count.
  static func requireStoredMambaStack(
    block: String, hiddenSize d: Int, expansion: Int, stateSize n: Int, convolutionWidth k: Int, innerSize: Int,
    layers: Int, in shapes: [String: Shape]
  ) throws {
    let e = expansion * d
    let prefix = "mamba_layers.0." + block
    try requireStoredShape(prefix + "A_log", [e, n], in: shapes)
    try requireStoredShape(prefix + "conv1d.weight", [e, 1, k], in: shapes)
    try requireStoredShape(prefix + "x_proj.weight", [(d + 15) / 16 + 2 * n, e], in: shapes)
    try requireStoredShape("mamba_layers.0.ffn.w_1.weight", [innerSize, d], in: shapes)
    try requireStoredLayers("mamba_layers", count: layers, probe: "LayerNorm.weight", in: shapes)
  }
}
