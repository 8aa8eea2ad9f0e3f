import SSMTensor

extension ChunkedSSD {
  /// The SSD inputs as flat arrays of a reference scalar type.
  package struct ReferenceInputs<T: ReferenceScalar> {
    package var x, dt, A, B, C: [T]
    package var D, dtBias, initialState: [T]?
    package var sequenceIndex: [Int32]?
    package var dtSoftplus: Bool
    package var batch, length, heads, headDim, groups, state: Int

    package init(_ inputs: Inputs) {
      func c(_ t: Tensor) -> [T] { t.scalars.map { T($0) } }
      x = c(inputs.x)
      dt = c(inputs.dt)
      A = c(inputs.A)
      B = c(inputs.B)
      C = c(inputs.C)
      D = inputs.D.map(c)
      dtBias = inputs.dtBias.map(c)
      initialState = inputs.initialState.map(c)
      sequenceIndex = inputs.sequenceIndex?.values
      dtSoftplus = inputs.dtSoftplus
      (batch, length, heads, headDim, groups, state) = inputs.dimensions
    }

    func delta(_ b: Int, _ t: Int, _ h: Int) -> T {
      let raw = dt[(b * length + t) * heads + h] + (dtBias?[h] ?? 0)
      return dtSoftplus ? T.softplus(raw) : raw
    }
    func xIndex(_ b: Int, _ t: Int, _ h: Int) -> Int { ((b * length + t) * heads + h) * headDim }
    func bcIndex(_ b: Int, _ t: Int, _ h: Int) -> Int { ((b * length + t) * groups + h * groups / heads) * state }
    func seq(_ b: Int, _ t: Int) -> Int32 { sequenceIndex?[b * length + t] ?? 0 }
    /// Whether the state is reset before step t (a new segment starts; id 0 continues the
    /// initial state at t = 0).
    func resets(_ b: Int, _ t: Int) -> Bool { seq(b, t) != (t == 0 ? 0 : seq(b, t - 1)) }
  }

  package struct ReferenceGradients<T: ReferenceScalar> {
    package var x, dt, A, B, C: [T]
    package var D, dtBias, initialState: [T]?
  }

  /// The sequential recurrence of Docs/Models.md §2.3 with the segment resets of §2.6: one loop per time
  /// step, every state kept. Returns `y`, the final states and all states `[B, H, L, P, N]`.
  package static func referenceRecurrent<T: ReferenceScalar>(_ r: ReferenceInputs<T>) -> (
    output: [T], finalState: [T], states: [T]
  ) {
    let (Bn, L, H, P, N) = (r.batch, r.length, r.heads, r.headDim, r.state)
    var y = [T](repeating: 0, count: r.x.count)
    var final = [T](repeating: 0, count: Bn * H * P * N)
    var states = [T](repeating: 0, count: Bn * H * L * P * N)
    for b in 0..<Bn {
      for h in 0..<H {
        var S =
          r.initialState.map { Array($0[((b * H + h) * P * N)..<((b * H + h + 1) * P * N)]) } ?? [T](repeating: 0, count: P * N)
        for t in 0..<L {
          if r.resets(b, t) { S = [T](repeating: 0, count: P * N) }
          let d = r.delta(b, t, h)
          let decay = T.exp(d * r.A[h])
          let xi = r.xIndex(b, t, h)
          let bi = r.bcIndex(b, t, h)
          for p in 0..<P {
            var acc: T = 0
            for n in 0..<N {
              S[p * N + n] = decay * S[p * N + n] + d * r.x[xi + p] * r.B[bi + n]
              acc += S[p * N + n] * r.C[bi + n]
            }
            y[xi + p] = acc + (r.D?[h] ?? 0) * r.x[xi + p]
          }
          for i in 0..<(P * N) { states[(((b * H + h) * L + t) * P * N) + i] = S[i] }
        }
        for i in 0..<(P * N) { final[(b * H + h) * P * N + i] = S[i] }
      }
    }
    return (y, final, states)
  }

  /// The reverse-time recurrence of Docs/Models.md §2.9 (recurrent form), in plain loops.
  package static func referenceRecurrentBackward<T: ReferenceScalar>(
    _ r: ReferenceInputs<T>, outputGradient dy: [T], finalStateGradient: [T]? = nil
  ) -> ReferenceGradients<T> {
    let (Bn, L, H, P, N) = (r.batch, r.length, r.heads, r.headDim, r.state)
    let states = referenceRecurrent(r).states
    var g = ReferenceGradients<T>(
      x: .init(repeating: 0, count: r.x.count), dt: .init(repeating: 0, count: r.dt.count),
      A: .init(repeating: 0, count: H), B: .init(repeating: 0, count: r.B.count), C: .init(repeating: 0, count: r.C.count),
      D: r.D.map { _ in .init(repeating: 0, count: H) }, dtBias: r.dtBias.map { _ in .init(repeating: 0, count: H) },
      initialState: r.initialState.map { _ in .init(repeating: 0, count: Bn * H * P * N) })
    for b in 0..<Bn {
      for h in 0..<H {
        // Λ accumulates ∂ℓ/∂S_t; it starts from the final state's gradient.
        var lambda =
          finalStateGradient.map { Array($0[((b * H + h) * P * N)..<((b * H + h + 1) * P * N)]) }
          ?? [T](repeating: 0, count: P * N)
        for t in stride(from: L - 1, through: 0, by: -1) {
          let d = r.delta(b, t, h)
          let decay = T.exp(d * r.A[h])
          let xi = r.xIndex(b, t, h)
          let bi = r.bcIndex(b, t, h)
          let si = ((b * H + h) * L + t) * P * N
          // Λ_t += dy_t ⊗ C_t; ∂C_t += S_tᵀ·dy_t.
          for p in 0..<P {
            for n in 0..<N {
              lambda[p * N + n] += dy[xi + p] * r.C[bi + n]
              g.C[bi + n] += states[si + p * N + n] * dy[xi + p]
            }
          }
          // S_t = decay·S_{t−1} + Δ·x_t ⊗ B_t with S_{t−1} = 0 at a reset (or the initial state).
          let prev: [T]
          if r.resets(b, t) {
            prev = [T](repeating: 0, count: P * N)
          } else if t == 0 {
            prev =
              r.initialState.map { Array($0[((b * H + h) * P * N)..<((b * H + h + 1) * P * N)]) }
              ?? [T](repeating: 0, count: P * N)
          } else {
            prev = Array(states[(si - P * N)..<si])
          }
          var dDecay: T = 0
          var dDelta: T = 0
          for p in 0..<P {
            var dxbar: T = 0
            for n in 0..<N {
              dxbar += lambda[p * N + n] * r.B[bi + n]
              g.B[bi + n] += lambda[p * N + n] * d * r.x[xi + p]
              dDecay += lambda[p * N + n] * prev[p * N + n]
            }
            g.x[xi + p] += d * dxbar + (r.D?[h] ?? 0) * dy[xi + p]
            dDelta += dxbar * r.x[xi + p]
            if r.D != nil { g.D![h] += dy[xi + p] * r.x[xi + p] }
          }
          let da = dDecay * decay
          dDelta += r.A[h] * da
          g.A[h] += d * da
          let raw = r.dt[(b * L + t) * H + h] + (r.dtBias?[h] ?? 0)
          let dRaw = r.dtSoftplus ? (raw > 20 ? dDelta : dDelta * T.sigmoid(raw)) : dDelta
          g.dt[(b * L + t) * H + h] = dRaw
          if r.dtBias != nil { g.dtBias![h] += dRaw }
          // Λ_{t−1} = decay·Λ_t, cut at a reset (the previous state did not feed S_t).
          if r.resets(b, t) {
            lambda = [T](repeating: 0, count: P * N)
          } else {
            for i in 0..<(P * N) { lambda[i] *= decay }
          }
          if t == 0, r.initialState != nil {
            for i in 0..<(P * N) { g.initialState![(b * H + h) * P * N + i] = lambda[i] }
          }
        }
      }
    }
    return g
  }

  /// The quadratic ("attention") form of Docs/Models.md §2.4 per segment, with the stable segment sum:
  /// `Y = (exp(segsum(a)) ∘ C·Bᵀ)·X̄ + D·x`, plus the initial state's decay into the first segment.
  package static func referenceQuadratic<T: ReferenceScalar>(_ r: ReferenceInputs<T>) -> [T] {
    let (Bn, L, H, P, N) = (r.batch, r.length, r.heads, r.headDim, r.state)
    var y = [T](repeating: 0, count: r.x.count)
    for b in 0..<Bn {
      for h in 0..<H {
        let a = (0..<L).map { r.delta(b, $0, h) * r.A[h] }
        for t in 0..<L {
          // segsum[t, s] = Σ_{k=s+1}^{t} a_k, summed directly (no cumsum differences).
          var segsum: T = 0
          let xi = r.xIndex(b, t, h)
          let ci = r.bcIndex(b, t, h)
          var out = [T](repeating: 0, count: P)
          var s = t
          while s >= 0 && r.seq(b, s) == r.seq(b, t) {
            let decay = T.exp(segsum)
            let bi = r.bcIndex(b, s, h)
            var cb: T = 0
            for n in 0..<N { cb += r.C[ci + n] * r.B[bi + n] }
            let ds = r.delta(b, s, h)
            let xs = r.xIndex(b, s, h)
            for p in 0..<P { out[p] += decay * cb * ds * r.x[xs + p] }
            segsum += a[s]
            s -= 1
          }
          if s < 0, let initial = r.initialState, r.seq(b, t) == 0 {
            // segsum now sums a_0 … a_t: the initial state's decay up to t.
            let decay = T.exp(segsum)
            let base = (b * H + h) * P * N
            for p in 0..<P {
              var acc: T = 0
              for n in 0..<N { acc += initial[base + p * N + n] * r.C[ci + n] }
              out[p] += decay * acc
            }
          }
          for p in 0..<P { y[xi + p] = out[p] + (r.D?[h] ?? 0) * r.x[xi + p] }
        }
      }
    }
    return y
  }

  /// ``forward(_:returnFinalState:)`` by the Double recurrence (same signature).
  package static func reference(_ inputs: Inputs, returnFinalState: Bool = false) -> (output: Tensor, finalState: Tensor?) {
    let r = referenceRecurrent(ReferenceInputs<Double>(inputs))
    let d = inputs.dimensions
    return (
      Tensor(shape: inputs.x.shape, scalars: r.output.map(Float.init)),
      returnFinalState ? Tensor(shape: [d.batch, d.heads, d.headDim, d.state], scalars: r.finalState.map(Float.init)) : nil
    )
  }

  /// ``backward(outputGradient:finalStateGradient:_:)`` by the Double recurrence.
  package static func referenceBackward(outputGradient: Tensor, finalStateGradient: Tensor? = nil, _ inputs: Inputs) -> Gradients
  {
    let r = ReferenceInputs<Double>(inputs)
    let g = referenceRecurrentBackward(
      r, outputGradient: outputGradient.scalars.asDoubles, finalStateGradient: finalStateGradient?.scalars.asDoubles)
    func t(_ v: [Double], _ s: Shape) -> Tensor { Tensor(shape: s, scalars: v.map(Float.init)) }
    return Gradients(
      x: t(g.x, inputs.x.shape), dt: t(g.dt, inputs.dt.shape), A: t(g.A, inputs.A.shape), B: t(g.B, inputs.B.shape),
      C: t(g.C, inputs.C.shape), D: g.D.map { t($0, [r.heads]) }, dtBias: g.dtBias.map { t($0, [r.heads]) },
      initialState: g.initialState.map { t($0, inputs.initialState!.shape) })
  }
}
