import CKernels
import SSMTensor

extension SelectiveScan {
  /// The gradients of a scalar objective with respect to every input, given its gradient with
  /// respect to the scan's output.
  ///
  /// Per (batch element, channel block), eight states at a time, the forward states and decay
  /// factors are recomputed into ≈2·L·8·lanes floats of scratch per worker (L the longest packed
  /// sequence), then the state adjoint runs backwards in time (Docs/Models.md §1.5):
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
    let work = tasks > 0 && length > 0
    // The kernel writes every element of du, dΔ and dz, so they start uninitialised.
    var du = work ? Tensor(uninitializedShape: inputs.u.shape) : Tensor(zeros: inputs.u.shape)
    var dDelta = work ? Tensor(uninitializedShape: inputs.u.shape) : Tensor(zeros: inputs.u.shape)
    var dz: Tensor? = inputs.z.map { work ? Tensor(uninitializedShape: $0.shape) : Tensor(zeros: $0.shape) }
    let perTask = length * state * lanes * 40
    let workers = Swift.max(1, Parallel.workers(count: tasks, minimumPerWorker: Swift.max(1, 2_000_000 / Swift.max(perTask, 1))))
    // With at least one batch element per worker, workers own whole batch elements and so
    // disjoint rows of ∂B and ∂C: one shared copy of each instead of one per worker.
    let byBatch = batch >= workers
    let copiesBC = byBatch ? 1 : workers
    let scratchPerWorker = ssm_scan_backward_scratch(inputs.longestSequence, state)
    var scratch = [Float](repeating: 0, count: workers * scratchPerWorker)
    // Per-worker accumulators: A (as [N, E]), D, bias; B and C per worker or shared.
    let sizes = (a: state * channels, bc: batch * length * state, e: channels)
    var accA = [Float](repeating: 0, count: workers * sizes.a)
    var accB = [Float](repeating: 0, count: copiesBC * sizes.bc)
    var accC = [Float](repeating: 0, count: copiesBC * sizes.bc)
    var accD = [Float](repeating: 0, count: workers * sizes.e)
    var accBias = [Float](repeating: 0, count: workers * sizes.e)
    if work {
      FLOPCounter.add(backwardOperationsPerStateElement * batch * length * channels * state)
      FLOPCounter.addExponentials(batch * length * channels * state)  // the recomputed forward's decays
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
                            let hasD = inputs.D != nil
                            let hasBias = inputs.deltaBias != nil
                            let units = byBatch ? batch : tasks
                            Parallel.forEachPiece(count: units, workers: workers, pieces: Self.piecesPerWorker * workers) {
                              w, range in
                              var a = p.0
                              let bc = byBatch ? 0 : w * sizes.bc
                              var grads = ssm_scan_grads(
                                du: p.2, ddelta: p.3, dz: p.4, dA_t: p.6 + w * sizes.a, dB: p.7 + bc,
                                dC: p.8 + bc, dD: hasD ? p.9 + w * sizes.e : nil,
                                ddelta_bias: hasBias ? p.10 + w * sizes.e : nil)
                              let taskRange = byBatch ? (range.lowerBound * blocks)..<(range.upperBound * blocks) : range
                              ssm_scan_backward(
                                &a, p.1, taskRange.lowerBound, taskRange.upperBound, p.5 + w * scratchPerWorker, &grads)
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
    func total(_ acc: [Float], copies: Int, _ shape: Shape) -> Tensor {
      if copies == 1 { return Tensor(shape: shape, scalars: acc) }
      let size = shape.elementCount
      var sum = Tensor(shape: shape, scalars: Array(acc[0..<size]))
      for w in 1..<copies { sum += Tensor(shape: shape, scalars: Array(acc[(w * size)..<((w + 1) * size)])) }
      return sum
    }
    return Gradients(
      u: du, delta: dDelta, A: total(accA, copies: workers, [state, channels]).transposed(),
      B: total(accB, copies: copiesBC, [batch, length, state]), C: total(accC, copies: copiesBC, [batch, length, state]),
      D: inputs.D == nil ? nil : total(accD, copies: workers, [channels]), z: dz,
      deltaBias: inputs.deltaBias == nil ? nil : total(accBias, copies: workers, [channels]))
  }
}
