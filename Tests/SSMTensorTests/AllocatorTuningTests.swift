import SSMTensor
import XCTest

/// glibc accepts every setting of the training allocator (`mallopt` reports a refused value,
/// such as a threshold above its cap, as failure), and tensors still work afterwards.
final class AllocatorTuningTests: XCTestCase {
  func testGlibcAcceptsTheTrainingSettings() throws {
    #if canImport(Glibc)
      // The environment switch is the one way to decline.
      XCTAssertEqual(AllocatorTuning.applyForTraining(), getenv("SSMREC_DEFAULT_MALLOC") == nil)
      // A buffer above glibc's mmap threshold cap, allocated, freed and allocated again.
      for _ in 0..<2 {
        let large = Tensor(zeros: [9 * 1024 * 1024]) + 1
        XCTAssertEqual(large.sum(), Float(9 * 1024 * 1024))
      }
    #else
      XCTAssertFalse(AllocatorTuning.applyForTraining())
    #endif
  }
}
