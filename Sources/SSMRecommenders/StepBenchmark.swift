import Foundation
import SSMAutograd
import SSMKernels
import SSMLayers
import SSMMetrics
import SSMTensor

#if canImport(Glibc)
  import Glibc
#endif

/// Times one training step (forward, full-softmax loss, backward, Adam) and one inference batch
/// (scores over all items, top 10) of a built-in recommender on random data, the measurement
/// behind `ssmrec bench` and the model cases of the package's benchmarks.
///
///     let result = try StepBenchmark.run(.init(model: "mamba4rec", length: 200), repeats: 10)
///     print(result.train.median, result.trainGigaflopsPerSecond)
package enum StepBenchmark {
  /// One configuration: a model at its official hyperparameters (or the overridden width and
  /// depth) and the batch shape.
  package struct Case: Sendable, Hashable {
    /// The recommender's registered name (``ModelDescriptor/name``).
    package var model: String
    /// Sequences per batch.
    package var batch: Int
    /// The padded history length L (also the model's maximum length).
    package var length: Int
    /// Item ids V, padding included.
    package var items: Int
    /// The embedding width, or `nil` for the official setting.
    package var hiddenSize: Int?
    /// The number of layers, or `nil` for the official setting.
    package var layers: Int?
    /// Whether the training step's loss is on every position (``TrainingObjective/allPositions``,
    /// causal models) instead of each history's last.
    package var allPositions: Bool

    /// A case; the defaults are the reference configuration of the performance comparison.
    package init(
      model: String, batch: Int = 256, length: Int = 50, items: Int = 3417, hiddenSize: Int? = nil, layers: Int? = nil,
      allPositions: Bool = false
    ) {
      (self.model, self.batch, self.length, self.items, self.hiddenSize, self.layers, self.allPositions) = (
        model, batch, length, items, hiddenSize, layers, allPositions
      )
    }
  }

  /// Wall-clock statistics of repeated runs, in milliseconds.
  package struct Timing: Sendable, Equatable {
    /// The median run.
    package var median: Double
    /// The fastest run.
    package var minimum: Double
    /// The slowest run.
    package var maximum: Double

    init(samples: [Double]) {
      let sorted = samples.sorted()
      median = sorted[sorted.count / 2]
      minimum = sorted.first!
      maximum = sorted.last!
    }
  }

  /// The measurements of one case.
  package struct Result: Sendable {
    /// What was measured.
    package var configuration: Case
    /// One training step.
    package var train: Timing
    /// One inference batch.
    package var inference: Timing
    /// The work of one training step: its counted operations and its memory-bound traffic.
    package var trainWorkload: StepWorkload
    /// The work of one inference batch.
    package var inferenceWorkload: StepWorkload
    /// The machine's rates the floors are computed from: the mean of readings taken before and
    /// after the case.
    package var ceilings: MachineCeilings
    /// Floating-point operations of one training step, as ``FLOPCounter`` counts them (matrix
    /// products and the scan/SSD/convolution kernels; elementwise work is not counted).
    package var trainOperations: Int { trainWorkload.counts.operations }
    /// Floating-point operations of one inference batch, counted the same way.
    package var inferenceOperations: Int { inferenceWorkload.counts.operations }
    /// The training step's floor on this machine.
    package var trainFloor: StepFloor { trainWorkload.floor(on: ceilings) }
    /// The inference batch's floor on this machine.
    package var inferenceFloor: StepFloor { inferenceWorkload.floor(on: ceilings) }
    /// The process's peak resident memory while this case ran, in MiB (on Linux the peak is
    /// reset before each case; elsewhere it is the process's peak so far).
    package var peakResidentMiB: Double
    /// The model's trainable parameters.
    package var parameters: Int

    /// Counted operations per second of the median training step, in GFLOP/s.
    package var trainGigaflopsPerSecond: Double { Double(trainOperations) / train.median / 1e6 }
    /// Counted operations per second of the median inference batch, in GFLOP/s.
    package var inferenceGigaflopsPerSecond: Double { Double(inferenceOperations) / inference.median / 1e6 }

    /// The result as a flat JSON-friendly dictionary (times in ms, `train_step_ms` and
    /// `infer_batch_ms` being the medians).
    package var dictionary: [String: Any] {
      var d: [String: Any] = [
        "model": configuration.model, "batch": configuration.batch, "length": configuration.length,
        "items": configuration.items, "train_step_ms": train.median, "train_step_min_ms": train.minimum,
        "train_step_max_ms": train.maximum, "infer_batch_ms": inference.median, "infer_batch_min_ms": inference.minimum,
        "infer_batch_max_ms": inference.maximum, "train_step_gflop": Double(trainOperations) / 1e9,
        "train_gflops_per_s": trainGigaflopsPerSecond, "infer_batch_gflop": Double(inferenceOperations) / 1e9,
        "infer_gflops_per_s": inferenceGigaflopsPerSecond, "peak_resident_mib": peakResidentMiB, "parameters": parameters,
      ]
      for (prefix, floor, workload) in [("train", trainFloor, trainWorkload), ("infer", inferenceFloor, inferenceWorkload)] {
        d["\(prefix)_floor_ms"] = floor.total
        d["\(prefix)_floor_products_ms"] = floor.matrixProducts
        d["\(prefix)_floor_kernel_ms"] = floor.kernelArithmetic
        d["\(prefix)_floor_exp_ms"] = floor.exponentials
        d["\(prefix)_floor_memory_ms"] = floor.memory
        // What the memory part would be if every byte moved at the in-cache copy's rate.
        d["\(prefix)_floor_memory_in_cache_ms"] = 1e3 * Double(workload.memoryBytes) / ceilings.memoryBandwidth
        d["\(prefix)_exponentials"] = workload.counts.exponentials
        d["\(prefix)_memory_mb"] = Double(workload.memoryBytes) / 1e6
      }
      d["train_to_floor"] = train.median / trainFloor.total
      d["ceiling_products_gflops"] = ceilings.matrixProductRate / 1e9
      d["ceiling_exponentials_per_ns"] = ceilings.exponentialRate / 1e9
      d["ceiling_memcpy_gb_per_s"] = ceilings.memoryBandwidth / 1e9
      d["ceiling_copy_gb_per_s_by_mib"] = Dictionary(
        uniqueKeysWithValues: ceilings.copyRates.map { (String($0.key >> 20), $0.value / 1e9) })
      d["infer_to_floor"] = inference.median / inferenceFloor.total
      if let h = configuration.hiddenSize { d["hidden_size"] = h }
      if let l = configuration.layers { d["layers"] = l }
      if configuration.allPositions { d["objective"] = "all" }
      return d
    }
  }

  /// Builds the case's model (seed 1) and a batch of random histories (at least half full) and
  /// targets.
  package static func prepare(_ c: Case) throws -> (model: any SequentialRecommender, batch: SequenceBatch) {
    let model = try ModelRegistry.shared.descriptor(named: c.model).makeModel(
      itemCount: c.items, overrides: .init(hiddenSize: c.hiddenSize, layers: c.layers, maximumLength: c.length), seed: 1)
    var rng = SplitMix64(seed: 7)
    let histories = (0..<c.batch).map { _ in
      (0..<(c.length / 2 + Int(rng.next() % UInt64(c.length - c.length / 2 + 1)))).map { _ in
        1 + Int(rng.next() % UInt64(c.items - 1))
      }
    }
    let targets = (0..<c.batch).map { _ in 1 + Int(rng.next() % UInt64(c.items - 1)) }
    guard c.allPositions else { return (model, try SequenceBatch(histories: histories, targets: targets, width: c.length)) }
    // Every position of every history predicts the item after it (the last one a random target).
    let windows = zip(histories, targets).map { history, target in
      TrainingWindow(user: 0, items: history.map(Int32.init), targets: (history.dropFirst() + [target]).map(Int32.init))
    }
    guard model.isCausal else { throw TrainingError.objectiveNeedsCausalModel(c.model) }
    return (model, try SequenceBatch(windows: windows))
  }

  /// Measures a case: one warm-up of each kind, then `repeats` timed inference batches and
  /// `repeats` timed training steps.
  /// - Throws: ``ModelRegistryError`` for an unknown model, `ConfigurationError` for sizes it
  ///   cannot take.
  package static func run(_ c: Case, repeats: Int) throws -> Result {
    precondition(repeats > 0 && c.batch > 0 && c.length > 1 && c.items > 1, "StepBenchmark: bad case \(c)")
    resetPeakResidentMemory()
    let (model, batch) = try prepare(c)
    return measure(model, batch, c, repeats: repeats)
  }

  private static func measure<M: SequentialRecommender>(_ model: M, _ batch: SequenceBatch, _ c: Case, repeats: Int) -> Result {
    let adam = Adam(parameters: model.namedParameters(), learningRate: 1e-3)
    var context = ForwardContext.training(seed: 1)
    func step() {
      model.zeroGradients()
      model.loss(batch, context: &context).backward()
      adam.step()
    }
    func inference() { _ = model.recommend(batch, k: 10) }
    func time(extraMemoryBytes: Int = 0, _ body: () -> Void) -> (Timing, StepWorkload) {
      let workload = StepWorkload.count(extraMemoryBytes: extraMemoryBytes, body)  // the warm-up
      var samples: [Double] = []
      for _ in 0..<repeats {
        let start = ContinuousClock.now
        body()
        samples.append(milliseconds(ContinuousClock.now - start))
      }
      return (Timing(samples: samples), workload)
    }
    // Measured on each side of the case, so the floor sees the machine the case saw (shared VMs
    // drift by tens of percent within minutes).
    let before = MachineCeilings.measure()
    let (inferenceTiming, inferenceWorkload) = time(inference)
    // Adam reads each parameter, its gradient and two moments and writes three of them back.
    let (trainTiming, trainWorkload) = time(extraMemoryBytes: 28 * model.parameterCount, step)
    let ceilings = MachineCeilings.mean(before, MachineCeilings.measure())
    return Result(
      configuration: c, train: trainTiming, inference: inferenceTiming, trainWorkload: trainWorkload,
      inferenceWorkload: inferenceWorkload, ceilings: ceilings, peakResidentMiB: Double(peakResidentKiB()) / 1024,
      parameters: model.parameterCount)
  }

  /// Runs `repeats` training steps of a case under an ``OperationProfile``: the time per step
  /// of every recorded operation, the optimizer step and the whole step.
  package static func profile(_ c: Case, repeats: Int) throws -> (
    entries: [OperationProfile.Entry], optimizer: Duration, step: Duration
  ) {
    let (model, batch) = try prepare(c)
    return profile(model, batch, repeats: repeats)
  }

  private static func profile<M: SequentialRecommender>(_ model: M, _ batch: SequenceBatch, repeats: Int) -> (
    entries: [OperationProfile.Entry], optimizer: Duration, step: Duration
  ) {
    let adam = Adam(parameters: model.namedParameters(), learningRate: 1e-3)
    var context = ForwardContext.training(seed: 1)
    let operations = OperationProfile()
    var optimizer = Duration.zero
    let start = ContinuousClock.now
    for _ in 0..<repeats {
      model.zeroGradients()
      operations.measure { model.loss(batch, context: &context).backward() }
      let before = ContinuousClock.now
      adam.step()
      optimizer += ContinuousClock.now - before
    }
    let total = ContinuousClock.now - start
    let perStep = operations.entries.map { e in
      OperationProfile.Entry(
        operation: e.operation, calls: e.calls / repeats, forward: e.forward / repeats, backward: e.backward / repeats)
    }
    return (perStep, optimizer / repeats, total / repeats)
  }

  /// The process's peak resident set size in KiB.
  package static func peakResidentKiB() -> Int {
    #if os(Linux)
      if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kib = Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
      {
        return kib
      }
    #endif
    var usage = rusage()
    #if canImport(Glibc)
      getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
      return Int(usage.ru_maxrss)
    #else
      getrusage(RUSAGE_SELF, &usage)
      return Int(usage.ru_maxrss) / 1024  // bytes on Darwin
    #endif
  }

  /// Returns freed heap memory to the system (SSMRec's allocator tuning keeps it for reuse) and
  /// resets the peak resident set size to the current size (Linux; a no-op elsewhere), so the
  /// next case's peak is its own.
  static func resetPeakResidentMemory() {
    releaseFreedHeapMemory()
    #if os(Linux)
      if let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") {
        handle.write(Data("5".utf8))
        try? handle.close()
      }
    #endif
  }
}

/// A duration in milliseconds.
package func milliseconds(_ d: Duration) -> Double { seconds(d) * 1e3 }
