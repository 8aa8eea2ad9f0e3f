import SSMTensor

// Matrix products. Memory kept: both operands (no copies: `Tensor` shares storage).
//
// With C = op(A)·op(B): ∂op(A) = ∂C·op(B)ᵀ and ∂op(B) = op(A)ᵀ·∂C, each written as one
// `Tensor.matmul` with the right transposition flags so nothing is transposed in memory. When
// an operand was broadcast over the batch, its gradient is summed over the batch axes; for the
// common `[…, m, k] × [k, n]` case that sum is folded into a single `sgemm` over all rows.

extension Variable {
  /// The matrix product of the last two axes, with the batching rules of `Tensor.matmul`.
  public static func matmul(
    _ lhs: Variable, _ rhs: Variable, transposeA: Bool = false, transposeB: Bool = false
  ) -> Variable {
    let (a, b) = (lhs.value, rhs.value)
    let value = Tensor.matmul(a, b, transposeA: transposeA, transposeB: transposeB)
    return record(value: value, inputs: [lhs, rhs]) {
      { g in
        [
          lhs.requiresGradient ? gradientOfLeft(g, a, b, transposeA, transposeB) : nil,
          rhs.requiresGradient ? gradientOfRight(g, a, b, transposeA, transposeB) : nil,
        ]
      }
    }
  }

  static func gradientOfLeft(_ g: Tensor, _ a: Tensor, _ b: Tensor, _ tA: Bool, _ tB: Bool) -> Tensor {
    let full =
      tA
      ? Tensor.matmul(b, g, transposeA: tB, transposeB: true)
      : Tensor.matmul(g, b, transposeB: !tB)
    return reduceBatch(full, to: a.shape)
  }

  static func gradientOfRight(_ g: Tensor, _ a: Tensor, _ b: Tensor, _ tA: Bool, _ tB: Bool) -> Tensor {
    if b.rank == 2 && a.rank > 2 && !tA {
      // Σ over the batch of A_iᵀ·G_i = A_flatᵀ·G_flat: one product over all rows.
      let k = a.shape[a.rank - 1]
      let n = g.shape[g.rank - 1]
      let aFlat = a.reshaped(to: [-1, k])
      let gFlat = g.reshaped(to: [-1, n])
      return tB ? Tensor.matmul(gFlat, aFlat, transposeA: true) : Tensor.matmul(aFlat, gFlat, transposeA: true)
    }
    let full =
      tB
      ? Tensor.matmul(g, a, transposeA: true, transposeB: tA)
      : Tensor.matmul(a, g, transposeA: !tA)
    return reduceBatch(full, to: b.shape)
  }

  /// Sums leading batch axes away when the operand had fewer of them.
  static func reduceBatch(_ t: Tensor, to shape: Shape) -> Tensor {
    if t.shape == shape { return t }
    let lead = t.rank - shape.rank
    let rows = t.shape.dimensions[..<lead].reduce(1, *)
    return t.reshaped(to: Shape([rows] + shape.dimensions)).sum(alongAxis: 0)
  }
}
