import CKernels
import Dispatch
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Splitting work across the machine's cores.
///
/// Work is split only when each part carries enough of it (a region still costs a few
/// microseconds of hand-over, even to helper threads that are spinning); below that it runs on
/// the calling thread.
public enum Parallel {
  /// The number of workers large regions are split into: `SSMREC_WORKERS` when it is set to a
  /// positive integer, else the processors the process may run on (its affinity mask, so
  /// `taskset -c 0` gives one worker), at most 8.
  public static let workerCount: Int = workerCount(
    environment: getenv("SSMREC_WORKERS").map { String(cString: $0) }, availableProcessors: ssm_available_processors())

  /// ``workerCount`` for a value of `SSMREC_WORKERS` (or `nil`) and a processor count: a valid
  /// setting wins (up to 64), anything else falls back to the processors, at most 8.
  package static func workerCount(environment: String?, availableProcessors: Int) -> Int {
    if let text = environment,
      let requested = Int(String(text.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())), requested > 0
    {
      return Swift.min(requested, 64)
    }
    return Swift.max(1, Swift.min(8, availableProcessors))
  }

  /// Element counts below this run on one thread in elementwise loops (≈ 0.1–0.3 ms of work).
  public static let elementwiseThreshold = 1 << 18

  /// How many workers ``forEachWorker(count:minimumPerWorker:_:)`` uses for `count` items when
  /// each worker should get at least `minimumPerWorker` of them.
  public static func workers(count: Int, minimumPerWorker: Int) -> Int {
    guard count > 0 else { return 0 }
    return Swift.min(workerCount, Swift.max(1, count / Swift.max(1, minimumPerWorker)))
  }

  /// Runs `body` on contiguous, disjoint sub-ranges of `0..<count` that together cover it, using
  /// up to `workerCount` threads when `count / minimumPerWorker` allows.
  ///
  /// With `piecesPerWorker` above 1 the range is cut into that many pieces per worker (none
  /// smaller than `minimumPerWorker / piecesPerWorker`), which threads claim one at a time: a
  /// worker that starts late or runs slow then costs the region less than its full share. Use it
  /// for loops whose cost does not depend on the piece size (elementwise passes), not for
  /// matrix products, whose bands lose efficiency when cut finer.
  ///
  /// `body` must only write to memory that belongs to its own range.
  public static func forEachChunk(
    count: Int, minimumPerWorker: Int, piecesPerWorker: Int = 1, _ body: (Range<Int>) -> Void
  ) {
    let workers = workers(count: count, minimumPerWorker: minimumPerWorker)
    guard workers > 1, piecesPerWorker > 1 else {
      forEachWorker(count: count, workers: workers) { _, range in body(range) }
      return
    }
    let perWorker = Swift.min(piecesPerWorker, 64)
    let smallest = Swift.max(1, minimumPerWorker / perWorker)
    let pieces = Swift.max(workers, Swift.min(workers * perWorker, count / smallest))
    WorkerPool.shared.run(tasks: pieces) { piece in
      let start = count * piece / pieces
      let end = count * (piece + 1) / pieces
      if start < end { body(start..<end) }
    }
  }

  /// Like ``forEachChunk(count:minimumPerWorker:piecesPerWorker:_:)``, also passing the worker's index in
  /// `0..<workers(count:minimumPerWorker:)`, so each worker can own a private accumulator.
  public static func forEachWorker(
    count: Int, minimumPerWorker: Int, _ body: (_ worker: Int, _ range: Range<Int>) -> Void
  ) {
    forEachWorker(count: count, workers: workers(count: count, minimumPerWorker: minimumPerWorker), body)
  }

  /// Like ``forEachWorker(count:workers:_:)``, but `0..<count` is cut into up to `pieces`
  /// contiguous pieces that the workers claim one at a time, each passed with the index (in
  /// `0..<min(workers, count)`) of the worker running it. A worker's private buffers stay its
  /// own, as with ``forEachWorker(count:workers:_:)``, and a worker that starts late or runs
  /// slow takes fewer pieces instead of holding the region up: for loops over long, equal-sized
  /// tasks with per-worker accumulators (the selective scan's batch elements).
  public static func forEachPiece(
    count: Int, workers requested: Int, pieces requestedPieces: Int, _ body: (_ worker: Int, _ range: Range<Int>) -> Void
  ) {
    let workers = Swift.min(Swift.max(requested, 1), count)
    let pieces = Swift.min(Swift.max(requestedPieces, workers), count)
    guard workers > 1, pieces > workers else {
      forEachWorker(count: count, workers: workers, body)
      return
    }
    let next = Atomic<Int>(0)
    WorkerPool.shared.run(tasks: workers) { worker in
      while case let piece = next.wrappingAdd(1, ordering: .relaxed).oldValue, piece < pieces {
        body(worker, (count * piece / pieces)..<(count * (piece + 1) / pieces))
      }
    }
  }

  /// Runs `body` on exactly `min(workers, count)` contiguous, disjoint sub-ranges of
  /// `0..<count`, worker indices `0..<min(workers, count)`: for callers that sized per-worker
  /// buffers for `workers` and must not see a larger index. Each index is used by one thread
  /// at a time, though one thread may run several of them one after another.
  public static func forEachWorker(
    count: Int, workers requested: Int, _ body: (_ worker: Int, _ range: Range<Int>) -> Void
  ) {
    let workers = Swift.min(Swift.max(requested, 1), count)
    if workers <= 0 { return }
    if workers == 1 {
      body(0, 0..<count)
      return
    }
    // Workers write disjoint ranges; the closure never outlives this call.
    WorkerPool.shared.run(tasks: workers) { worker in
      let start = count * worker / workers
      let end = count * (worker + 1) / workers
      if start < end { body(worker, start..<end) }
    }
  }
}
