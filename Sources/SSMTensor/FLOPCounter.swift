import Synchronization

/// A process-wide count of the work done by SSMRec's compute-bound kernels, for reporting
/// achieved GFLOP/s and for the floor model of `ssmrec bench`.
///
/// Counted: every matrix product (2·m·n·k, however it is split across workers), the
/// selective-scan, chunked-SSD and convolution kernels (their documented per-element costs),
/// and, separately, the exponentials evaluated by the scan, the softmax passes and the
/// transcendental elementwise functions. Not counted as operations: elementwise passes,
/// reductions, normalisation and softmax, which are memory-bound and would inflate the rate.
/// Read the counts before and after the work to measure; concurrent work elsewhere in the
/// process is included.
package enum FLOPCounter {
  /// What a counted operation was.
  package enum Kind: Sendable {
    /// A matrix product through ``BLAS``.
    case matrixProduct
    /// Arithmetic of SSMRec's own kernels (scan, SSD, convolution).
    case kernel
  }

  /// Counts accumulated over some stretch of work.
  package struct Counts: Sendable, Equatable {
    /// Floating-point operations of matrix products.
    package var matrixProducts = 0
    /// Floating-point operations of SSMRec's own kernels.
    package var kernel = 0
    /// Exponentials (and the sigmoid, tanh, SiLU, softplus and GELU built on one) evaluated.
    package var exponentials = 0

    /// Every counted floating-point operation.
    package var operations: Int { matrixProducts + kernel }

    /// Counts with the given values (zero by default).
    package init(matrixProducts: Int = 0, kernel: Int = 0, exponentials: Int = 0) {
      (self.matrixProducts, self.kernel, self.exponentials) = (matrixProducts, kernel, exponentials)
    }

    static func - (a: Counts, b: Counts) -> Counts {
      Counts(
        matrixProducts: a.matrixProducts - b.matrixProducts, kernel: a.kernel - b.kernel,
        exponentials: a.exponentials - b.exponentials)
    }
  }

  private static let products = Atomic<Int>(0)
  private static let kernels = Atomic<Int>(0)
  private static let exps = Atomic<Int>(0)

  /// Floating-point operations counted since the process started.
  package static var count: Int { products.load(ordering: .relaxed) + kernels.load(ordering: .relaxed) }

  /// Everything counted since the process started, by kind.
  package static var counts: Counts {
    Counts(
      matrixProducts: products.load(ordering: .relaxed), kernel: kernels.load(ordering: .relaxed),
      exponentials: exps.load(ordering: .relaxed))
  }

  /// Adds `operations` of the given kind to the count (for kernels outside this module).
  package static func add(_ operations: Int, kind: Kind = .kernel) {
    switch kind {
    case .matrixProduct: products.wrappingAdd(operations, ordering: .relaxed)
    case .kernel: kernels.wrappingAdd(operations, ordering: .relaxed)
    }
  }

  /// Adds `count` evaluated exponentials.
  package static func addExponentials(_ count: Int) {
    exps.wrappingAdd(count, ordering: .relaxed)
  }

  /// Runs `body` and returns its result with everything counted meanwhile, by kind.
  package static func measureCounts<R>(_ body: () throws -> R) rethrows -> (result: R, counts: Counts) {
    let before = counts
    let result = try body()
    return (result, counts - before)
  }
}
