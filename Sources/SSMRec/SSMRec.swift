// The umbrella module: `import SSMRec` brings every SSMRec module into scope.
@_exported import SSMAutograd
@_exported import SSMKernels
@_exported import SSMLayers
@_exported import SSMMetrics
@_exported import SSMRecommenders
@_exported import SSMTensor
