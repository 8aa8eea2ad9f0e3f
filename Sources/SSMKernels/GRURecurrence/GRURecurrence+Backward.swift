import CKernels
import SSMTensor

extension GRURecurrence {
  /// The gradients of the recurrence's inputs given `∂L/∂h` (in the outputs' layout), and what
  /// ``forward(_:saveForBackward:)`` saved.
  ///
  /// Backpropagation through time: per step, one SIMD pass over the gates and one product
  /// `dh[t−1] = z∘dh + ∂c[t]·W_hh`; then `∂W_hh = Σ_{t≥1} ∂c[t]ᵀ·h[t−1]` as one product over all
  /// steps and `∂b_hh = Σ_t ∂c[t]` as one column sum.
  ///
  /// Runs with subnormals flushed to zero: over a few hundred steps the gradient carried back
  /// through `z` and `W_hh` decays into the subnormal range, where every operation on it (here
  /// and in the products that read `∂xw`) took a microcode assist; at B = 32, L = 500 the
  /// backward took 896 ms instead of ≈ 100.
  public static func backward(outputGradient g: Tensor, _ inputs: Inputs, saved: Saved) -> Gradients {
    withSubnormalsFlushed { backwardThroughTime(outputGradient: g, inputs, saved: saved) }
  }

  private static func backwardThroughTime(outputGradient g: Tensor, _ inputs: Inputs, saved: Saved) -> Gradients {
    let (batch, length, hidden) = inputs.dimensions
    let layout = inputs.layout
    precondition(
      g.shape == (layout.isPadded ? [batch, length, hidden] : [layout.stateRows, hidden]),
      "GRURecurrence.backward: gradient \(g.shape) must have the outputs' shape")
    precondition(saved.values.count == 5 * layout.stateRows * hidden, "GRURecurrence.backward: saved state of another recurrence")
    let threeH = 3 * hidden
    let region = layout.stateRows * hidden
    let (ioStride, gStride) = (layout.ioStride * threeH, layout.ioStride * hidden)
    // The backward step writes every entry of both.
    var dxw = Tensor(uninitializedShape: inputs.inputProjection.shape)
    var dW = Tensor(zeros: [threeH, hidden])
    var dh = [Float](repeating: 0, count: batch * hidden)
    var carry = [Float](repeating: 0, count: batch * hidden)
    // ∂c for every step, laid out as the saved states: the weight and bias gradients are then one
    // long product and one column sum after the loop instead of a small product per step.
    var dhwAll = Tensor(uninitializedShape: [layout.stateRows, threeH])
    let bands = layout.rowBands(workers: Parallel.workerCount)
    saved.values.withUnsafeBufferPointer { sp in
      let base = sp.baseAddress!
      nonisolated(unsafe) let (r, z, n, hn, h) = (base, base + region, base + 2 * region, base + 3 * region, base + 4 * region)
      g.withUnsafeBufferPointer { gp in
        inputs.hiddenWeight.withUnsafeBufferPointer { wp in
          dxw.withUnsafeMutableBufferPointer { dxp in
            dhwAll.withUnsafeMutableBufferPointer { dhwp in
              // Each worker carries the gradient back through every step for its own band of
              // rows, as the forward pass does.
              nonisolated(unsafe) let (gBase, w, dxBase, dhwBase) = (
                gp.baseAddress!, wp.baseAddress!, dxp.baseAddress!, dhwp.baseAddress!
              )
              dh.withUnsafeMutableBufferPointer { dhp in
                carry.withUnsafeMutableBufferPointer { cp in
                  nonisolated(unsafe) let buffers = (dhp.baseAddress!, cp.baseAddress!)
                  Parallel.forEachWorker(count: bands.count, workers: bands.count) { band, _ in
                    let (b0, b1) = (bands[band].lowerBound, bands[band].upperBound)
                    var (current, next) = buffers
                    for t in stride(from: length - 1, through: 0, by: -1) {
                      let (rowsT, o) = (layout.rows[t], layout.stateStart[t] * hidden)
                      let dhw = dhwBase + layout.stateStart[t] * threeH
                      let dx = dxBase + layout.ioStart[t] * threeH
                      let idle = Swift.max(b0, rowsT)
                      if idle < b1 {
                        // Rows past their length: no gradient into their inputs or the hidden
                        // weights, and a row that ends at this step starts the reverse sweep with
                        // nothing carried.
                        if layout.isPadded {
                          (dhw + idle * threeH).update(repeating: 0, count: (b1 - idle) * threeH)
                          for b in idle..<b1 { (dx + b * ioStride).update(repeating: 0, count: threeH) }
                        }
                        (next + idle * hidden).update(repeating: 0, count: (b1 - idle) * hidden)
                      }
                      let rows = Swift.min(b1, rowsT) - b0
                      if rows > 0 {
                        let gt = gBase + layout.ioStart[t] * hidden
                        for b in b0..<(b0 + rows) { ssm_accumulate(current + b * hidden, gt + b * gStride, hidden) }
                        let rowState = o + b0 * hidden
                        ssm_gru_backward_step(
                          current + b0 * hidden, r + rowState, z + rowState, n + rowState, hn + rowState,
                          t > 0 ? h + layout.stateStart[t - 1] * hidden + b0 * hidden : nil, rows, hidden, dx + b0 * ioStride,
                          ioStride, dhw + b0 * threeH, next + b0 * hidden)
                        BLAS.gemmOnCurrentThread(
                          transposeA: false, transposeB: false, m: rows, n: hidden, k: threeH, alpha: 1, a: dhw + b0 * threeH,
                          lda: threeH, b: w, ldb: hidden, beta: 1, c: next + b0 * hidden, ldc: hidden)
                      }
                      swap(&current, &next)
                    }
                  }
                }
              }
              // ∂W_hh = Σ_{t≥1} ∂c[t]ᵀ·h[t−1]: rows of ∂c from step 1 on against the states they
              // followed. Padded, those are one block (rows of idle steps hold 0); packed, step
              // t's rows are a prefix of step t−1's, so the states are first gathered in order.
              if length > 1 {
                let first = layout.stateStart[1]
                let pairs = layout.stateRows - first
                var previous = [Float]()
                if !layout.isPadded {
                  previous.reserveCapacity(pairs * hidden)
                  for t in 1..<length {
                    let start = h + layout.stateStart[t - 1] * hidden
                    previous.append(contentsOf: UnsafeBufferPointer(start: start, count: layout.rows[t] * hidden))
                  }
                }
                previous.withUnsafeBufferPointer { pp in
                  dW.withUnsafeMutableBufferPointer { dwp in
                    BLAS.gemm(
                      transposeA: true, transposeB: false, m: threeH, n: hidden, k: pairs, alpha: 1,
                      a: dhwp.baseAddress! + first * threeH, lda: threeH, b: layout.isPadded ? h : pp.baseAddress!,
                      ldb: hidden, beta: 0, c: dwp.baseAddress!, ldc: hidden)
                  }
                }
              }
            }
          }
        }
      }
    }
    return Gradients(
      inputProjection: dxw, hiddenWeight: dW, hiddenBias: inputs.hiddenBias == nil ? nil : dhwAll.sum(alongAxis: 0))
  }
}
