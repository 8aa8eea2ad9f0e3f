import ArgumentParser
import Foundation
import SSMRecommenders

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
    subcommands: [Info.self, Train.self, Evaluate.self, Recommend.self, Bench.self])
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
  func file() throws -> URL {
    let url = URL(fileURLWithPath: data)
    var isFolder: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) else {
      throw DatasetError.fileNotFound(url.path)
    }
    guard isFolder.boolValue else { return url }
    let named = url.appendingPathComponent(url.lastPathComponent + ".inter")
    if FileManager.default.fileExists(atPath: named.path) { return named }
    let inters = ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).filter { $0.hasSuffix(".inter") }.sorted()
    guard let first = inters.first else { throw DatasetError.fileNotFound(named.path) }
    return url.appendingPathComponent(first)
  }

  func load() throws -> InteractionDataset {
    try InteractionDataset(
      contentsOf: try file(), userInterval: userInterval.flatMap(CountInterval.init(parsing:)),
      itemInterval: itemInterval.flatMap(CountInterval.init(parsing:)))
  }
}

extension ModelKind: ExpressibleByArgument {}

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
      print(try jsonString([
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
  static let configuration = CommandConfiguration(abstract: "Train a recommender with the RecBole protocol and report test metrics.")
  @Option(name: .long, help: "mamba4rec, sigma, ssd4rec, sasrec or gru4rec.") var model: ModelKind
  @OptionGroup var data: DataOptions
  @Option(name: .long, help: "Maximum epochs (default: the model's official setting).") var epochs: Int?
  @Option(name: .long, help: "Training batch size (default: the model's official setting).") var batchSize: Int?
  @Option(name: .long, help: "MAX_ITEM_LIST_LENGTH (default 50; SSD4Rec keeps whole histories unless given).") var maxLength: Int?
  @Option(name: .long, help: "Seed of initialisation, shuffling and dropout.") var seed: UInt64?
  @Option(name: .long, help: "Adam learning rate (default 0.001).") var learningRate: Float?
  @Option(name: .long, help: "Evaluations without improvement before stopping (default 10).") var stoppingStep: Int?
  @Option(name: .long, help: "Embedding / model width.") var hiddenSize: Int?
  @Option(name: .long, help: "Number of layers.") var layers: Int?
  @Option(name: .long, help: "Dropout probability.") var dropout: Float?
  @Option(name: .long, help: "Folder for checkpoints, log.jsonl and metrics.json.") var output: String = "ssmrec-run"
  @Flag(name: .long, help: "Continue from OUTPUT/last.safetensors.") var resume = false
  @Flag(name: .long, help: "Print plain progress lines even on a terminal.") var plain = false

  func validate() throws {
    if let epochs, epochs <= 0 { throw ValidationError("--epochs must be positive") }
    if let batchSize, batchSize <= 0 { throw ValidationError("--batch-size must be positive") }
    if let maxLength, maxLength <= 0 { throw ValidationError("--max-length must be positive") }
    if let learningRate, learningRate <= 0 { throw ValidationError("--learning-rate must be positive") }
    if let dropout, !(dropout >= 0 && dropout < 1) { throw ValidationError("--dropout must be in [0, 1)") }
  }

  func run() throws {
    let dataset = try data.load()
    var settings = model.defaultTraining
    if let epochs { settings.epochs = epochs }
    if let batchSize { settings.batchSize = batchSize }
    if let maxLength { settings.maximumLength = maxLength } else if model != .ssd4rec { settings.maximumLength = 50 }
    if let seed { settings.seed = seed }
    if let learningRate { settings.learningRate = learningRate }
    if let stoppingStep { settings.stoppingStep = stoppingStep }
    let split = SequentialSplit(dataset, maximumLength: settings.maximumLength)
    let recommender = try model.makeModel(
      itemCount: dataset.itemCount,
      overrides: .init(hiddenSize: hiddenSize, layers: layers, dropout: dropout, maximumLength: settings.maximumLength ?? 50),
      seed: settings.seed)
    let folder = URL(fileURLWithPath: output)
    print("\(model.rawValue): \(recommender.parameterCount) parameters; \(split.train.count) training instances; batch \(settings.batchSize); up to \(settings.epochs) epochs")
    fflush(nil)
    let result = try train(recommender, split: split, settings: settings, folder: folder)
    print("test: \(formatted(result.test))  (best epoch \(result.bestEpoch), \(result.epochs) epochs, \(String(format: "%.1f", result.secondsPerEpoch)) s/epoch)")
    let metrics: [String: Any] = [
      "model": model.rawValue, "test": paperNames(result.test), "valid": paperNames(result.bestValidation),
      "epochs": result.epochs, "best_epoch": result.bestEpoch, "seconds_per_epoch": result.secondsPerEpoch,
      "stopped_early": result.stoppedEarly, "test_groups": result.testGroups.mapValues(paperNames),
      "peak_resident_mib": Double(peakResidentKiB()) / 1024,
    ]
    try jsonString(metrics).write(to: folder.appendingPathComponent("metrics.json"), atomically: true, encoding: .utf8)
  }

  func train<M: SequentialRecommender>(_ recommender: M, split: SequentialSplit, settings: TrainingConfiguration, folder: URL) throws -> TrainingResult {
    let trainer = try Trainer(model: recommender, split: split, configuration: settings, outputFolder: folder, fixedWidth: model.needsFixedWidth)
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

func peakResidentKiB() -> Int {
  var usage = rusage()
  getrusage(RUSAGE_SELF_VALUE, &usage)
  return usage.ru_maxrss
}

#if canImport(Glibc)
  let RUSAGE_SELF_VALUE = Int32(RUSAGE_SELF.rawValue)
#else
  let RUSAGE_SELF_VALUE = RUSAGE_SELF
#endif

struct Evaluate: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Evaluate a checkpoint on a dataset's test split (full ranking).")
  @Option(name: .long, help: "A checkpoint written by `ssmrec train` (best.safetensors).") var checkpoint: String
  @OptionGroup var data: DataOptions
  @Option(name: .long, help: "MAX_ITEM_LIST_LENGTH used in training (default 50; none for SSD4Rec).") var maxLength: Int?
  @Option(name: .long, help: "Cut-offs, comma-separated.") var k: String = "10"
  @Flag(name: .long, help: "Print the metrics as JSON.") var json = false

  func run() throws {
    let recommender = try Checkpoint.loadModel(from: URL(fileURLWithPath: checkpoint))
    let dataset = try data.load()
    guard dataset.itemCount == recommender.itemCount else {
      throw ValidationError("the checkpoint scores \(recommender.itemCount) item ids but the dataset has \(dataset.itemCount)")
    }
    let cutoffs = try k.split(separator: ",").map { text -> Int in
      guard let v = Int(text), v > 0 else { throw ValidationError("--k \"\(k)\" is not a list of positive integers") }
      return v
    }
    let kind = ModelKind(rawValue: type(of: recommender).kind)
    let length: Int? = maxLength ?? (kind == .ssd4rec ? nil : 50)
    let split = SequentialSplit(dataset, maximumLength: length)
    let evaluator = Evaluator(metrics: [.hit, .ndcg, .mrr], cutoffs: cutoffs, width: kind?.needsFixedWidth == true ? length : nil)
    let results = evaluator.evaluate(recommender, on: split.test).results
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
  @Option(name: .long, help: "MAX_ITEM_LIST_LENGTH used in training (default 50).") var maxLength: Int = 50

  func validate() throws {
    if (history == nil) == (users == nil) { throw ValidationError("give exactly one of --history and --users") }
    if k <= 0 { throw ValidationError("-k must be positive") }
  }

  func run() throws {
    let recommender = try Checkpoint.loadModel(from: URL(fileURLWithPath: checkpoint))
    let dataset = try data.load()
    let itemIDs = Dictionary(uniqueKeysWithValues: dataset.itemTokens.enumerated().map { ($0.element, $0.offset) })
    var labels: [String] = []
    var histories: [[Int]] = []
    if let history {
      let tokens = history.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      guard !tokens.isEmpty else { throw ValidationError("--history is empty") }
      histories.append(try tokens.map { token in
        guard let id = itemIDs[token], id > 0 else { throw ValidationError("unknown item \(token)") }
        return id
      })
      labels.append("history")
    } else if let users {
      let split = SequentialSplit(dataset, maximumLength: nil)
      let userIDs = Dictionary(uniqueKeysWithValues: dataset.userTokens.enumerated().map { ($0.element, Int32($0.offset)) })
      for token in users.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
        guard let id = userIDs[token], id > 0 else { throw ValidationError("unknown user \(token)") }
        // The full history: the test instance's history plus its target.
        guard let last = split.test.first(where: { $0.user == id }) ?? split.train.last(where: { $0.user == id }) else {
          throw ValidationError("user \(token) has no history")
        }
        histories.append((last.history + [last.target]).map(Int.init))
        labels.append(token)
      }
    }
    let kind = ModelKind(rawValue: type(of: recommender).kind)
    let width = kind?.needsFixedWidth == true ? maxLength : Swift.min(maxLength, histories.map(\.count).max() ?? 1)
    let batch = try SequenceBatch(histories: histories, width: width)
    let top = recommender.recommend(batch, k: k)
    for (label, items) in zip(labels, top) {
      print("\(label): " + items.map { dataset.itemTokens[$0] }.joined(separator: " "))
    }
  }
}

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Time one training step and one inference batch on random data.")
  @Option(name: .long, help: "mamba4rec, sigma, ssd4rec, sasrec or gru4rec.") var model: ModelKind = .mamba4rec
  @Option(name: .long, help: "Batch size.") var batch: Int = 256
  @Option(name: .long, help: "Sequence length L.") var length: Int = 50
  @Option(name: .long, help: "Item ids V (including padding).") var items: Int = 3417
  @Option(name: .long, help: "Timed repeats after one warm-up.") var repeats: Int = 10
  @Option(name: .long, help: "Embedding / model width (default: the model's official setting).") var hiddenSize: Int?
  @Option(name: .long, help: "Number of layers (default: the model's official setting).") var layers: Int?
  @Flag(name: .long, help: "Print one JSON object.") var json = false
  @Flag(name: .long, help: "Also print where a training step's time goes, operation by operation.") var profile = false

  func validate() throws {
    if batch <= 0 || length <= 1 || items <= 1 || repeats <= 0 { throw ValidationError("--batch, --length, --items and --repeats must be positive (length and items at least 2)") }
  }

  func run() throws {
    let recommender = try model.makeModel(
      itemCount: items, overrides: .init(hiddenSize: hiddenSize, layers: layers, maximumLength: length), seed: 1)
    var rng = SplitMix64(seed: 7)
    // Histories of random lengths up to L (at least half full), random items.
    let histories = (0..<batch).map { _ in
      (0..<(length / 2 + Int(rng.next() % UInt64(length - length / 2 + 1)))).map { _ in 1 + Int(rng.next() % UInt64(items - 1)) }
    }
    let targets = (0..<batch).map { _ in 1 + Int(rng.next() % UInt64(items - 1)) }
    let sequences = try SequenceBatch(histories: histories, targets: targets, width: length)
    let (train, infer) = measure(recommender, sequences)
    if profile { printProfile(recommender, sequences) }
    let result: [String: Any] = [
      "model": model.rawValue, "batch": batch, "length": length, "items": items, "train_step_ms": train.median,
      "train_step_min_ms": train.minimum, "train_step_max_ms": train.maximum, "infer_batch_ms": infer.median,
      "infer_batch_min_ms": infer.minimum, "infer_batch_max_ms": infer.maximum, "repeats": repeats,
      "peak_resident_mib": Double(peakResidentKiB()) / 1024, "parameters": recommender.parameterCount,
    ]
    if json {
      print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
    } else {
      print("\(model.rawValue) B=\(batch) L=\(length) V=\(items): train step \(String(format: "%.1f", train.median)) ms (min \(String(format: "%.1f", train.minimum))), inference batch \(String(format: "%.1f", infer.median)) ms (min \(String(format: "%.1f", infer.minimum))), peak RSS \(peakResidentKiB() / 1024) MiB")
    }
  }

  struct Timing { var median, minimum, maximum: Double }

  /// Runs `repeats` training steps under an ``OperationProfile`` and prints the operations that
  /// took the most time, per step (to standard error when the main output is JSON).
  func printProfile<M: SequentialRecommender>(_ model: M, _ batch: SequenceBatch) {
    let adam = Adam(parameters: model.namedParameters(), learningRate: 1e-3)
    var context = ForwardContext.training(seed: 1)
    let profile = OperationProfile()
    var optimizer = Duration.zero
    let start = ContinuousClock.now
    for _ in 0..<repeats {
      model.zeroGradients()
      profile.measure { model.loss(batch, context: &context).backward() }
      let before = ContinuousClock.now
      adam.step()
      optimizer += ContinuousClock.now - before
    }
    let perStep = { (d: Duration) in milliseconds(d) / Double(repeats) }
    let step = perStep(ContinuousClock.now - start)
    var lines = ["operation                                   calls  forward ms  backward ms  share"]
    for entry in profile.entries.prefix(25) {
      lines.append(
        String(
          format: "%-42@ %6d %11.2f %12.2f %5.1f%%", String(entry.operation.prefix(42)), entry.calls / repeats,
          perStep(entry.forward), perStep(entry.backward), 100 * perStep(entry.total) / step))
    }
    lines.append(String(format: "%-42@ %6d %11.2f %12s %5.1f%%", "optimizer step", 1, perStep(optimizer), "", 100 * perStep(optimizer) / step))
    lines.append(String(format: "training step (all of the above and the rest) %.2f ms", step))
    let text = lines.joined(separator: "\n") + "\n"
    if json { FileHandle.standardError.write(Data(text.utf8)) } else { print(text, terminator: "") }
  }

  func measure<M: SequentialRecommender>(_ model: M, _ batch: SequenceBatch) -> (Timing, Timing) {
    let adam = Adam(parameters: model.namedParameters(), learningRate: 1e-3)
    var context = ForwardContext.training(seed: 1)
    func step() {
      model.zeroGradients()
      model.loss(batch, context: &context).backward()
      adam.step()
    }
    func inference() { _ = model.recommend(batch, k: 10) }
    func time(_ body: () -> Void) -> Timing {
      body()
      var samples: [Double] = []
      for _ in 0..<Swift.max(repeats, 1) {
        let start = ContinuousClock.now
        body()
        samples.append(milliseconds(ContinuousClock.now - start))
      }
      samples.sort()
      return Timing(median: samples[samples.count / 2], minimum: samples[0], maximum: samples[samples.count - 1])
    }
    let infer = time(inference)
    return (time(step), infer)
  }
}

func milliseconds(_ d: Duration) -> Double {
  (Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18) * 1e3
}
