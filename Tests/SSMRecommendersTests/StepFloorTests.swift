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
    // By call: the product's 960 bytes forward and 1,600 backward, the sum's 324 and 644.
    XCTAssertEqual(elementwise.memoryTraffic, [1024: 960 + 644, 2048: 1600, 512: 324])
    XCTAssertEqual(elementwise.counts.operations, 0)

    let c = Variable(Tensor.randomUniform([8, 3], using: &rng), requiresGradient: true)
    let product = StepWorkload.count(extraMemoryBytes: 12) { _ = Variable.matmul(a, c) }
    XCTAssertEqual(product.memoryBytes, 12, "a product's operands are in its compute time, not in the traffic")
    XCTAssertEqual(product.memoryTraffic, [16: 12])
    XCTAssertEqual(product.counts.matrixProducts, 2 * 10 * 3 * 8)
  }

  func testSizeClassesArePowersOfTwoAtLeastTheBytes() {
    XCTAssertEqual([1, 2, 3, 4, 5, 1023, 1024, 1025].map(OperationProfile.sizeClass(of:)), [1, 2, 4, 4, 8, 1024, 1024, 2048])
  }

  func testEachSizeClassMovesAtTheRateOfTheLargestCopyNoLargerThanItsCalls() {
    let mib = 1 << 20
    // As measured: fast in cache, slow through memory, one reading out of order (16 MiB).
    let ceilings = MachineCeilings(
      matrixProductRate: 1, exponentialRate: 1, copyRates: [4 * mib: 180e9, 8 * mib: 120e9, 16 * mib: 130e9, 64 * mib: 40e9])
    XCTAssertEqual(ceilings.memoryBandwidth, 180e9)
    XCTAssertEqual(ceilings.memoryRate(forSizeClass: 1024), 180e9, "a small call: the fastest copy")
    XCTAssertEqual(ceilings.memoryRate(forSizeClass: 8 * mib), 180e9, "calls over 4 MiB: the 4 MiB copy")
    XCTAssertEqual(ceilings.memoryRate(forSizeClass: 16 * mib), 130e9, "the faster of the larger copies")
    XCTAssertEqual(ceilings.memoryRate(forSizeClass: 32 * mib), 130e9)
    XCTAssertEqual(ceilings.memoryRate(forSizeClass: 64 * mib), 40e9)
    XCTAssertEqual(ceilings.memoryRate(forSizeClass: 128 * mib), 40e9)
    XCTAssertEqual(ceilings.memoryRate(forSizeClass: 1 << 40), 40e9, "past the largest copy: its rate")

    let workload = StepWorkload(counts: FLOPCounter.Counts(), memoryTraffic: [1024: 90_000_000, 128 * mib: 40_000_000])
    XCTAssertEqual(workload.memoryBytes, 130_000_000)
    XCTAssertEqual(workload.floor(on: ceilings).memory, 0.5 + 1, accuracy: 1e-9)
  }

  func testTheFloorDividesEachKindOfWorkByItsCeiling() {
    let workload = StepWorkload(
      counts: FLOPCounter.Counts(matrixProducts: 4_000_000_000, kernel: 1_000_000_000, exponentials: 300_000_000),
      memoryTraffic: [1 << 20: 500_000_000])
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
    XCTAssertEqual(c.copyRates.keys.sorted(), (1...8).map { 1 << (20 + $0) }, "copies of 1 to 128 MiB")
    for rate in [c.matrixProductRate, c.exponentialRate] + Array(c.copyRates.values) {
      XCTAssertTrue(rate.isFinite && rate > 0, "ceiling \(rate)")
    }
  }
}
