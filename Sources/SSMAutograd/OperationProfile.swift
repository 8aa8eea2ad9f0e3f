import SSMTensor
import Synchronization

/// Wall-clock time per kind of recorded operation: where a training step or an inference batch
/// spends its time, op by op.
///
/// Inside ``measure(_:)``, every ``Variable/record(value:inputs:operation:makePullback:)`` call
/// (recorded or not, so no-gradient inference is profiled too) is charged the time since the
/// previous one: operations compute their value just before recording it, so that interval is
/// the operation's forward time (plus any untracked work in between, such as building a batch).
/// During ``Variable/backward(seed:)`` each node's pullback and the accumulation of its input
/// gradients are timed and charged to the operation that recorded the node.
///
///     let profile = OperationProfile()
///     profile.measure { model.loss(batch, context: &context).backward() }
///     for entry in profile.entries.prefix(10) { print(entry.operation, entry.total) }
///
/// Profiling costs two clock reads per operation; without a profile in effect the cost is one
/// task-local read.
public final class OperationProfile: Sendable {
  /// The time charged to one operation name.
  public struct Entry: Sendable, Equatable {
    /// The name of the Swift function that recorded the operation (`#function` at the call site
    /// of `record`), e.g. `matmul(_:_:transposeA:transposeB:)`.
    public var operation: String
    /// How many times it ran forward.
    public var calls: Int
    /// Forward time, summed over calls.
    public var forward: Duration
    /// Backward time (pullbacks and gradient accumulation), summed over calls.
    public var backward: Duration
    /// Bytes of the operation's operands forward: its inputs read once and its value written
    /// once, summed over calls.
    public var forwardBytes: Int
    /// Bytes of its backward: the output gradient read and each input's gradient computed from
    /// the input (read) and written, summed over calls.
    public var backwardBytes: Int
    /// Floating-point operations SSMRec's counted kernels and matrix products did within the
    /// operation (forward and backward): zero for a memory-bound operation.
    public var countedOperations: Int
    /// ``forwardBytes`` and ``backwardBytes`` by the size of the call that moved them: the key
    /// is the smallest power of two at least that call's bytes. A floor needs the sizes, not
    /// only the sum: the operands of a small call stay in cache, those of a large one stream
    /// through memory at a fraction of the speed.
    public var bytesByCallSize: [Int: Int]
    /// Forward plus backward.
    public var total: Duration { forward + backward }

    /// An entry with the given times and traffic.
    public init(
      operation: String, calls: Int, forward: Duration, backward: Duration, forwardBytes: Int = 0,
      backwardBytes: Int = 0, countedOperations: Int = 0, bytesByCallSize: [Int: Int] = [:]
    ) {
      (self.operation, self.calls, self.forward, self.backward) = (operation, calls, forward, backward)
      (self.forwardBytes, self.backwardBytes, self.countedOperations) = (forwardBytes, backwardBytes, countedOperations)
      self.bytesByCallSize = bytesByCallSize
    }

    mutating func addCall(bytes: Int) {
      guard bytes > 0 else { return }
      bytesByCallSize[OperationProfile.sizeClass(of: bytes), default: 0] += bytes
    }
  }

  private struct State {
    var entries: [String: Entry] = [:]
    var lastMark: ContinuousClock.Instant = .now
    var lastCount = FLOPCounter.count
  }

  private let state = Mutex(State())

  @TaskLocal static var current: OperationProfile?

  /// An empty profile.
  public init() {}

  /// Runs `body` with this profile collecting, and returns its result. Calls may be repeated;
  /// times add up.
  public func measure<R>(_ body: () throws -> R) rethrows -> R {
    state.withLock { ($0.lastMark, $0.lastCount) = (.now, FLOPCounter.count) }
    return try OperationProfile.$current.withValue(self) { try body() }
  }

  /// Every operation seen, the most expensive first.
  public var entries: [Entry] {
    state.withLock { Array($0.entries.values) }.sorted { $0.total > $1.total }
  }

  /// Forgets everything collected so far.
  public func reset() {
    state.withLock { $0 = State() }
  }

  /// The smallest power of two at least `bytes` (the keys of ``Entry/bytesByCallSize``).
  public static func sizeClass(of bytes: Int) -> Int {
    precondition(bytes > 0, "OperationProfile.sizeClass: \(bytes) bytes")
    return bytes == 1 ? 1 : 1 << (Int.bitWidth - (bytes - 1).leadingZeroBitCount)
  }

  func chargeForward(_ operation: StaticString, bytes: Int) {
    let now = ContinuousClock.now
    let count = FLOPCounter.count
    state.withLock { s in
      let key = operation.description
      var entry = s.entries[key] ?? Entry(operation: key, calls: 0, forward: .zero, backward: .zero)
      entry.calls += 1
      entry.forward += now - s.lastMark
      entry.forwardBytes += bytes
      entry.addCall(bytes: bytes)
      entry.countedOperations += count - s.lastCount
      s.entries[key] = entry
      (s.lastMark, s.lastCount) = (now, count)
    }
  }

  func chargeBackward(_ operation: StaticString, since start: ContinuousClock.Instant, operationsBefore: Int, bytes: Int) {
    let now = ContinuousClock.now
    let count = FLOPCounter.count
    state.withLock { s in
      let key = operation.description
      var entry = s.entries[key] ?? Entry(operation: key, calls: 0, forward: .zero, backward: .zero)
      entry.backward += now - start
      entry.backwardBytes += bytes
      entry.addCall(bytes: bytes)
      entry.countedOperations += count - operationsBefore
      s.entries[key] = entry
      // The next forward interval starts after the backward work.
      (s.lastMark, s.lastCount) = (now, count)
    }
  }
}
