import SSMTensor

extension GRURecurrence {
  /// The recurrence's inputs as flat Double arrays, for the plain reference.
  package struct ReferenceInputs {
    /// `[B, L, 3H]`, `[3H, H]` and `[3H]` (zeros without a hidden bias).
    package var inputProjection, hiddenWeight, hiddenBias: [Double]
    package var batch, length, hidden: Int

    package init(_ inputs: Inputs) {
      inputProjection = inputs.inputProjection.scalars.map(Double.init)
      hiddenWeight = inputs.hiddenWeight.scalars.map(Double.init)
      (batch, length, hidden) = inputs.dimensions
      hiddenBias = inputs.hiddenBias?.scalars.map(Double.init) ?? [Double](repeating: 0, count: 3 * hidden)
    }
  }

  /// The gates of one step of one sequence, from the projections `a` (3H) and `h[t−1]`.
  private static func referenceStep(_ x: ReferenceInputs, a: ArraySlice<Double>, previous: [Double])
    -> (r: [Double], z: [Double], n: [Double], c: [Double], h: [Double])
  {
    let H = x.hidden
    var c = [Double](repeating: 0, count: 3 * H)
    for row in 0..<(3 * H) {
      var s = x.hiddenBias[row]
      for k in 0..<H { s += x.hiddenWeight[row * H + k] * previous[k] }
      c[row] = s
    }
    func sigmoid(_ v: Double) -> Double { 1 / (1 + Double.exp(-v)) }
    let a0 = a.startIndex
    var r = [Double](repeating: 0, count: H)
    var z = r
    var n = r
    var h = r
    for j in 0..<H {
      r[j] = sigmoid(a[a0 + j] + c[j])
      z[j] = sigmoid(a[a0 + H + j] + c[H + j])
      let pre = a[a0 + 2 * H + j] + r[j] * c[2 * H + j]
      let e = Double.exp(-2 * Swift.abs(pre))
      n[j] = (pre < 0 ? -1 : 1) * (1 - e) / (1 + e)
      h[j] = (1 - z[j]) * n[j] + z[j] * previous[j]
    }
    return (r, z, n, c, h)
  }

  /// The plain recurrence, one sequence and one step at a time: `h`, `[B, L, H]` flat.
  package static func referenceForward(_ x: ReferenceInputs) -> [Double] {
    let (B, L, H) = (x.batch, x.length, x.hidden)
    var out = [Double](repeating: 0, count: B * L * H)
    for b in 0..<B {
      var previous = [Double](repeating: 0, count: H)
      for t in 0..<L {
        let start = (b * L + t) * 3 * H
        previous = referenceStep(x, a: x.inputProjection[start..<(start + 3 * H)], previous: previous).h
        for j in 0..<H { out[(b * L + t) * H + j] = previous[j] }
      }
    }
    return out
  }

  /// Backpropagation through time written out from the forward equations, per sequence:
  /// the gradients of the projections, `W_hh` and `b_hh` as flat Double arrays.
  package static func referenceBackward(_ x: ReferenceInputs, outputGradient dy: [Double])
    -> (inputProjection: [Double], hiddenWeight: [Double], hiddenBias: [Double])
  {
    let (B, L, H) = (x.batch, x.length, x.hidden)
    var dA = [Double](repeating: 0, count: B * L * 3 * H)
    var dW = [Double](repeating: 0, count: 3 * H * H)
    var db = [Double](repeating: 0, count: 3 * H)
    for b in 0..<B {
      var states = [[Double](repeating: 0, count: H)]
      var steps: [(r: [Double], z: [Double], n: [Double], c: [Double], h: [Double])] = []
      for t in 0..<L {
        let start = (b * L + t) * 3 * H
        let s = referenceStep(x, a: x.inputProjection[start..<(start + 3 * H)], previous: states[t])
        steps.append(s)
        states.append(s.h)
      }
      var dh = [Double](repeating: 0, count: H)
      for t in stride(from: L - 1, through: 0, by: -1) {
        let s = steps[t]
        let previous = states[t]
        for j in 0..<H { dh[j] += dy[(b * L + t) * H + j] }
        var dc = [Double](repeating: 0, count: 3 * H)
        var dPrevious = [Double](repeating: 0, count: H)
        let start = (b * L + t) * 3 * H
        for j in 0..<H {
          let dn = dh[j] * (1 - s.z[j])
          let dz = dh[j] * (previous[j] - s.n[j])
          dPrevious[j] = dh[j] * s.z[j]
          let dnPre = dn * (1 - s.n[j] * s.n[j])
          let dr = dnPre * s.c[2 * H + j]
          let drPre = dr * s.r[j] * (1 - s.r[j])
          let dzPre = dz * s.z[j] * (1 - s.z[j])
          dA[start + j] = drPre
          dA[start + H + j] = dzPre
          dA[start + 2 * H + j] = dnPre
          dc[j] = drPre
          dc[H + j] = dzPre
          dc[2 * H + j] = dnPre * s.r[j]
        }
        for row in 0..<(3 * H) {
          db[row] += dc[row]
          for k in 0..<H {
            dW[row * H + k] += dc[row] * previous[k]
            dPrevious[k] += dc[row] * x.hiddenWeight[row * H + k]
          }
        }
        dh = dPrevious
      }
    }
    return (dA, dW, db)
  }
}
