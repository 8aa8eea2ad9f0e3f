import Dispatch

/// Splitting work across the machine's cores.
///
/// A `concurrentPerform` region costs 40–60 µs on the 2-core reference machine, so work is split
/// only when each part carries enough of it; below that it runs on the calling thread.
public enum Parallel {
  /// The number of workers large regions are split into: the active processor count, at most 8.
  public static let workerCount: Int = Swift.max(1, Swift.min(8, ProcessInfoShim.activeProcessorCount))

  /// Element counts below this run on one thread in elementwise loops (≈ 0.1–0.3 ms of work).
  public static let elementwiseThreshold = 1 << 18

  /// Runs `body` on contiguous, disjoint sub-ranges of `0..<count` that together cover it, using
  /// up to `workerCount` threads when `count / minimumPerWorker` allows.
  ///
  /// `body` must only write to memory that belongs to its own range.
  public static func forEachChunk(
    count: Int, minimumPerWorker: Int, _ body: (Range<Int>) -> Void
  ) {
    guard count > 0 else { return }
    let workers = Swift.min(workerCount, Swift.max(1, count / Swift.max(1, minimumPerWorker)))
    if workers <= 1 {
      body(0..<count)
      return
    }
    withoutActuallyEscaping(body) { escapable in
      // Workers write disjoint ranges; the closure never outlives this call.
      nonisolated(unsafe) let run = escapable
      DispatchQueue.concurrentPerform(iterations: workers) { worker in
        let start = count * worker / workers
        let end = count * (worker + 1) / workers
        if start < end { run(start..<end) }
      }
    }
  }
}

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Active processor count without Foundation (SSMTensor keeps its dependencies to the C library).
enum ProcessInfoShim {
  static var activeProcessorCount: Int {
    #if canImport(Glibc) || canImport(Darwin)
      let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
      return n > 0 ? Int(n) : 1
    #else
      return 1
    #endif
  }
}
