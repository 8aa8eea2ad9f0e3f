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
    /// Forward plus backward.
    public var total: Duration { forward + backward }

    /// An entry with the given times.
    public init(operation: String, calls: Int, forward: Duration, backward: Duration) {
      (self.operation, self.calls, self.forward, self.backward) = (operation, calls, forward, backward)
    }
  }

  private struct State {
    var entries: [String: Entry] = [:]
    var lastMark: ContinuousClock.Instant = .now
  }

  private let state = Mutex(State())

  @TaskLocal static var current: OperationProfile?

  /// An empty profile.
  public init() {}

  /// Runs `body` with this profile collecting, and returns its result. Calls may be repeated;
  /// times add up.
  public func measure<R>(_ body: () throws -> R) rethrows -> R {
    state.withLock { $0.lastMark = .now }
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

  func chargeForward(_ operation: StaticString) {
    let now = ContinuousClock.now
    state.withLock { s in
      let key = operation.description
      var entry = s.entries[key] ?? Entry(operation: key, calls: 0, forward: .zero, backward: .zero)
      entry.calls += 1
      entry.forward += now - s.lastMark
      s.entries[key] = entry
      s.lastMark = now
    }
  }

  func chargeBackward(_ operation: StaticString, since start: ContinuousClock.Instant) {
    let now = ContinuousClock.now
    state.withLock { s in
      let key = operation.description
      var entry = s.entries[key] ?? Entry(operation: key, calls: 0, forward: .zero, backward: .zero)
      entry.backward += now - start
      s.entries[key] = entry
      // The next forward interval starts after the backward work.
      s.lastMark = now
    }
  }
}
