import SSMTensor

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The 1-based rank of a target under full ranking, with a pessimistic tie rule.
///
/// `rank = 1 + #{ j ∉ {target, excluded} : ¬(score[j] < score[target]) }`: every other candidate
/// that scores at least as much as the target — ties and NaN scores included — is counted above
/// it, and a target whose own score is NaN or infinite is unranked (``unranked``, a miss at every
/// cut-off, however small the catalogue). So a model that scores every item equally ranks each
/// target last, and a model whose scores are NaN gets HR, NDCG and MRR of 0, never 1 (the
/// optimistic rule `score[j] > score[target]` would give both rank 1). RecBole
/// leaves ties to the order `torch.topk` happens to return; with real-valued scores ties have
/// probability zero, so the rule changes nothing for a working model. The padding id 0 is
/// excluded, as RecBole sets its score to −∞ (Docs/Models.md §7.6); history items are
/// not masked for sequential models.
public enum FullRanking {
  /// The rank of a target whose score is NaN or infinite: beyond every cut-off.
  public static let unranked = Int.max

  /// The rank of `target` in one row of scores: between 1 and the number of candidates (the row's
  /// length, less one when `excluded` is one of its indices), or ``unranked``.
  /// - Precondition: `target` indexes the row and is not `excluded`.
  public static func rank(of target: Int, in scores: UnsafeBufferPointer<Float>, excluding excluded: Int? = 0) -> Int {
    precondition(
      target >= 0 && target < scores.count && target != excluded,
      "FullRanking.rank: target \(target) is not a candidate among \(scores.count) scores (excluded \(excluded.map(String.init) ?? "none"))"
    )
    let excludedIsCandidate = excluded.map { $0 >= 0 && $0 < scores.count } ?? false
    let t = scores[target]
    guard t.isFinite else { return unranked }
    var atOrAbove = 0
    for j in 0..<scores.count where !(scores[j] < t) { atOrAbove += 1 }
    // The loop counted the target itself (t ≥ t) and, when it scores at least t, the excluded id.
    if excludedIsCandidate, let e = excluded, !(scores[e] < t) { atOrAbove -= 1 }
    return atOrAbove
  }

  /// Ranks of each row's target in a `[B, V]` score matrix.
  /// - Precondition: one target per row, each a candidate id in `0..<V` other than `excluded`.
  public static func ranks(scores: Tensor, targets: IndexTensor, excluding excluded: Int? = 0) -> [Int] {
    precondition(
      scores.rank == 2 && targets.shape == [scores.shape[0]],
      "ranks: scores \(scores.shape) and targets \(targets.shape) do not match")
    let width = scores.shape[1]
    if let bad = targets.values.first(where: { $0 < 0 || Int($0) >= width || Int($0) == excluded }) {
      preconditionFailure("ranks: target id \(bad) is not a candidate among \(width) item ids")
    }
    let rows = scores.shape[0]
    var result = [Int](repeating: 0, count: rows)
    scores.withUnsafeBufferPointer { s in
      result.withUnsafeMutableBufferPointer { out in
        nonisolated(unsafe) let (sp, op) = (s.baseAddress!, out.baseAddress!)
        let targetValues = targets.values
        Parallel.forEachChunk(count: rows, minimumPerWorker: Swift.max(1, 65536 / Swift.max(width, 1))) { range in
          for r in range {
            op[r] = rank(
              of: Int(targetValues[r]), in: UnsafeBufferPointer(start: sp + r * width, count: width), excluding: excluded)
          }
        }
      }
    }
    return result
  }

  /// Ranks of each row's target among `itemCount` candidates whose scores come a block of items
  /// at a time from `scores(items)` (`[B, items.count]`), so that the `[B, V]` matrix of a large
  /// catalogue is never held: memory is one block. Equal to ``ranks(scores:targets:excluding:)`` of
  /// the whole matrix, ties included, as long as `scores` gives an item the same score in every
  /// call: each target's score is read from the block that holds it (a first pass over the blocks
  /// that hold targets, skipped when one block holds every item).
  /// - Precondition: one target per row, each a candidate id in `0..<itemCount` other than
  ///   `excluded`; `itemsPerBlock ≥ 1`.
  public static func ranks(
    targets: IndexTensor, itemCount: Int, itemsPerBlock: Int, excluding excluded: Int? = 0,
    scores: (Range<Int>) -> Tensor
  ) -> [Int] {
    precondition(
      itemsPerBlock >= 1 && targets.shape.rank == 1, "ranks: \(itemsPerBlock) items per block, targets \(targets.shape)")
    if let bad = targets.values.first(where: { $0 < 0 || Int($0) >= itemCount || Int($0) == excluded }) {
      preconditionFailure("ranks: target id \(bad) is not a candidate among \(itemCount) item ids")
    }
    let rows = targets.elementCount
    let blocks = stride(from: 0, to: itemCount, by: itemsPerBlock).map { $0..<Swift.min(itemCount, $0 + itemsPerBlock) }
    func block(_ b: Range<Int>) -> Tensor {
      let s = scores(b)
      precondition(s.shape == [rows, b.count], "ranks: scores of \(b) are \(s.shape), not [\(rows), \(b.count)]")
      return s
    }
    if blocks.count == 1 { return ranks(scores: block(blocks[0]), targets: targets, excluding: excluded) }
    var targetScores = [Float](repeating: 0, count: rows)
    for b in Set(targets.values.map { Int($0) / itemsPerBlock }).sorted() {
      let range = blocks[b]
      let s = block(range).scalars
      for r in 0..<rows where Int(targets.values[r]) / itemsPerBlock == b {
        targetScores[r] = s[r * range.count + Int(targets.values[r]) - range.lowerBound]
      }
    }
    // Every candidate at or above the target counts, the target itself and the excluded id aside.
    var atOrAbove = [Int](repeating: 0, count: rows)
    for range in blocks {
      let s = block(range).scalars
      for r in 0..<rows {
        let t = targetScores[r]
        let base = r * range.count
        var count = 0
        for j in 0..<range.count where !(s[base + j] < t) { count += 1 }
        if range.contains(Int(targets.values[r])) { count -= 1 }
        if let e = excluded, range.contains(e), !(s[base + e - range.lowerBound] < t) { count -= 1 }
        atOrAbove[r] += count
      }
    }
    return (0..<rows).map { targetScores[$0].isFinite ? atOrAbove[$0] + 1 : unranked }
  }
}

/// Single-target ranking metrics (Docs/Models.md §7.7) for a rank `r` (1-based) at cut-off `K`.
public enum RankingMetric: String, CaseIterable, Codable, Sendable {
  /// Hit ratio: 1 if `r ≤ K` (RecBole's "hit", the papers' HR).
  case hit
  /// `1/log₂(r + 1)` if `r ≤ K` (the ideal DCG is 1 with one relevant item).
  case ndcg
  /// `1/r` if `r ≤ K`.
  case mrr
  /// Equal to the hit ratio with one relevant item.
  case recall
  /// `1/K` if `r ≤ K`.
  case precision

  /// The metric for one target at 1-based rank `r` with cut-off `k`: 0 when `r > k` (as for
  /// ``FullRanking/unranked``).
  public func value(rank r: Int, k: Int) -> Double {
    guard r <= k else { return 0 }
    switch self {
    case .hit, .recall: return 1
    case .ndcg: return 1 / log2(Double(r) + 1)
    case .mrr: return 1 / Double(r)
    case .precision: return 1 / Double(k)
    }
  }
}

/// History-length groups of SIGMA's grouped-user analysis: short ≤ 5, medium 6–20, long > 20.
public enum LengthGroup: String, CaseIterable, Codable, Sendable {
  /// Histories of at most 5 items.
  case short
  /// Histories of 6 to 20 items.
  case medium
  /// Histories of more than 20 items.
  case long

  /// The group of a user whose input history has `historyLength` items.
  public init(historyLength: Int) {
    self = historyLength <= 5 ? .short : (historyLength <= 20 ? .medium : .long)
  }
}

/// Accumulates ranks and reports averaged metrics, overall and per history-length group.
public struct MetricAccumulator: Sendable {
  /// The metrics computed for every rank added.
  public let metrics: [RankingMetric]
  /// The cut-offs `K`; each metric is reported at each of them, as `metric@K`.
  public let cutoffs: [Int]
  private var sums: [String: Double] = [:]
  private var groupSums: [LengthGroup: [String: Double]] = [:]
  private var groupCounts: [LengthGroup: Int] = [:]
  /// The number of ranks added.
  public private(set) var count = 0

  /// Creates an empty accumulator; by default HR, NDCG and MRR at 10.
  /// - Precondition: every cut-off is positive.
  public init(metrics: [RankingMetric] = [.hit, .ndcg, .mrr], cutoffs: [Int] = [10]) {
    precondition(cutoffs.allSatisfy { $0 > 0 }, "cut-offs must be positive")
    self.metrics = metrics
    self.cutoffs = cutoffs
  }

  /// The key of a metric in results, e.g. `ndcg@10`.
  public static func key(_ metric: RankingMetric, _ k: Int) -> String { "\(metric.rawValue)@\(k)" }

  /// Adds one target's 1-based rank, counted overall and in the ``LengthGroup`` of
  /// `historyLength` (the number of items in the user's input history).
  public mutating func add(rank: Int, historyLength: Int) {
    count += 1
    let group = LengthGroup(historyLength: historyLength)
    groupCounts[group, default: 0] += 1
    for m in metrics {
      for k in cutoffs {
        let v = m.value(rank: rank, k: k)
        sums[Self.key(m, k), default: 0] += v
        groupSums[group, default: [:]][Self.key(m, k), default: 0] += v
      }
    }
  }

  /// Averages over everything added.
  public var results: [String: Double] {
    sums.mapValues { $0 / Double(Swift.max(count, 1)) }
  }

  /// Averages per history-length group, with each group's size under `"count"`.
  public var groupedResults: [LengthGroup: [String: Double]] {
    var out: [LengthGroup: [String: Double]] = [:]
    for (group, values) in groupSums {
      let n = Double(groupCounts[group] ?? 0)
      var averaged = values.mapValues { $0 / Swift.max(n, 1) }
      averaged["count"] = n
      out[group] = averaged
    }
    return out
  }
}
