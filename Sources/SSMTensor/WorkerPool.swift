import CKernels
import Dispatch
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The helper threads behind ``Parallel``: one per extra core, each spinning for a while after
/// a parallel region before it parks.
///
/// A training step runs hundreds of parallel regions of 0.1–1 ms each. `concurrentPerform`
/// parks its threads between them, and on the reference VM waking one took a good part of a
/// 0.3 ms region (the fastest 1M-element `exp` took 0.35 ms, the median 0.68 ms). Helpers that
/// are still spinning start within a microsecond.
///
/// A region is a list of tasks that the calling thread and the helpers claim one at a time from
/// a shared counter. The caller starts at once and never waits for a helper that has not
/// joined: a helper that wakes late (or whose core is busy with another process) finds fewer
/// tasks left, or none, instead of holding the region up for its share. A region started while
/// another one is running (a nested call, or a second thread using the library) falls back to
/// `concurrentPerform`, so the pool never waits on itself.
final class WorkerPool: @unchecked Sendable {
  /// One per helper thread: whether it is parked on its semaphore.
  private final class Helper: @unchecked Sendable {
    let parked = Atomic<Bool>(false)
    let wake = DispatchSemaphore(value: 0)
  }

  static let shared = WorkerPool(helpers: Parallel.workerCount - 1)

  /// How long an idle helper spins before it parks. Serial stretches between the regions of a
  /// training step or a benchmark loop (a 1M-float `memcpy` is ≈ 0.2 ms) are mostly shorter
  /// than this, so helpers are rarely parked when work arrives; the cost is that much CPU time
  /// burnt after the last region before an idle period (libgomp's default spin is similar).
  /// `SSMREC_SPIN_MICROSECONDS` overrides it (0: park at once), like `GOMP_SPINCOUNT` does for
  /// OpenMP programs.
  private static let spinNanoseconds: UInt64 = {
    if let text = getenv("SSMREC_SPIN_MICROSECONDS"), let micros = UInt64(String(cString: text)) {
      return micros &* 1_000
    }
    return 1_000_000
  }()

  private static func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
  }

  private let helpers: [Helper]
  private let busy = Atomic<Bool>(false)
  private let generation = Atomic<Int>(0)
  /// The next unclaimed task of the current region.
  private let nextTask = Atomic<Int>(0)
  /// Helpers inside the current region, plus `closed` once its caller has run out of tasks:
  /// from then on no helper joins, and the caller waits only for those already inside.
  private let gate = Atomic<Int>(WorkerPool.closed)
  private static let closed = 1 << 30
  // Written by the region's owner before `gate` is reopened (release) and read by helpers after
  // they join through `gate` (acquire).
  private nonisolated(unsafe) var job: ((Int) -> Void)?
  private nonisolated(unsafe) var taskCount = 0
  /// The region owner's floating-point mode, which helpers run the region in (a kernel that
  /// flushes subnormals for speed flushes them on every thread of its region, so results never
  /// depend on which thread ran a task).
  private nonisolated(unsafe) var floatingPointMode: UInt = 0

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
    var seen = 0
    while true {
      var spins = 0
      var idleSince = Self.monotonicNanoseconds()
      while generation.load(ordering: .acquiring) == seen {
        spins &+= 1
        // The clock is read every 256 spins (a few microseconds apart).
        if Self.spinNanoseconds > 0
          && (spins & 255 != 0 || Self.monotonicNanoseconds() &- idleSince < Self.spinNanoseconds)
        {
          ssm_cpu_relax()
          continue
        }
        // Each park is ended by exactly one side: the caller that flips `parked` back to false
        // owes one signal, so a helper that finds the flag already cleared takes that signal
        // instead of leaving it to end a later park early.
        helper.parked.store(true, ordering: .sequentiallyConsistent)
        if generation.load(ordering: .sequentiallyConsistent) == seen
          || !helper.parked.exchange(false, ordering: .sequentiallyConsistent)
        {
          helper.wake.wait()
        }
        idleSince = Self.monotonicNanoseconds()
      }
      seen = generation.load(ordering: .acquiring)
      if join() {
        let ownMode = ssm_fp_mode()
        if ownMode != floatingPointMode { ssm_subnormals_restore(floatingPointMode) }
        claimTasks()
        if ownMode != floatingPointMode { ssm_subnormals_restore(ownMode) }
        gate.subtract(1, ordering: .releasing)
      }
    }
  }

  /// Enters the current region unless its caller has closed it.
  private func join() -> Bool {
    var current = gate.load(ordering: .relaxed)
    while current & Self.closed == 0 {
      let (exchanged, original) = gate.compareExchange(
        expected: current, desired: current + 1, ordering: .acquiring)
      if exchanged { return true }
      current = original
    }
    return false
  }

  /// Runs unclaimed tasks of the current region until none are left.
  private func claimTasks() {
    guard let job else { return }
    let count = taskCount
    while true {
      let task = nextTask.wrappingAdd(1, ordering: .relaxed).oldValue
      if task >= count { return }
      job(task)
    }
  }

  /// Runs `body(task)` once for every `task` in `0..<tasks`, on the calling thread and the
  /// helpers (at most `tasks` threads), and returns when all have finished. A task index is
  /// claimed by one thread, so per-task buffers need no locking; the calling thread may run
  /// several tasks.
  func run(tasks: Int, _ body: (Int) -> Void) {
    guard tasks > 0 else { return }
    guard tasks > 1, !helpers.isEmpty,
      busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    else {
      let mode = ssm_fp_mode()
      withoutActuallyEscaping(body) { escapable in
        nonisolated(unsafe) let run = escapable
        DispatchQueue.concurrentPerform(iterations: tasks) { task in
          let ownMode = ssm_fp_mode()
          if ownMode != mode { ssm_subnormals_restore(mode) }
          run(task)
          if ownMode != mode { ssm_subnormals_restore(ownMode) }
        }
      }
      return
    }
    withoutActuallyEscaping(body) { escapable in
      job = escapable
      floatingPointMode = ssm_fp_mode()
      taskCount = tasks
      nextTask.store(0, ordering: .relaxed)
      gate.store(0, ordering: .releasing)
      generation.add(1, ordering: .sequentiallyConsistent)
      for helper in helpers.prefix(tasks - 1)
      where helper.parked.compareExchange(expected: true, desired: false, ordering: .sequentiallyConsistent).exchanged {
        helper.wake.signal()
      }
      claimTasks()
      gate.bitwiseOr(Self.closed, ordering: .acquiringAndReleasing)
      var spins = 0
      while gate.load(ordering: .acquiring) != Self.closed {
        spins += 1
        // A helper inside the region may have lost its core; give it the chance to get one.
        if spins % 4096 == 0 { sched_yield() } else { ssm_cpu_relax() }
      }
      job = nil
    }
    busy.store(false, ordering: .releasing)
  }
}
