import SSMTensor

/// One window of the all-position objective: consecutive items of one user's training sequence,
/// oldest first, and at each position the item that followed it there.
///
/// Every position of a window trains: its target is a training target of the official protocol
/// (a target of one of ``SequentialSplit/train``'s instances), never a validation or test item.
public struct TrainingWindow: Sendable, Equatable {
  /// The (remapped) id of the user.
  public var user: Int32
  /// The window's items, oldest first; never empty.
  public var items: [Int32]
  /// `targets[p]` is the item that followed `items[p]`: the item position `p` is trained to predict.
  public var targets: [Int32]

  /// A window of `user`'s items and the item after each.
  public init(user: Int32, items: [Int32], targets: [Int32]) {
    precondition(!items.isEmpty && items.count == targets.count, "TrainingWindow: \(items.count) items, \(targets.count) targets")
    (self.user, self.items, self.targets) = (user, items, targets)
  }
}

extension SequentialSplit {
  /// The training windows of the all-position objective: exactly the (context → target) pairs
  /// of ``train``, each once, with one pass of a causal encoder per window instead of one per
  /// target.
  ///
  /// A user whose training sequence is `s₀ … sₙ` (everything before its validation and test
  /// items) trains the `n` targets `s₁ … sₙ`, position `p` predicting `s_{p+1}`. Those `n`
  /// positions are cut into windows of at most `maximumLength`, aligned to the end: the last
  /// window ends with `sₙ`'s position, the one before it ends where the last begins, and so on, so
  /// windows never overlap and every target is trained once. A target at position `q` of its
  /// window sees `q + 1` items of context. When `n ≤ maximumLength` (or there is no maximum) the
  /// whole sequence is one window and every target sees exactly the context the prefix protocol
  /// gives it; longer histories give their earlier positions in each window less context than
  /// the prefix protocol's `min(p + 1, maximumLength)`.
  ///
  /// Built from ``train`` itself (each user's instances are consecutive and in order), so a split
  /// truncated to a maximum length still yields the full training sequences.
  /// - Precondition: `maximumLength` is positive when given.
  public func trainingWindows(maximumLength: Int?) -> [TrainingWindow] {
    precondition(maximumLength.map { $0 > 0 } ?? true, "trainingWindows: maximumLength must be positive")
    var windows: [TrainingWindow] = []
    var start = 0
    while start < train.count {
      let user = train[start].user
      var end = start
      while end < train.count && train[end].user == user { end += 1 }
      // The first instance's history is the user's first item (a prefix of length 1 is never cut).
      let sequence = [train[start].history.first!] + train[start..<end].map(\.target)
      let positions = sequence.count - 1
      let width = maximumLength ?? positions
      var windowEnd = positions
      var userWindows: [TrainingWindow] = []
      while windowEnd > 0 {
        let windowStart = Swift.max(0, windowEnd - width)
        userWindows.append(
          TrainingWindow(
            user: user, items: Array(sequence[windowStart..<windowEnd]), targets: Array(sequence[(windowStart + 1)...windowEnd])))
        windowEnd = windowStart
      }
      windows += userWindows.reversed()
      start = end
    }
    return windows
  }
}

/// Mini-batches of training windows for the all-position objective, in a seeded shuffled order,
/// each holding windows until their training targets reach the budget (so a batch trains about
/// as many (context → target) pairs as a prefix-protocol batch of that many instances).
///
/// A batch is padded to its longest window, so windows of similar lengths are batched together:
/// the shuffled windows are taken a pool of about 16 batches at a time, each pool sorted by
/// length and cut into batches, and the batches shuffled again. On histories as short as Amazon
/// Beauty's (8.9 items on average, windows of up to 50) that cuts the padded positions several
/// fold; every window is still in exactly one batch per epoch.
public struct WindowBatchSequence: Sequence, Sendable {
  /// The windows to batch.
  public let windows: [TrainingWindow]
  /// The windows of each batch, as indices into ``windows``, in visiting order.
  public let batches: [[Int]]

  /// - Parameters:
  ///   - windows: the windows to batch.
  ///   - targetsPerBatch: the training targets a batch may hold; a window longer than that is a
  ///     batch of its own.
  ///   - shuffleSeed: shuffles with SplitMix64 when given (a new seed per epoch gives a new order).
  public init(_ windows: [TrainingWindow], targetsPerBatch: Int, shuffleSeed: UInt64? = nil) {
    precondition(targetsPerBatch > 0, "targetsPerBatch must be positive")
    self.windows = windows
    var order = Array(windows.indices)
    if let shuffleSeed {
      var rng = SplitMix64(seed: shuffleSeed)
      order.shuffle(using: &rng)
    }
    var batches: [[Int]] = []
    var current: [Int] = []
    var targets = 0
    func cut(_ pool: ArraySlice<Int>) {
      for i in pool.sorted(by: { (windows[$0].targets.count, $0) < (windows[$1].targets.count, $1) }) {
        let n = windows[i].targets.count
        if !current.isEmpty && targets + n > targetsPerBatch {
          batches.append(current)
          (current, targets) = ([], 0)
        }
        current.append(i)
        targets += n
      }
    }
    let poolTargets = 16 * targetsPerBatch
    var poolStart = 0
    var pooled = 0
    for (k, i) in order.enumerated() {
      pooled += windows[i].targets.count
      if pooled >= poolTargets {
        cut(order[poolStart...k])
        (poolStart, pooled) = (k + 1, 0)
      }
    }
    cut(order[poolStart...])
    if !current.isEmpty { batches.append(current) }
    if let shuffleSeed {
      var rng = SplitMix64(seed: shuffleSeed &+ 0x9E37_79B9)
      batches.shuffle(using: &rng)
    }
    self.batches = batches
  }

  /// The number of batches.
  public var count: Int { batches.count }

  /// Each batch as a ``SequenceBatch`` with ``SequenceBatch/positionTargets``.
  public func makeIterator() -> AnyIterator<SequenceBatch> {
    var next = 0
    return AnyIterator {
      guard next < batches.count else { return nil }
      defer { next += 1 }
      // Windows are never empty and their ids come from a split, so a failure is a bug here.
      do { return try SequenceBatch(windows: batches[next].map { windows[$0] }) } catch {
        preconditionFailure("WindowBatchSequence: \(error)")
      }
    }
  }
}
