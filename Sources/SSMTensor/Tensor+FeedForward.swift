import CKernels

extension Tensor {
  /// The dropout inside a fused operation (attention's weights, a feed-forward network's hidden
  /// layer): the 64-bit key its keep mask is hashed from and the drop probability, those of
  /// `Variable.dropout`, so the mask is the one the separate dropout op would draw. The mask of
  /// element `i` depends on the key and `i` only (`ssm_dropout`), so it can be made again in a
  /// backward pass instead of being stored.
  package struct KeyedDropout: Sendable {
    package var key: UInt64
    package var probability: Float
    package init(key: UInt64, probability: Float) {
      self.key = key
      self.probability = probability
    }
  }

  /// Rows of a feed-forward network's input each worker takes at a time: a block's hidden
  /// activations (`[256, inner]`, 256 KiB at an inner width of 256) stay in the core's L2 from
  /// the first product to the second, instead of streaming through memory between operations.
  package static let feedForwardBlockRows = 256

  /// A position-wise feed-forward network's weights: `first` `[inner, D]` with `firstBias`
  /// `[inner]`, `second` `[D, inner]` with `secondBias` `[D]` (PyTorch `nn.Linear` layouts).
  package struct FeedForwardWeights {
    package var first: Tensor
    package var firstBias: Tensor
    package var second: Tensor
    package var secondBias: Tensor
    package init(first: Tensor, firstBias: Tensor, second: Tensor, secondBias: Tensor) {
      (self.first, self.firstBias, self.second, self.secondBias) = (first, firstBias, second, secondBias)
    }

    var inner: Int { first.shape[0] }
    var width: Int { first.shape[1] }

    func check(_ x: Tensor) {
      precondition(
        x.rank >= 2 && first.rank == 2 && x.shape[x.rank - 1] == width && firstBias.shape == [inner]
          && second.shape == [width, inner] && secondBias.shape == [width],
        "feedForward: input \(x.shape), weights \(first.shape) \(firstBias.shape) \(second.shape) \(secondBias.shape)")
    }
  }

  /// What the fused feed-forward network's backward pass needs: the hidden layer before its
  /// activation, `[rows, inner]`. The activation and the dropout are made again from it.
  package struct FeedForwardRecord {
    package var preActivation: Tensor
    package init(preActivation: Tensor) { self.preActivation = preActivation }
  }

  /// The gradients of ``feedForward(_:weights:activation:dropout:keeping:)``.
  package struct FeedForwardGradients {
    package var input: Tensor
    package var first: Tensor
    package var firstBias: Tensor
    package var second: Tensor
    package var secondBias: Tensor
  }

  /// `Drop(f(x·W₁ᵀ + b₁))·W₂ᵀ + b₂` over the last axis of `x`, computed in blocks of
  /// ``feedForwardBlockRows`` rows, each taken through both products by one worker while its
  /// hidden layer is in cache. The same function as the separate operations (linear, activation,
  /// dropout, linear) with the same dropout mask for the same key (that of
  /// `dropout(probability:training:using:)` on the `[rows, inner]` hidden layer).
  ///
  /// - Parameters:
  ///   - x: `[…, D]`, at least one leading axis.
  ///   - weights: the two projections.
  ///   - activation: `f`, applied to the hidden layer.
  ///   - dropout: the hidden layer's dropout, or `nil` for none.
  ///   - record: where to keep what the backward pass needs, or `nil` when nothing is
  ///     differentiated.
  /// - Returns: `[…, D]`.
  package static func feedForward(
    _ x: Tensor, weights: FeedForwardWeights, activation: ElementwiseFunction, dropout: KeyedDropout?,
    keeping record: UnsafeMutablePointer<FeedForwardRecord>?
  ) -> Tensor {
    weights.check(x)
    let (d, inner) = (weights.width, weights.inner)
    let rows = x.elementCount / Swift.max(d, 1)
    // Kept for the backward pass, or a block's scratch rows only.
    var preActivation = record == nil ? nil : Tensor(uninitializedShape: [rows, inner])
    if activation.evaluatesExponential { FLOPCounter.addExponentials(rows * inner) }
    let output = Tensor(shape: x.shape) { out in
      guard rows > 0 else { return }
      x.withUnsafeBufferPointer { xb in
        withPointers(weights) { w1, b1, w2, b2 in
          withOptionalMutablePointer(&preActivation) { kept in
            nonisolated(unsafe) let (xs, ys, kept) = (xb.baseAddress!, out.baseAddress!, kept)
            let blocks = (rows + feedForwardBlockRows - 1) / feedForwardBlockRows
            let workers = Parallel.workers(count: blocks, minimumPerWorker: 1)
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: workers * 3 * feedForwardBlockRows * inner)
            defer { scratch.deallocate() }
            nonisolated(unsafe) let s = scratch
            Parallel.forEachPiece(count: blocks, workers: workers, pieces: blocks) { worker, range in
              let own = s + worker * 3 * feedForwardBlockRows * inner
              let (hiddenScratch, active, mask) = (
                own, own + feedForwardBlockRows * inner, own + 2 * feedForwardBlockRows * inner
              )
              for block in range {
                let r0 = block * feedForwardBlockRows
                let m = Swift.min(feedForwardBlockRows, rows - r0)
                let hidden = kept.map { $0 + r0 * inner } ?? hiddenScratch
                fillRows(hidden, rows: m, with: b1, count: inner)
                BLAS.gemmOnCurrentThread(
                  transposeA: false, transposeB: true, m: m, n: inner, k: d, alpha: 1, a: xs + r0 * d, lda: d, b: w1,
                  ldb: d, beta: 1, c: hidden, ldc: inner)
                activate(hidden, into: active, mask: mask, firstRow: r0, rows: m, inner: inner, activation, dropout)
                let y = ys + r0 * d
                fillRows(y, rows: m, with: b2, count: d)
                BLAS.gemmOnCurrentThread(
                  transposeA: false, transposeB: true, m: m, n: d, k: inner, alpha: 1, a: active, lda: inner, b: w2,
                  ldb: inner, beta: 1, c: y, ldc: d)
              }
            }
          }
        }
      }
    }
    if let record, let preActivation { record.pointee = FeedForwardRecord(preActivation: preActivation) }
    return output
  }

  /// The backward pass of ``feedForward(_:weights:activation:dropout:keeping:)`` for the output
  /// gradient `outputGradient`, in the forward pass's row blocks: each block's activation and
  /// dropout are made again from the kept hidden layer, and the weight gradients are summed per
  /// worker and then across workers.
  package static func feedForwardBackward(
    outputGradient g: Tensor, input x: Tensor, weights: FeedForwardWeights, activation: ElementwiseFunction,
    dropout: KeyedDropout?, record: FeedForwardRecord
  ) -> FeedForwardGradients {
    weights.check(x)
    let (d, inner) = (weights.width, weights.inner)
    let rows = x.elementCount / Swift.max(d, 1)
    precondition(
      g.shape == x.shape && record.preActivation.shape == [rows, inner],
      "feedForwardBackward: gradient \(g.shape), input \(x.shape), hidden \(record.preActivation.shape)")
    let blocks = (rows + feedForwardBlockRows - 1) / feedForwardBlockRows
    let workers = Swift.max(1, Parallel.workers(count: blocks, minimumPerWorker: 1))
    // Per worker: dW₁ [inner, D], dW₂ [D, inner], db₁ [inner], db₂ [D], then three block scratches.
    let sums = 2 * inner * d + inner + d
    let perWorker = sums + 3 * feedForwardBlockRows * inner
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: workers * perWorker)
    defer { scratch.deallocate() }
    for worker in 0..<workers { (scratch + worker * perWorker).initialize(repeating: 0, count: sums) }
    if activation.evaluatesExponential { FLOPCounter.addExponentials(rows * inner) }
    let inputGradient = Tensor(shape: x.shape) { dx in
      guard rows > 0 else { return }
      x.withUnsafeBufferPointer { xb in
        g.withUnsafeBufferPointer { gb in
          record.preActivation.withUnsafeBufferPointer { hb in
            withPointers(weights) { w1, _, w2, _ in
              nonisolated(unsafe) let (xs, gs, hs, dxs, s) = (
                xb.baseAddress!, gb.baseAddress!, hb.baseAddress!, dx.baseAddress!, scratch
              )
              Parallel.forEachPiece(count: blocks, workers: workers, pieces: blocks) { worker, range in
                let dW1 = s + worker * perWorker
                let (dW2, db1) = (dW1 + inner * d, dW1 + 2 * inner * d)
                let db2 = db1 + inner
                let active = dW1 + sums
                let (dHidden, mask) = (active + feedForwardBlockRows * inner, active + 2 * feedForwardBlockRows * inner)
                for block in range {
                  let r0 = block * feedForwardBlockRows
                  let m = Swift.min(feedForwardBlockRows, rows - r0)
                  let (hidden, gBlock) = (hs + r0 * inner, gs + r0 * d)
                  activate(hidden, into: active, mask: mask, firstRow: r0, rows: m, inner: inner, activation, dropout)
                  BLAS.gemmOnCurrentThread(
                    transposeA: true, transposeB: false, m: d, n: inner, k: m, alpha: 1, a: gBlock, lda: d, b: active,
                    ldb: inner, beta: 1, c: dW2, ldc: inner)
                  sumRows(gBlock, rows: m, count: d, into: db2)
                  BLAS.gemmOnCurrentThread(
                    transposeA: false, transposeB: false, m: m, n: inner, k: d, alpha: 1, a: gBlock, lda: d, b: w2,
                    ldb: inner, beta: 0, c: dHidden, ldc: inner)
                  if dropout != nil { ssm_binary(Int32(SSM_BINARY_MUL.rawValue), dHidden, 1, mask, 1, dHidden, m * inner) }
                  ssm_unary_backward(activation.kernelCode, hidden, dHidden, dHidden, m * inner)
                  sumRows(dHidden, rows: m, count: inner, into: db1)
                  BLAS.gemmOnCurrentThread(
                    transposeA: true, transposeB: false, m: inner, n: d, k: m, alpha: 1, a: dHidden, lda: inner, b: xs + r0 * d,
                    ldb: d, beta: 1, c: dW1, ldc: d)
                  BLAS.gemmOnCurrentThread(
                    transposeA: false, transposeB: false, m: m, n: d, k: inner, alpha: 1, a: dHidden, lda: inner, b: w1,
                    ldb: d, beta: 0, c: dxs + r0 * d, ldc: d)
                }
              }
            }
          }
        }
      }
    }
    for worker in 1..<workers { ssm_accumulate(scratch, scratch + worker * perWorker, sums) }
    func sum(_ offset: Int, _ shape: Shape) -> Tensor {
      Tensor(shape: shape) { $0.baseAddress!.update(from: scratch + offset, count: shape.elementCount) }
    }
    return FeedForwardGradients(
      input: inputGradient, first: sum(0, [inner, d]), firstBias: sum(2 * inner * d, [inner]),
      second: sum(inner * d, [d, inner]), secondBias: sum(2 * inner * d + inner, [d]))
  }

  /// `f` of a block's hidden rows into `active`, then the block's dropout (its keep mask into
  /// `mask`, indexed as rows `firstRow…` of the whole hidden layer).
  private static func activate(
    _ hidden: UnsafePointer<Float>, into active: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>,
    firstRow: Int, rows: Int, inner: Int, _ activation: ElementwiseFunction, _ dropout: KeyedDropout?
  ) {
    let count = rows * inner
    ssm_unary(activation.kernelCode, hidden, active, count)
    guard let dropout else { return }
    // ssm_dropout indexes its buffers by the element's index in the whole layer.
    let begin = firstRow * inner
    ssm_dropout(
      dropout.key, dropout.probability, 1 / (1 - dropout.probability), active - begin, active - begin, mask - begin, begin,
      begin + count)
  }

  /// Writes `row` (`count` values) into each of `rows` consecutive rows at `destination`.
  private static func fillRows(_ destination: UnsafeMutablePointer<Float>, rows: Int, with row: UnsafePointer<Float>, count: Int)
  {
    for r in 0..<rows { (destination + r * count).update(from: row, count: count) }
  }

  /// Adds the `rows` rows of `count` values at `source` into `sums`.
  private static func sumRows(_ source: UnsafePointer<Float>, rows: Int, count: Int, into sums: UnsafeMutablePointer<Float>) {
    for r in 0..<rows { ssm_accumulate(sums, source + r * count, count) }
  }

  private static func withPointers<R>(
    _ w: FeedForwardWeights,
    _ body: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>) -> R
  ) -> R {
    w.first.withUnsafeBufferPointer { w1 in
      w.firstBias.withUnsafeBufferPointer { b1 in
        w.second.withUnsafeBufferPointer { w2 in
          w.secondBias.withUnsafeBufferPointer { b2 in body(w1.baseAddress!, b1.baseAddress!, w2.baseAddress!, b2.baseAddress!) }
        }
      }
    }
  }
}
