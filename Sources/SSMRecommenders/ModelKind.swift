/// The five built-in recommenders by name, with their official default configurations (for
/// tools that pick a model at run time, such as the `ssmrec` command).
public enum ModelKind: String, CaseIterable, Codable, Sendable {
  /// ``Mamba4Rec``: Mamba blocks with a feed-forward network.
  case mamba4rec
  /// ``SIGMA``: G-Mamba blocks with a partial flip, DS gate and FE-GRU.
  case sigma
  /// ``SSD4Rec``: bidirectional Mamba-2 (SSD) over packed, unpadded histories.
  case ssd4rec
  /// ``SASRec``: the self-attention (Transformer) baseline.
  case sasrec
  /// ``GRU4Rec``: the recurrent (GRU) baseline.
  case gru4rec

  /// Hyperparameter overrides a user may give on the command line.
  public struct Overrides: Sendable {
    /// Model width D; the feed-forward inner width follows as 4·D (GRU4Rec: the GRU width only).
    public var hiddenSize: Int?
    /// Number of layers (Mamba, G-Mamba, SSD, Transformer or GRU).
    public var layers: Int?
    /// Dropout probability; SASRec takes it for both hidden and attention dropout, GRU4Rec for the
    /// embedding dropout.
    public var dropout: Float?
    /// The padded window (`MAX_ITEM_LIST_LENGTH`): SASRec's position table size and SIGMA's flip
    /// prefix (`length − 5`); the other models ignore it.
    public var maximumLength: Int?
    /// Overrides of the given settings; `nil` keeps the model's official value.
    public init(hiddenSize: Int? = nil, layers: Int? = nil, dropout: Float? = nil, maximumLength: Int? = nil) {
      (self.hiddenSize, self.layers, self.dropout, self.maximumLength) = (hiddenSize, layers, dropout, maximumLength)
    }
  }

  /// Builds the model with its official defaults (SPEC §10) for `itemCount` ids.
  public func makeModel(itemCount: Int, overrides: Overrides = .init(), seed: UInt64) throws -> any SequentialRecommender {
    switch self {
    case .mamba4rec:
      var c = Mamba4Rec.Configuration(itemCount: itemCount)
      if let d = overrides.hiddenSize { (c.hiddenSize, c.innerSize) = (d, 4 * d) }
      if let l = overrides.layers { c.layers = l }
      if let p = overrides.dropout { c.dropout = p }
      return try Mamba4Rec(configuration: c, seed: seed)
    case .sigma:
      var c = SIGMA.Configuration(itemCount: itemCount)
      if let d = overrides.hiddenSize { (c.hiddenSize, c.innerSize) = (d, 4 * d) }
      if let l = overrides.layers { c.layers = l }
      if let p = overrides.dropout { c.dropout = p }
      // The official prefix is 45 for a 50-slot window: keep its last 5 slots in place.
      if let length = overrides.maximumLength { c.flip = .prefix(count: Swift.max(0, length - 5)) }
      return try SIGMA(configuration: c, seed: seed)
    case .ssd4rec:
      var c = SSD4Rec.Configuration(itemCount: itemCount)
      if let d = overrides.hiddenSize { (c.hiddenSize, c.innerSize) = (d, 4 * d) }
      if let l = overrides.layers { c.layers = l }
      if let p = overrides.dropout { c.dropout = p }
      return try SSD4Rec(configuration: c, seed: seed)
    case .sasrec:
      var c = SASRec.Configuration(itemCount: itemCount)
      if let d = overrides.hiddenSize { (c.hiddenSize, c.innerSize) = (d, 4 * d) }
      if let l = overrides.layers { c.layers = l }
      if let p = overrides.dropout { (c.hiddenDropout, c.attentionDropout) = (p, p) }
      if let length = overrides.maximumLength { c.maximumLength = length }
      return try SASRec(configuration: c, seed: seed)
    case .gru4rec:
      var c = GRU4Rec.Configuration(itemCount: itemCount)
      if let d = overrides.hiddenSize { c.hiddenSize = d }
      if let l = overrides.layers { c.layers = l }
      if let p = overrides.dropout { c.dropout = p }
      return try GRU4Rec(configuration: c, seed: seed)
    }
  }

  /// The official training settings of the model (SPEC §10.2).
  public var defaultTraining: TrainingConfiguration {
    var t = TrainingConfiguration()
    switch self {
    case .mamba4rec: (t.epochs, t.batchSize) = (300, 2048)
    case .sigma, .sasrec, .gru4rec: (t.epochs, t.batchSize) = (200, 2048)
    case .ssd4rec:
      (t.epochs, t.batchSize, t.seed, t.maskRatio, t.maximumLength) = (300, 1024, 2024, 0.1, nil)
    }
    return t
  }

  /// Whether the model's function depends on the padded width, so batches must be padded to
  /// the maximum length (SIGMA's official prefix flip reads a fixed window).
  public var needsFixedWidth: Bool { self == .sigma }
}
