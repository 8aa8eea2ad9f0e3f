// swift-tools-version:6.0
//
// libFuzzer harnesses for SSMRec's readers: safetensors files, checkpoints and interaction
// files. A separate package so that its sanitizer flags never reach the library products;
// `Scripts/fuzz.sh` builds it with `--sanitize=fuzzer,address` and runs each harness.

import PackageDescription

// libFuzzer supplies `main`; the harness files define only `LLVMFuzzerTestOneInput`.
let harness: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

let package = Package(
  name: "SSMRecFuzz",
  dependencies: [.package(name: "SSMRec", path: "..")],
  targets: [
    .executableTarget(
      name: "FuzzSafeTensors", dependencies: [.product(name: "SSMTensor", package: "SSMRec")], swiftSettings: harness),
    .executableTarget(
      name: "FuzzCheckpoint", dependencies: [.product(name: "SSMRecommenders", package: "SSMRec")], swiftSettings: harness),
    .executableTarget(
      name: "FuzzInteractions", dependencies: [.product(name: "SSMRecommenders", package: "SSMRec")], swiftSettings: harness),
  ],
  swiftLanguageModes: [.v6]
)
