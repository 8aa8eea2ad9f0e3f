// SSMKernels is filled by later issues (see Docs/Architecture.md for what belongs here); the target
// exists now so the package's product list and dependency graph are final from the start.
@_exported import SSMTensor
