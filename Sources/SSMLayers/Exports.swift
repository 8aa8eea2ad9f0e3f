@_exported import SSMAutograd
@_exported import SSMKernels
