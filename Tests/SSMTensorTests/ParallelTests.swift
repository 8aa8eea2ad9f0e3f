import Dispatch
import Synchronization
import XCTest

@testable import SSMTensor

final class ParallelTests: XCTestCase {
  /// Every index is visited exactly once, by a worker index below the requested count, in many
  /// back-to-back regions (helpers spinning, parked and woken).
  func testRegionsCoverTheRangeOnceWithBoundedWorkerIndices() {
    let workers = Parallel.workerCount
    for count in [1, 2, 3, 7, 64, 1001] {
      for repeatIndex in 0..<200 {
        var visits = [Int](repeating: 0, count: count)
        let badWorker = Atomic<Bool>(false)
        visits.withUnsafeMutableBufferPointer { buffer in
          nonisolated(unsafe) let v = buffer
          Parallel.forEachWorker(count: count, workers: workers) { worker, range in
            if worker >= workers { badWorker.store(true, ordering: .relaxed) }
            for i in range { v[i] += 1 }
          }
        }
        XCTAssertFalse(badWorker.load(ordering: .relaxed))
        let wrong = visits.indices.filter { visits[$0] != 1 }
        XCTAssertEqual(wrong, [], "count \(count), region \(repeatIndex)")
        if repeatIndex % 50 == 49 { usleep(2_000) }  // let the helpers park
      }
    }
  }

  /// A region started inside a region, or from several threads at once, completes (it falls
  /// back to Dispatch instead of waiting on the busy pool) with the right sums.
  func testNestedAndConcurrentRegionsComplete() {
    let total = Atomic<Int>(0)
    Parallel.forEachWorker(count: 4, workers: Parallel.workerCount) { _, outer in
      for _ in outer {
        Parallel.forEachChunk(count: 100, minimumPerWorker: 1) { inner in
          total.add(inner.count, ordering: .relaxed)
        }
      }
    }
    XCTAssertEqual(total.load(ordering: .relaxed), 400)
    let concurrentTotal = Atomic<Int>(0)
    DispatchQueue.concurrentPerform(iterations: 8) { _ in
      for _ in 0..<50 {
        Parallel.forEachChunk(count: 1000, minimumPerWorker: 1) { r in concurrentTotal.add(r.count, ordering: .relaxed) }
      }
    }
    XCTAssertEqual(concurrentTotal.load(ordering: .relaxed), 8 * 50 * 1000)
  }
}
