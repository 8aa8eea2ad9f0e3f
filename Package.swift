// swift-tools-version:6.0
//
// SSMRec: state-space-model layers for sequential recommendation on the CPU.
// No unsafe compiler flags anywhere: the package must stay usable as a versioned dependency.

import PackageDescription

let package = Package(
  name: "SSMRec",
  products: [
    .library(name: "SSMRec", targets: ["SSMRec"]),
    .library(name: "SSMTensor", targets: ["SSMTensor"]),
    .library(name: "SSMAutograd", targets: ["SSMAutograd"]),
    .library(name: "SSMKernels", targets: ["SSMKernels"]),
    .library(name: "SSMLayers", targets: ["SSMLayers"]),
    .library(name: "SSMMetrics", targets: ["SSMMetrics"]),
    .library(name: "SSMRecommenders", targets: ["SSMRecommenders"]),
    .executable(name: "ssmrec", targets: ["ssmrec"]),
  ],
  dependencies: [
    // Only the command-line tool uses these; the library products depend on nothing.
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    // Only the command-line tool uses it, to read run configurations written in YAML.
    .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
  ],
  targets: [
    // MARK: - Public targets
    .target(
      name: "SSMTensor",
      dependencies: ["CBLAS", "CKernels"],
      linkerSettings: [.linkedLibrary("m", .when(platforms: [.linux]))]
    ),
    .target(name: "SSMAutograd", dependencies: ["SSMTensor", "CKernels"]),
    .target(name: "SSMKernels", dependencies: ["SSMTensor", "CKernels"]),
    .target(name: "SSMLayers", dependencies: ["SSMTensor", "SSMAutograd", "SSMKernels", "CKernels"]),
    .target(name: "SSMMetrics", dependencies: ["SSMTensor"]),
    .target(
      name: "SSMRecommenders",
      dependencies: ["SSMTensor", "SSMAutograd", "SSMKernels", "SSMLayers", "SSMMetrics"]
    ),
    .target(
      name: "SSMRec",
      dependencies: [
        "SSMTensor", "SSMAutograd", "SSMKernels", "SSMLayers", "SSMMetrics", "SSMRecommenders",
      ]
    ),

    .executableTarget(
      name: "ssmrec",
      dependencies: [
        "SSMTensor", "SSMAutograd", "SSMLayers", "SSMMetrics", "SSMRecommenders",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Yams", package: "Yams"),
      ]
    ),

    // MARK: - Implementation details
    .systemLibrary(
      name: "CBLAS",
      pkgConfig: "openblas",
      providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]
    ),
    .target(
      name: "CKernels",
      linkerSettings: [.linkedLibrary("m", .when(platforms: [.linux]))]
    ),

    // MARK: - Tests
    .target(
      name: "SSMTestSupport",
      dependencies: ["SSMTensor", "SSMAutograd"],
      path: "Tests/SSMTestSupport"
    ),
    .testTarget(name: "SSMTensorTests", dependencies: ["SSMTensor", "SSMAutograd", "SSMTestSupport", "CBLAS", "CKernels"]),
    .testTarget(name: "SSMAutogradTests", dependencies: ["SSMAutograd", "SSMTestSupport"]),
    .testTarget(name: "SSMKernelsTests", dependencies: ["SSMKernels", "SSMTestSupport", "CKernels"]),
    .testTarget(
      name: "SSMLayersTests", dependencies: ["SSMTensor", "SSMAutograd", "SSMKernels", "SSMLayers", "SSMTestSupport", "CKernels"]),
    .testTarget(
      name: "SSMRecommendersTests",
      dependencies: ["SSMTensor", "SSMAutograd", "SSMLayers", "SSMMetrics", "SSMRecommenders", "SSMTestSupport"]),
    .testTarget(name: "SSMMetricsTests", dependencies: ["SSMMetrics", "SSMTestSupport"]),

    // MARK: - Examples
    .executableTarget(
      name: "TensorTour",
      dependencies: ["SSMTensor", "CKernels"],
      path: "Examples/TensorTour"
    ),

    .executableTarget(
      name: "CustomRecommender",
      dependencies: ["SSMTensor", "SSMAutograd", "SSMLayers", "SSMRecommenders"],
      path: "Examples/CustomRecommender"
    ),

    .executableTarget(
      name: "Serving",
      dependencies: ["SSMRecommenders"],
      path: "Examples/Serving"
    ),

    // MARK: - Benchmarks
    .testTarget(
      name: "SSMBenchmarks",
      dependencies: ["SSMTensor", "SSMAutograd", "SSMKernels", "SSMRecommenders", "SSMTestSupport", "CBLAS", "CKernels"],
      path: "Benchmarks/SSMBenchmarks"
    ),
  ],
  swiftLanguageModes: [.v6]
)
