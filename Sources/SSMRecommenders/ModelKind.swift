/// The five built-in recommenders by name, with their official default configurations (for
/// tools that pick a model at run time, such as the `ssmrec` command).
public enum ModelKind: String, CaseIterable, Codable, Sendable {
  case mamba4rec, sigma, ssd4rec, sasrec, gru4rec

  /// Hyperparameter overrides a user may give on the command line.
  public struct Overrides: Sendable {
    public var hiddenSize: Int?
    public var layers: Int?
    public var dropout: Float?
    public var maximumLength: Int?
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
