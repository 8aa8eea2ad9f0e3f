// Test targets import SSMTestSupport and get SSMTensor (and its SplitMix64) with it.
@_exported import SSMTensor
