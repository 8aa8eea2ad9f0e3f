import SSMRecommenders

/// A checkpoint from arbitrary bytes is refused with a typed error or builds a model that then
/// scores a one-item history; nothing may trap or allocate beyond what the file implies.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCheckpoint(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  guard let contents = try? Checkpoint.Contents(bytes: bytes), let model = try? Checkpoint.loadModel(from: contents) else {
    return 0
  }
  if model.itemCount >= 2, let batch = try? SequenceBatch(histories: [[1]]) {
    let scores = model.scores(batch)
    precondition(scores.shape == [1, model.itemCount], "scores \(scores.shape) for \(model.itemCount) items")
  }
  return 0
}
