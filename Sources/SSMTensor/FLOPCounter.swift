import Synchronization

/// A process-wide count of the floating-point operations done by SSMRec's compute-bound
/// kernels, for reporting achieved GFLOP/s.
///
/// Counted: every matrix product (2·m·n·k, however it is split across workers) and the
/// selective-scan, chunked-SSD and convolution kernels (their documented per-element costs).
/// Not counted: elementwise passes, reductions, normalisation and softmax, which are
/// memory-bound and would inflate the rate. Read ``count`` before and after the work to measure;
/// concurrent work elsewhere in the process is included.
package enum FLOPCounter {
  private static let total = Atomic<Int>(0)

  /// Operations counted since the process started.
  package static var count: Int { total.load(ordering: .relaxed) }

  /// Adds `operations` to the count (for kernels outside this module).
  package static func add(_ operations: Int) {
    total.wrappingAdd(operations, ordering: .relaxed)
  }

  /// Runs `body` and returns its result with the operations counted meanwhile.
  package static func measure<R>(_ body: () throws -> R) rethrows -> (result: R, operations: Int) {
    let before = count
    let result = try body()
    return (result, count - before)
  }
}
