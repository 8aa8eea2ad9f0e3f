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

  /// When the heap is full and its worst value is a number, the value a pair offered with a
  /// larger index than any in the heap must exceed to enter; otherwise `nil`.
  @inline(__always)
  var entryBar: Float? {
    values.count == capacity && capacity > 0 && !values[0].isNaN ? values[0] : nil
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

/// The `k` best (index, value) pairs of each of several rows whose values arrive a block of
/// columns at a time: top-K over a catalogue too large to score at once, merged across blocks.
/// Ranks as ``Tensor/topK(_:)`` does (larger first, ties to the lower index, NaN below every
/// number), over the columns each row allows.
public struct TopKAccumulator: Sendable {
  private var heaps: [TopKHeap]
  private let skipped: [[Int]]
  private var cursors: [Int]

  /// `rows` empty rows keeping `k` pairs each; `excluding[r]` lists the columns row `r` never
  /// returns (`nil`: none).
  public init(rows: Int, k: Int, excluding: [Set<Int>]? = nil) {
    precondition(k >= 0 && (excluding == nil || excluding!.count == rows), "TopKAccumulator: k \(k), \(rows) rows")
    heaps = (0..<rows).map { _ in TopKHeap(capacity: k) }
    skipped = excluding?.map { $0.sorted() } ?? Array(repeating: [], count: rows)
    cursors = [Int](repeating: 0, count: rows)
  }

  /// Offers a block of values, `[rows, n]`, for the columns `start..<start + n`. Blocks must come
  /// in increasing column order.
  public mutating func offer(_ block: Tensor, startingAt start: Int) {
    let rows = heaps.count
    precondition(block.rank == 2 && block.shape[0] == rows, "TopKAccumulator: block \(block.shape) for \(rows) rows")
    let n = block.shape[1]
    if rows == 0 || n == 0 { return }
    let skipped = skipped
    block.withUnsafeBufferPointer { values in
      heaps.withUnsafeMutableBufferPointer { heapBuffer in
        cursors.withUnsafeMutableBufferPointer { cursorBuffer in
          // Each row's heap and cursor belong to one worker.
          nonisolated(unsafe) let (x, heaps, cursors) = (values.baseAddress!, heapBuffer.baseAddress!, cursorBuffer.baseAddress!)
          Parallel.forEachChunk(count: rows, minimumPerWorker: Swift.max(1, 32_768 / n)) { range in
            for r in range {
              let row = x + r * n
              // A walk along the sorted exclusions, instead of a hash lookup per column.
              let skip = skipped[r]
              var next = cursors[r]
              // Once the heap is full and its worst value is a number, a column can only enter
              // with a larger value (its index is larger than every index in the heap, so a tie
              // ranks below; a NaN ranks below every number), so the rest are skipped by comparison alone.
              var bar = heaps[r].entryBar
              var j = 0
              while j < n {
                if let bar {
                  j = Self.firstIndex(in: row, from: j, count: n, above: bar)
                  if j == n { break }
                }
                defer { j += 1 }
                while next < skip.count && skip[next] < start + j { next += 1 }
                if next < skip.count && skip[next] == start + j { continue }
                heaps[r].offer(row[j], Int32(start + j))
                bar = heaps[r].entryBar
              }
              cursors[r] = next
            }
          }
        }
      }
    }
  }

  /// The first `j` in `from..<count` with `row[j] > bar`, or `count`: sixteen columns per
  /// comparison, since almost every column of a long row falls below a full heap's bar.
  @inline(__always)
  private static func firstIndex(in row: UnsafePointer<Float>, from start: Int, count: Int, above bar: Float) -> Int {
    var j = start
    let raw = UnsafeRawPointer(row)
    let bars = SIMD16<Float>(repeating: bar)
    while j + 16 <= count {
      let chunk = raw.loadUnaligned(fromByteOffset: j * MemoryLayout<Float>.stride, as: SIMD16<Float>.self)
      if any(chunk .> bars) { break }
      j += 16
    }
    while j < count && !(row[j] > bar) { j += 1 }
    return j
  }

  /// Per row, up to `k` (column, value) pairs, best first.
  public func results() -> [[(index: Int, value: Float)]] {
    heaps.map { heap in
      var heap = heap
      let count = heap.values.count
      var values = [Float](repeating: 0, count: count)
      var indices = [Int32](repeating: 0, count: count)
      values.withUnsafeMutableBufferPointer { vb in
        indices.withUnsafeMutableBufferPointer { ib in
          if count > 0 { heap.writeSorted(values: vb.baseAddress!, indices: ib.baseAddress!) }
        }
      }
      return zip(indices, values).map { (index: Int($0), value: $1) }
    }
  }
}

extension Tensor {
  /// `queries · table[rows]ᵀ`, `[B, rows.count]`: the products with a contiguous range of the
  /// table's rows, without copying them.
  public static func products(queries: Tensor, table: Tensor, rows: Range<Int>) -> Tensor {
    precondition(
      queries.rank == 2 && table.rank == 2 && queries.shape[1] == table.shape[1] && rows.lowerBound >= 0
        && rows.upperBound <= table.shape[0],
      "products: queries \(queries.shape), table \(table.shape), rows \(rows)")
    let (b, d, n) = (queries.shape[0], queries.shape[1], rows.count)
    return Tensor(shape: [b, n]) { out in
      if b == 0 || n == 0 { return }
      queries.withUnsafeBufferPointer { q in
        table.withUnsafeBufferPointer { t in
          BLAS.gemm(
            transposeA: false, transposeB: true, m: b, n: n, k: d, alpha: 1, a: q.baseAddress!, lda: d,
            b: t.baseAddress! + rows.lowerBound * d, ldb: d, beta: 0, c: out.baseAddress!, ldc: n)
        }
      }
    }
  }

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
    let v = table.shape[0]
    var top = TopKAccumulator(rows: queries.shape[0], k: Swift.min(k, v), excluding: excluding)
    if k > 0 {
      for start in stride(from: 0, to: v, by: rowsPerBlock) {
        top.offer(products(queries: queries, table: table, rows: start..<Swift.min(v, start + rowsPerBlock)), startingAt: start)
      }
    }
    return top.results()
  }
}
