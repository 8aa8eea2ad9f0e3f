import Foundation
import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

/// Settings of a training run; defaults follow the official configurations (Docs/Models.md §7.8, §10.2).
public struct TrainingConfiguration: Codable, Sendable, Equatable {
  /// Maximum number of epochs.
  public var epochs: Int = 200
  /// Training batch size (official: 2048).
  public var batchSize: Int = 2048
  /// Evaluation batch size.
  public var evaluationBatchSize: Int = 256
  /// Adam learning rate (0.001).
  public var learningRate: Float = 0.001
  /// L2 weight decay of Adam (0).
  public var weightDecay: Float = 0
  /// Evaluations without improvement tolerated before stopping (RecBole `stopping_step`, 10).
  public var stoppingStep: Int = 10
  /// The validation metric that selects the best epoch (`ndcg@10`; bigger is better).
  public var validationMetric: String = "ndcg@10"
  /// Reported metrics and cut-offs.
  public var metrics: [RankingMetric] = [.hit, .ndcg, .mrr]
  /// Cut-offs K of the reported metrics (10); results are keyed `metric@K`.
  public var cutoffs: [Int] = [10]
  /// Seed of initialisation, shuffling and dropout (RecBole default 2020).
  public var seed: UInt64 = 2020
  /// `MAX_ITEM_LIST_LENGTH` (50); `nil` keeps whole histories (the official `var_len` setting). The model
  /// turns it into its ``BatchingPolicy`` (``SequentialRecommender/batching(maximumLength:)``).
  public var maximumLength: Int? = 50
  /// Which positions train: the last of each prefix instance (the official protocol, the
  /// default) or every position of each training window at once (causal models only).
  public var objective: TrainingObjective = .lastPosition
  /// What a mini-batch whose loss is NaN or infinite does: stop training (the default) or skip
  /// that batch without updating the weights, counted in ``EpochRecord/skippedBatches``.
  public var nonFiniteLoss: NonFiniteLossPolicy = .stop
  /// The loss over the catalogue: the full softmax (the official objective, the default) or a
  /// sampled loss with ``negatives`` negatives per batch drawn from ``proposal``.
  public var loss: CatalogueLoss = .crossEntropy
  /// Negatives per batch for a sampled loss, shared by the batch's rows (100).
  public var negatives: Int = 100
  /// Where a sampled loss draws its negatives (uniformly).
  public var proposal: NegativeProposal = .uniform
  /// Whether a model whose policy packs its batches (``BatchingPolicy/Padding/packed``) computes
  /// them packed (the default) or padded, which gives the same results more slowly (to measure
  /// what packing saves).
  public var packing = true

  /// The defaults above; ``ModelDescriptor/defaultTraining`` gives each registered model's
  /// official settings.
  public init() {}

  /// Throws `ConfigurationError.invalid` naming the first invalid setting, including a
  /// `validationMetric` that is not among `metrics` at `cutoffs`.
  public func validate() throws {
    func check(_ ok: Bool, _ m: String) throws { if !ok { throw ConfigurationError.invalid(m) } }
    try check(epochs > 0, "epochs must be positive")
    try check(
      (1...(1 << 24)).contains(batchSize) && (1...(1 << 20)).contains(evaluationBatchSize),
      "batch sizes must be in 1...2^24 (evaluation 1...2^20)")
    try check(learningRate > 0 && learningRate.isFinite, "learningRate must be positive and finite")
    try check(weightDecay >= 0 && weightDecay.isFinite, "weightDecay must be non-negative and finite")
    try check(stoppingStep >= 0, "stoppingStep must be non-negative")
    try check((1...(1 << 20)).contains(negatives), "negatives must be in 1...2^20")
    try check(
      maximumLength.map { (1...ConfigurationLimits.length).contains($0) } ?? true,
      "maximumLength must be in 1...\(ConfigurationLimits.length)")
    try check(!cutoffs.isEmpty && cutoffs.allSatisfy { $0 > 0 }, "cut-offs must be positive")
    let keys = Set(metrics.flatMap { m in cutoffs.map { MetricAccumulator.key(m, $0) } })
    try check(keys.contains(validationMetric), "validationMetric \(validationMetric) is not among the reported metrics")
  }
}

/// Which positions of a history a training step learns from.
public enum TrainingObjective: String, Codable, Sendable, CaseIterable {
  /// Every prefix of a training history is an instance whose last position predicts the next
  /// item: the official protocol, one encoder pass per target.
  case lastPosition = "last"
  /// One pass per training window (``SequentialSplit/trainingWindows(maximumLength:)``) and a
  /// loss at every position: the same (context → target) pairs, each once per epoch, for causal
  /// models (``SequentialRecommender/isCausal``). `batchSize` then counts training targets.
  case allPositions = "all"
}

/// What training does with a mini-batch whose loss is NaN or infinite.
public enum NonFiniteLossPolicy: String, Codable, Sendable, CaseIterable {
  /// Throw ``TrainingError/nonFiniteLoss(epoch:step:loss:)``; the checkpoints of the last finished
  /// epoch stay as they were.
  case stop
  /// Leave the weights and the optimizer untouched for that batch and go on.
  case skip
}

/// Why training cannot start or cannot go on.
public enum TrainingError: Error, Equatable, CustomStringConvertible {
  /// The split has no training instance (every user has fewer than two interactions).
  case noTrainingInstances
  /// The split has no validation instance, so no epoch could be judged better than another.
  case noValidationInstances
  /// The loss of a mini-batch was NaN or infinite (`epoch` 0-based, `step` 1-based within it).
  case nonFiniteLoss(epoch: Int, step: Int, loss: Double)
  /// The gradient of `parameter` was NaN or infinite at `epoch`, `step` although the loss was finite.
  case nonFiniteGradient(epoch: Int, step: Int, parameter: String)
  /// Every mini-batch of an epoch was skipped for a non-finite loss or gradient.
  case everyBatchSkipped(epoch: Int)
  /// The output folder does not exist and cannot be created.
  case outputFolder(path: String, reason: String)
  /// The all-position objective was asked of a model that is not causal.
  case objectiveNeedsCausalModel(String)

  /// One line saying what is wrong, for command-line errors.
  public var description: String {
    switch self {
    case .noTrainingInstances:
      return "the dataset gives no training instance (a user needs at least two interactions for one)"
    case .noValidationInstances:
      return "the dataset gives no validation instance (a user needs at least four interactions for one)"
    case .nonFiniteLoss(let epoch, let step, let loss):
      return
        "the training loss became \(loss) at epoch \(epoch), step \(step); the checkpoints of the last finished epoch are kept"
    case .nonFiniteGradient(let epoch, let step, let parameter):
      return
        "the gradient of \(parameter) became non-finite at epoch \(epoch), step \(step); the checkpoints of the last finished epoch are kept"
    case .everyBatchSkipped(let epoch):
      return "every mini-batch of epoch \(epoch) had a non-finite loss"
    case .outputFolder(let path, let reason):
      return "cannot create the output folder \(path): \(reason)"
    case .objectiveNeedsCausalModel(let kind):
      return "the all-position objective needs a causal model, and \(kind) is not one"
    }
  }
}

/// One epoch's record, written as a JSON line to the training log.
public struct EpochRecord: Codable, Sendable {
  /// The epoch (0-based).
  public var epoch: Int
  /// Mean training loss over the epoch's mini-batches.
  public var trainLoss: Double
  /// Wall-clock seconds of the epoch's training, validation excluded.
  public var trainSeconds: Double
  /// Validation metrics after the epoch, keyed `metric@K` (such as `ndcg@10`).
  public var validation: [String: Double]
  /// Wall-clock seconds of the validation evaluation.
  public var validationSeconds: Double
  /// Whether the validation metric matched or beat the best so far, making these weights the best.
  public var improved: Bool
  /// Mini-batches skipped because their loss was not finite (``NonFiniteLossPolicy/skip``).
  public var skippedBatches: Int = 0

  /// A record of one epoch.
  public init(
    epoch: Int, trainLoss: Double, trainSeconds: Double, validation: [String: Double], validationSeconds: Double,
    improved: Bool, skippedBatches: Int = 0
  ) {
    (self.epoch, self.trainLoss, self.trainSeconds, self.validation) = (epoch, trainLoss, trainSeconds, validation)
    (self.validationSeconds, self.improved, self.skippedBatches) = (validationSeconds, improved, skippedBatches)
  }

  /// Reads a record; logs written before `skippedBatches` existed read as 0 skipped.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    self.init(
      epoch: try c.decode(Int.self, forKey: .epoch), trainLoss: try c.decode(Double.self, forKey: .trainLoss),
      trainSeconds: try c.decode(Double.self, forKey: .trainSeconds),
      validation: try c.decode([String: Double].self, forKey: .validation),
      validationSeconds: try c.decode(Double.self, forKey: .validationSeconds),
      improved: try c.decode(Bool.self, forKey: .improved),
      skippedBatches: try c.decodeIfPresent(Int.self, forKey: .skippedBatches) ?? 0)
  }
}

/// The outcome of ``Trainer/fit(progress:reporter:)``.
public struct TrainingResult: Codable, Sendable {
  /// Epochs run, those of earlier runs this one resumed included.
  public var epochs: Int
  /// The epoch whose weights were kept (0-based).
  public var bestEpoch: Int
  /// Validation metrics of the best epoch, keyed `metric@K`.
  public var bestValidation: [String: Double]
  /// Test metrics of the restored best weights, keyed `metric@K`.
  public var test: [String: Double]
  /// Test metrics per history-length group.
  public var testGroups: [String: [String: Double]]
  /// Whether early stopping ended training before `epochs`.
  public var stoppedEarly: Bool
  /// Mean training seconds per epoch (validation excluded), resumed runs included.
  public var secondsPerEpoch: Double
}

/// Trains any ``SequentialRecommender`` with RecBole's loop (Docs/Models.md §7.8): shuffled mini-batches,
/// Adam, validation after every epoch, early stopping when the validation metric has not
/// improved (`≥` the best counts as an improvement) for more than `stoppingStep` evaluations,
/// the best weights restored before the test evaluation. With an output folder it keeps
/// `best.safetensors`, `last.safetensors` (with optimizer state and trainer state, for
/// `resume`), and `log.jsonl`, all written atomically.
public final class Trainer<Model: SequentialRecommender> {
  /// The model, trained in place; it holds the best weights after ``fit(progress:reporter:)``.
  public let model: Model
  /// The train, validation and test instances.
  public let split: SequentialSplit
  /// The (validated) training settings.
  public let configuration: TrainingConfiguration
  /// Adam over all the model's parameters, with L2 weight decay when `weightDecay` is not 0.
  public let optimizer: Adam
  /// Where checkpoints and `log.jsonl` go (created if needed); `nil` writes nothing.
  public let outputFolder: URL?
  /// How batches are cut and padded: the model's policy for the configured maximum length,
  /// stored in every checkpoint the trainer writes.
  public let batching: BatchingPolicy

  /// The training windows of the all-position objective (empty for the last-position one).
  let windows: [TrainingWindow]
  /// Draws each batch's negatives for a sampled loss; `nil` for the full softmax.
  let sampler: NegativeSampler?
  private var epoch = 0
  private var bestScore = -Double.infinity
  private var bestEpoch = -1
  private var bestValidation: [String: Double] = [:]
  private var bestParameters: [String: Tensor] = [:]
  private var nonImproving = 0
  private var secondsTraining = 0.0

  /// Validates `configuration`, the model's batching policy and the split, and sets up Adam.
  /// - Throws: `ConfigurationError` for an invalid setting, ``TrainingError`` for a split with no
  ///   training or no validation instance.
  public init(model: Model, split: SequentialSplit, configuration: TrainingConfiguration, outputFolder: URL? = nil) throws {
    try configuration.validate()
    var policy = model.batching(maximumLength: configuration.maximumLength)
    if !configuration.packing && policy.padding == .packed { policy.padding = .toLongest }
    batching = policy
    try batching.validate()
    guard !split.train.isEmpty else { throw TrainingError.noTrainingInstances }
    guard !split.validation.isEmpty else { throw TrainingError.noValidationInstances }
    if configuration.objective == .allPositions {
      // Windows are padded to their batch's longest, so a model that needs a fixed window cannot
      // take them even if it says it is causal.
      guard model.isCausal, batching.padding != .toWindow else { throw TrainingError.objectiveNeedsCausalModel(Model.kind) }
      windows = split.trainingWindows(maximumLength: batching.maximumLength)
    } else {
      windows = []
    }
    sampler =
      configuration.loss == .crossEntropy
      ? nil
      : NegativeSampler(
        loss: configuration.loss, count: configuration.negatives, proposal: configuration.proposal,
        itemCount: model.itemCount, targets: split.train.map(\.target))
    self.model = model
    self.split = split
    self.configuration = configuration
    self.outputFolder = outputFolder
    optimizer = Adam(
      parameters: model.namedParameters(), learningRate: configuration.learningRate,
      weightDecay: configuration.weightDecay == 0 ? .none : .l2(configuration.weightDecay))
    if let outputFolder {
      do {
        try FileManager.default.createDirectory(at: outputFolder, withIntermediateDirectories: true)
      } catch {
        throw TrainingError.outputFolder(path: outputFolder.path, reason: error.localizedDescription)
      }
    }
  }

  var evaluator: Evaluator {
    Evaluator(
      metrics: configuration.metrics, cutoffs: configuration.cutoffs, batchSize: configuration.evaluationBatchSize,
      batching: batching)
  }

  /// Continues from `last.safetensors` in the output folder: weights, optimizer state, epoch
  /// count and early-stopping state. Returns whether there was one.
  @discardableResult
  public func resume() throws -> Bool {
    guard let outputFolder else { return false }
    let last = outputFolder.appendingPathComponent("last.safetensors")
    guard FileManager.default.fileExists(atPath: last.path) else { return false }
    let contents = try Checkpoint.Contents(contentsOf: last)
    try contents.apply(to: model)
    try contents.restore(optimizer)
    guard let stateText = contents.metadata["trainer"],
      let state = try? JSONDecoder().decode(TrainerState.self, from: Data(stateText.utf8))
    else { throw CheckpointError.notACheckpoint("no trainer state in \(last.lastPathComponent)") }
    (epoch, bestScore, bestEpoch, bestValidation, nonImproving, secondsTraining) =
      (state.epoch, state.bestScore, state.bestEpoch, state.bestValidation, state.nonImproving, state.secondsTraining)
    let best = outputFolder.appendingPathComponent("best.safetensors")
    if FileManager.default.fileExists(atPath: best.path) {
      bestParameters = try Checkpoint.Contents(contentsOf: best).parameters()
    }
    return true
  }

  /// Trains until `epochs` or early stopping, restores the best weights and evaluates the test
  /// split. `progress` receives each finished epoch.
  public func fit(progress: (EpochRecord) -> Void = { _ in }, reporter: ProgressReporter? = nil) throws -> TrainingResult {
    var stoppedEarly = false
    while epoch < configuration.epochs {
      let record = try trainOneEpoch(reporter: reporter)
      progress(record)
      try writeLog(record)
      epoch += 1
      try saveLast()
      if nonImproving > configuration.stoppingStep {
        stoppedEarly = true
        break
      }
    }
    if !bestParameters.isEmpty { try model.loadParameters(bestParameters) }
    let test = evaluator.evaluate(model, on: split.test)
    var groups: [String: [String: Double]] = [:]
    for (group, values) in test.groupedResults { groups[group.rawValue] = values }
    return TrainingResult(
      epochs: epoch, bestEpoch: bestEpoch, bestValidation: bestValidation, test: test.results, testGroups: groups,
      stoppedEarly: stoppedEarly, secondsPerEpoch: secondsTraining / Double(Swift.max(epoch, 1)))
  }

  func trainOneEpoch(reporter: ProgressReporter?) throws -> EpochRecord {
    let clock = ContinuousClock()
    let started = clock.now
    var masking = SplitMix64(seed: configuration.seed &+ 7919 &* UInt64(epoch + 1))
    var context = ForwardContext.training(seed: configuration.seed &+ 104_729 &* UInt64(epoch + 1))
    let shuffleSeed = configuration.seed &+ UInt64(epoch)
    let batches: AnySequence<SequenceBatch>
    let batchCount: Int
    if configuration.objective == .allPositions {
      let windowBatches = WindowBatchSequence(windows, targetsPerBatch: configuration.batchSize, shuffleSeed: shuffleSeed)
      (batches, batchCount) = (AnySequence(windowBatches), windowBatches.count)
    } else {
      let prefixBatches = BatchSequence(
        split.train, batchSize: configuration.batchSize, shuffleSeed: shuffleSeed, batching: batching)
      (batches, batchCount) = (AnySequence(prefixBatches), prefixBatches.count)
    }
    var totalLoss = 0.0
    var step = 0
    var skipped = 0
    // After this epoch: at most the cap, at least the epochs early stopping still allows.
    let atMost = configuration.epochs - epoch - 1
    reporter?.begin(
      epoch: epoch, steps: batchCount,
      epochsAfterThis: (Swift.min(atMost, Swift.max(0, configuration.stoppingStep - nonImproving)), atMost))
    var negativeDraws = SplitMix64(seed: configuration.seed &+ 15_485_863 &* UInt64(epoch + 1))
    for var batch in batches {
      batch = model.prepareTrainingBatch(batch, using: &masking)
      batch.negatives = sampler?.draw(using: &negativeDraws)
      step += 1
      model.zeroGradients()
      let loss = model.loss(batch, context: &context)
      let value = Double(loss.value.scalar)
      // Checked before the update, so a diverged batch never reaches the weights or Adam's moments.
      guard value.isFinite else {
        if configuration.nonFiniteLoss == .stop {
          throw TrainingError.nonFiniteLoss(epoch: epoch, step: step, loss: value)
        }
        skipped += 1
        continue
      }
      loss.backward()
      // A finite loss can still have an infinite or NaN gradient, which Adam would spread into
      // every weight: the same policy applies. (A NaN or ±∞ entry makes its parameter's sum
      // non-finite.)
      if let bad = model.namedParameters().first(where: { !($0.parameter.gradient?.sum().isFinite ?? true) }) {
        if configuration.nonFiniteLoss == .stop {
          throw TrainingError.nonFiniteGradient(epoch: epoch, step: step, parameter: bad.path)
        }
        skipped += 1
        continue
      }
      optimizer.step()
      totalLoss += value
      reporter?.step(step, loss: totalLoss / Double(Swift.max(step - skipped, 1)))
    }
    if skipped == step { throw TrainingError.everyBatchSkipped(epoch: epoch) }
    let trainSeconds = seconds(clock.now - started)
    secondsTraining += trainSeconds
    let validationStart = clock.now
    let validation = evaluator.evaluate(model, on: split.validation).results
    let validationSeconds = seconds(clock.now - validationStart)
    // RecBole's early stopping: a value ≥ the best so far is an improvement. The split has
    // validation instances (checked at init), so the metric exists and is finite.
    let score = validation[configuration.validationMetric] ?? -.infinity
    let improved = score.isFinite && score >= bestScore
    if improved {
      (bestScore, bestEpoch, bestValidation, nonImproving) = (score, epoch, validation, 0)
      bestParameters = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.path, $0.parameter.value) })
      // A checkpoint that cannot be written stops training instead of being lost silently.
      try saveBest()
    } else {
      nonImproving += 1
    }
    let record = EpochRecord(
      epoch: epoch, trainLoss: totalLoss / Double(Swift.max(step - skipped, 1)), trainSeconds: trainSeconds,
      validation: validation, validationSeconds: validationSeconds, improved: improved, skippedBatches: skipped)
    reporter?.end(record)
    return record
  }

  struct TrainerState: Codable {
    var epoch: Int
    var bestScore: Double
    var bestEpoch: Int
    var bestValidation: [String: Double]
    var nonImproving: Int
    var secondsTraining: Double
  }

  func saveLast() throws {
    guard let outputFolder else { return }
    let state = TrainerState(
      epoch: epoch, bestScore: bestScore, bestEpoch: bestEpoch, bestValidation: bestValidation, nonImproving: nonImproving,
      secondsTraining: secondsTraining)
    let text = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
    try Checkpoint.save(
      model, optimizer: optimizer, batching: batching, metadata: ["trainer": text],
      to: outputFolder.appendingPathComponent("last.safetensors"))
  }

  func saveBest() throws {
    guard let outputFolder else { return }
    try Checkpoint.save(
      model, batching: batching, metadata: ["epoch": String(epoch)], to: outputFolder.appendingPathComponent("best.safetensors"))
  }

  func writeLog(_ record: EpochRecord) throws {
    guard let outputFolder else { return }
    let url = outputFolder.appendingPathComponent("log.jsonl")
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    var line = try encoder.encode(record)
    line.append(0x0A)
    if let handle = try? FileHandle(forWritingTo: url) {
      defer { try? handle.close() }
      try handle.seekToEnd()
      try handle.write(contentsOf: line)
    } else {
      try line.write(to: url)
    }
  }
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

/// Reports training progress: a redrawn bar with steps, loss, the epoch's ETA and the run's on a
/// terminal, plain lines every few seconds otherwise. The run's ETA is a range: the epochs early
/// stopping still allows if nothing improves, and the epoch cap.
public final class ProgressReporter {
  let isTerminal: Bool
  let write: (String) -> Void
  private var steps = 0
  private var epoch = 0
  private var started = ContinuousClock.now
  private var lastPrint = ContinuousClock.now
  private var epochsAfterThis = (least: 0, most: 0)
  private var finishedEpochs = 0
  private var secondsPerEpoch = 0.0

  /// A reporter that passes its text to `write`: a redrawn bar when `isTerminal` (such as
  /// `isatty(1) == 1`), plain lines otherwise.
  public init(isTerminal: Bool, write: @escaping (String) -> Void) {
    self.isTerminal = isTerminal
    self.write = write
  }

  func begin(epoch: Int, steps: Int, epochsAfterThis: (Int, Int) = (0, 0)) {
    (self.epoch, self.steps, self.epochsAfterThis) = (epoch, steps, epochsAfterThis)
    started = .now
    lastPrint = .now
  }

  /// `, run 2–31 min` once an epoch has been timed (epochs include validation).
  private func runETA(epochRemaining: Double) -> String {
    guard finishedEpochs > 0 else { return "" }
    func text(_ s: Double) -> String { s < 120 ? String(format: "%.0fs", s) : String(format: "%.0f min", s / 60) }
    let least = epochRemaining + Double(epochsAfterThis.least) * secondsPerEpoch
    let most = epochRemaining + Double(epochsAfterThis.most) * secondsPerEpoch
    return least == most ? ", run \(text(most))" : ", run \(text(least))–\(text(most))"
  }

  func step(_ step: Int, loss: Double) {
    let elapsed = seconds(ContinuousClock.now - started)
    let eta = elapsed / Double(step) * Double(steps - step)
    let run = runETA(epochRemaining: eta)
    if isTerminal {
      let width = 30
      let filled = width * step / Swift.max(steps, 1)
      let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
      write(
        "\r\u{1B}[2Kepoch \(epoch) \(bar) \(step)/\(steps) loss \(String(format: "%.4f", loss)) ETA \(String(format: "%.0f", eta))s\(run)"
      )
    } else if seconds(ContinuousClock.now - lastPrint) >= 10 || step == steps {
      lastPrint = .now
      write(
        "epoch \(epoch) step \(step)/\(steps) loss \(String(format: "%.4f", loss)) eta \(String(format: "%.0f", eta))s\(run)\n")
    }
  }

  func end(_ record: EpochRecord) {
    let wall = seconds(ContinuousClock.now - started)
    secondsPerEpoch = (secondsPerEpoch * Double(finishedEpochs) + wall) / Double(finishedEpochs + 1)
    finishedEpochs += 1
    if isTerminal { write("\r\u{1B}[2K") }
    let metrics = record.validation.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(
      separator: " ")
    write(
      "epoch \(record.epoch): loss \(String(format: "%.4f", record.trainLoss)), \(String(format: "%.1f", record.trainSeconds))s; valid \(metrics)\(record.improved ? " *" : "")\n"
    )
  }
}
