extension Tensor {
  /// The `k` largest values along the last axis and their positions, largest first.
  ///
  /// Ties are broken by the lower index: among equal values the one at the smaller position ranks
  /// higher, so results are deterministic. NaN values rank below every number.
  ///
  /// - Returns: values and indices of shape `shape[..<rank-1] + [k]`.
  /// - Precondition: rank ≥ 1 and `0 ≤ k ≤ shape.last`.
  /// - Complexity: O(n·log k) per row with a bounded min-heap.
  public func topK(_ k: Int) -> (values: Tensor, indices: IndexTensor) {
    precondition(rank >= 1, "topK needs rank ≥ 1, got \(shape)")
    let n = shape[rank - 1]
    precondition(k >= 0 && k <= n, "topK: k = \(k) is out of range for a last axis of \(n)")
    let rows = n == 0 ? 0 : elementCount / n
    var outDims = shape.dimensions
    outDims[rank - 1] = k
    var values = [Float](repeating: 0, count: rows * k)
    var indices = [Int32](repeating: 0, count: rows * k)
    if k > 0 {
      withUnsafeBufferPointer { source in
        nonisolated(unsafe) let x = source.baseAddress!
        values.withUnsafeMutableBufferPointer { vb in
          indices.withUnsafeMutableBufferPointer { ib in
            nonisolated(unsafe) let (vp, ip) = (vb.baseAddress!, ib.baseAddress!)
            Parallel.forEachChunk(count: rows, minimumPerWorker: Swift.max(1, 65536 / Swift.max(n, 1))) { range in
              var heap = TopKHeap(capacity: k)
              for r in range {
                heap.removeAll()
                let row = x + r * n
                for j in 0..<n { heap.offer(row[j], Int32(j)) }
                heap.writeSorted(values: vp + r * k, indices: ip + r * k)
              }
            }
          }
        }
      }
    }
    return (Tensor(shape: Shape(outDims), scalars: values), IndexTensor(shape: Shape(outDims), values: indices))
  }
}

/// A min-heap of the best `capacity` (value, index) pairs seen so far, where "better" means a
/// larger value or, for equal values, a smaller index.
struct TopKHeap {
  let capacity: Int
  var values: [Float]
  var indices: [Int32]

  init(capacity: Int) {
    self.capacity = capacity
    values = []
    indices = []
    values.reserveCapacity(capacity)
    indices.reserveCapacity(capacity)
  }

  mutating func removeAll() {
    values.removeAll(keepingCapacity: true)
    indices.removeAll(keepingCapacity: true)
  }

  /// Whether (v1, i1) ranks below (v2, i2).
  @inline(__always)
  static func worse(_ v1: Float, _ i1: Int32, _ v2: Float, _ i2: Int32) -> Bool {
    if v1.isNaN { return v2.isNaN ? i1 > i2 : true }
    if v2.isNaN { return false }
    return v1 < v2 || (v1 == v2 && i1 > i2)
  }

  @inline(__always)
  mutating func offer(_ value: Float, _ index: Int32) {
    if values.count < capacity {
      values.append(value)
      indices.append(index)
      siftUp(values.count - 1)
    } else if TopKHeap.worse(values[0], indices[0], value, index) {
      values[0] = value
      indices[0] = index
      siftDown(0)
    }
  }

  private mutating func siftUp(_ start: Int) {
    var child = start
    while child > 0 {
      let parent = (child - 1) / 2
      if TopKHeap.worse(values[child], indices[child], values[parent], indices[parent]) {
        values.swapAt(child, parent)
        indices.swapAt(child, parent)
        child = parent
      } else {
        return
      }
    }
  }

  private mutating func siftDown(_ start: Int) {
    var parent = start
    let count = values.count
    while true {
      let left = 2 * parent + 1
      let right = left + 1
      var worst = parent
      if left < count && TopKHeap.worse(values[left], indices[left], values[worst], indices[worst]) { worst = left }
      if right < count && TopKHeap.worse(values[right], indices[right], values[worst], indices[worst]) { worst = right }
      if worst == parent { return }
      values.swapAt(parent, worst)
      indices.swapAt(parent, worst)
      parent = worst
    }
  }

  /// Writes the contents best first and leaves the heap empty.
  mutating func writeSorted(values outValues: UnsafeMutablePointer<Float>, indices outIndices: UnsafeMutablePointer<Int32>) {
    var position = values.count - 1
    while !values.isEmpty {
      outValues[position] = values[0]
      outIndices[position] = indices[0]
      let lastValue = values.removeLast()
      let lastIndex = indices.removeLast()
      if !values.isEmpty {
        values[0] = lastValue
        indices[0] = lastIndex
        siftDown(0)
      }
      position -= 1
    }
  }
}

extension Tensor {
  /// The `k` largest products `queries · tableᵀ` of each query row and their row indices in
  /// `table`, largest first, computed a block of `rowsPerBlock` table rows at a time: memory is
  /// proportional to `queries.rows × rowsPerBlock` and `k`, never to the table's length
  /// (top-K over a catalogue of a million items).
  ///
  /// Ranks as ``topK(_:)`` does (ties to the lower index, NaN below every number), over the
  /// table rows each query is allowed: `excluding[r]` lists rows query `r` never returns (items
  /// already seen, the padding id). A query with fewer than `k` allowed rows gets all of them.
  ///
  /// - Parameters:
  ///   - queries: `[B, D]`.
  ///   - table: `[V, D]`.
  ///   - k: how many rows to return per query.
  ///   - excluding: per query, the table rows to leave out; `nil` leaves none out.
  ///   - rowsPerBlock: table rows scored at a time (16,384 by default).
  /// - Returns: per query, up to `k` (row, product) pairs, best first.
  /// - Precondition: the widths agree, `k ≥ 0`, `rowsPerBlock ≥ 1`, one exclusion set per query.
  public static func topKProducts(
    queries: Tensor, table: Tensor, k: Int, excluding: [Set<Int>]? = nil, rowsPerBlock: Int = 16_384
  ) -> [[(index: Int, value: Float)]] {
    precondition(
      queries.rank == 2 && table.rank == 2 && queries.shape[1] == table.shape[1],
      "topKProducts: queries \(queries.shape) and table \(table.shape) must be [B, D] and [V, D]")
    precondition(k >= 0 && rowsPerBlock >= 1, "topKProducts: k = \(k), rowsPerBlock = \(rowsPerBlock)")
    let (b, d, v) = (queries.shape[0], queries.shape[1], table.shape[0])
    precondition(excluding == nil || excluding!.count == b, "topKProducts: \(excluding!.count) exclusion sets for \(b) queries")
    var heaps = (0..<b).map { _ in TopKHeap(capacity: k) }
    if k > 0 && v > 0 {
      let block = Swift.min(rowsPerBlock, v)
      var scores = [Float](repeating: 0, count: b * block)
      let skipped = excluding?.map { $0.sorted() } ?? Array(repeating: [], count: b)
      var cursors = [Int](repeating: 0, count: b)
      queries.withUnsafeBufferPointer { q in
        table.withUnsafeBufferPointer { t in
          scores.withUnsafeMutableBufferPointer { s in
            for start in stride(from: 0, to: v, by: block) {
              let rows = Swift.min(block, v - start)
              BLAS.gemm(
                transposeA: false, transposeB: true, m: b, n: rows, k: d, alpha: 1, a: q.baseAddress!, lda: d,
                b: t.baseAddress! + start * d, ldb: d, beta: 0, c: s.baseAddress!, ldc: rows)
              for r in 0..<b {
                let row = s.baseAddress! + r * rows
                // A walk along the sorted exclusions, instead of a hash lookup per item.
                let skip = skipped[r]
                var next = cursors[r]
                for j in 0..<rows {
                  while next < skip.count && skip[next] < start + j { next += 1 }
                  if next < skip.count && skip[next] == start + j { continue }
                  heaps[r].offer(row[j], Int32(start + j))
                }
                cursors[r] = next
              }
            }
          }
        }
      }
    }
    return heaps.indices.map { r in
      let count = heaps[r].values.count
      var values = [Float](repeating: 0, count: count)
      var indices = [Int32](repeating: 0, count: count)
      values.withUnsafeMutableBufferPointer { vb in
        indices.withUnsafeMutableBufferPointer { ib in
          if count > 0 { heaps[r].writeSorted(values: vb.baseAddress!, indices: ib.baseAddress!) }
        }
      }
      return zip(indices, values).map { (index: Int($0), value: $1) }
    }
  }
}
