// swift-tools-version:6.2
//
// ssmrec-server: SSMRec's models behind JSON over HTTP, with every event stored in SQLite.
// A package of its own, so that the SSMRec library products depend on no server framework.

import PackageDescription

let package = Package(
  name: "SSMRecServer",
  platforms: [.macOS(.v14)],
  products: [
    .executable(name: "ssmrec-server", targets: ["SSMRecServer"])
  ],
  dependencies: [
    .package(name: "SSMRec", path: ".."),
    .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
    .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
  ],
  targets: [
    .executableTarget(
      name: "SSMRecServer",
      dependencies: [
        .product(name: "SSMRecommenders", package: "SSMRec"),
        .product(name: "SSMTensor", package: "SSMRec"),
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]
    )
  ],
  swiftLanguageModes: [.v6]
)
