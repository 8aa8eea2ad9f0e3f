import CKernels
import Dispatch
import Synchronization
import XCTest

@testable import SSMTensor

final class ParallelTests: XCTestCase {
  /// `SSMREC_WORKERS` wins when it is a positive integer (capped at 64); otherwise the worker
  /// count is the processors available (the affinity mask), at most 8 and at least 1.
  func testWorkerCountFollowsTheSettingOrTheAvailableProcessors() {
    XCTAssertEqual(Parallel.workerCount(environment: "3", availableProcessors: 2), 3)
    XCTAssertEqual(Parallel.workerCount(environment: " 1 ", availableProcessors: 16), 1)
    XCTAssertEqual(Parallel.workerCount(environment: "1000", availableProcessors: 2), 64)
    for invalid in ["0", "-2", "two", "", "1 6"] {
      XCTAssertEqual(Parallel.workerCount(environment: invalid, availableProcessors: 2), 2, invalid)
    }
    XCTAssertEqual(Parallel.workerCount(environment: nil, availableProcessors: 32), 8)
    XCTAssertEqual(Parallel.workerCount(environment: nil, availableProcessors: 0), 1)
    let available = ssm_available_processors()
    XCTAssertTrue(available >= 1 && available <= sysconf(Int32(_SC_NPROCESSORS_CONF)), "available \(available)")
  }

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

  /// Pieces claimed one at a time (several per worker, the caller taking any a late helper has
  /// not) still cover the range exactly once, with none below the smallest allowed size.
  func testClaimedPiecesCoverTheRangeOnce() {
    for count in [1, 5, 100, 4096, 20_011] {
      for minimum in [1, 64, 10_000] {
        for repeatIndex in 0..<20 {
          var visits = [Int](repeating: 0, count: count)
          let tooSmall = Atomic<Bool>(false)
          let smallest = Swift.max(1, minimum / 4)
          visits.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let v = buffer
            Parallel.forEachChunk(count: count, minimumPerWorker: minimum, piecesPerWorker: 4) { range in
              if range.count < smallest && range.count != count { tooSmall.store(true, ordering: .relaxed) }
              for i in range { v[i] += 1 }
            }
          }
          XCTAssertFalse(tooSmall.load(ordering: .relaxed), "count \(count), minimum \(minimum)")
          XCTAssertEqual(visits.indices.filter { visits[$0] != 1 }, [], "count \(count), minimum \(minimum)")
          if repeatIndex % 10 == 9 { usleep(2_000) }
        }
      }
    }
  }

  /// Pieces claimed with the claiming worker's index cover the range exactly once, every index
  /// below the worker count, and no worker index is in use by two pieces at once (its buffers
  /// are private): per-worker sums of the visited indices add up to the total.
  func testPiecesWithWorkerIndicesCoverTheRangeOnceAndKeepWorkersApart() {
    let workers = Parallel.workerCount
    for count in [1, 2, 7, 64, 1001] {
      for pieces in [1, 3, 16, 5000] {
        for repeatIndex in 0..<50 {
          var visits = [Int](repeating: 0, count: count)
          var sums = [Int](repeating: 0, count: workers)
          let inUse = Atomic<UInt64>(0)  // one bit per worker index
          let violation = Atomic<Bool>(false)
          visits.withUnsafeMutableBufferPointer { visitBuffer in
            sums.withUnsafeMutableBufferPointer { sumBuffer in
              nonisolated(unsafe) let (v, total) = (visitBuffer, sumBuffer)
              Parallel.forEachPiece(count: count, workers: workers, pieces: pieces) { worker, range in
                guard worker < workers else {
                  violation.store(true, ordering: .relaxed)
                  return
                }
                let bit = UInt64(1) << UInt64(worker)
                if inUse.bitwiseOr(bit, ordering: .acquiring).oldValue & bit != 0 {
                  violation.store(true, ordering: .relaxed)
                }
                for i in range {
                  v[i] += 1
                  total[worker] += i
                }
                inUse.bitwiseAnd(~bit, ordering: .releasing)
              }
            }
          }
          XCTAssertFalse(violation.load(ordering: .relaxed), "count \(count), pieces \(pieces)")
          XCTAssertEqual(visits.indices.filter { visits[$0] != 1 }, [], "count \(count), pieces \(pieces)")
          XCTAssertEqual(sums.reduce(0, +), count * (count - 1) / 2, "count \(count), pieces \(pieces)")
          if repeatIndex % 10 == 9 { usleep(2_000) }
        }
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

  /// Inside `withSubnormalsFlushed` every task of a region, on whichever thread, flushes
  /// subnormal results to zero; outside it none does, and the caller's mode comes back.
  func testRegionsRunInTheCallersSubnormalMode() {
    let factors: [Float] = [0.5]  // from memory, so the product is computed at run time
    let caller = pthread_self()
    let onHelpers = Atomic<Int>(0)
    func flushedTasks(_ count: Int) -> Int {
      let flushed = Atomic<Int>(0)
      Parallel.forEachChunk(count: count, minimumPerWorker: 1, piecesPerWorker: 8) { range in
        if pthread_equal(pthread_self(), caller) == 0 { onHelpers.add(1, ordering: .relaxed) }
        for _ in range {
          // Long enough that the helpers join the region before the caller has run every task.
          var x = Float.leastNormalMagnitude
          for _ in 0..<2_000 { x = x * factors[0] * 2 }
          if x * factors[0] == 0 { flushed.add(1, ordering: .relaxed) }
        }
      }
      return flushed.load(ordering: .relaxed)
    }
    for _ in 0..<50 {
      XCTAssertEqual(withSubnormalsFlushed { flushedTasks(64) }, 64)
      XCTAssertEqual(flushedTasks(64), 0)
    }
    XCTAssertGreaterThan(Float.leastNormalMagnitude * factors[0], 0, "the caller's mode was not restored")
    if Parallel.workerCount > 1 { XCTAssertGreaterThan(onHelpers.load(ordering: .relaxed), 0, "no task ran on a helper") }
  }

  /// Tensors filled on every worker (above 2 × the elementwise threshold) hold the value in every
  /// element, just above and below that size, for zeros and for another value, from a buffer the
  /// allocator may hand back dirty.
  func testLargeFilledTensorsHoldTheirValueEverywhere() {
    let threshold = 2 * Parallel.elementwiseThreshold
    for count in [threshold - 1, threshold, threshold + 17, 3 * threshold + 5] {
      // A freed buffer of the same size first, full of NaN.
      _ = Tensor(shape: [count], scalars: [Float](repeating: .nan, count: count))
      let zeros = Tensor(zeros: [count])
      XCTAssertTrue(zeros.scalars.allSatisfy { $0 == 0 }, "zeros, \(count) elements")
      let filled = Tensor(repeating: -2.5, shape: [count, 1])
      XCTAssertTrue(filled.scalars.allSatisfy { $0 == -2.5 }, "-2.5, \(count) elements")
    }
  }
}
