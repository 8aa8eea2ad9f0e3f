import SSMTensor

/// SIGMA's partial flip and SSD4Rec's per-segment reversal: permutations of the time axis.
///
/// Every flip here reverses a contiguous run of positions and leaves the rest in place, so each
/// is an involution: applying it twice is the identity, and its backward pass (the inverse
/// permutation applied to the gradient) is the same flip. Each produces its output in one copy
/// of `D`-wide rows.
public enum PartialFlip {
  /// The official fixed-prefix flip of a padded batch (Docs/Models.md §3.1): position `p < min(count, L)`
  /// of every row takes position `min(count, L) − 1 − p`; later positions stay.
  /// - Parameters:
  ///   - x: shape `[B, L, D]`.
  ///   - count: the prefix length `n_f` (official value 45); `0` is the identity, `≥ L` a full reverse.
  public static func prefix(_ x: Tensor, count: Int) -> Tensor {
    precondition(x.rank == 3, "PartialFlip: x must be [B, L, D], got \(x.shape)")
    precondition(count >= 0, "PartialFlip: count must be non-negative, got \(count)")
    let length = x.shape[1]
    let n = Swift.min(count, length)
    return permute(x, batchIndependent: (0..<length).map { $0 < n ? n - 1 - $0 : $0 })
  }

  /// The paper's per-sequence flip (Docs/Models.md §3.2): for a sequence of length `ℓ` (right-padded),
  /// the first `max(ℓ − keep, 0)` items are reversed and the last `keep` items and the padding
  /// stay in place.
  /// - Parameters:
  ///   - x: shape `[B, L, D]`.
  ///   - keep: `r`, the number of most recent items kept in order.
  ///   - lengths: `ℓ` per sequence, each in `0...L`.
  public static func keepingLast(_ x: Tensor, keep: Int, lengths: [Int]) -> Tensor {
    precondition(x.rank == 3, "PartialFlip: x must be [B, L, D], got \(x.shape)")
    precondition(lengths.count == x.shape[0], "PartialFlip: \(lengths.count) lengths for a batch of \(x.shape[0])")
    precondition(keep >= 0, "PartialFlip: keep must be non-negative, got \(keep)")
    let length = x.shape[1]
    var source = [Int]()
    source.reserveCapacity(lengths.count * length)
    for l in lengths {
      precondition(l >= 0 && l <= length, "PartialFlip: length \(l) is outside 0...\(length)")
      let n = Swift.max(l - keep, 0)
      source += (0..<length).map { $0 < n ? n - 1 - $0 : $0 }
    }
    return permute(x, rows: source)
  }

  /// Reverses every segment of a packed batch in place (SSD4Rec's `flip_index`, Docs/Models.md §6.1):
  /// for a segment spanning `[s, e]`, position `s + j` takes position `e − j`.
  /// - Parameters:
  ///   - x: shape `[B, T, D]` (SSD4Rec packs into `B = 1`).
  ///   - segmentLengths: the lengths of the consecutive segments of each row, summing to `T`.
  public static func segments(_ x: Tensor, segmentLengths: [[Int]]) -> Tensor {
    precondition(x.rank == 3, "PartialFlip: x must be [B, T, D], got \(x.shape)")
    precondition(
      segmentLengths.count == x.shape[0], "PartialFlip: \(segmentLengths.count) rows of segments for a batch of \(x.shape[0])")
    var source = [Int]()
    for row in segmentLengths {
      precondition(row.reduce(0, +) == x.shape[1], "PartialFlip: segment lengths \(row) do not sum to \(x.shape[1])")
      var start = 0
      for l in row {
        source += (0..<l).map { start + l - 1 - $0 }
        start += l
      }
    }
    return permute(x, rows: source)
  }

  /// `y[b, p] = x[b, source[p]]` with one permutation for every row.
  static func permute(_ x: Tensor, batchIndependent source: [Int]) -> Tensor {
    var all = [Int]()
    all.reserveCapacity(x.shape[0] * source.count)
    for _ in 0..<x.shape[0] { all += source }
    return permute(x, rows: all)
  }

  /// `y[b, p] = x[b, source[b·L + p]]`.
  static func permute(_ x: Tensor, rows source: [Int]) -> Tensor {
    let (batch, length, width) = (x.shape[0], x.shape[1], x.shape[2])
    if x.elementCount == 0 { return x }
    return x.withUnsafeBufferPointer { src in
      Tensor(shape: x.shape) { out in
        for b in 0..<batch {
          for p in 0..<length {
            (out.baseAddress! + (b * length + p) * width).update(
              from: src.baseAddress! + (b * length + source[b * length + p]) * width, count: width)
          }
        }
      }
    }
  }

  /// ``prefix(_:count:)`` by its definition, element by element (same signature).
  package static func referencePrefix(_ x: Tensor, count: Int) -> Tensor {
    let (batch, length, width) = (x.shape[0], x.shape[1], x.shape[2])
    var y = x
    let n = Swift.min(count, length)
    for b in 0..<batch {
      for p in 0..<n {
        for d in 0..<width { y[b, p, d] = x[b, n - 1 - p, d] }
      }
    }
    return y
  }

  /// ``keepingLast(_:keep:lengths:)`` by its definition, element by element.
  package static func referenceKeepingLast(_ x: Tensor, keep: Int, lengths: [Int]) -> Tensor {
    var y = x
    for (b, l) in lengths.enumerated() {
      let items = (0..<l).map { p in (0..<x.shape[2]).map { x[b, p, $0] } }
      let n = Swift.max(l - keep, 0)
      let reordered = Array(items[0..<n].reversed()) + Array(items[n...])
      for (p, row) in reordered.enumerated() { for (d, v) in row.enumerated() { y[b, p, d] = v } }
    }
    return y
  }
}
