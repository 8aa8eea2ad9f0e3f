import SSMAutograd
import SSMKernels
import SSMRecommenders
import SSMTensor
import SSMTestSupport
import XCTest

/// The counts behind `ssmrec bench`'s floors: what each kind of work adds, and the floor's
/// arithmetic.
final class StepFloorTests: XCTestCase {
  func testProductsKernelsAndExponentialsAreCountedApart() {
    var rng = SplitMix64(seed: 5)
    let a = Tensor.randomUniform([7, 5], lowerBound: -1, upperBound: 1, using: &rng)
    let b = Tensor.randomUniform([5, 3], lowerBound: -1, upperBound: 1, using: &rng)
    let product = FLOPCounter.measureCounts { Tensor.matmul(a, b) }.counts
    XCTAssertEqual(product, FLOPCounter.Counts(matrixProducts: 2 * 7 * 3 * 5, kernel: 0, exponentials: 0))
    XCTAssertEqual(FLOPCounter.measureCounts { a.applying(.sigmoid) }.counts.exponentials, 35)
    XCTAssertEqual(FLOPCounter.measureCounts { a.applying(.relu) }.counts, FLOPCounter.Counts())
    XCTAssertEqual(FLOPCounter.measureCounts { a.softmax() }.counts.exponentials, 35)

    let (batch, length, channels, state) = (2, 3, 4, 5)
    let inputs = SelectiveScan.Inputs(
      u: Tensor.randomUniform([batch, length, channels], using: &rng),
      delta: Tensor.randomUniform([batch, length, channels], using: &rng),
      A: Tensor.randomUniform([channels, state], lowerBound: -1, upperBound: 0, using: &rng),
      B: Tensor.randomUniform([batch, length, state], using: &rng),
      C: Tensor.randomUniform([batch, length, state], using: &rng))
    let scan = FLOPCounter.measureCounts { SelectiveScan.forward(inputs) }.counts
    XCTAssertEqual(scan.exponentials, batch * length * channels * state)
    XCTAssertGreaterThan(scan.kernel, 0)
    XCTAssertEqual(scan.matrixProducts, 0)
  }

  func testMemoryTrafficCountsOnlyOperationsWithoutCountedArithmetic() {
    var rng = SplitMix64(seed: 6)
    let a = Variable(Tensor.randomUniform([10, 8], using: &rng), requiresGradient: true)
    let b = Variable(Tensor.randomUniform([10, 8], using: &rng), requiresGradient: true)
    let elementwise = StepWorkload.count { (a * b).sum().backward() }
    // a ∘ b: reads 2·80 and writes 80 floats; backward reads the 80-float gradient and reads and
    // writes 80 floats per input. The sum: reads 80, writes 1; backward 1 + 2·80.
    XCTAssertEqual(elementwise.memoryBytes, 4 * ((3 * 80) + (80 + 4 * 80) + 81 + (1 + 2 * 80)))
    XCTAssertEqual(elementwise.counts.operations, 0)

    let c = Variable(Tensor.randomUniform([8, 3], using: &rng), requiresGradient: true)
    let product = StepWorkload.count(extraMemoryBytes: 12) { _ = Variable.matmul(a, c) }
    XCTAssertEqual(product.memoryBytes, 12, "a product's operands are in its compute time, not in the traffic")
    XCTAssertEqual(product.counts.matrixProducts, 2 * 10 * 3 * 8)
  }

  func testTheFloorDividesEachKindOfWorkByItsCeiling() {
    let workload = StepWorkload(
      counts: FLOPCounter.Counts(matrixProducts: 4_000_000_000, kernel: 1_000_000_000, exponentials: 300_000_000),
      memoryBytes: 500_000_000)
    let ceilings = MachineCeilings(matrixProductRate: 100e9, exponentialRate: 6e9, memoryBandwidth: 50e9)
    let floor = workload.floor(on: ceilings)
    XCTAssertEqual(floor.matrixProducts, 40, accuracy: 1e-9)
    XCTAssertEqual(floor.kernelArithmetic, 10, accuracy: 1e-9)
    XCTAssertEqual(floor.exponentials, 50, accuracy: 1e-9)
    XCTAssertEqual(floor.memory, 10, accuracy: 1e-9)
    XCTAssertEqual(floor.total, 110, accuracy: 1e-9)
  }

  func testTheMeanOfTwoReadingsIsTakenRateByRate() {
    let a = MachineCeilings(matrixProductRate: 100e9, exponentialRate: 6e9, memoryBandwidth: 50e9)
    let b = MachineCeilings(matrixProductRate: 60e9, exponentialRate: 2e9, memoryBandwidth: 70e9)
    XCTAssertEqual(
      MachineCeilings.mean(a, b), MachineCeilings(matrixProductRate: 80e9, exponentialRate: 4e9, memoryBandwidth: 60e9))
  }

  func testMeasuredCeilingsArePositiveAndFinite() {
    let c = MachineCeilings.measure()
    for rate in [c.matrixProductRate, c.exponentialRate, c.memoryBandwidth] {
      XCTAssertTrue(rate.isFinite && rate > 0, "ceiling \(rate)")
    }
  }
}
