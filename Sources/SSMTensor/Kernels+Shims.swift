import CKernels

/// `acc[i] += x[i]` through the dispatched SIMD kernel.
@inline(__always)
func ssmAccumulate(_ acc: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ count: Int) {
  ssm_accumulate(acc, x, count)
}

/// Runs `body` with subnormal floats flushed to zero and read as zero, on the calling thread
/// and, through ``WorkerPool``, on every thread of the parallel regions it starts; restores the
/// caller's mode afterwards. For computations whose values decay into the subnormal range,
/// where every operation on one costs a microcode assist (Docs/Kernels.md).
package func withSubnormalsFlushed<R>(_ body: () throws -> R) rethrows -> R {
  let saved = ssm_subnormals_off()
  defer { ssm_subnormals_restore(saved) }
  return try body()
}
