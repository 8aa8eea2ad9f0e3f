import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// The descriptors of the five built-in recommenders, with their official training settings
/// (Docs/Models.md §10.2): the only place that lists them.
enum BuiltInModels {
  static let descriptors: [ModelDescriptor] = [mamba4rec, sigma, ssd4rec, sasrec, gru4rec]

  static func training(epochs: Int, batchSize: Int, seed: UInt64 = 2020, maximumLength: Int? = 50) -> TrainingConfiguration {
    var t = TrainingConfiguration()
    (t.epochs, t.batchSize, t.seed, t.maximumLength) = (epochs, batchSize, seed, maximumLength)
    return t
  }

  static let mamba4rec = ModelDescriptor(
    Mamba4Rec.self, summary: "Mamba blocks with a feed-forward network", defaultTraining: training(epochs: 300, batchSize: 2048)
  ) { itemCount, o in
    var c = Mamba4Rec.Configuration(itemCount: itemCount)
    if let d = o.hiddenSize { (c.hiddenSize, c.innerSize) = (d, 4 * d) }
    if let l = o.layers { c.layers = l }
    if let p = o.dropout { c.dropout = p }
    return c
  } build: {
    try Mamba4Rec(configuration: $0, seed: $1)
  }

  static let sigma = ModelDescriptor(
    SIGMA.self, summary: "G-Mamba blocks with a partial flip, DS gate and FE-GRU",
    defaultTraining: training(epochs: 200, batchSize: 2048)
  ) { itemCount, o in
    var c = SIGMA.Configuration(itemCount: itemCount)
    if let d = o.hiddenSize { (c.hiddenSize, c.innerSize) = (d, 4 * d) }
    if let l = o.layers { c.layers = l }
    if let p = o.dropout { c.dropout = p }
    // The official prefix is 45 for a 50-slot window: keep its last 5 slots in place.
    if let length = o.maximumLength { c.flip = .prefix(count: Swift.max(0, length - 5)) }
    return c
  } build: {
    try SIGMA(configuration: $0, seed: $1)
  }

  static let ssd4rec = ModelDescriptor(
    SSD4Rec.self, summary: "bidirectional Mamba-2 (SSD) over packed, unpadded histories",
    defaultTraining: training(epochs: 300, batchSize: 1024, seed: 2024, maximumLength: nil)
  ) { itemCount, o in
    var c = SSD4Rec.Configuration(itemCount: itemCount)
    if let d = o.hiddenSize { (c.hiddenSize, c.innerSize) = (d, 4 * d) }
    if let l = o.layers { c.layers = l }
    if let p = o.dropout { c.dropout = p }
    return c
  } build: {
    try SSD4Rec(configuration: $0, seed: $1)
  }

  static let sasrec = ModelDescriptor(
    SASRec.self, summary: "the self-attention (Transformer) baseline", defaultTraining: training(epochs: 200, batchSize: 2048)
  ) { itemCount, o in
    var c = SASRec.Configuration(itemCount: itemCount)
    if let d = o.hiddenSize { (c.hiddenSize, c.innerSize) = (d, 4 * d) }
    if let l = o.layers { c.layers = l }
    if let p = o.dropout { (c.hiddenDropout, c.attentionDropout) = (p, p) }
    if let length = o.maximumLength { c.maximumLength = length }
    return c
  } build: {
    try SASRec(configuration: $0, seed: $1)
  }

  static let gru4rec = ModelDescriptor(
    GRU4Rec.self, summary: "the recurrent (GRU) baseline", defaultTraining: training(epochs: 200, batchSize: 2048)
  ) { itemCount, o in
    var c = GRU4Rec.Configuration(itemCount: itemCount)
    if let d = o.hiddenSize { c.hiddenSize = d }
    if let l = o.layers { c.layers = l }
    if let p = o.dropout { c.dropout = p }
    return c
  } build: {
    try GRU4Rec(configuration: $0, seed: $1)
  }
}
