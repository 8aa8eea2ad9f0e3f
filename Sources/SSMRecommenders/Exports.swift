@_exported import SSMLayers
@_exported import SSMMetrics
