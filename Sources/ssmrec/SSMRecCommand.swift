import ArgumentParser
import Foundation
import SSMAutograd
import SSMLayers
import SSMMetrics
import SSMRecommenders
import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

@main
struct SSMRecCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ssmrec",
    abstract: "Train, evaluate and serve state-space sequential recommenders on the CPU.",
    subcommands: [Info.self, Train.self, Evaluate.self, Recommend.self, Bench.self, Plot.self])
}

/// Where a dataset lives and how it is filtered.
struct DataOptions: ParsableArguments {
  @Option(name: .long, help: "A RecBole dataset folder holding NAME.inter, or a .inter, u.data, ratings.dat or .csv file.")
  var data: String

  @Option(name: .long, help: "Keep users whose interaction count is in this interval, e.g. \"[5,inf)\".")
  var userInterval: String?

  @Option(name: .long, help: "Keep items whose interaction count is in this interval, e.g. \"[5,inf)\".")
  var itemInterval: String?

  func validate() throws {
    for (name, value) in [("--user-interval", userInterval), ("--item-interval", itemInterval)] {
      if let value, CountInterval(parsing: value) == nil {
        throw ValidationError("\(name) \"\(value)\" is not an interval like \"[5,inf)\"")
      }
    }
  }

  /// The interaction file the path names.
  func file() throws -> URL { try interactionFile(data) }

  /// The filtered dataset; says on standard error when the file has no timestamp column, since
  /// the chronological split then follows file order.
  func load() throws -> InteractionDataset {
    try loadDataset(data, userInterval: userInterval, itemInterval: itemInterval)
  }
}

/// The interaction file a path names: the file itself, or a RecBole folder's `NAME.inter` (the
/// first `.inter` file in it otherwise).
func interactionFile(_ path: String) throws -> URL {
  let url = URL(fileURLWithPath: path)
  var isFolder: ObjCBool = false
  guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) else {
    throw DatasetError.fileNotFound(url.path)
  }
  guard isFolder.boolValue else { return url }
  let named = url.appendingPathComponent(url.lastPathComponent + ".inter")
  if FileManager.default.fileExists(atPath: named.path) { return named }
  let inters = ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).filter { $0.hasSuffix(".inter") }
    .sorted()
  guard let first = inters.first else { throw DatasetError.fileNotFound(named.path) }
  return url.appendingPathComponent(first)
}

/// The dataset at `path`, filtered by the count intervals; notes on standard error a file
/// without timestamps.
func loadDataset(_ path: String, userInterval: String?, itemInterval: String?) throws -> InteractionDataset {
  let url = try interactionFile(path)
  let dataset = try InteractionDataset(
    contentsOf: url, userInterval: userInterval.flatMap(CountInterval.init(parsing:)),
    itemInterval: itemInterval.flatMap(CountInterval.init(parsing:)))
  if !dataset.hasTimestamps {
    FileHandle.standardError.write(
      Data("note: \(url.lastPathComponent) has no timestamp column; each user's interactions are taken in file order\n".utf8))
  }
  return dataset
}

/// Any encodable value, to encode an existential's.
struct AnyEncodable: Encodable {
  let value: any Encodable
  init(_ value: any Encodable) { self.value = value }
  func encode(to encoder: any Encoder) throws { try value.encode(to: encoder) }
}

/// An error found while running a command whose arguments were well-formed: ArgumentParser
/// prints it as one line, without the usage text it adds to a `ValidationError`.
struct CommandError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// The item ids of a dataset's tokens (the padding id excluded).
func itemIDs(of dataset: InteractionDataset) -> [String: Int] {
  var ids: [String: Int] = [:]
  for (id, token) in dataset.itemTokens.enumerated() where id > 0 { ids[token] = id }
  return ids
}

/// The batching a checkpoint's model was trained with, or its policy at `maximumLength` when a
/// flag overrides it (said on standard error) or the checkpoint does not record one.
func batching(of recommender: any SequentialRecommender, in contents: Checkpoint.Contents, overriding maximumLength: Int?) throws
  -> BatchingPolicy
{
  let policy = contents.batching(for: recommender, overriding: maximumLength)
  if let stored = contents.batching, stored != policy {
    FileHandle.standardError.write(Data("note: batching \(policy) instead of the checkpoint's \(stored)\n".utf8))
  }
  try policy.validate()
  return policy
}

/// Refuses a dataset whose item ids the checkpoint does not score.
func checkItemCount(_ recommender: any SequentialRecommender, _ dataset: InteractionDataset) throws {
  guard dataset.itemCount == recommender.itemCount else {
    throw CommandError("the checkpoint scores \(recommender.itemCount) item ids but the dataset has \(dataset.itemCount)")
  }
}

/// The process's peak resident memory so far, in MiB (`getrusage`: KiB on Linux, bytes on Darwin).
func peakResidentMiB() -> Double {
  var usage = rusage()
  #if canImport(Darwin)
    guard getrusage(RUSAGE_SELF, &usage) == 0 else { return 0 }
    return Double(usage.ru_maxrss) / (1024 * 1024)
  #else
    guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
    return Double(usage.ru_maxrss) / 1024
  #endif
}

/// The registered model names, for help texts.
let modelNames = ModelRegistry.shared.names.joined(separator: ", ")

/// The descriptor of a registered model, refusing an unknown name as a usage error.
func descriptor(named name: String) throws -> ModelDescriptor {
  do { return try ModelRegistry.shared.descriptor(named: name) } catch { throw ValidationError("\(error)") }
}

/// Metric names as the papers print them: `hr@10` for RecBole's hit ratio.
func paperNames(_ metrics: [String: Double]) -> [String: Double] {
  Dictionary(uniqueKeysWithValues: metrics.map { ($0.key.hasPrefix("hit@") ? "hr@" + $0.key.dropFirst(4) : $0.key, $0.value) })
}

func formatted(_ metrics: [String: Double]) -> String {
  paperNames(metrics).sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: "  ")
}

func jsonString(_ object: Any) throws -> String {
  String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self)
}

struct Info: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Print dataset statistics after filtering.")
  @OptionGroup var data: DataOptions
  @Flag(name: .long, help: "Print JSON.") var json = false

  func run() throws {
    let dataset = try data.load()
    let s = dataset.statistics
    let split = SequentialSplit(dataset, maximumLength: nil)
    if json {
      print(
        try jsonString([
          "users": s.users, "items": s.items, "interactions": s.interactions, "average_length": s.averageLength,
          "sparsity": s.sparsity, "train_instances": split.train.count, "valid_instances": split.validation.count,
          "test_instances": split.test.count,
        ]))
    } else {
      print("users \(s.users)  items \(s.items)  interactions \(s.interactions)  (counts include the padding id 0)")
      print("average length \(String(format: "%.2f", s.averageLength))  sparsity \(String(format: "%.2f", s.sparsity * 100))%")
      print("instances: train \(split.train.count)  valid \(split.validation.count)  test \(split.test.count)")
    }
  }
}

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train a recommender with the RecBole protocol and report test metrics.",
    discussion: """
      Settings come from the flags, from a configuration file (--config, keys named like the long \
      flags: model, data, epochs, batch-size, max-length, loss, …), or both, the flags overriding \
      the file. The output folder keeps the resolved settings in config.json (`ssmrec train \
      --config OUTPUT/config.json` repeats the run) and the model's hyperparameters in \
      model-configuration.json.
      """)
  @Option(name: .long, help: "A run configuration (.json, .yaml or .yml) whose keys are these long flag names.")
  var config: String?
  @Option(name: .long, help: ArgumentHelp("One of the registered models.", discussion: modelNames)) var model: String?
  @Option(name: .long, help: "A RecBole dataset folder holding NAME.inter, or a .inter, u.data, ratings.dat or .csv file.")
  var data: String?
  @Option(name: .long, help: "Keep users whose interaction count is in this interval, e.g. \"[5,inf)\".")
  var userInterval: String?
  @Option(name: .long, help: "Keep items whose interaction count is in this interval, e.g. \"[5,inf)\".")
  var itemInterval: String?
  @Option(name: .long, help: "Maximum epochs (default: the model's official setting).") var epochs: Int?
  @Option(name: .long, help: "Training batch size (default: the model's official setting).") var batchSize: Int?
  @Option(name: .long, help: "MAX_ITEM_LIST_LENGTH (default: the model's official setting).")
  var maxLength: Int?
  @Option(name: .long, help: "Seed of initialisation, shuffling and dropout.") var seed: UInt64?
  @Option(name: .long, help: "Adam learning rate (default 0.001).") var learningRate: Float?
  @Option(name: .long, help: "Evaluations without improvement before stopping (default 10).") var stoppingStep: Int?
  @Option(name: .long, help: "Embedding / model width.") var hiddenSize: Int?
  @Option(name: .long, help: "Number of layers.") var layers: Int?
  @Option(name: .long, help: "Dropout probability.") var dropout: Float?
  @Option(name: .long, help: "Folder for checkpoints, log.jsonl and metrics.json (default ssmrec-run).") var output: String?
  @Option(
    name: .long,
    help:
      "last: each prefix's last position (the official protocol, default); all: every position of each training window at once (causal models)."
  )
  var objective: String?
  @Option(
    name: .long,
    help: "ce: softmax over all items (default); sampled-softmax, bpr or bce: over the target and --negatives sampled items.")
  var loss: String?
  @Option(name: .long, help: "Negatives per batch for a sampled loss, shared by its rows (default 100).") var negatives: Int?
  @Option(name: .long, help: "Where negatives are drawn from: uniform (default) or popularity.") var proposal: String?
  @Option(
    name: .long,
    help: ArgumentHelp(
      "A .json or .yaml file of model configuration keys (e.g. {\"heads\": 8}), set before --hidden-size, --layers and --dropout.",
      discussion: "A run's model-configuration.json holds every key of its model; any subset of them may be given."))
  var modelSettings: String?
  @Flag(name: .long, help: "Continue from OUTPUT/last.safetensors.") var resume = false
  @Flag(name: .long, help: "Print plain progress lines even on a terminal.") var plain = false
  @Flag(name: .long, help: "Compute batches padded even for a model that packs them (the same results, to measure packing).")
  var padded = false

  /// The flags given on the command line, as settings.
  var flags: RunConfiguration {
    var c = RunConfiguration()
    (c.model, c.data, c.userInterval, c.itemInterval) = (model, data, userInterval, itemInterval)
    (c.epochs, c.batchSize, c.maxLength, c.seed, c.learningRate, c.stoppingStep) = (
      epochs, batchSize, maxLength, seed, learningRate, stoppingStep
    )
    (c.hiddenSize, c.layers, c.dropout, c.output, c.objective) = (hiddenSize, layers, dropout, output, objective)
    (c.loss, c.negatives, c.proposal, c.modelSettings) = (loss, negatives, proposal, modelSettings)
    c.padded = padded ? true : nil
    return c
  }

  /// The configuration file's settings overridden by the flags.
  func settings() throws -> RunConfiguration {
    try (config.map(RunConfiguration.init(contentsOf:)) ?? RunConfiguration()).overridden(by: flags)
  }

  func validate() throws { try settings().validate() }

  func run() throws {
    AllocatorTuning.applyForTraining()
    var run = try settings()
    let model = run.model!
    let dataset = try loadDataset(run.data!, userInterval: run.userInterval, itemInterval: run.itemInterval)
    let descriptor = try descriptor(named: model)
    var settings = descriptor.defaultTraining
    if let epochs = run.epochs { settings.epochs = epochs }
    if let batchSize = run.batchSize { settings.batchSize = batchSize }
    if let maxLength = run.maxLength { settings.maximumLength = maxLength }
    if let seed = run.seed { settings.seed = seed }
    if let learningRate = run.learningRate { settings.learningRate = learningRate }
    if let stoppingStep = run.stoppingStep { settings.stoppingStep = stoppingStep }
    settings.objective = run.objective.flatMap(TrainingObjective.init(rawValue:)) ?? .lastPosition
    settings.loss = run.loss.flatMap(CatalogueLoss.init(rawValue:)) ?? .crossEntropy
    if let negatives = run.negatives { settings.negatives = negatives }
    settings.proposal = run.proposal.flatMap(NegativeProposal.init(rawValue:)) ?? .uniform
    settings.packing = !(run.padded ?? false)
    run.padded = !settings.packing
    // Every setting the run used, filled in, for config.json.
    (run.epochs, run.batchSize, run.maxLength, run.seed) = (
      settings.epochs, settings.batchSize, settings.maximumLength, settings.seed
    )
    (run.learningRate, run.stoppingStep, run.objective) = (
      settings.learningRate, settings.stoppingStep, settings.objective.rawValue
    )
    (run.loss, run.negatives, run.proposal) = (settings.loss.rawValue, settings.negatives, settings.proposal.rawValue)
    run.output = run.output ?? "ssmrec-run"
    run.data = URL(fileURLWithPath: run.data!).standardizedFileURL.path
    run.modelSettings = run.modelSettings.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    let split = SequentialSplit(dataset, maximumLength: settings.maximumLength)
    let recommender = try descriptor.makeModel(
      itemCount: dataset.itemCount,
      overrides: .init(
        hiddenSize: run.hiddenSize, layers: run.layers, dropout: run.dropout, maximumLength: settings.maximumLength,
        settings: try run.modelSettingsJSON()),
      seed: settings.seed)
    let folder = URL(fileURLWithPath: run.output!)
    print(
      "\(model): \(recommender.parameterCount) parameters; \(split.train.count) training instances; batch \(settings.batchSize); up to \(settings.epochs) epochs"
    )
    fflush(nil)
    let result = try train(recommender, split: split, settings: settings, folder: folder)
    print(
      "test: \(formatted(result.test))  (best epoch \(result.bestEpoch), \(result.epochs) epochs, \(String(format: "%.1f", result.secondsPerEpoch)) s/epoch)"
    )
    let metrics: [String: Any] = [
      "model": model, "objective": settings.objective.rawValue, "loss": settings.loss.rawValue,
      "test": paperNames(result.test), "valid": paperNames(result.bestValidation),
      "epochs": result.epochs, "best_epoch": result.bestEpoch, "seconds_per_epoch": result.secondsPerEpoch,
      "stopped_early": result.stoppedEarly, "test_groups": result.testGroups.mapValues(paperNames),
      "peak_resident_mib": peakResidentMiB(),
    ]
    try jsonString(metrics).write(to: folder.appendingPathComponent("metrics.json"), atomically: true, encoding: .utf8)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(run).write(to: folder.appendingPathComponent("config.json"), options: .atomic)
    try encoder.encode(AnyEncodable(recommender.configuration)).write(
      to: folder.appendingPathComponent("model-configuration.json"), options: .atomic)
  }

  func train<M: SequentialRecommender>(_ recommender: M, split: SequentialSplit, settings: TrainingConfiguration, folder: URL)
    throws -> TrainingResult
  {
    let trainer = try Trainer(model: recommender, split: split, configuration: settings, outputFolder: folder)
    if resume {
      if try trainer.resume() { print("resumed from \(folder.appendingPathComponent("last.safetensors").path)") }
    }
    let reporter = ProgressReporter(isTerminal: !plain && isatty(1) == 1) { text in
      // Through stdout and flushed (fflush(nil) flushes every stream), so progress and results
      // stay in order when the output goes to a file or a pipe.
      print(text, terminator: "")
      fflush(nil)
    }
    return try trainer.fit(reporter: reporter)
  }
}

struct Evaluate: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Evaluate a checkpoint on a dataset's test split (full ranking).")
  @Option(name: .long, help: "A checkpoint written by `ssmrec train` (best.safetensors).") var checkpoint: String
  @OptionGroup var data: DataOptions
  @Option(name: .long, help: "Override the maximum history length the checkpoint was trained with.") var maxLength: Int?
  @Option(name: .long, help: "Cut-offs, comma-separated.") var k: String = "10"
  @Flag(name: .long, help: "Print the metrics as JSON.") var json = false
  @Option(
    name: .long,
    help: ArgumentHelp(
      "Feed each test history through a stream, one event at a time: exact or unbounded.",
      discussion: "exact gives the same ranks as without it; unbounded carries a recurrent state over whole histories."))
  var window: StreamingWindow?
  @Option(name: .long, help: "Evaluate only test users whose history is longer than this many items.") var longerThan: Int?

  var cutoffs: [Int]? {
    let values = k.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
    guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 && ($0 ?? 0) <= 100_000 }) else { return nil }
    return values.map { $0! }
  }

  func validate() throws {
    if let maxLength, maxLength <= 0 { throw ValidationError("--max-length must be positive") }
    if let longerThan, longerThan < 0 { throw ValidationError("--longer-than must not be negative") }
    if cutoffs == nil { throw ValidationError("--k \"\(k)\" is not a list of integers in 1...100000") }
  }

  func run() throws {
    AllocatorTuning.applyForTraining()
    let contents = try Checkpoint.Contents(contentsOf: URL(fileURLWithPath: checkpoint))
    let recommender = try Checkpoint.loadModel(from: contents)
    let dataset = try data.load()
    try checkItemCount(recommender, dataset)
    let cutoffs = self.cutoffs!
    let batching = try batching(of: recommender, in: contents, overriding: maxLength)
    // Streams read whole histories (the window cuts them, or not); batches read cut ones.
    let split = SequentialSplit(dataset, maximumLength: window == nil ? batching.maximumLength : nil)
    let evaluator = Evaluator(metrics: [.hit, .ndcg, .mrr], cutoffs: cutoffs, batching: batching)
    let test =
      try longerThan.map { n in
        guard window != nil else { throw CommandError("--longer-than needs --window (batched histories are already cut)") }
        return split.test.filter { $0.history.count > n }
      } ?? split.test
    let streamed = window.map { ", streaming with the \($0.rawValue) window" } ?? ""
    FileHandle.standardError.write(
      Data("evaluating \(contents.kind) with batching \(batching)\(streamed) on \(test.count) test users\n".utf8))
    guard !test.isEmpty else {
      throw CommandError("the dataset gives no test instance (a user needs at least three interactions for one)")
    }
    let results =
      try window.map { try evaluator.evaluateStreaming(recommender, on: test, window: $0).results }
      ?? evaluator.evaluate(recommender, on: test).results
    if json { print(try jsonString(paperNames(results))) } else { print("test: \(formatted(results))") }
  }
}

struct Recommend: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Top-K items for a history or for users of a dataset.")
  @Option(name: .long, help: "A checkpoint written by `ssmrec train`.") var checkpoint: String
  @OptionGroup var data: DataOptions
  @Option(name: .long, help: "Item tokens of a history, oldest first, comma-separated.") var history: String?
  @Option(name: .long, help: "User tokens whose full histories to use, comma-separated.") var users: String?
  @Option(name: [.short, .long], help: "How many items to return.") var k: Int = 10
  @Option(name: .long, help: "Override the maximum history length the checkpoint was trained with.") var maxLength: Int?
  @Flag(name: .long, help: "Never recommend an item already in the history.") var excludeSeen = false

  func validate() throws {
    if (history == nil) == (users == nil) { throw ValidationError("give exactly one of --history and --users") }
    if k <= 0 { throw ValidationError("-k must be positive") }
    if let maxLength, maxLength <= 0 { throw ValidationError("--max-length must be positive") }
  }

  func run() throws {
    let contents = try Checkpoint.Contents(contentsOf: URL(fileURLWithPath: checkpoint))
    let recommender = try Checkpoint.loadModel(from: contents)
    let dataset = try data.load()
    try checkItemCount(recommender, dataset)
    let itemIDs = itemIDs(of: dataset)
    var labels: [String] = []
    var histories: [[Int]] = []
    if let history {
      let tokens = history.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      guard !tokens.isEmpty else { throw CommandError("--history names no item") }
      histories.append(
        try tokens.map { token in
          guard let id = itemIDs[token] else { throw CommandError("unknown item \(token)") }
          return id
        })
      labels.append("history")
    } else if let users {
      let split = SequentialSplit(dataset, maximumLength: nil)
      var userIDs: [String: Int32] = [:]
      for (id, token) in dataset.userTokens.enumerated() where id > 0 { userIDs[token] = Int32(id) }
      for token in users.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
        guard let id = userIDs[token] else { throw CommandError("unknown user \(token)") }
        // The full history: the test instance's history plus its target.
        guard let last = split.test.first(where: { $0.user == id }) ?? split.train.last(where: { $0.user == id }) else {
          throw CommandError("user \(token) has no history")
        }
        histories.append((last.history + [last.target]).map(Int.init))
        labels.append(token)
      }
    }
    let batch = try batching(of: recommender, in: contents, overriding: maxLength).batch(histories)
    let top = recommender.recommend(batch, k: k, excluding: excludeSeen ? histories.map(Set.init) : nil)
    // Titles, where the dataset has an item file with them (ML-100K's ml-100k.item).
    let titles = itemTitles(nextTo: try data.file())
    for (label, items) in zip(labels, top) {
      print("\(label): " + items.map { dataset.itemTokens[$0] }.joined(separator: " "))
      guard !titles.isEmpty else { continue }
      for (rank, item) in items.enumerated() {
        let token = dataset.itemTokens[item]
        print("  \(String(format: "%2d", rank + 1)). \(titles[token] ?? "(no title)")  [\(token)]")
      }
    }
  }
}

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Time training steps and inference batches on random data.",
    discussion: """
      Without --model, --length or --items, runs every model at L 50 and 200 and V 1683 and 3417 \
      (B 256, official hyperparameters). Options may be repeated. With --json, prints one JSON \
      object per case (train_step_ms and infer_batch_ms are medians).
      """)
  @Option(name: .long, help: ArgumentHelp("A registered model (repeatable; default: all).", discussion: modelNames)) var model:
    [String] = []
  @Option(name: .long, help: "Batch size.") var batch: Int = 256
  @Option(name: .long, help: "Sequence length L (repeatable; default: 50 and 200).") var length: [Int] = []
  @Option(name: .long, help: "Item ids V including padding (repeatable; default: 1683 and 3417).") var items: [Int] = []
  @Option(name: .long, help: "Timed repeats after one warm-up.") var repeats: Int = 10
  @Option(name: .long, help: "Embedding / model width (default: the model's official setting).") var hiddenSize: Int?
  @Option(name: .long, help: "Number of layers (default: the model's official setting).") var layers: Int?
  @Flag(name: .long, help: "Print one JSON object per case.") var json = false
  @Option(name: .long, help: "The training step's loss: last (each history's last position) or all (every position).")
  var objective: TrainingObjective = .lastPosition
  @Flag(name: .long, help: "Also print where a training step's time goes, operation by operation.") var profile = false
  @Flag(
    name: .long,
    help: ArgumentHelp(
      "Time one event of a growing history instead: the streaming update against encoding it again.",
      discussion: "Default: the models that stream incrementally, at L 50, 200 and 1000, V 3417.")
  ) var streaming = false

  func validate() throws {
    for name in model { _ = try descriptor(named: name) }
    if let hiddenSize, !(1...ConfigurationLimits.width).contains(hiddenSize) {
      throw ValidationError("--hidden-size must be in 1...\(ConfigurationLimits.width)")
    }
    if let layers, !(1...ConfigurationLimits.layers).contains(layers) {
      throw ValidationError("--layers must be in 1...\(ConfigurationLimits.layers)")
    }
    if batch <= 0 || repeats <= 0 || length.contains(where: { $0 <= 1 }) || items.contains(where: { $0 <= 1 }) {
      throw ValidationError("--batch and --repeats must be positive, --length and --items at least 2")
    }
    // Random data of these sizes is allocated up front; refuse sizes no machine holds.
    if batch > 65_536 || repeats > 10_000 || length.contains(where: { $0 > 100_000 })
      || items.contains(where: { $0 > 100_000_000 })
      || length.contains(where: { batch * $0 > 1 << 26 }) || items.contains(where: { batch * $0 > 1 << 28 })
      || length.contains(where: { batch * $0 * $0 > 1 << 31 })
    {
      throw ValidationError(
        "--batch ≤ 65536, --repeats ≤ 10000, --length ≤ 100000, --items ≤ 100000000, batch·length ≤ 2^26, batch·items ≤ 2^28 and batch·length² ≤ 2^31"
      )
    }
  }

  var cases: [StepBenchmark.Case] {
    // The all-position objective is for causal models only.
    let models =
      !model.isEmpty
      ? model
      : ModelRegistry.shared.names.filter { name in
        objective == .lastPosition
          || ((try? ModelRegistry.shared.descriptor(named: name).makeModel(itemCount: 2, overrides: .init(), seed: 1))?
            .isCausal ?? false)
      }
    let lengths = length.isEmpty ? [50, 200] : length
    let itemCounts = items.isEmpty ? [1683, 3417] : items
    return models.flatMap { m in
      lengths.flatMap { l in
        itemCounts.map { v in
          StepBenchmark.Case(
            model: m, batch: batch, length: l, items: v, hiddenSize: hiddenSize, layers: layers,
            allPositions: objective == .allPositions)
        }
      }
    }
  }

  func runStreaming() throws {
    let models =
      model.isEmpty
      ? try ModelRegistry.shared.names.filter {
        try ModelRegistry.shared.descriptor(named: $0).makeModel(itemCount: 2, overrides: .init(), seed: 1).streamingUpdate
          != .reencode
      } : model
    if !json { print("model      update            L      V   append µs   re-encode µs   speed-up   top-10 µs") }
    for m in models {
      for l in length.isEmpty ? [50, 200, 1000] : length {
        for v in items.isEmpty ? [3417] : items {
          let r = try StreamingBenchmark.run(.init(model: m, length: l, items: v), repeats: repeats)
          if json {
            let line = try JSONSerialization.data(withJSONObject: r.dictionary, options: [.sortedKeys])
            print(String(decoding: line, as: UTF8.self))
          } else {
            print(
              String(
                format: "%@ %@ %5d %6d %11.1f %14.1f %9.1f× %11.1f", m.padding(toLength: 10, withPad: " ", startingAt: 0),
                r.update.description.padding(toLength: 16, withPad: " ", startingAt: 0), l, v, r.append.median, r.reencode.median,
                r.speedup, r.topK.median))
          }
        }
      }
    }
  }

  func run() throws {
    AllocatorTuning.applyForTraining()
    if streaming { return try runStreaming() }
    if !json {
      print(
        "OpenBLAS kernels: \(BLAS.kernelFamily ?? "unknown"); each case's floor uses the mean of ceilings measured just before and just after it"
      )
      print(
        "model      B    L     V   train ms (min–max)     floor  ×floor   infer ms (min–max)    floor  ×floor  GFLOP/step  GFLOP/s  peak MiB"
      )
    }
    for c in cases {
      let r = try StepBenchmark.run(c, repeats: repeats)
      if json {
        print(String(decoding: try JSONSerialization.data(withJSONObject: r.dictionary, options: [.sortedKeys]), as: UTF8.self))
      } else {
        print(
          String(
            format: "%@ %4d %4d %5d %8.1f (%.1f–%.1f) %8.1f %6.2f %9.1f (%.1f–%.1f) %7.1f %6.2f %9.2f %8.1f %9.0f",
            c.model.padding(toLength: 9, withPad: " ", startingAt: 0), c.batch, c.length, c.items, r.train.median,
            r.train.minimum, r.train.maximum, r.trainFloor.total, r.train.median / r.trainFloor.total, r.inference.median,
            r.inference.minimum, r.inference.maximum, r.inferenceFloor.total, r.inference.median / r.inferenceFloor.total,
            Double(r.trainOperations) / 1e9, r.trainGigaflopsPerSecond, r.peakResidentMiB))
        let (f, ceilings) = (r.trainFloor, r.ceilings)
        print(
          String(
            format: "           train floor ms: products %.1f, kernel arithmetic %.1f, exponentials %.1f (%.0f M), "
              + "memory %.1f (%.0f MB); ceilings: products %.1f GFLOP/s, exponentials %.2f G/s, copies (read + written) GB/s: %@",
            f.matrixProducts, f.kernelArithmetic, f.exponentials, Double(r.trainWorkload.counts.exponentials) / 1e6,
            f.memory, Double(r.trainWorkload.memoryBytes) / 1e6, ceilings.matrixProductRate / 1e9,
            ceilings.exponentialRate / 1e9, ceilings.copyRatesDescription))
      }
      if profile { try printProfile(c) }
    }
  }

  /// Prints the operations that took the most time in a training step (to standard error when
  /// the main output is JSON).
  func printProfile(_ c: StepBenchmark.Case) throws {
    let (entries, optimizer, step) = try StepBenchmark.profile(c, repeats: repeats)
    let stepMs = milliseconds(step)
    func row(_ name: String, _ calls: Int, _ forward: Double, _ backward: Double?) -> String {
      let total = forward + (backward ?? 0)
      return name.padding(toLength: 44, withPad: " ", startingAt: 0)
        + String(format: "%6d %11.2f ", calls, forward)
        + (backward.map { String(format: "%12.2f", $0) } ?? String(repeating: " ", count: 12))
        + String(format: " %6.1f%%", 100 * total / stepMs)
    }
    var lines = ["operation".padding(toLength: 44, withPad: " ", startingAt: 0) + " calls  forward ms  backward ms   share"]
    for e in entries.prefix(25) {
      lines.append(row(e.operation, e.calls, milliseconds(e.forward), milliseconds(e.backward)))
    }
    lines.append(row("optimizer step", 1, milliseconds(optimizer), nil))
    lines.append(String(format: "training step (all of the above and the rest): %.2f ms", stepMs))
    let text = lines.joined(separator: "\n") + "\n"
    if json { FileHandle.standardError.write(Data(text.utf8)) } else { print(text, terminator: "") }
  }
}

extension StreamingWindow: ExpressibleByArgument {}
extension TrainingObjective: ExpressibleByArgument {}
