import CBLAS
import Foundation
import SSMRecommenders
import SSMTestSupport
import XCTest

/// The `ssmrec bench` cases: one training step and one inference batch of every built-in model
/// (official hyperparameters), with the counted GFLOP/s set against the rate of a raw
/// `cblas_sgemm` at a model-like shape measured in the same process.
///
/// Quick mode: B 16, L 20, V 500. `SSMREC_BENCH=full`: B 256, L 50 and 200, V 1683 and 3417,
/// the grid of the performance comparison (several minutes; SSD4Rec at L 200 dominates).
final class ModelBenchmarks: XCTestCase {
  /// The allocator setting the `ssmrec` command uses, so the figures match it.
  override class func setUp() {
    super.setUp()
    AllocatorTuning.applyForTraining()
  }

  override func setUpWithError() throws {
    #if DEBUG
      throw XCTSkip("Benchmarks run in release builds: swift test -c release --filter SSMBenchmarks")
    #endif
  }

  /// GFLOP/s of one product [rows·64] × [64·256] split over both workers, the shape of the
  /// Mamba input projection: the rate the models' matrix products can at best reach.
  static func referenceSgemmRate() -> Double {
    let (m, k, n) = (Benchmark.isFull ? 12_800 : 1_600, 64, 256)
    var rng = SplitMix64(seed: 3)
    let a = Tensor.randomNormal([m, k], using: &rng)
    let b = Tensor.randomNormal([k, n], using: &rng)
    let timing = Benchmark.time(repeats: 10) { blackHole(Tensor.matmul(a, b)) }
    return 2 * Double(m * n * k) / timing.median / 1e9
  }

  func testEveryModelStep() throws {
    let sgemm = Self.referenceSgemmRate()
    let cases: [StepBenchmark.Case] =
      Benchmark.isFull
      ? ModelRegistry.shared.names.flatMap { model in
        [50, 200].flatMap { length in [1683, 3417].map { StepBenchmark.Case(model: model, length: length, items: $0) } }
      }
      : ModelRegistry.shared.names.map { StepBenchmark.Case(model: $0, batch: 16, length: 20, items: 500) }
    for c in cases {
      let r = try StepBenchmark.run(c, repeats: Benchmark.isFull ? 10 : 5)
      XCTAssertGreaterThan(r.trainOperations, r.inferenceOperations, "\(c.model): a step does more work than inference")
      Benchmark.report(
        "model_step_\(c.model)_B\(c.batch)_L\(c.length)_V\(c.items)",
        Benchmark.Timing(median: r.train.median / 1e3, minimum: r.train.minimum / 1e3, maximum: r.train.maximum / 1e3),
        [
          "infer_ms": r.inference.median, "train_gflop": Double(r.trainOperations) / 1e9,
          "train_gflops": r.trainGigaflopsPerSecond, "infer_gflops": r.inferenceGigaflopsPerSecond,
          "sgemm_gflops": sgemm, "fraction_of_sgemm_rate": r.trainGigaflopsPerSecond / sgemm,
          "peak_mib": r.peakResidentMiB,
        ])
    }
  }
}
