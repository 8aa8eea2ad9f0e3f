import Foundation
import SSMTensor

// [2, 3] × [3, 2] through OpenBLAS, checked against the product worked out by hand.
let a = Tensor(rows: [[1, 2, 3], [4, 5, 6]])
let b = Tensor(rows: [[7, 8], [9, 10], [11, 12]])
let c = Tensor.matmul(a, b)
let expected = Tensor(rows: [[58, 64], [139, 154]])
print("SSMTensor product: \(c.scalars) (expected \(expected.scalars))")
if c != expected {
  print("downstream check FAILED")
  exit(1)
}
print("downstream check passed")
