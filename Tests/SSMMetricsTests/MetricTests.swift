import Foundation
import SSMMetrics
import SSMTestSupport
import XCTest

final class MetricTests: XCTestCase {
  func testMetricValuesAreTheirFormulas() {
    XCTAssertEqual(RankingMetric.hit.value(rank: 1, k: 10), 1)
    XCTAssertEqual(RankingMetric.hit.value(rank: 10, k: 10), 1)
    XCTAssertEqual(RankingMetric.hit.value(rank: 11, k: 10), 0)
    XCTAssertEqual(RankingMetric.ndcg.value(rank: 1, k: 10), 1 / log2(2.0))
    XCTAssertEqual(RankingMetric.ndcg.value(rank: 3, k: 10), 1 / log2(4.0))
    XCTAssertEqual(RankingMetric.ndcg.value(rank: 11, k: 10), 0)
    XCTAssertEqual(RankingMetric.mrr.value(rank: 4, k: 10), 1.0 / 4)
    XCTAssertEqual(RankingMetric.recall.value(rank: 4, k: 5), 1)
    XCTAssertEqual(RankingMetric.precision.value(rank: 4, k: 5), 1.0 / 5)
    XCTAssertEqual(RankingMetric.precision.value(rank: 6, k: 5), 0)
  }

  func testAccumulatorAveragesAndGroups() {
    var acc = MetricAccumulator(metrics: [.hit, .ndcg, .mrr], cutoffs: [1, 10])
    acc.add(rank: 1, historyLength: 3)
    acc.add(rank: 3, historyLength: 12)
    acc.add(rank: 20, historyLength: 40)
    let r = acc.results
    XCTAssertEqual(r["hit@10"]!, 2.0 / 3, accuracy: 1e-12)
    XCTAssertEqual(r["hit@1"]!, 1.0 / 3, accuracy: 1e-12)
    XCTAssertEqual(r["ndcg@10"]!, (1 / log2(2.0) + 1 / log2(4.0)) / 3, accuracy: 1e-12)
    XCTAssertEqual(r["mrr@10"]!, (1 + 1.0 / 3) / 3, accuracy: 1e-12)
    let g = acc.groupedResults
    XCTAssertEqual(g[.short]?["count"], 1)
    XCTAssertEqual(g[.medium]?["ndcg@10"]!, 1 / log2(4.0))
    XCTAssertEqual(g[.long]?["hit@10"], 0)
    XCTAssertEqual(LengthGroup(historyLength: 5), .short)
    XCTAssertEqual(LengthGroup(historyLength: 6), .medium)
    XCTAssertEqual(LengthGroup(historyLength: 20), .medium)
    XCTAssertEqual(LengthGroup(historyLength: 21), .long)
  }

  func testRankTieRuleAndPaddingExclusion() {
    // Row 0: target 2 scores 0.5; item 1 above, item 3 tied, padding 0 highest (excluded).
    // Row 1: target 1 ties item 4 for the maximum among real items.
    // Row 2: target 3 is the unique maximum among real items.
    let scores = Tensor(rows: [[9, 0.7, 0.5, 0.5, 0.1], [9, 0.9, 0.2, 0.3, 0.9], [9, 0.1, 0.2, 0.8, 0.3]])
    let ranks = FullRanking.ranks(scores: scores, targets: IndexTensor([2, 1, 3]))
    XCTAssertEqual(ranks, [3, 2, 1], "ties count against the target; id 0 is excluded")
  }
}

/// Ranks computed a block of items at a time equal the ranks of the whole score matrix.
final class BlockedRankingTests: XCTestCase {
  func testBlockedRanksEqualWholeMatrixRanks() {
    var rng = SplitMix64(seed: 11)
    for (rows, items) in [(1, 2), (3, 17), (6, 100), (4, 1000)] {
      // Few distinct values, so ties are everywhere; some NaN and infinite scores too.
      var values = (0..<(rows * items)).map { _ in Float(Int(rng.next() % 4)) }
      for _ in 0..<(rows * items / 10) {
        values[Int(rng.next() % UInt64(values.count))] = [Float.nan, .infinity, -.infinity][Int(rng.next() % 3)]
      }
      let scores = Tensor(shape: [rows, items], scalars: values)
      let targets = IndexTensor((0..<rows).map { _ in 1 + Int(rng.next() % UInt64(items - 1)) })
      for excluded in [0, nil] as [Int?] {
        let whole = FullRanking.ranks(scores: scores, targets: targets, excluding: excluded)
        for block in [1, 2, 7, items - 1, items, 10 * items] where block >= 1 {
          var calls = 0
          let blocked = FullRanking.ranks(targets: targets, itemCount: items, itemsPerBlock: block, excluding: excluded) {
            range in
            calls += 1
            return Tensor(
              shape: [rows, range.count], scalars: (0..<rows).flatMap { r in range.map { values[r * items + $0] } })
          }
          XCTAssertEqual(blocked, whole, "rows \(rows) items \(items) block \(block) excluded \(String(describing: excluded))")
          if block >= items { XCTAssertEqual(calls, 1, "one block is scored once") }
        }
      }
    }
  }
}
