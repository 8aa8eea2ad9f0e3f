import CKernels
import SSMTensor

/// Causal depthwise convolution over time, channels last, with optional resets at the
/// boundaries of packed sequences.
///
///     y[b,t,c] = bias[c] + Σₖ w[c,k]·x[b, t−K+1+k, c]
///
/// Taps before `t = 0`, and (with `sequenceIndex`) taps whose segment id differs from the one at
/// `t`, count as zero, so each packed segment is convolved as if it were alone (Docs/Models.md §1.3, §2.6;
/// causal-conv1d's `seq_idx`). `w[c, K−1]` multiplies the current step, as in PyTorch's
/// left-padded `Conv1d` cross-correlation.
public enum CausalConv1d {
  /// Convolves `x`.
  /// - Parameters:
  ///   - x: shape `[B, L, C]`.
  ///   - weight: shape `[C, K]` (or PyTorch's `[C, 1, K]`).
  ///   - bias: shape `[C]`, or `nil`.
  ///   - sequenceIndex: segment ids, shape `[B, L]`, non-decreasing along time, or `nil`.
  /// - Returns: shape `[B, L, C]`.
  /// - Complexity: O(B·L·C·K); work split over batch elements.
  public static func forward(_ x: Tensor, weight: Tensor, bias: Tensor?, sequenceIndex: IndexTensor? = nil) -> Tensor {
    let (batch, length, channels, width) = check(x, weight, bias, sequenceIndex)
    let weightT = weight.reshaped(to: [channels, width]).transposed()
    // The kernel writes every element (the bias, then each tap added on).
    var y = Tensor(uninitializedShape: x.shape)
    if x.elementCount == 0 { return y }
    FLOPCounter.add(2 * x.elementCount * width)
    x.withUnsafeBufferPointer { xb in
      weightT.withUnsafeBufferPointer { wb in
        withOptionalPointer(bias) { bp in
          withOptionalIndexPointer(sequenceIndex) { sp in
            y.withUnsafeMutableBufferPointer { yb in
              nonisolated(unsafe) let p = (xb.baseAddress!, wb.baseAddress!, bp, sp, yb.baseAddress!)
              Parallel.forEachChunk(count: batch, minimumPerWorker: Swift.max(1, 65536 / Swift.max(length * channels, 1))) { r in
                ssm_conv_forward(p.0, p.1, p.2, p.3, r.lowerBound, r.upperBound, length, channels, width, p.4)
              }
            }
          }
        }
      }
    }
    return y
  }

  /// Gradients with respect to `x`, `weight` (shaped like the given weight) and `bias`.
  public static func backward(
    outputGradient: Tensor, _ x: Tensor, weight: Tensor, hasBias: Bool, sequenceIndex: IndexTensor? = nil
  ) -> (x: Tensor, weight: Tensor, bias: Tensor?) {
    let (batch, length, channels, width) = check(x, weight, nil, sequenceIndex)
    precondition(
      outputGradient.shape == x.shape, "CausalConv1d.backward: gradient \(outputGradient.shape) must match x \(x.shape)")
    let weightT = weight.reshaped(to: [channels, width]).transposed()
    // The kernel zeroes each row's block of dx before it adds into it.
    var dx = Tensor(uninitializedShape: x.shape)
    FLOPCounter.add(4 * x.elementCount * width)
    let workers = Swift.max(
      1, Parallel.workers(count: batch, minimumPerWorker: Swift.max(1, 65536 / Swift.max(length * channels, 1))))
    var dw = [Float](repeating: 0, count: workers * width * channels)
    var db = [Float](repeating: 0, count: workers * channels)
    if x.elementCount > 0 {
      x.withUnsafeBufferPointer { xb in
        weightT.withUnsafeBufferPointer { wb in
          outputGradient.withUnsafeBufferPointer { gb in
            withOptionalIndexPointer(sequenceIndex) { sp in
              dx.withUnsafeMutableBufferPointer { dxb in
                dw.withUnsafeMutableBufferPointer { dwb in
                  db.withUnsafeMutableBufferPointer { dbb in
                    nonisolated(unsafe) let p = (
                      xb.baseAddress!, wb.baseAddress!, sp, gb.baseAddress!, dxb.baseAddress!, dwb.baseAddress!, dbb.baseAddress!
                    )
                    Parallel.forEachWorker(count: batch, workers: workers) { w, r in
                      ssm_conv_backward(
                        p.0, p.1, p.2, p.3, r.lowerBound, r.upperBound, length, channels, width, p.4,
                        p.5 + w * width * channels, hasBias ? p.6 + w * channels : nil)
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    var dWeightT = Tensor(shape: [width, channels], scalars: Array(dw[0..<(width * channels)]))
    var dBias = Tensor(shape: [channels], scalars: Array(db[0..<channels]))
    for w in 1..<workers {
      dWeightT += Tensor(shape: [width, channels], scalars: Array(dw[(w * width * channels)..<((w + 1) * width * channels)]))
      dBias += Tensor(shape: [channels], scalars: Array(db[(w * channels)..<((w + 1) * channels)]))
    }
    return (dx, dWeightT.transposed().reshaped(to: weight.shape), hasBias ? dBias : nil)
  }

  static func check(_ x: Tensor, _ weight: Tensor, _ bias: Tensor?, _ sequenceIndex: IndexTensor?) -> (Int, Int, Int, Int) {
    precondition(x.rank == 3, "CausalConv1d: x must be [B, L, C], got \(x.shape)")
    let channels = x.shape[2]
    precondition(
      (weight.rank == 2 || (weight.rank == 3 && weight.shape[1] == 1)) && weight.shape[0] == channels,
      "CausalConv1d: weight \(weight.shape) must be [C, K] or [C, 1, K] for x \(x.shape)")
    if let bias { precondition(bias.shape == [channels], "CausalConv1d: bias \(bias.shape) must be [C] for x \(x.shape)") }
    if let sequenceIndex {
      precondition(
        sequenceIndex.shape == [x.shape[0], x.shape[1]],
        "CausalConv1d: sequence index \(sequenceIndex.shape) must be [B, L] for x \(x.shape)")
    }
    return (x.shape[0], x.shape[1], channels, weight.shape[weight.rank - 1])
  }

  /// ``forward(_:weight:bias:sequenceIndex:)`` in Double, plain loops (same signature).
  package static func reference(_ x: Tensor, weight: Tensor, bias: Tensor?, sequenceIndex: IndexTensor? = nil) -> Tensor {
    let (batch, length, channels, width) = check(x, weight, bias, sequenceIndex)
    let w = weight.scalars.asDoubles
    let xs = x.scalars.asDoubles
    var y = [Double](repeating: 0, count: x.elementCount)
    for b in 0..<batch {
      for t in 0..<length {
        for c in 0..<channels {
          var acc = Double(bias?.scalars[c] ?? 0)
          for k in 0..<width {
            let s = t - width + 1 + k
            guard s >= 0 else { continue }
            if let seq = sequenceIndex, seq.values[b * length + s] != seq.values[b * length + t] { continue }
            acc += w[c * width + k] * xs[(b * length + s) * channels + c]
          }
          y[(b * length + t) * channels + c] = acc
        }
      }
    }
    return Tensor(shape: x.shape, scalars: y.map(Float.init))
  }

  /// ``backward(outputGradient:_:weight:hasBias:sequenceIndex:)`` in Double, plain loops.
  package static func referenceBackward(
    outputGradient: Tensor, _ x: Tensor, weight: Tensor, hasBias: Bool, sequenceIndex: IndexTensor? = nil
  ) -> (x: Tensor, weight: Tensor, bias: Tensor?) {
    let (batch, length, channels, width) = check(x, weight, nil, sequenceIndex)
    let w = weight.scalars.asDoubles
    let xs = x.scalars.asDoubles
    let g = outputGradient.scalars.asDoubles
    var dx = [Double](repeating: 0, count: x.elementCount)
    var dw = [Double](repeating: 0, count: channels * width)
    var db = [Double](repeating: 0, count: channels)
    for b in 0..<batch {
      for t in 0..<length {
        for c in 0..<channels {
          let gv = g[(b * length + t) * channels + c]
          db[c] += gv
          for k in 0..<width {
            let s = t - width + 1 + k
            guard s >= 0 else { continue }
            if let seq = sequenceIndex, seq.values[b * length + s] != seq.values[b * length + t] { continue }
            dx[(b * length + s) * channels + c] += w[c * width + k] * gv
            dw[c * width + k] += gv * xs[(b * length + s) * channels + c]
          }
        }
      }
    }
    return (
      Tensor(shape: x.shape, scalars: dx.map(Float.init)), Tensor(shape: weight.shape, scalars: dw.map(Float.init)),
      hasBias ? Tensor(shape: [channels], scalars: db.map(Float.init)) : nil
    )
  }
}

/// Calls `body` with the index tensor's base address, or `nil`.
func withOptionalIndexPointer<R>(_ indices: IndexTensor?, _ body: (UnsafePointer<Int32>?) -> R) -> R {
  guard let indices else { return body(nil) }
  return indices.values.withUnsafeBufferPointer { body($0.baseAddress) }
}
