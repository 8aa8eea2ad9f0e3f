import SSMTensor

extension SelectiveScan {
  /// The scan's inputs as flat arrays of any reference scalar type (Double in tests, Float for
  /// the plain-loop baseline of the benchmarks).
  package struct ReferenceInputs<T: ReferenceScalar> {
    package var u, delta, A, B, C: [T]
    package var D, z, deltaBias: [T]?
    package var deltaSoftplus: Bool
    package var batch, length, channels, state: Int
    /// Segment ids `[B·L]`, or `nil`.
    package var sequenceIndex: [Int32]?

    package init(_ inputs: Inputs, as type: T.Type = T.self) {
      func c(_ t: Tensor) -> [T] { t.scalars.map { T($0) } }
      u = c(inputs.u)
      delta = c(inputs.delta)
      A = c(inputs.A)
      B = c(inputs.B)
      C = c(inputs.C)
      D = inputs.D.map(c)
      z = inputs.z.map(c)
      deltaBias = inputs.deltaBias.map(c)
      deltaSoftplus = inputs.deltaSoftplus
      (batch, length, channels, state) = inputs.dimensions
      sequenceIndex = inputs.sequenceIndex?.values
    }

    /// Whether step `t` of row `b` continues the sequence of step `t − 1`.
    package func continues(_ b: Int, _ t: Int) -> Bool {
      t > 0 && (sequenceIndex.map { $0[b * length + t] == $0[b * length + t - 1] } ?? true)
    }
  }

  /// Reference gradients as flat arrays.
  package struct ReferenceGradients<T: ReferenceScalar> {
    package var u, delta, A, B, C: [T]
    package var D, z, deltaBias: [T]?
  }

  /// The plain scan, one loop per time step, no tricks (Docs/Models.md §1.7): every state is kept.
  /// - Returns: the output `[B, L, E]`, the final state `[B, E, N]` and all states `[B, L, E, N]`.
  package static func referenceForward<T: ReferenceScalar>(_ x: ReferenceInputs<T>) -> (output: [T], lastState: [T], states: [T])
  {
    let (Bn, L, E, N) = (x.batch, x.length, x.channels, x.state)
    var y = [T](repeating: 0, count: Bn * L * E)
    var states = [T](repeating: 0, count: Bn * L * E * N)
    var last = [T](repeating: 0, count: Bn * E * N)
    for b in 0..<Bn {
      for e in 0..<E {
        var h = [T](repeating: 0, count: N)
        for t in 0..<L {
          if !x.continues(b, t) { h = [T](repeating: 0, count: N) }
          let i = (b * L + t) * E + e
          let raw = x.delta[i] + (x.deltaBias?[e] ?? 0)
          let dt = x.deltaSoftplus ? T.softplus(raw) : raw
          var acc: T = 0
          for n in 0..<N {
            let bt = x.B[(b * L + t) * N + n]
            h[n] = T.exp(dt * x.A[e * N + n]) * h[n] + dt * bt * x.u[i]
            acc += x.C[(b * L + t) * N + n] * h[n]
            states[i * N + n] = h[n]
          }
          var out = acc + (x.D?[e] ?? 0) * x.u[i]
          if let z = x.z { out *= z[i] * T.sigmoid(z[i]) }
          y[i] = out
        }
        for n in 0..<N { last[(b * E + e) * N + n] = h[n] }
      }
    }
    return (y, last, states)
  }

  /// The hand-written reverse recurrence of Docs/Models.md §1.5–§1.6, in plain loops over stored states.
  package static func referenceBackward<T: ReferenceScalar>(_ x: ReferenceInputs<T>, outputGradient dy: [T])
    -> ReferenceGradients<T>
  {
    let (Bn, L, E, N) = (x.batch, x.length, x.channels, x.state)
    let states = referenceForward(x).states
    var g = ReferenceGradients<T>(
      u: .init(repeating: 0, count: Bn * L * E), delta: .init(repeating: 0, count: Bn * L * E),
      A: .init(repeating: 0, count: E * N), B: .init(repeating: 0, count: Bn * L * N),
      C: .init(repeating: 0, count: Bn * L * N), D: x.D.map { _ in .init(repeating: 0, count: E) },
      z: x.z.map { _ in .init(repeating: 0, count: Bn * L * E) },
      deltaBias: x.deltaBias.map { _ in .init(repeating: 0, count: E) })
    for b in 0..<Bn {
      for e in 0..<E {
        var lambda = [T](repeating: 0, count: N)  // carries exp(Δ[t+1]A)·λ[t+1]
        for t in stride(from: L - 1, through: 0, by: -1) {
          let i = (b * L + t) * E + e
          let raw = x.delta[i] + (x.deltaBias?[e] ?? 0)
          let dt = x.deltaSoftplus ? T.softplus(raw) : raw
          var gy = dy[i]
          if let z = x.z {
            var pre = (x.D?[e] ?? 0) * x.u[i]
            for n in 0..<N { pre += x.C[(b * L + t) * N + n] * states[i * N + n] }
            let s = T.sigmoid(z[i])
            g.z![i] = gy * pre * s * (1 + z[i] * (1 - s))
            gy *= z[i] * s
          }
          if x.D != nil { g.D![e] += gy * x.u[i] }
          var gu = (x.D?[e] ?? 0) * gy
          var gdt: T = 0
          for n in 0..<N {
            let bn = x.B[(b * L + t) * N + n]
            let cn = x.C[(b * L + t) * N + n]
            let a = x.A[e * N + n]
            let dA = T.exp(dt * a)
            let l = gy * cn + lambda[n]
            let hPrev: T = x.continues(b, t) ? states[(i - E) * N + n] : 0
            let p = dA * hPrev
            g.B[(b * L + t) * N + n] += l * dt * x.u[i]
            g.C[(b * L + t) * N + n] += gy * states[i * N + n]
            gu += dt * l * bn
            gdt += l * (bn * x.u[i] + a * p)
            g.A[e * N + n] += l * dt * p
            lambda[n] = x.continues(b, t) ? dA * l : 0
          }
          g.u[i] = gu
          let gRaw = x.deltaSoftplus ? (raw > 20 ? gdt : gdt * T.sigmoid(raw)) : gdt
          g.delta[i] = gRaw
          if x.deltaBias != nil { g.deltaBias![e] += gRaw }
        }
      }
    }
    return g
  }

  /// ``forward(_:returnLastState:)`` computed by the Double reference (same signature).
  package static func reference(_ inputs: Inputs, returnLastState: Bool = false) -> (output: Tensor, lastState: Tensor?) {
    let (Bn, L, E, N) = inputs.dimensions
    let r = referenceForward(ReferenceInputs<Double>(inputs))
    return (
      Tensor(shape: [Bn, L, E], scalars: r.output.map(Float.init)),
      returnLastState ? Tensor(shape: [Bn, E, N], scalars: r.lastState.map(Float.init)) : nil
    )
  }

  /// ``backward(outputGradient:_:)`` computed by the Double reference (same signature).
  package static func referenceBackward(outputGradient: Tensor, _ inputs: Inputs) -> Gradients {
    let x = ReferenceInputs<Double>(inputs)
    let g = referenceBackward(x, outputGradient: outputGradient.scalars.asDoubles)
    func t(_ values: [Double], _ shape: Shape) -> Tensor { Tensor(shape: shape, scalars: values.map(Float.init)) }
    return Gradients(
      u: t(g.u, inputs.u.shape), delta: t(g.delta, inputs.u.shape), A: t(g.A, inputs.A.shape),
      B: t(g.B, inputs.B.shape), C: t(g.C, inputs.C.shape), D: g.D.map { t($0, [x.channels]) },
      z: g.z.map { t($0, inputs.u.shape) }, deltaBias: g.deltaBias.map { t($0, [x.channels]) })
  }
}
