import Foundation
import Glibc
import MicroHTTPD
import Platform
import Testing
@testable import UploadService

/// One upload from its first byte to its answer, against a real directory, in milliseconds.
@Suite struct UploadCoreTests {
    final class Fixture {
        let url: URL
        let settings: Upload.Settings
        let directory: Directory

        init(limit: UInt64? = nil, budget: Int = 1000, policy: ConflictPolicy = .overwrite) throws {
            url = FileManager.default.temporaryDirectory.appendingPathComponent("upload-server-core-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            directory = try Directory(path: url.path)
            let uploads = UploadsInFlight()
            settings = Upload.Settings(uploadDirectory: UploadDirectory(path: url.path, opened: directory), staging: .named,
                                       policy: policy, durable: false, limit: limit, budget: StagingBudget(limit: budget),
                                       uploads: uploads, metrics: Metrics(uploads: uploads, connections: ConnectionPolicy(limit: 1, perAddress: .automatic)),
                                       log: Log())
        }
        deinit { try? FileManager.default.removeItem(at: url) }

        func upload() -> Upload { Upload(settings, directory: directory, peer: "test", announcedLength: nil) }
        var names: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }
    }

    @Test func storesEveryFileOnlyAtTheEnd() throws {
        let fixture = try Fixture()
        let upload = fixture.upload()
        #expect(fixture.settings.uploads.count == 1)
        for name in ["a.txt", "b.txt"] {
            #expect(upload.beginFile(named: name))
            let written = upload.write(Array(name.utf8).span.bytes)
            #expect(written)
        }
        #expect(fixture.names.allSatisfy(TemporaryName.matches), "nothing has its name before the end")
        let stored = try upload.finish().get()
        #expect(stored.map(\.name) == ["a.txt", "b.txt"])
        #expect(fixture.names == ["a.txt", "b.txt"])
        #expect(fixture.settings.uploads.count == 0)
    }

    /// A full disk in the middle of an upload: 507, and no file left.
    @Test func aFullDiskIsNoSpaceAndLeavesNothing() throws {
        let fixture = try Fixture()
        try InjectedFaults.$current.withValue(InjectedFaults(["write": ENOSPC], passing: 1)) {
            let upload = fixture.upload()
            for name in ["a.txt", "b.txt"] where upload.beginFile(named: name) {
                _ = upload.write(Array(repeating: 7, count: 100_000).span.bytes)
            }
            let failure = try #require(upload.finish().failure)
            #expect(failure == .noSpace)
            #expect(failure.status == 507)
        }
        #expect(fixture.names.isEmpty)
    }

    /// Under `reject`, a link that fails after the first file got its name undoes
    /// that name: all or nothing, tested without a second process.
    @Test func aFailedSecondLinkUndoesTheFirst() throws {
        let fixture = try Fixture(policy: .reject)
        try InjectedFaults.$current.withValue(InjectedFaults(["link": EIO], passing: 1)) {
            let upload = fixture.upload()
            for name in ["a.txt", "b.txt"] {
                #expect(upload.beginFile(named: name))
                _ = upload.write(Array(name.utf8).span.bytes)
            }
            let failure = try #require(upload.finish().failure)
            #expect(failure.status == 500)
        }
        #expect(fixture.names.isEmpty, "\(fixture.names)")
    }

    @Test func theLimitFailsTheUploadAndRemovesItsFiles() throws {
        let fixture = try Fixture(limit: 10)
        let upload = fixture.upload()
        #expect(upload.beginFile(named: "a"))
        #expect(upload.receive(byteCount: 8) == .parse)
        #expect(upload.receive(byteCount: 8) == .discard)
        #expect(fixture.names.isEmpty)
        #expect(upload.finish().failure == .tooLarge(limit: 10))
    }

    @Test func filesInProgressHaveABudget() throws {
        let fixture = try Fixture(budget: 3)
        let first = fixture.upload()
        for index in 0..<3 { #expect(first.beginFile(named: "f\(index)")) }
        let second = fixture.upload()
        #expect(!second.beginFile(named: "g"))
        #expect(second.finish().failure == .busy)
        first.abandon(.clientAborted)
        #expect(fixture.names.isEmpty)
        let third = fixture.upload()
        #expect(third.beginFile(named: "h"))
        #expect((try? third.finish().get())?.map(\.name) == ["h"])
    }

    @Test func aRequestHoldsAtMostAHundredFiles() throws {
        let fixture = try Fixture()
        let upload = fixture.upload()
        for index in 0..<Upload.maximumFiles { #expect(upload.beginFile(named: "f\(index)")) }
        #expect(!upload.beginFile(named: "one-too-many"))
        #expect(upload.finish().failure?.status == 400)
        #expect(fixture.names.isEmpty)
    }
}

@Suite struct ObservabilityTests {
    @Test func theWriterWritesValidJSON() {
        let value = JSON.object([("a", .string("x\"\n\u{1}")), ("b", .array([.number(-1), .bool(true), .null])),
                                 ("c", .object([]))])
        #expect(value.text == #"{"a":"x\"\n\u0001","b":[-1,true,null],"c":{}}"#)
        #expect(String(decoding: Response.stored([StoredFile(name: "é", size: 3, replaced: false)], status: 200).body, as: UTF8.self)
                == "{\"files\":[{\"name\":\"é\",\"size\":3}]}\n")
    }

    @Test func failureReasonsComeFromTheStatusOrHowTheRequestEnded() {
        #expect(Metrics.failureReason(status: 200, termination: .completed) == nil)
        #expect(Metrics.failureReason(status: 413, termination: .completed) == "too_large")
        #expect(Metrics.failureReason(status: 431, termination: .completed) == "header_too_large")
        #expect(Metrics.failureReason(status: nil, termination: .shutdown) == "shutdown")
        #expect(Metrics.failureReason(status: nil, termination: .clientAborted) == "aborted")
    }

    @Test func longPathsAreCutAtACharacterBoundary() {
        let path = "/" + String(repeating: "é", count: 1000)
        let short = Log.shortened(path)
        #expect(short.utf8.count <= Log.maximumPathBytes + 3)
        #expect(short.hasSuffix("…"))
        #expect(!short.contains("\u{FFFD}"))
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let failure) = self { return failure }
        return nil
    }
}
