// A recommender written against SSMRec's model contract alone, from SSMLayers parts: a
// bidirectional Mamba encoder (one Mamba block read forwards, one on the paper's per-sequence
// partial flip) mixed with an FE-GRU branch. It declares its own batching policy and its own
// objective, registers itself, and is trained, evaluated, checkpointed and reloaded through the
// code paths the built-in models use: Trainer, Evaluator, Checkpoint and ModelRegistry.
//
//   swift run -c release CustomRecommender [path/to/dataset.inter] [epochs]
//
// Without a path it trains on a small synthetic dataset it writes itself.

import Foundation
import SSMAutograd
import SSMLayers
import SSMRecommenders
import SSMTensor

final class BidirectionalMambaGRU: SequentialRecommender {
  struct Configuration: Codable, Sendable {
    var itemCount: Int
    var dimension = 32
    var stateSize = 16
    var keepLast = 2
    var dropout: Float = 0.2
    var window = 20
    var smoothing: Float = 0.1
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

  /// The flip mixes the whole history into every position, so older items than the last
  /// `window` only add noise: histories are always cut there, whatever the run asks for.
  func batching(maximumLength: Int?) -> BatchingPolicy {
    .upTo(Swift.min(maximumLength ?? configuration.window, configuration.window))
  }

  /// Label-smoothed cross-entropy: `(1 − ε)·CE + ε·mean(−log softmax)`, which keeps the model from
  /// betting everything on one next item.
  func loss(_ batch: SequenceBatch, context: inout ForwardContext) -> Variable {
    let logits = Variable.matmul(encode(batch, context: &context), itemEmbedding.variable, transposeB: true)
    let crossEntropy = Variable.softmaxCrossEntropy(logits: logits, targets: batch.targets!)
    let uniform = -logits.logSoftmax().mean(alongAxis: 1).mean()
    return (1 - configuration.smoothing) * crossEntropy + configuration.smoothing * uniform
  }
}

/// 200 users walking overlapping cycles through 60 items (the next item is predictable).
func syntheticDataset() throws -> URL {
  var lines = ["user_id:token\titem_id:token\ttimestamp:float"]
  var rng = SplitMix64(seed: 11)
  for user in 0..<200 {
    let start = Int(rng.next() % 60)
    let stride = 1 + Int(rng.next() % 3)
    for t in 0..<12 { lines.append("u\(user)\ti\((start + t * stride) % 60)\t\(t)") }
  }
  let url = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-synthetic.inter")
  try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
  return url
}

/// Fails the example (and CI, which runs it) when a promise of the contract does not hold.
func require(_ condition: Bool, _ message: String) {
  if !condition {
    FileHandle.standardError.write(Data("CustomRecommender: \(message)\n".utf8))
    exit(1)
  }
}

try ModelRegistry.shared.register(
  ModelDescriptor(BidirectionalMambaGRU.self, summary: "bidirectional Mamba with an FE-GRU branch") { itemCount, overrides in
    var c = BidirectionalMambaGRU.Configuration(itemCount: itemCount)
    if let d = overrides.hiddenSize { c.dimension = d }
    if let p = overrides.dropout { c.dropout = p }
    return c
  } build: { configuration, seed in
    BidirectionalMambaGRU(configuration: configuration, seed: seed)
  })

let arguments = CommandLine.arguments.dropFirst()
let dataURL = try arguments.first.map { URL(fileURLWithPath: $0) } ?? syntheticDataset()
let dataset = try InteractionDataset(contentsOf: dataURL)
let descriptor = try ModelRegistry.shared.descriptor(named: BidirectionalMambaGRU.kind)
var settings = descriptor.defaultTraining
settings.epochs = arguments.dropFirst().first.flatMap { Int($0) } ?? 3
settings.batchSize = 256
settings.learningRate = 0.003
let model = try descriptor.makeModel(itemCount: dataset.itemCount, seed: settings.seed)
let split = SequentialSplit(dataset, maximumLength: model.batching(maximumLength: settings.maximumLength).maximumLength)
let output = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-custom-\(getpid())")
defer { try? FileManager.default.removeItem(at: output) }
let result = try train(model)

/// Trains through the built-in models' trainer (generic over the concrete model type).
@MainActor func train<Model: SequentialRecommender>(_ model: Model) throws -> TrainingResult {
  let trainer = try Trainer(model: model, split: split, configuration: settings, outputFolder: output)
  print(
    "\(Model.kind): \(model.parameterCount) parameters, \(split.train.count) training instances, batching \(trainer.batching)")
  return try trainer.fit { record in
    print(
      "epoch \(record.epoch): loss \(String(format: "%.4f", record.trainLoss)), valid ndcg@10 \(String(format: "%.4f", record.validation["ndcg@10"] ?? 0))"
    )
  }
}
print(
  "test:", result.test.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: "  "))

// Reload the best checkpoint through the registry, as `ssmrec evaluate` does, and evaluate it
// with the batching the checkpoint recorded: the same metrics come back.
let contents = try Checkpoint.Contents(contentsOf: output.appendingPathComponent("best.safetensors"))
require(
  contents.batching == .upTo(20), "the checkpoint records batching \(contents.batching.map(String.init(describing:)) ?? "none")")
let reloaded = try Checkpoint.loadModel(from: contents)
require(reloaded is BidirectionalMambaGRU, "the registry rebuilt a \(type(of: reloaded))")
let again = Evaluator(batching: contents.batching).evaluate(reloaded, on: split.test).results
require(again == result.test, "the reloaded model scores \(again), the trained one \(result.test)")
print("reloaded \(BidirectionalMambaGRU.kind) from its checkpoint: the same test metrics")
