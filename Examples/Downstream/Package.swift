// swift-tools-version:6.0
//
// A package that uses SSMRec the way an application does: by a versioned URL. The URL comes from
// SSMREC_PACKAGE_URL so Scripts/check-downstream.sh can point it at a local tagged clone.

import PackageDescription

let ssmrecURL = Context.environment["SSMREC_PACKAGE_URL"] ?? "https://github.com/ssmrec/SSMRec.git"

let package = Package(
  name: "Downstream",
  dependencies: [
    .package(url: ssmrecURL, from: "0.1.0")
  ],
  targets: [
    .executableTarget(
      name: "DownstreamCheck",
      dependencies: [.product(name: "SSMTensor", package: "SSMRec")]
    )
  ]
)
