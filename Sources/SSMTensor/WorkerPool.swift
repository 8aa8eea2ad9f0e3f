import CKernels
import Dispatch
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The helper threads behind ``Parallel``: one per extra core, each spinning for a short while
/// after a parallel region before it parks.
///
/// A training step runs hundreds of parallel regions of 0.1–1 ms each. `concurrentPerform`
/// parks its threads between them, and on the reference VM waking one took a good part of a
/// 0.3 ms region (the fastest 1M-element `exp` took 0.35 ms, the median 0.68 ms). Helpers that
/// are still spinning start within a microsecond. A region started while another one is running
/// (a nested call, or a second thread using the library) falls back to `concurrentPerform`, so
/// the pool never waits on itself.
final class WorkerPool: @unchecked Sendable {
  /// One per helper thread: whether it is parked on its semaphore.
  private final class Helper: @unchecked Sendable {
    let parked = Atomic<Bool>(false)
    let wake = DispatchSemaphore(value: 0)
  }

  static let shared = WorkerPool(helpers: Parallel.workerCount - 1)

  /// Spins before parking: ≈ 50–100 µs on the reference machine.
  private static let spinLimit = 20_000

  private let helpers: [Helper]
  private let busy = Atomic<Bool>(false)
  private let generation = Atomic<Int>(0)
  private let pending = Atomic<Int>(0)
  // Written by the region's owner before `generation` is bumped (release) and read by helpers
  // after they observe the bump (acquire).
  private nonisolated(unsafe) var job: ((Int) -> Void)?
  private nonisolated(unsafe) var jobWorkers = 0

  private init(helpers count: Int) {
    helpers = (0..<Swift.max(count, 0)).map { _ in Helper() }
    for index in helpers.indices { start(helper: index) }
  }

  private func start(helper index: Int) {
    final class Context {
      let pool: WorkerPool
      let index: Int
      init(_ pool: WorkerPool, _ index: Int) { (self.pool, self.index) = (pool, index) }
    }
    let context = Unmanaged.passRetained(Context(self, index)).toOpaque()
    #if canImport(Glibc)
      var thread = pthread_t()
    #else
      var thread: pthread_t?
    #endif
    let status = pthread_create(
      &thread, nil,
      { raw in
        let context = Unmanaged<Context>.fromOpaque(raw!).takeRetainedValue()
        context.pool.helperLoop(context.index)
      }, context)
    precondition(status == 0, "WorkerPool: pthread_create failed (\(status))")
    pthread_detach(thread)
  }

  private func helperLoop(_ index: Int) -> Never {
    let helper = helpers[index]
    let worker = index + 1
    var seen = 0
    while true {
      var spins = 0
      while generation.load(ordering: .acquiring) == seen {
        spins += 1
        if spins < Self.spinLimit {
          ssm_cpu_relax()
          continue
        }
        helper.parked.store(true, ordering: .sequentiallyConsistent)
        if generation.load(ordering: .sequentiallyConsistent) == seen { helper.wake.wait() }
        helper.parked.store(false, ordering: .sequentiallyConsistent)
        spins = 0
      }
      seen = generation.load(ordering: .acquiring)
      if worker < jobWorkers, let job { job(worker) }
      pending.subtract(1, ordering: .releasing)
    }
  }

  /// Runs `body(worker)` for `worker` in `0..<workers` (at most the helpers + 1), worker 0 on
  /// the calling thread, and returns when all have finished.
  func run(workers: Int, _ body: (Int) -> Void) {
    precondition(workers <= helpers.count + 1, "WorkerPool: \(workers) workers for \(helpers.count) helpers")
    guard workers > 1, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
      withoutActuallyEscaping(body) { escapable in
        nonisolated(unsafe) let run = escapable
        DispatchQueue.concurrentPerform(iterations: workers) { run($0) }
      }
      return
    }
    withoutActuallyEscaping(body) { escapable in
      job = escapable
      jobWorkers = workers
      pending.store(helpers.count, ordering: .relaxed)
      generation.add(1, ordering: .sequentiallyConsistent)
      for helper in helpers where helper.parked.load(ordering: .sequentiallyConsistent) {
        helper.wake.signal()
      }
      escapable(0)
      while pending.load(ordering: .acquiring) > 0 { ssm_cpu_relax() }
      job = nil
    }
    busy.store(false, ordering: .releasing)
  }
}
