import CKernels

/// `acc[i] += x[i]` through the dispatched SIMD kernel.
@inline(__always)
func ssmAccumulate(_ acc: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ count: Int) {
  ssm_accumulate(acc, x, count)
}
