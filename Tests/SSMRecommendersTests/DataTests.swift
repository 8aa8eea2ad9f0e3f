import Foundation
import SSMRecommenders
import SSMTestSupport
import XCTest

final class DataTests: XCTestCase {
  var folder: URL!

  override func setUpWithError() throws {
    folder = FileManager.default.temporaryDirectory.appendingPathComponent("ssmrec-data-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

  func write(_ name: String, _ text: String) throws -> URL {
    let url = folder.appendingPathComponent(name)
    try text.write(to: url, atomically: true, encoding: .utf8)
    return url
  }

  /// A hand-made file and the exact instances RecBole's protocol makes of it.
  func testGoldenSplit() throws {
    let url = try write(
      "tiny.inter",
      """
      user_id:token\titem_id:token\trating:float\ttimestamp:float
      u1\ta\t5\t10
      u2\tb\t3\t5
      u1\tb\t4\t30
      u1\tc\t1\t20
      u2\ta\t2\t5
      u1\td\t2\t40
      u2\tc\t2\t6
      u3\ta\t1\t1
      u3\td\t1\t2
      u1\te\t3\t50
      """)
    let data = try InteractionDataset(contentsOf: url)
    // Ids in order of first appearance: users u1=1, u2=2, u3=3; items a=1, b=2, c=3, d=4, e=5.
    XCTAssertEqual(data.userTokens, ["[PAD]", "u1", "u2", "u3"])
    XCTAssertEqual(data.itemTokens, ["[PAD]", "a", "b", "c", "d", "e"])
    let split = SequentialSplit(data, maximumLength: 2)
    // u1 by time: a(10) c(20) b(30) d(40) e(50) → instances [a]→c, [a,c]→b, [c,b]→d, [b,d]→e.
    // u2: b(5) a(5, tie: file order) c(6) → [b]→a, [b,a]→c.   u3: a d → [a]→d.
    func inst(_ u: Int32, _ h: [Int32], _ t: Int32) -> SequenceInstance { SequenceInstance(user: u, history: h, target: t) }
    XCTAssertEqual(split.train, [inst(1, [1], 3), inst(1, [1, 3], 2), inst(2, [2], 1), inst(3, [1], 4)])
    XCTAssertEqual(split.validation, [inst(1, [3, 2], 4)])
    XCTAssertEqual(split.test, [inst(1, [2, 4], 5), inst(2, [2, 1], 3)])
    let stats = data.statistics
    XCTAssertEqual(stats.interactions, 10)
    XCTAssertEqual(stats.averageLength, 10.0 / 3, accuracy: 1e-12)
    XCTAssertEqual(stats.sparsity, 1 - 10.0 / 15, accuracy: 1e-12)
  }

  func testKCoreFilteringIteratesToAFixedPoint() throws {
    // 2-core: removing u4, u5 and w leaves z with one interaction; removing z leaves u3 with one.
    let url = try write(
      "f.csv",
      """
      user_id,item_id,timestamp
      u1,x,1
      u1,y,2
      u2,x,1
      u2,y,2
      u3,z,1
      u3,x,2
      u4,z,1
      u5,w,1
      """)
    let data = try InteractionDataset(
      contentsOf: url, userInterval: CountInterval(parsing: "[2,inf)"), itemInterval: CountInterval(parsing: "[2,inf)"))
    XCTAssertEqual(data.userTokens, ["[PAD]", "u1", "u2"])
    XCTAssertEqual(data.itemTokens, ["[PAD]", "x", "y"])
    XCTAssertEqual(data.interactionCount, 4)
    XCTAssertThrowsError(
      try InteractionDataset(contentsOf: url, userInterval: CountInterval(parsing: "[3,inf)"), itemInterval: nil)
    ) { XCTAssertEqual($0 as? DatasetError, .emptyAfterFiltering) }
    XCTAssertEqual(CountInterval(parsing: "[5,200)")?.contains(200), false)
    XCTAssertEqual(CountInterval(parsing: "(0,10]")?.contains(10), true)
    XCTAssertNil(CountInterval(parsing: "5+"))
  }

  func testMovieLensFormats() throws {
    let uData = try write("u.data", "1\t10\t5\t100\n2\t10\t3\t99\n1\t11\t4\t101\n")
    XCTAssertEqual(try InteractionDataset(contentsOf: uData).interactionCount, 3)
    let ratings = try write("ratings.dat", "1::10::5::100\n2::10::3::99\n")
    XCTAssertEqual(try InteractionDataset(contentsOf: ratings).itemTokens, ["[PAD]", "10"])
  }

  func testBadFilesGiveClearErrors() throws {
    XCTAssertThrowsError(try InteractionDataset(contentsOf: folder.appendingPathComponent("none.inter"))) {
      XCTAssertEqual($0 as? DatasetError, .fileNotFound(self.folder.appendingPathComponent("none.inter").path))
    }
    let noColumn = try write("a.inter", "user:token\titem_id:token\n1\t2\n")
    XCTAssertThrowsError(try InteractionDataset(contentsOf: noColumn)) {
      XCTAssertEqual($0 as? DatasetError, .missingColumn("user_id", file: "a.inter"))
    }
    let truncated = try write("b.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n4\t5\n")
    XCTAssertThrowsError(try InteractionDataset(contentsOf: truncated)) {
      XCTAssertEqual($0 as? DatasetError, .malformedLine(line: 3, detail: "expected at least 3 fields, found 2"))
    }
    let badTime = try write("c.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n")
    XCTAssertThrowsError(try InteractionDataset(contentsOf: badTime)) {
      XCTAssertEqual($0 as? DatasetError, .badTimestamp(line: 2, value: "noon"))
    }
    let empty = try write("d.inter", "")
    XCTAssertThrowsError(try InteractionDataset(contentsOf: empty))
    XCTAssertThrowsError(try InteractionDataset(contentsOf: try write("e.txt", "x")))
    for (name, value) in [("nan", "nan"), ("inf", "inf"), ("minus-inf", "-infinity")] {
      let nonFinite = try write("\(name).inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t5\n1\t3\t\(value)\n")
      XCTAssertThrowsError(try InteractionDataset(contentsOf: nonFinite), name) {
        XCTAssertEqual($0 as? DatasetError, .badTimestamp(line: 3, value: value))
      }
    }
    for text in ["user_id:token\titem_id:token\n[PAD]\t2\n", "user_id:token\titem_id:token\n1\t2\n1\t[PAD]\n"] {
      XCTAssertThrowsError(try InteractionDataset(contentsOf: try write("pad.inter", text))) {
        XCTAssertEqual($0 as? DatasetError, .reservedToken(line: text.contains("[PAD]\t2") ? 2 : 3))
      }
    }
  }

  func testFilesWithoutTimestampsSayTheyKeepFileOrder() throws {
    let timed = try InteractionDataset(
      contentsOf: try write("t.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t9\n1\t3\t1\n"))
    XCTAssertTrue(timed.hasTimestamps)
    XCTAssertEqual(
      SequentialSplit(timed, maximumLength: nil).train.first?.target, 1, "by time: token 3 (id 2), then token 2 (id 1)")
    let untimed = try InteractionDataset(contentsOf: try write("u.inter", "user_id:token\titem_id:token\n1\t2\n1\t3\n"))
    XCTAssertFalse(untimed.hasTimestamps)
    XCTAssertEqual(
      SequentialSplit(untimed, maximumLength: nil).train.first?.target, 2, "file order: token 2 (id 1), then token 3 (id 2)")
  }

  func testBatchesArePaddedAndSeededlyShuffled() throws {
    let instances = (0..<10).map {
      SequenceInstance(user: 1, history: Array(repeating: Int32($0 + 1), count: $0 % 3 + 1), target: 1)
    }
    let a = Array(BatchSequence(instances, batchSize: 4, shuffleSeed: 5))
    let b = Array(BatchSequence(instances, batchSize: 4, shuffleSeed: 5))
    XCTAssertEqual(a.map(\.items), b.map(\.items))
    XCTAssertEqual(a.count, 3)
    XCTAssertEqual(a.last?.count, 2)
    let fixed = Array(BatchSequence(instances, batchSize: 4, batching: .fixedWindow(5)))
    XCTAssertEqual(fixed[0].width, 5)
    XCTAssertEqual(fixed[0].items[0, 1], 0, "right padding")
    // Up to a length: cut to the most recent items, padded to the longest of the batch.
    let long = [
      SequenceInstance(user: 1, history: [1, 2, 3, 4, 5], target: 6), SequenceInstance(user: 2, history: [7], target: 8),
    ]
    let cut = Array(BatchSequence(long, batchSize: 2, batching: .upTo(3)))[0]
    XCTAssertEqual(cut.width, 3)
    XCTAssertEqual(cut.items.values, [3, 4, 5, 7, 0, 0])
    XCTAssertEqual(cut.lengths, [3, 1])
    XCTAssertEqual(Array(BatchSequence(long, batchSize: 2, batching: .wholeHistories))[0].width, 5)
    XCTAssertThrowsError(try BatchingPolicy(maximumLength: nil, padding: .toWindow).validate())
    XCTAssertThrowsError(try BatchingPolicy.upTo(0).validate())
  }
}
