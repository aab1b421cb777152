import Testing
@testable import Platform

@Suite struct DigestTests {
    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    static func digest(_ algorithm: DigestAlgorithm, _ bytes: [UInt8], pieces: Int = 1) -> String {
        var digest = Digest(algorithm)
        let size = max(1, bytes.count / pieces)
        var index = 0
        while index < bytes.count {
            digest.update(Array(bytes[index..<min(index + size, bytes.count)]))
            index += size
        }
        return hex(digest.finish())
    }

    // FIPS 180 and RFC 1321 test vectors.
    @Test(arguments: [
        (DigestAlgorithm.sha1, "", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        (.sha1, "abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (.sha1, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
        (.sha256, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (.sha256, "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (.sha256, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        (.md5, "", "d41d8cd98f00b204e9800998ecf8427e"),
        (.md5, "abc", "900150983cd24fb0d6963f7d28e17f72"),
        (.md5, "message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        (.md5, "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"),
    ])
    func knownVectors(algorithm: DigestAlgorithm, text: String, expected: String) {
        #expect(Self.digest(algorithm, Array(text.utf8)) == expected)
        #expect(Self.digest(algorithm, Array(text.utf8), pieces: 7) == expected, "fed in pieces")
    }

    @Test func aMillionAs() {
        let bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(Self.digest(.sha1, bytes, pieces: 13) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        #expect(Self.digest(.sha256, bytes, pieces: 3) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        #expect(Self.digest(.md5, bytes) == "7707d6ae4e027c70eea2a935c2296f21")
    }

    /// Every length around the padding's edges (55, 56, 63, 64 bytes...), in one
    /// piece and byte by byte: the same digest.
    @Test func piecesDoNotMatter() {
        for algorithm in DigestAlgorithm.allCases {
            for length in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] {
                let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
                #expect(Self.digest(algorithm, bytes) == Self.digest(algorithm, bytes, pieces: max(1, length)))
            }
        }
    }
}
