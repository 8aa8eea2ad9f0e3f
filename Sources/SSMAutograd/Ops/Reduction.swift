import SSMTensor

// Sums and means. Memory kept: the input shape.

extension Variable {
  /// The sum of all elements, as a rank-0 variable.
  public func sum() -> Variable {
    let shape = self.shape
    return Variable.record(value: Tensor(value.sum()), inputs: [self]) {
      { g in [Tensor(repeating: g.scalar, shape: shape)] }
    }
  }

  /// The mean of all elements, as a rank-0 variable.
  public func mean() -> Variable {
    let shape = self.shape
    let scale = 1 / Float(Swift.max(shape.elementCount, 1))
    return Variable.record(value: Tensor(value.mean()), inputs: [self]) {
      { g in [Tensor(repeating: g.scalar * scale, shape: shape)] }
    }
  }

  /// Sums along `axis`.
  public func sum(alongAxis axis: Int, keepingDimension: Bool = false) -> Variable {
    let shape = self.shape
    let a = shape.normalizedAxis(axis)
    return Variable.record(value: value.sum(alongAxis: a, keepingDimension: keepingDimension), inputs: [self]) {
      { g in
        var kept = shape.dimensions
        kept[a] = 1
        return [Tensor(zeros: shape) + g.reshaped(to: Shape(kept))]
      }
    }
  }

  /// Means along `axis`.
  public func mean(alongAxis axis: Int, keepingDimension: Bool = false) -> Variable {
    let n = shape[shape.normalizedAxis(axis)]
    return sum(alongAxis: axis, keepingDimension: keepingDimension) * (1 / Float(n))
  }
}
