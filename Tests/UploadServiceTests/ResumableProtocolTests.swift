import Platform
import Testing
@testable import UploadService

@Suite struct ResumableProtocolTests {
    @Test(arguments: [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo"), ("Zm9vYg", "foob"), ("Zm9vYmFy", "foobar"),
                      ("cmVwb3J0LnBkZg==", "report.pdf")])
    func base64RoundTrips(encoded: String, decoded: String) {
        #expect(Base64.decode(encoded) == Array(decoded.utf8))
        if encoded.utf8.count % 4 == 0 { #expect(Base64.encode(Array(decoded.utf8)) == encoded) }
    }

    @Test(arguments: ["Z", "Zm9v!", "Zh==", "Zm9=v", "Z===", "Zg=", "Zm 9v", "Zg==="])
    func base64RefusesMalformedText(text: String) {
        #expect(Base64.decode(text) == nil)
    }

    @Test func metadataPairs() throws {
        let metadata = try #require(UploadMetadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, type dGV4dA=="))
        #expect(metadata["filename"] == Array("world_domination_plan.pdf".utf8))
        #expect(metadata["is_confidential"] == [])
        #expect(metadata["type"] == Array("text".utf8))
        #expect(metadata["name"] == nil)
        #expect(UploadMetadata("")?.pairs.isEmpty == true)
        for bad in ["filename", "filename a b", "filename ***", "a Zg==,a Zg==", "a Zg==,,b Zg==", "a\u{1}b Zg==",
                    String(repeating: "a", count: UploadMetadata.maximumBytes + 1)] where bad != "filename" {
            #expect(UploadMetadata(bad) == nil, "\(bad.prefix(20))")
        }
    }

    @Test func checksumHeader() {
        guard case .success(let sha1) = UploadChecksum.parse("sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=") else {
            Issue.record("sha1 refused")
            return
        }
        #expect(sha1.algorithm == .sha1 && sha1.expected.count == 20)
        for bad in ["sha1", "crc32 AAAAAA==", "sha1 Zg==", "sha256 qZk+NkcGgWq6PiVxeFDCbJzQ2J0=", "sha1  qZk+NkcGgWq6PiVxeFDCbJzQ2J0= x"] {
            guard case .failure(let failure) = UploadChecksum.parse(bad) else {
                Issue.record("\(bad) accepted")
                continue
            }
            #expect(failure.status == 400)
        }
    }

    @Test(arguments: [(Int64(0), "Thu, 01 Jan 1970 00:00:00 GMT"), (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
                      (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"), (1_796_686_911, "Mon, 07 Dec 2026 23:41:51 GMT"),
                      (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT")])
    func httpDates(seconds: Int64, text: String) {
        #expect(HTTPDate.format(seconds) == text)
    }

    @Test func durations() {
        #expect(DurationText.parse("24h") == 86_400)
        #expect(DurationText.parse("90m") == 5_400)
        #expect(DurationText.parse("45s") == 45)
        #expect(DurationText.parse("7d") == 604_800)
        #expect(DurationText.parse("600") == 600)
        for bad in ["", "h", "0", "-5m", "1.5h", "3w", "99999999999999999999d"] { #expect(DurationText.parse(bad) == nil, "\(bad)") }
        #expect(DurationText.format(86_400) == "1d")
        #expect(DurationText.format(5_400) == "90m")
    }

    @Test func configurationFlags() throws {
        guard case .serve(let config) = try CommandLineParser.parse(["--resumable-expiry", "30m"], environment: ["RESUMABLE_LIMIT": "5"],
                                                                    processors: 1) else {
            Issue.record("not serve")
            return
        }
        #expect(config.resumableExpirySeconds == 1_800)
        #expect(config.resumableLimit == 5)
        let defaults = Configuration(processors: 1)
        #expect(defaults.resumableExpirySeconds == 86_400)
        #expect(defaults.resumableLimit == 1000)
        #expect(throws: ConfigurationError.self) { try CommandLineParser.parse(["--resumable-expiry", "soon"], environment: [:], processors: 1) }
    }

    @Test func theSidecarRoundTrips() throws {
        let info = ResumableInfo(length: 10, name: "résumé 1.pdf", metadata: "filename cg==", created: 1_796_686_911)
        #expect(ResumableInfo(decoding: info.encoded()) == info)
        var deferred = info
        deferred.length = nil
        #expect(ResumableInfo(decoding: deferred.encoded()) == deferred)
        #expect(ResumableInfo(decoding: Array("length 1\n".utf8)) == nil)
    }

    @Test func resumableFailuresHaveMetricReasons() {
        #expect(Metrics.failureReason(status: 460, termination: .completed) == "checksum_mismatch")
        #expect(Metrics.failureReason(status: 412, termination: .completed) == "precondition_failed")
        #expect(Metrics.failureReason(status: 410, termination: .completed) == "expired")
        #expect(UploadFailure.checksumMismatch(algorithm: "sha1").status == 460)
        #expect(UploadFailure.tusVersion(nil).response.headers.contains { $0.name == "Tus-Version" && $0.value == "1.0.0" })
        #expect(UploadFailure.tooManyIncomplete(limit: 3).response.headers.contains { $0.name == "Retry-After" })
        #expect(UploadFailure.offsetMismatch(given: 1, current: 5).response.headers.contains { $0.name == "Upload-Offset" && $0.value == "5" })
    }

    /// The leftover sweep (TemporaryName.matches) must never take a live partial.
    @Test func partialNamesAreNotLeftovers() {
        let id = ResumableStore.newID()
        #expect(ResumableStore.isValidID(id))
        #expect(!TemporaryName.matches(ResumableStore.dataName(id)))
        #expect(!TemporaryName.matches(ResumableStore.infoName(id)))
        #expect(ResumableStore.id(in: ResumableStore.dataName(id))?.id == id)
        #expect(ResumableStore.id(in: ResumableStore.infoName(id))?.isInfo == true)
        #expect(ResumableStore.id(in: ".upload-tus-xyz") == nil)
        #expect(FileName.sanitize(Array(ResumableStore.dataName(id).utf8)) != .success(ResumableStore.dataName(id)))
    }
}
