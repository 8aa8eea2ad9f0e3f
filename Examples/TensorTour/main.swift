// A short tour of SSMTensor: what the kernels compute and how fast, on this machine.
// Run it with `bash Scripts/demo.sh` (release build).

import CKernels
import SSMTensor

/// Median wall time of `body` over `repeats` runs after one warm-up, in seconds.
func medianSeconds(repeats: Int = 9, _ body: () -> Void) -> Double {
  body()
  let clock = ContinuousClock()
  var times = [Double]()
  for _ in 0..<repeats {
    let d = clock.measure(body)
    times.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
  }
  return times.sorted()[times.count / 2]
}

let isaNames = ["portable (SSE2)", "AVX2 + FMA", "AVX-512"]
print("SSMTensor tour — SIMD kernels: \(isaNames[Int(ssm_isa_level())]), workers: \(Parallel.workerCount)")

var rng = SplitMix64(seed: 2020)

print("\nMatrix products (cblas_sgemm, OpenBLAS on one thread per worker):")
for (m, k, n) in [(12_800, 64, 256), (256, 64, 3417)] {
  let a = Tensor.randomNormal([m, k], using: &rng)
  let b = Tensor.randomNormal([k, n], using: &rng)
  var c = Tensor(zeros: [1])
  let t = medianSeconds { c = Tensor.matmul(a, b) }
  let gflops = 2 * Double(m) * Double(n) * Double(k) / t / 1e9
  print("  [\(m), \(k)] × [\(k), \(n)]: \(format3(t * 1e3)) ms, \(format1(gflops)) GFLOP/s (c[0,0] = \(c[0, 0]))")
}

print("\nElementwise and softmax over 4M floats (16 MB in, 16 MB out):")
let x = Tensor.randomNormal([4096, 1024], using: &rng)
for (name, op) in [
  ("exp", { x.exp() }), ("silu", { x.silu() }), ("gelu", { x.gelu() }), ("x + 1", { x + 1 }), ("softmax", { x.softmax() }),
] as [(String, () -> Tensor)] {
  var y = x
  let t = medianSeconds { y = op() }
  let gbps = 2 * Double(x.elementCount) * 4 / t / 1e9
  print("  \(name): \(format3(t * 1e3)) ms, \(format1(gbps)) GB/s (y[0] = \(y.scalars[0]))")
}

print("\nTop-5 items of random scores over 3,417 items, for 2 users:")
let scores = Tensor.randomNormal([2, 3417], using: &rng)
let (values, indices) = scores.topK(5)
for user in 0..<2 {
  let items = (0..<5).map { "\(indices[user, $0]) (\(format3(Double(values[user, $0]))))" }
  print("  user \(user): " + items.joined(separator: ", "))
}

func format1(_ v: Double) -> String { String(Double((v * 10).rounded()) / 10) }
func format3(_ v: Double) -> String { String(Double((v * 1000).rounded()) / 1000) }
