import SSMTensor

/// Any byte string is either refused with a `SafeTensorsError` or parsed into entries whose
/// every tensor converts; nothing may trap, read out of bounds or leak.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  guard let file = try? SafeTensorsFile(bytes: bytes) else { return 0 }
  for name in file.names {
    let entry = file.entries[name]!
    precondition(entry.range.upperBound <= size, "entry \(name) ends past the data")
    if let tensor = try? file.tensor(name) { precondition(tensor.shape == entry.shape) }
    if let indices = try? file.indices(name) { precondition(indices.shape == entry.shape) }
  }
  return 0
}
