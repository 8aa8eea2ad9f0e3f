/// The keep rule of CKernels' `ssm_dropout` written out in plain Swift, shared by the autograd
/// test of the dropout op and the per-level kernel tests so that both check one statement.
///
/// Element `i` is kept when two rounds of murmur3's 32-bit finaliser over
/// `(index + low key half) ^ high key half` give at least `probability·2³²`, where `index` is `i`
/// modulo 2³² plus `i / 2³²` times the golden-ratio constant 0x9E3779B9 (so indices past 2³² do
/// not repeat the first 2³² masks).
public enum DropoutRule {
  /// murmur3's 32-bit finaliser.
  public static func fmix32(_ value: UInt32) -> UInt32 {
    var h = value
    h ^= h >> 16
    h = h &* 0x85eb_ca6b
    h ^= h >> 13
    h = h &* 0xc2b2_ae35
    h ^= h >> 16
    return h
  }

  /// `probability·2³²` truncated, saturating at 2³² − 1 as `ssm_dropout` does for probability 1.
  public static func threshold(probability: Float) -> UInt32 {
    let t = Double(probability) * 4_294_967_296
    return t >= 4_294_967_295 ? .max : UInt32(t)
  }

  /// The 32-bit hash of (key, index) that is compared with the threshold.
  public static func hash(key: UInt64, index: Int) -> UInt32 {
    let i = UInt64(index)
    let folded = UInt32(truncatingIfNeeded: i) &+ UInt32(truncatingIfNeeded: i >> 32) &* 0x9E37_79B9
    let (low, high) = (UInt32(truncatingIfNeeded: key), UInt32(truncatingIfNeeded: key >> 32))
    return fmix32(fmix32(folded &+ low) ^ high)
  }

  /// Whether element `index` survives dropout with this key and drop probability.
  public static func keeps(key: UInt64, index: Int, probability: Float) -> Bool {
    hash(key: key, index: index) >= threshold(probability: probability)
  }
}
