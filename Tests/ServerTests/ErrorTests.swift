import Foundation
import Testing

@Suite("Errors")
struct ErrorTests {
    /// After any failure the server still stores uploads and the directory is clean.
    private func expectStillServing(_ server: TestServer, keeping names: [String] = []) throws {
        let response = try server.client().upload(Multipart().file("after.txt", Data("ok".utf8)))
        #expect(response.status == 200)
        #expect(server.storedNames == (names + ["after.txt"]).sorted())
        try FileManager.default.removeItem(at: server.uploadDirectory.appendingPathComponent("after.txt"))
    }

    private func post(_ server: TestServer, contentType: String?, body: Data, headers: [String] = []) throws -> HTTPConnection.Response {
        let connection = try server.client()
        var head = "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: \(body.count)\r\nConnection: close\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\n" }
        for header in headers { head += header + "\r\n" }
        try connection.send(head + "\r\n")
        try connection.send(body)
        return try #require(try connection.readResponse())
    }

    @Test func noFilePartIs400() throws {
        let server = try TestServer()
        let response = try server.client().upload(Multipart().field("file-ish", "x"))
        #expect(response.status == 400)
        #expect(response.error == "no \"file\" part with a filename")
        try expectStillServing(server)
    }

    @Test func filePartWithoutFilenameIs400() throws {
        let server = try TestServer()
        let response = try server.client().upload(Multipart().file("good.txt", Data("a".utf8)).field("file", "no filename"))
        #expect(response.status == 400)
        #expect(response.error == "the \"file\" part has no filename")
        try expectStillServing(server)  // good.txt was not kept: all or nothing
    }

    @Test func malformedMultipartIs400() throws {
        let server = try TestServer()
        let response = try post(server, contentType: "multipart/form-data; boundary=abc", body: Data("this is not multipart at all".utf8))
        #expect(response.status == 400)
        #expect(response.error != nil)
        try expectStillServing(server)
    }

    @Test func truncatedMultipartIs400AndStoresNothing() throws {
        let server = try TestServer()
        let form = Multipart().file("cut.bin", randomData(50_000))
        let body = form.body.dropLast(30)  // the closing boundary is missing
        let response = try post(server, contentType: form.contentType, body: Data(body))
        #expect(response.status == 400)
        #expect(response.error == "multipart body is truncated or malformed")
        try expectStillServing(server)
    }

    @Test func missingBoundaryIs400() throws {
        let server = try TestServer()
        let response = try post(server, contentType: "multipart/form-data", body: Data("x".utf8))
        #expect(response.status == 400)
        #expect(response.error == "multipart/form-data without a boundary parameter")
        try expectStillServing(server)
    }

    @Test func aOneCharacterBoundaryIsRefusedClearly() throws {
        let server = try TestServer()
        let body = Multipart(boundary: "x").file("one.txt", Data("1".utf8)).body
        let response = try post(server, contentType: "multipart/form-data; boundary=x", body: body)
        #expect(response.status == 400)
        #expect(response.error == "multipart boundary must be at least 2 characters long")
        try expectStillServing(server)
    }

    @Test func otherContentTypesAre415() throws {
        let server = try TestServer()
        for contentType in ["application/json", "text/plain", nil] {
            let response = try post(server, contentType: contentType, body: Data("{}".utf8))
            #expect(response.status == 415)
            #expect(response.error?.hasPrefix("expected multipart/form-data") == true)
        }
        try expectStillServing(server)
    }

    @Test func unknownPathIs404AndWrongMethodIs405() throws {
        let server = try TestServer()
        let missing = try server.client().get("/files/x")
        #expect(missing.status == 404)
        #expect(missing.error == "not found")
        let wrong = try server.client().get("/upload")
        #expect(wrong.status == 405)
        #expect(wrong.header("Allow") == "POST, OPTIONS")
        let wrongHealth = try post(server, contentType: "text/plain", body: Data())
        #expect(wrongHealth.status == 415)
        let deleteHealth = try server.client().get("/healthz", method: "DELETE")
        #expect(deleteHealth.status == 405)
        #expect(deleteHealth.header("Allow") == "GET, HEAD")
        try expectStillServing(server)
    }

    @Test func tokenIsRequiredWhenConfigured() throws {
        let server = try TestServer(environment: ["UPLOAD_TOKEN": "s3cret"])
        let form = Multipart().file("secret.txt", Data("x".utf8))
        let none = try server.client().upload(form)
        #expect(none.status == 401)
        #expect(none.header("WWW-Authenticate") == "Bearer")
        #expect(try server.client().upload(form, headers: ["Authorization: Bearer wrong"]).status == 401)
        #expect(try server.client().upload(form, headers: ["Authorization: Bearer s3cret2"]).status == 401)
        #expect(try server.client().upload(form, headers: ["Authorization: Basic s3cret"]).status == 401)
        #expect(server.storedNames.isEmpty)
        #expect(try server.client().upload(form, headers: ["Authorization: Bearer s3cret"]).status == 200)
        #expect(server.storedNames == ["secret.txt"])
        #expect(try server.client().get("/healthz").status == 200)  // health needs no token
    }

    @Test func bodyLargerThanTheLimitIs413BeforeAnyByteIsStored() throws {
        let server = try TestServer(["--max-upload-size", "64KiB"])
        let form = Multipart().file("big.bin", randomData(100_000))
        let connection = try server.client()
        // Announce the body with Expect: the answer comes before any of it is sent.
        try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: \(form.contentType)\r\nContent-Length: \(form.body.count)\r\nExpect: 100-continue\r\n\r\n")
        let response = try #require(try connection.readResponse())
        #expect(response.status == 413)
        #expect(response.error == "request body is larger than the limit of 64KiB")
        #expect(server.storedNames.isEmpty)
        #expect(try server.client().upload(Multipart().file("small.bin", randomData(60_000))).status == 200)
        #expect(server.storedNames == ["small.bin"])
    }

    private func sendChunked(_ connection: HTTPConnection, _ form: Multipart, limitBytes: Int? = nil) throws {
        try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: \(form.contentType)\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        var remaining = form.body[...]
        while !remaining.isEmpty {
            let piece = remaining.prefix(64 * 1024)
            remaining = remaining.dropFirst(piece.count)
            try connection.send(String(piece.count, radix: 16) + "\r\n")
            try connection.send(Data(piece) + Data("\r\n".utf8))
        }
        try connection.send("0\r\n\r\n")
    }

    @Test func chunkedBodyOverTheLimitIsDrainedAndAnswered413() throws {
        let server = try TestServer(["--max-upload-size", "1MiB"])
        let connection = try server.client()
        try sendChunked(connection, Multipart().file("over.bin", randomData(3 << 20)))
        let response = try #require(try connection.readResponse())
        #expect(response.status == 413)
        #expect(server.storedNames.isEmpty)
        #expect(server.waitForLog("\"status\":413"))
        try expectStillServing(server)
    }

    @Test func chunkedBodyFarOverTheLimitClosesTheConnection() throws {
        let server = try TestServer(["--max-upload-size", "1MiB"])
        let connection = try server.client()
        // More than the 64 MiB the server reads and drops after a failure.
        let form = Multipart()
        try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: \(form.contentType)\r\nTransfer-Encoding: chunked\r\n\r\n")
        let partHead = Data("--\(form.boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"huge.bin\"\r\n\r\n".utf8)
        try connection.send(partHead.count.hexChunk)
        try connection.send(partHead + Data("\r\n".utf8))
        let piece = randomData(1 << 20)
        var closed = false
        for _ in 0..<100 {
            do {
                try connection.send(piece.count.hexChunk)
                try connection.send(piece + Data("\r\n".utf8))
            } catch {
                closed = true
                break
            }
        }
        #expect(closed || connection.isClosedByServer())
        #expect(server.storedNames.isEmpty)
        try expectStillServing(server)
    }

    @Test(arguments: Staging.allCases)
    func rejectPolicyAnswers409AndKeepsTheExistingFile(staging: Staging) throws {
        let server = try TestServer(["--on-conflict", "reject"] + staging.arguments)
        #expect(try server.client().upload(Multipart().file("doc.txt", Data("first".utf8))).status == 200)
        let second = try server.client().upload(Multipart().file("new.txt", Data("n".utf8)).file("doc.txt", Data("second".utf8)))
        #expect(second.status == 409)
        #expect(second.error == "\"doc.txt\" already exists")
        #expect(server.contents(of: "doc.txt") == Data("first".utf8))
        // All or nothing: new.txt, committed before the conflict was found, is gone again.
        try expectStillServing(server, keeping: ["doc.txt"])
    }

    @Test func renamePolicyAddsANumber() throws {
        let server = try TestServer(["--on-conflict", "rename"])
        for content in ["1", "2", "3"] {
            #expect(try server.client().upload(Multipart().file("a.tar.gz", Data(content.utf8))).status == 200)
        }
        let response = try server.client().upload(Multipart().file(".env", Data("x".utf8)).file(".env", Data("y".utf8)))
        #expect(response.files.map(\.name) == [".env", ".env-1"])
        #expect(server.storedNames == [".env", ".env-1", "a.tar-1.gz", "a.tar-2.gz", "a.tar.gz"])
        #expect(server.contents(of: "a.tar-2.gz") == Data("3".utf8))
    }

    @Test func overwritePolicyReplaces() throws {
        let server = try TestServer()
        #expect(try server.client().upload(Multipart().file("o.txt", Data("old".utf8))).status == 200)
        #expect(try server.client().upload(Multipart().file("o.txt", Data("new".utf8))).status == 200)
        #expect(server.contents(of: "o.txt") == Data("new".utf8))
    }

    @Test(arguments: [
        ("../../escape.txt", "escape.txt"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows.txt", "windows.txt"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("bell\u{07}and\u{1B}escape.txt", "bellandescape.txt"),
        ("résumé 📄 файл.txt", "résumé 📄 файл.txt"),
        ("..hidden..", "..hidden.."),
        // RFC 7578's escapes, as Go, Python and curl send a quote or a backslash.
        ("a\\\"b.txt", "a\"b.txt"),
        ("c\\\\d.txt", "d.txt"),
    ])
    func hostileFilenamesAreReducedToOneSafeName(sent: String, stored: String) throws {
        let server = try TestServer()
        let response = try server.client().upload(Multipart().file(sent, Data("x".utf8)))
        #expect(response.status == 200)
        #expect(response.files.map(\.name) == [stored])
        #expect(server.storedNames == [stored])
        #expect(FileManager.default.fileExists(atPath: server.root.appendingPathComponent("escape.txt").path) == false)
    }

    @Test(arguments: ["", ".", "..", "a/", "dir/..", "\u{01}\u{02}", ".upload-123.part", ".upload-x", String(repeating: "é", count: 128)])
    func unusableFilenamesAre400(sent: String) throws {
        let server = try TestServer()
        let response = try server.client().upload(Multipart().file(sent, Data("x".utf8)))
        #expect(response.status == 400)
        #expect(response.error != nil)
        try expectStillServing(server)
    }

    @Test(arguments: Staging.allCases)
    func theServiceFollowsAnUploadDirectoryThatIsRemovedAndMadeAgain(staging: Staging) throws {
        let server = try TestServer(staging.arguments)
        #expect(try server.client().upload(Multipart().file("before.txt", Data("1".utf8))).status == 200)
        try FileManager.default.removeItem(at: server.uploadDirectory)
        let missing = try server.client().upload(Multipart().file("during.txt", Data("2".utf8)))
        #expect(missing.status == 500)
        #expect(missing.error?.hasPrefix("the upload directory is unavailable") == true)
        #expect(try server.client().get("/healthz").status == 200)
        try FileManager.default.createDirectory(at: server.uploadDirectory, withIntermediateDirectories: false)
        #expect(try server.client().upload(Multipart().file("after.txt", Data("3".utf8))).status == 200)
        #expect(server.storedNames == ["after.txt"])
    }

    @Test func atMostAHundredFilesPerRequest() throws {
        let server = try TestServer()
        var form = Multipart()
        for index in 0..<100 { form = form.file("f\(index).txt", Data("\(index)".utf8)) }
        #expect(try server.client().upload(form).status == 200)
        #expect(server.storedNames.count == 100)
        let tooMany = try server.client().upload(form.file("f100.txt", Data("x".utf8)))
        #expect(tooMany.status == 400)
        #expect(tooMany.error == "more than 100 files in one request")
        #expect(server.storedNames.count == 100)
    }

    @Test func longestAllowedNameIsStored() throws {
        let server = try TestServer()
        let name = String(repeating: "n", count: 251) + ".txt"
        #expect(try server.client().upload(Multipart().file(name, Data("x".utf8))).status == 200)
        #expect(server.storedNames == [name])
    }

    @Test func aPlantedSymlinkIsReplacedNotFollowed() throws {
        let server = try TestServer()
        let outside = server.root.appendingPathComponent("outside.txt")
        try Data("untouched".utf8).write(to: outside)
        try FileManager.default.createSymbolicLink(atPath: server.uploadDirectory.appendingPathComponent("link.txt").path,
                                                   withDestinationPath: outside.path)
        let response = try server.client().upload(Multipart().file("link.txt", Data("uploaded".utf8)))
        #expect(response.status == 200)
        #expect(try Data(contentsOf: outside) == Data("untouched".utf8))
        let attributes = try FileManager.default.attributesOfItem(atPath: server.uploadDirectory.appendingPathComponent("link.txt").path)
        #expect(attributes[.type] as? FileAttributeType == .typeRegular)
        #expect(server.contents(of: "link.txt") == Data("uploaded".utf8))
    }

    @Test(arguments: Staging.allCases)
    func aClientThatDisconnectsLeavesNothing(staging: Staging) throws {
        let server = try TestServer(staging.arguments)
        let form = Multipart().file("partial.bin", randomData(2 << 20))
        let connection = try server.client()
        try connection.startUpload(form, sending: 1 << 20)
        usleep(200_000)
        // Only a named temporary file is visible while the upload is in progress.
        #expect(server.storedNames.count == (staging == .named ? 1 : 0))
        #expect(server.storedNames.allSatisfy { $0.hasPrefix(".upload-") && $0.hasSuffix(".part") })
        connection.reset()
        #expect(server.waitForLog("upload_abandoned"))
        #expect(server.storedNames.isEmpty)
        #expect(server.logText.contains("\"temporary_files_removed\":1"))
        try expectStillServing(server)
    }

    @Test func idleClientsAreClosedByTheTimeout() throws {
        let server = try TestServer(["--timeout", "1"])
        let form = Multipart().file("slow.bin", randomData(10_000))
        let connection = try server.client()
        try connection.startUpload(form, sending: 5_000)
        #expect(server.waitForLog("\"reason\":\"timed_out\"", timeout: 5))
        #expect(connection.isClosedByServer())
        #expect(server.storedNames.isEmpty)
    }

    @Test(.enabled(if: Capabilities.mountTmpfs, "needs root with CAP_SYS_ADMIN to mount a small tmpfs"),
          arguments: Staging.allCases)
    func fullDiskIs507AndLeavesNoTemporaryFile(staging: Staging) throws {
        let mountPoint = FileManager.default.temporaryDirectory.appendingPathComponent("upload-server-small-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        guard Capabilities.run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint.path]) else {
            Issue.record("mounting a tmpfs failed although the probe could")
            return
        }
        defer {
            Capabilities.run("/bin/umount", [mountPoint.path])
            try? FileManager.default.removeItem(at: mountPoint)
        }
        let server = try TestServer(staging.arguments, uploadDirectory: mountPoint)
        let kept = randomData(1 << 20)
        #expect(try server.client().upload(Multipart().file("kept.bin", kept)).status == 200)
        let response = try server.client().upload(Multipart().file("too-big.bin", randomData(3 << 20)))
        #expect(response.status == 507)
        #expect(response.error == "no space left on the server's disk")
        #expect(server.storedNames == ["kept.bin"])
        #expect(server.contents(of: "kept.bin") == kept)
        try FileManager.default.removeItem(at: mountPoint.appendingPathComponent("kept.bin"))
        #expect(try server.client().upload(Multipart().file("fits.bin", randomData(1 << 20))).status == 200)
    }
}

extension Int {
    var hexChunk: String { String(self, radix: 16) + "\r\n" }
}
