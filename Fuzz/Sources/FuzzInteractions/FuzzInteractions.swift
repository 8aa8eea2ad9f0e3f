import SSMRecommenders

/// The first byte picks the format (RecBole `.inter`, `u.data`, `ratings.dat`, CSV); the rest is
/// the file. It is refused with a `DatasetError` or read into a dataset whose split and batches
/// are consistent; nothing may trap.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzInteractions(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  guard size > 0 else { return 0 }
  let formats: [InteractionFileFormat] = [
    .atomic, .movieLens100K, .movieLens1M, .csv(user: "user_id", item: "item_id", timestamp: "timestamp"),
  ]
  let format = formats[Int(data[0]) % formats.count]
  let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
  let interval = CountInterval(lower: Int(data[0] >> 4) % 3)
  guard let dataset = try? InteractionDataset(bytes: bytes, format: format, userInterval: interval, itemInterval: interval) else {
    return 0
  }
  precondition(dataset.users.count == dataset.items.count && dataset.items.count == dataset.timestamps.count)
  precondition(dataset.items.allSatisfy { $0 > 0 && Int($0) < dataset.itemCount })
  precondition(dataset.users.allSatisfy { $0 > 0 && Int($0) < dataset.userCount })
  let split = SequentialSplit(dataset, maximumLength: 1 + Int(data[0]) % 7)
  let instances = split.train + split.validation + split.test
  precondition(instances.count == dataset.interactionCount - (dataset.userCount - 1) || dataset.userCount == 1)
  for batch in BatchSequence(instances, batchSize: 3) { precondition(batch.count <= 3) }
  return 0
}
