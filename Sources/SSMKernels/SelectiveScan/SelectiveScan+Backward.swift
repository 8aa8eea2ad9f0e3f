import CKernels

extension SelectiveScan {
  /// The gradients of a scalar objective with respect to every input, given its gradient with
  /// respect to the scan's output.
  ///
  /// Per (batch element, channel block) the forward states and decay factors are recomputed into
  /// ≈2·L·N·lanes floats of scratch per worker, then the state adjoint runs backwards in time (SPEC §1.5):
  ///
  ///     λ[t] = g[t]·C[t] + exp(Δ[t+1]·A)·λ[t+1]
  ///
  /// and every input's gradient is accumulated from λ, the states and the inputs. `∂A`, `∂D`,
  /// `∂b` sum over the batch, `∂B`, `∂C` over the channels; each worker accumulates its own copy
  /// and the copies are added at the end.
  ///
  /// - Precondition: `outputGradient.shape == inputs.u.shape`.
  public static func backward(outputGradient: Tensor, _ inputs: Inputs) -> Gradients {
    precondition(
      outputGradient.shape == inputs.u.shape,
      "SelectiveScan.backward: gradient \(outputGradient.shape) must match u \(inputs.u.shape)")
    let (batch, length, channels, state) = inputs.dimensions
    let lanes = ssm_scan_lanes()
    let blocks = (channels + lanes - 1) / lanes
    let tasks = batch * blocks
    let aTransposed = inputs.A.transposed()
    var du = Tensor(zeros: inputs.u.shape)
    var dDelta = Tensor(zeros: inputs.u.shape)
    var dz: Tensor? = inputs.z.map { Tensor(zeros: $0.shape) }
    let perTask = length * state * lanes * 40
    let workers = Swift.max(1, Parallel.workers(count: tasks, minimumPerWorker: Swift.max(1, 2_000_000 / Swift.max(perTask, 1))))
    let scratchPerWorker = ssm_scan_backward_scratch(length, state)
    var scratch = [Float](repeating: 0, count: workers * scratchPerWorker)
    // Per-worker accumulators: A (as [N, E]), B, C, D, bias.
    let sizes = (a: state * channels, bc: batch * length * state, e: channels)
    var accA = [Float](repeating: 0, count: workers * sizes.a)
    var accB = [Float](repeating: 0, count: workers * sizes.bc)
    var accC = [Float](repeating: 0, count: workers * sizes.bc)
    var accD = [Float](repeating: 0, count: workers * sizes.e)
    var accBias = [Float](repeating: 0, count: workers * sizes.e)
    if tasks > 0 && length > 0 {
      FLOPCounter.add(backwardOperationsPerStateElement * batch * length * channels * state)
      withArguments(inputs, aTransposed) { args in
        outputGradient.withUnsafeBufferPointer { g in
          du.withUnsafeMutableBufferPointer { duP in
            dDelta.withUnsafeMutableBufferPointer { ddP in
              withOptionalMutablePointer(&dz) { dzP in
                scratch.withUnsafeMutableBufferPointer { s in
                  accA.withUnsafeMutableBufferPointer { a in
                    accB.withUnsafeMutableBufferPointer { b in
                      accC.withUnsafeMutableBufferPointer { c in
                        accD.withUnsafeMutableBufferPointer { d in
                          accBias.withUnsafeMutableBufferPointer { bias in
                            nonisolated(unsafe) let p = (
                              args, g.baseAddress!, duP.baseAddress!, ddP.baseAddress!, dzP, s.baseAddress!,
                              a.baseAddress!, b.baseAddress!, c.baseAddress!, d.baseAddress!, bias.baseAddress!
                            )
                            let hasD = inputs.D != nil, hasBias = inputs.deltaBias != nil
                            Parallel.forEachWorker(count: tasks, minimumPerWorker: Swift.max(1, tasks / workers)) { w, range in
                              var a = p.0
                              var grads = ssm_scan_grads(
                                du: p.2, ddelta: p.3, dz: p.4, dA_t: p.6 + w * sizes.a, dB: p.7 + w * sizes.bc,
                                dC: p.8 + w * sizes.bc, dD: hasD ? p.9 + w * sizes.e : nil,
                                ddelta_bias: hasBias ? p.10 + w * sizes.e : nil)
                              ssm_scan_backward(&a, p.1, range.lowerBound, range.upperBound, p.5 + w * scratchPerWorker, &grads)
                            }
                          }
                        }
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    func total(_ acc: [Float], _ size: Int, _ shape: Shape) -> Tensor {
      var sum = Tensor(shape: shape, scalars: Array(acc[0..<size]))
      for w in 1..<Swift.max(workers, 1) { sum += Tensor(shape: shape, scalars: Array(acc[(w * size)..<((w + 1) * size)])) }
      return sum
    }
    return Gradients(
      u: du, delta: dDelta, A: total(accA, sizes.a, [state, channels]).transposed(),
      B: total(accB, sizes.bc, [batch, length, state]), C: total(accC, sizes.bc, [batch, length, state]),
      D: inputs.D == nil ? nil : total(accD, sizes.e, [channels]), z: dz,
      deltaBias: inputs.deltaBias == nil ? nil : total(accBias, sizes.e, [channels]))
  }
}
