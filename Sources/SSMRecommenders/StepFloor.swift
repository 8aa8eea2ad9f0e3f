import Foundation
import SSMAutograd
import SSMTensor

#if canImport(Glibc)
  import Glibc
#endif

/// The rates this machine reaches on the three resources a step spends its time on, measured in
/// the running process: matrix products through ``BLAS``, exponentials through SSMRec's
/// vectorised kernels, and copies through memory, each on every worker.
///
/// ``StepBenchmark`` divides a step's counted work by these to get its floor: the time the step
/// would take if every product ran at the best product rate, every exponential at the kernel's
/// in-cache rate and every byte of the memory-bound operations moved at the speed of a `memcpy`
/// of the same size, one after the other.
package struct MachineCeilings: Sendable, Equatable {
  /// Floating-point operations per second of the fastest of a few training-step-shaped products.
  package var matrixProductRate: Double
  /// Exponentials per second, in cache, on every worker.
  package var exponentialRate: Double
  /// Bytes read plus bytes written per second by a parallel `memcpy`, by the bytes it reads
  /// plus writes (powers of two). A copy whose source and destination fit in the caches runs
  /// several times faster than one that streams through memory.
  package var copyRates: [Int: Double]

  /// Ceilings with the given rates.
  package init(matrixProductRate: Double, exponentialRate: Double, copyRates: [Int: Double]) {
    precondition(!copyRates.isEmpty, "MachineCeilings: no copy rate")
    (self.matrixProductRate, self.exponentialRate, self.copyRates) = (matrixProductRate, exponentialRate, copyRates)
  }

  /// Ceilings with one copy rate for traffic of every size.
  package init(matrixProductRate: Double, exponentialRate: Double, memoryBandwidth: Double) {
    self.init(matrixProductRate: matrixProductRate, exponentialRate: exponentialRate, copyRates: [1: memoryBandwidth])
  }

  /// The fastest copy rate measured (that of a copy in cache).
  package var memoryBandwidth: Double { copyRates.values.max()! }

  /// The copy rates from the smallest copy to the largest, in GB/s, keyed by the copy's bytes
  /// read plus written in MiB ("8 MiB 176, 32 MiB 92, …, 256 MiB 41").
  package var copyRatesDescription: String {
    copyRates.sorted { $0.key < $1.key }.map { String(format: "%d MiB %.0f", $0.key >> 20, $0.value / 1e9) }
      .joined(separator: ", ")
  }

  /// The rate at which calls of a size class (``OperationProfile/sizeClass(of:)``: more than
  /// half of `sizeClass` bytes and at most `sizeClass`) can move their bytes at best: the
  /// fastest of the copies no smaller than half the class, so the largest copy no larger than
  /// any call of the class, or a faster larger one (which keeps the floor a lower bound when a
  /// reading is slow); past the largest copy measured, its rate.
  package func memoryRate(forSizeClass sizeClass: Int) -> Double {
    copyRates.filter { 2 * $0.key >= sizeClass }.values.max() ?? copyRates.max { $0.key < $1.key }!.value
  }

  /// Measures the ceilings (about a second).
  package static func measure() -> MachineCeilings {
    var rng = SplitMix64(seed: 3)
    // The shapes of Mamba4Rec's and SASRec's projections and of a catalogue product at B = 256.
    let productShapes = [(12_800, 64, 256), (12_800, 128, 64), (256, 64, 3_417), (12_800, 64, 64)]
    var productRate = 0.0
    for (m, k, n) in productShapes {
      let a = Tensor.randomUniform([m, k], lowerBound: -1, upperBound: 1, using: &rng)
      let b = Tensor.randomUniform([k, n], lowerBound: -1, upperBound: 1, using: &rng)
      let best = fastest(repeats: 7) { _ = Tensor.matmul(a, b) }
      productRate = max(productRate, Double(2 * m * n * k) / best)
    }
    // 2^20 values, 2 MiB per worker: in each core's L2, so the rate is the exponential's.
    let x = Tensor.randomUniform([1 << 20], lowerBound: -10, upperBound: 0, using: &rng)
    let exponential = Double(x.elementCount) / fastest(repeats: 30) { _ = x.applying(.exp) }
    // Copies of 1 to 128 MiB: a step's operations move from a few hundred KiB (in L2) to tens
    // of MiB per call (through memory), and each call's bytes are charged at the rate of the
    // copy its size.
    var copyRates: [Int: Double] = [:]
    for mebibytes in [1, 2, 4, 8, 16, 32, 64, 128] {
      let bytes = mebibytes << 20
      let source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
      let destination = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
      defer { (source.deallocate(), destination.deallocate()) }
      memset(source, 1, bytes)
      memset(destination, 0, bytes)
      nonisolated(unsafe) let (from, to) = (source, destination)
      let copy = fastest(repeats: 7) {
        Parallel.forEachChunk(count: bytes / 4096, minimumPerWorker: 1) { pages in
          memcpy(to + pages.lowerBound * 4096, from + pages.lowerBound * 4096, pages.count * 4096)
        }
      }
      copyRates[2 * bytes] = Double(2 * bytes) / copy
    }
    return MachineCeilings(matrixProductRate: productRate, exponentialRate: exponential, copyRates: copyRates)
  }

  /// The mean of two readings, rate by rate (copy sizes only one of them has keep their rate).
  package static func mean(_ a: MachineCeilings, _ b: MachineCeilings) -> MachineCeilings {
    MachineCeilings(
      matrixProductRate: (a.matrixProductRate + b.matrixProductRate) / 2,
      exponentialRate: (a.exponentialRate + b.exponentialRate) / 2,
      copyRates: a.copyRates.merging(b.copyRates) { ($0 + $1) / 2 })
  }

  /// The fastest of `repeats` runs after one warm-up, in seconds.
  private static func fastest(repeats: Int, _ body: () -> Void) -> Double {
    body()
    var best = Double.infinity
    for _ in 0..<repeats {
      let start = ContinuousClock.now
      body()
      best = min(best, seconds(ContinuousClock.now - start))
    }
    return best
  }
}

/// The work one training step or inference batch does, counted while it runs once.
package struct StepWorkload: Sendable, Equatable {
  /// Matrix-product operations, kernel arithmetic and exponentials.
  package var counts: FLOPCounter.Counts
  /// Bytes read and written by the operations that did no counted arithmetic (elementwise
  /// functions, normalisation, dropout, gathers, splits, residual additions, the optimizer):
  /// each operand once forward and, for a training step, the backward's gradients; by the size
  /// of the call that moved them (``OperationProfile/sizeClass(of:)``).
  package var memoryTraffic: [Int: Int]

  /// All of ``memoryTraffic``.
  package var memoryBytes: Int { memoryTraffic.values.reduce(0, +) }

  /// A workload of the given counts and traffic.
  package init(counts: FLOPCounter.Counts, memoryTraffic: [Int: Int]) {
    (self.counts, self.memoryTraffic) = (counts, memoryTraffic)
  }

  /// Runs `body` once under a ``FLOPCounter`` and an ``OperationProfile`` and counts its work;
  /// `extraMemoryBytes` adds traffic outside recorded operations (the optimizer's, one pass).
  package static func count(extraMemoryBytes: Int = 0, _ body: () -> Void) -> StepWorkload {
    let profile = OperationProfile()
    let counts = FLOPCounter.measureCounts { profile.measure(body) }.counts
    var traffic: [Int: Int] = [:]
    if extraMemoryBytes > 0 { traffic[OperationProfile.sizeClass(of: extraMemoryBytes)] = extraMemoryBytes }
    for entry in profile.entries where entry.countedOperations == 0 {
      traffic.merge(entry.bytesByCallSize, uniquingKeysWith: +)
    }
    return StepWorkload(counts: counts, memoryTraffic: traffic)
  }

  /// The floor of this work on a machine with the given ceilings.
  package func floor(on ceilings: MachineCeilings) -> StepFloor {
    StepFloor(
      matrixProducts: 1e3 * Double(counts.matrixProducts) / ceilings.matrixProductRate,
      // The kernels' other arithmetic at the product rate: a little below the FMA peak, so this
      // part of the floor is a little high; it is a few percent of any step.
      kernelArithmetic: 1e3 * Double(counts.kernel) / ceilings.matrixProductRate,
      exponentials: 1e3 * Double(counts.exponentials) / ceilings.exponentialRate,
      memory: memoryTraffic.reduce(0) { $0 + 1e3 * Double($1.value) / ceilings.memoryRate(forSizeClass: $1.key) })
  }
}

/// A lower bound on a step's time, by resource, in milliseconds.
package struct StepFloor: Sendable, Equatable {
  /// Matrix products at the best product rate.
  package var matrixProducts: Double
  /// The scan's, SSD's and convolution's counted arithmetic.
  package var kernelArithmetic: Double
  /// Every counted exponential at the in-cache rate.
  package var exponentials: Double
  /// The memory-bound operations' traffic at `memcpy`'s bandwidth.
  package var memory: Double

  /// The four parts one after the other.
  package var total: Double { matrixProducts + kernelArithmetic + exponentials + memory }
}
