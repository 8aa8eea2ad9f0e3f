@_exported import SSMTensor
