// A recommender written against SSMRec's Model protocol alone, from SSMLayers parts: a
// bidirectional Mamba encoder (one Mamba block read forwards, one on the paper's per-sequence
// partial flip) mixed with an FE-GRU branch. Training, evaluation and checkpoints come from
// SSMRecommenders' Trainer, exactly as for the built-in models.
//
//   swift run -c release CustomRecommender [path/to/dataset.inter] [epochs]
//
// Without a path it trains on a small synthetic dataset it writes itself.

import Foundation
import SSMRecommenders

final class BidirectionalMambaGRU: SequentialRecommender {
  struct Configuration: Codable, Sendable {
    var itemCount: Int
    var dimension = 32
    var stateSize = 16
    var keepLast = 2
    var dropout: Float = 0.2
  }

  static let kind = "bidirectional-mamba-gru"
  let configuration: Configuration
  let items: Embedding
  let forward: MambaBlock
  let backward: MambaBlock
  let features: FeatureExtractionGRU
  let norm: LayerNorm
  let dropout: Dropout
  var itemEmbedding: Parameter { items.weight }

  init(configuration: Configuration, seed: UInt64 = 2020) {
    var rng = SplitMix64(seed: seed)
    self.configuration = configuration
    items = Embedding(count: configuration.itemCount, dimension: configuration.dimension, paddingIndex: 0, using: &rng)
    forward = MambaBlock(modelDimension: configuration.dimension, stateSize: configuration.stateSize, using: &rng)
    backward = MambaBlock(modelDimension: configuration.dimension, stateSize: configuration.stateSize, using: &rng)
    features = FeatureExtractionGRU(dimension: configuration.dimension, using: &rng)
    norm = LayerNorm(dimension: configuration.dimension)
    dropout = Dropout(probability: configuration.dropout)
    applyBlanketInitialization(using: &rng)
  }

  func namedParameters() -> [(path: String, parameter: Parameter)] {
    prefixed("item_embedding", items.namedParameters()) + prefixed("forward", forward.namedParameters())
      + prefixed("backward", backward.namedParameters()) + prefixed("fe_gru", features.namedParameters())
      + prefixed("norm", norm.namedParameters())
  }

  func encode(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    let x = dropout(items(batch.items), context: &context)
    let flipped = x.partialFlip(keepingLast: configuration.keepLast, lengths: batch.lengths)
    let mixed = forward(x) + backward(flipped) + features(x)
    return norm(mixed + x).gatherTimeSteps(batch.lengths.map { $0 - 1 })
  }
}

/// 200 users walking overlapping cycles through 60 items (the next item is predictable).
func syntheticDataset() throws -> URL {
  var lines = ["user_id:token\titem_id:token\ttimestamp:float"]
  var rng = SplitMix64(seed: 11)
  for user in 0..<200 {
    let start = Int(rng.next() % 60), stride = 1 + Int(rng.next() % 3)
    for t in 0..<12 { lines.append("u\(user)\ti\((start + t * stride) % 60)\t\(t)") }
  }
  let url = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-synthetic.inter")
  try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
  return url
}

let arguments = CommandLine.arguments.dropFirst()
let dataURL = try arguments.first.map { URL(fileURLWithPath: $0) } ?? syntheticDataset()
let dataset = try InteractionDataset(contentsOf: dataURL)
let split = SequentialSplit(dataset, maximumLength: 50)
let model = BidirectionalMambaGRU(configuration: .init(itemCount: dataset.itemCount))
var settings = TrainingConfiguration()
settings.epochs = arguments.dropFirst().first.flatMap { Int($0) } ?? 3
settings.batchSize = 256
settings.learningRate = 0.003
let output = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-custom-\(getpid())")
let trainer = try Trainer(model: model, split: split, configuration: settings, outputFolder: output)
print("\(BidirectionalMambaGRU.kind): \(model.parameterCount) parameters, \(split.train.count) training instances")
let result = try trainer.fit { record in
  print("epoch \(record.epoch): loss \(String(format: "%.4f", record.trainLoss)), valid ndcg@10 \(String(format: "%.4f", record.validation["ndcg@10"] ?? 0))")
}
print("test:", result.test.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: "  "))
try? FileManager.default.removeItem(at: output)
