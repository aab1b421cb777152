import Foundation
import Glibc
import Testing

/// tus 1.0.0 at /tus/ against the real server.
@Suite("Resumable uploads (tus)") struct ResumableTests {
    static let tus = "Tus-Resumable: 1.0.0"
    static let octets = "Content-Type: application/offset+octet-stream"

    static func metadata(_ name: String, extra: String = "") -> String {
        "Upload-Metadata: filename \(Data(name.utf8).base64EncodedString())" + extra
    }

    /// POST /tus/ for `name` of `length` bytes; returns the upload's path.
    static func create(_ server: TestServer, _ name: String, length: Int?, headers: [String] = []) throws -> String {
        let lengthHeader = length.map { "Upload-Length: \($0)" } ?? "Upload-Defer-Length: 1"
        let created = try server.client().request("POST", "/tus/", headers: [tus, lengthHeader, metadata(name)] + headers)
        #expect(created.status == 201, "\(created.text)")
        let location = try #require(created.header("Location"))
        let url = try #require(URL(string: location))
        return url.path
    }

    static func patch(_ server: TestServer, _ path: String, offset: Int, _ body: Data, headers: [String] = []) throws -> HTTPConnection.Response {
        try server.client().request("PATCH", path, headers: [tus, octets, "Upload-Offset: \(offset)"] + headers, body: body)
    }

    static func head(_ server: TestServer, _ path: String, headers: [String] = [tus]) throws -> HTTPConnection.Response {
        try server.client().request("HEAD", path, headers: headers)
    }

    /// Names in the upload directory that are not partial uploads.
    static func storedFiles(_ server: TestServer) -> [String] {
        server.storedNames.filter { !$0.hasPrefix(".upload-") }
    }

    @Test func optionsAdvertisesTheProtocolWithoutTusResumable() throws {
        let server = try TestServer(["--max-upload-size", "10MiB"])
        let options = try server.client().request("OPTIONS", "/tus/")
        #expect(options.status == 204)
        #expect(options.header("Tus-Version") == "1.0.0")
        #expect(options.header("Tus-Max-Size") == "10485760")
        let extensions = Set((options.header("Tus-Extension") ?? "").split(separator: ",").map(String.init))
        #expect(extensions.isSuperset(of: ["creation", "creation-with-upload", "creation-defer-length", "termination",
                                           "checksum", "expiration"]))
        let algorithms = (options.header("Tus-Checksum-Algorithm") ?? "").split(separator: ",").map(String.init)
        #expect(algorithms.contains("sha1") && algorithms.contains("sha256") && algorithms.contains("md5"))
    }

    @Test func anUploadInPiecesAppearsUnderItsNameOnlyWhenComplete() throws {
        let server = try TestServer()
        let data = randomData(300_000)
        let created = try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 300000",
                                                                              Self.metadata("report.pdf", extra: ",kind c2xpZGVz")])
        #expect(created.status == 201)
        #expect(created.header("Tus-Resumable") == "1.0.0")
        let location = try #require(created.header("Location"))
        #expect(location.hasPrefix("http://test/tus/"), "absolute, from Host")
        #expect(created.header("Upload-Expires")?.hasSuffix(" GMT") == true)
        let path = try #require(URL(string: location)).path

        let head = try Self.head(server, path)
        #expect(head.status == 200)
        #expect(head.header("Upload-Offset") == "0")
        #expect(head.header("Upload-Length") == "300000")
        #expect(head.header("Upload-Metadata") == Self.metadata("report.pdf", extra: ",kind c2xpZGVz").dropFirst("Upload-Metadata: ".count).description)
        #expect(head.header("Cache-Control") == "no-store")
        #expect(head.header("Tus-Resumable") == "1.0.0")

        let first = try Self.patch(server, path, offset: 0, data.prefix(100_000))
        #expect(first.status == 204)
        #expect(first.header("Upload-Offset") == "100000")
        #expect(first.header("Upload-Expires") != nil)
        #expect(first.header("Tus-Resumable") == "1.0.0")
        #expect(Self.storedFiles(server).isEmpty, "not under its name before the last byte")
        #expect(server.storedNames.allSatisfy { $0.hasPrefix(".upload-tus-") }, "\(server.storedNames)")
        #expect(try Self.head(server, path).header("Upload-Offset") == "100000")

        let last = try Self.patch(server, path, offset: 100_000, data.suffix(from: 100_000))
        #expect(last.status == 204)
        #expect(last.header("Upload-Offset") == "300000")
        #expect(last.header("Upload-Name") == "report.pdf")
        #expect(server.contents(of: "report.pdf") == data)
        #expect(Self.storedFiles(server) == ["report.pdf"])
        #expect(server.storedNames == ["report.pdf"], "no reserved name is left")
        #expect(try Self.head(server, path).status == 404)
        let metrics = try server.client().get("/metrics").text
        #expect(metrics.contains("upload_server_files_stored_total 1"))
        #expect(metrics.contains("upload_server_bytes_stored_total 300000"))
    }

    @Test func locationFollowsForwardedHeaders() throws {
        let server = try TestServer()
        let created = try server.client().request("POST", "/tus/", headers: [
            Self.tus, "Upload-Length: 1", Self.metadata("a"), "X-Forwarded-Proto: https",
            "X-Forwarded-Host: files.example.com"])
        #expect(created.header("Location")?.hasPrefix("https://files.example.com/tus/") == true)
        let bad = try server.client().request("POST", "/tus/", headers: [
            Self.tus, "Upload-Length: 1", Self.metadata("b"), "X-Forwarded-Host: evil.example/<script>"])
        #expect(bad.header("Location")?.hasPrefix("/tus/") == true, "an unusable host gives a path")
    }

    @Test func protocolErrorsAreJSONWithTheirStatus() throws {
        let server = try TestServer(["--max-upload-size", "1MiB"])
        let path = try Self.create(server, "a.bin", length: 10)
        func expectError(_ response: HTTPConnection.Response, _ status: Int, _ comment: Comment) {
            #expect(response.status == status, comment)
            #expect(response.error != nil, comment)
            #expect(response.header("Content-Type") == "application/json", comment)
            #expect(response.header("Tus-Resumable") == "1.0.0", comment)
        }
        let noVersion = try server.client().request("POST", "/tus/", headers: ["Upload-Length: 1", Self.metadata("x")])
        expectError(noVersion, 412, "no Tus-Resumable")
        #expect(noVersion.header("Tus-Version") == "1.0.0")
        expectError(try server.client().request("PATCH", path, headers: ["Tus-Resumable: 0.2.2", Self.octets, "Upload-Offset: 0"]),
                    412, "old version")
        #expect(try server.client().request("HEAD", path, headers: ["Tus-Resumable: 0.2.2"]).status == 412)
        expectError(try Self.patch(server, path, offset: 3, Data("xyz".utf8)), 409, "wrong offset")
        #expect(try Self.patch(server, path, offset: 3, Data("xyz".utf8)).header("Upload-Offset") == "0")
        expectError(try server.client().request("PATCH", path, headers: [Self.tus, "Upload-Offset: 0", "Content-Type: text/plain"],
                                                body: Data("x".utf8)), 415, "wrong Content-Type")
        expectError(try server.client().request("PATCH", path, headers: [Self.tus, Self.octets], body: Data("x".utf8)), 400, "no offset")
        expectError(try Self.patch(server, "/tus/0123456789abcdef0123456789abcdef", offset: 0, Data("x".utf8)), 404, "unknown")
        expectError(try Self.patch(server, "/tus/nonsense", offset: 0, Data("x".utf8)), 404, "malformed id")
        #expect(try Self.head(server, "/tus/0123456789abcdef0123456789abcdef").status == 404)
        expectError(try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 2000000", Self.metadata("big")]),
                    413, "over --max-upload-size")
        expectError(try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 5"]), 400, "no name")
        expectError(try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 5", "Upload-Metadata: filename ***"]),
                    400, "not base64")
        expectError(try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 5", Self.metadata(".upload-x")]),
                    400, "reserved name")
        expectError(try server.client().request("POST", "/tus/", headers: [Self.tus, Self.metadata("a")]), 400, "no length")
        expectError(try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: -1", Self.metadata("a")]), 400, "negative")
        expectError(try server.client().request("PUT", path, headers: [Self.tus]), 405, "PUT")
        expectError(try Self.patch(server, path, offset: 0, Data("x".utf8), headers: ["Upload-Checksum: crc32 AAAAAA=="]), 400, "algorithm")

        // Bytes past Upload-Length: refused before the body with a Content-Length...
        expectError(try Self.patch(server, path, offset: 0, randomData(11)), 413, "past the length")
        // ...and as they arrive without one: nothing of that request is kept.
        let chunked = try server.client()
        try chunked.send("PATCH \(path) HTTP/1.1\r\nHost: t\r\n\(Self.tus)\r\n\(Self.octets)\r\nUpload-Offset: 0\r\n"
                         + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n")
        let overflow = try #require(try chunked.readResponse())
        expectError(overflow, 413, "chunked past the length")
        #expect(try Self.head(server, path).header("Upload-Offset") == "0")
        #expect(Self.storedFiles(server).isEmpty)
        let info = try #require(server.storedNames.first { $0.hasPrefix(".upload-tus-") && !$0.hasSuffix(".info") })
        #expect(server.contents(of: info)?.count == 0)
    }

    @Test func aChecksumMismatchAppendsNothing() throws {
        let server = try TestServer()
        let data = randomData(200_000)
        let path = try Self.create(server, "sum.bin", length: data.count)
        let first = data.prefix(150_000)
        let wrong = "Upload-Checksum: sha1 \(Data(repeating: 7, count: 20).base64EncodedString())"
        let mismatch = try Self.patch(server, path, offset: 0, first, headers: [wrong])
        #expect(mismatch.status == 460)
        #expect(mismatch.error != nil)
        #expect(try Self.head(server, path).header("Upload-Offset") == "0")
        let right = try Self.patch(server, path, offset: 0, first, headers: ["Upload-Checksum: sha256 \(sha256(first))"])
        #expect(right.status == 204)
        #expect(right.header("Upload-Offset") == "150000")
        let rest = data.suffix(from: 150_000)
        let badLast = try Self.patch(server, path, offset: 150_000, rest,
                                     headers: ["Upload-Checksum: md5 \(Data(repeating: 1, count: 16).base64EncodedString())"])
        #expect(badLast.status == 460)
        #expect(server.contents(of: "sum.bin") == nil)
        let last = try Self.patch(server, path, offset: 150_000, rest, headers: ["Upload-Checksum: md5 \(md5(rest))"])
        #expect(last.status == 204)
        #expect(server.contents(of: "sum.bin") == data)
    }

    @Test func aCutOffPatchKeepsEveryByteThatArrived() throws {
        let server = try TestServer()
        let data = randomData(1_000_000)
        let path = try Self.create(server, "cut.bin", length: data.count)
        let cut = try server.client()
        try cut.send("PATCH \(path) HTTP/1.1\r\nHost: t\r\n\(Self.tus)\r\n\(Self.octets)\r\nUpload-Offset: 0\r\nContent-Length: \(data.count)\r\n\r\n")
        try cut.send(data.prefix(600_000))
        // Every byte sent reached the server before the reset.
        var offset = ""
        for _ in 0..<200 {
            offset = try Self.head(server, path).header("Upload-Offset") ?? ""
            if offset == "600000" { break }
            usleep(10_000)
        }
        #expect(offset == "600000")
        cut.reset()
        #expect(server.waitForLog("resumable_cut_off"))
        let head = try Self.head(server, path)
        #expect(head.header("Upload-Offset") == "600000")
        let rest = try Self.patch(server, path, offset: 600_000, data.suffix(from: 600_000))
        #expect(rest.status == 204, "\(rest.text)")
        #expect(server.contents(of: "cut.bin") == data)
    }

    @Test func aCutOffPatchWithAChecksumKeepsNothingOfIt() throws {
        let server = try TestServer()
        let data = randomData(400_000)
        let path = try Self.create(server, "cut.bin", length: data.count)
        #expect(try Self.patch(server, path, offset: 0, data.prefix(100_000)).status == 204)
        let cut = try server.client()
        try cut.send("PATCH \(path) HTTP/1.1\r\nHost: t\r\n\(Self.tus)\r\n\(Self.octets)\r\nUpload-Offset: 100000\r\n"
                     + "Upload-Checksum: sha1 \(Data(repeating: 0, count: 20).base64EncodedString())\r\nContent-Length: 300000\r\n\r\n")
        try cut.send(data[100_000..<250_000])
        usleep(200_000)
        cut.reset()
        #expect(server.waitForLog("resumable_cut_off"))
        #expect(try Self.head(server, path).header("Upload-Offset") == "100000")
    }

    @Test func theLengthMayBeDeferred() throws {
        let server = try TestServer()
        let path = try Self.create(server, "later.txt", length: nil)
        let head = try Self.head(server, path)
        #expect(head.header("Upload-Defer-Length") == "1")
        #expect(head.header("Upload-Length") == nil)
        #expect(try Self.patch(server, path, offset: 0, Data("hello ".utf8)).status == 204)
        let last = try Self.patch(server, path, offset: 6, Data("world".utf8), headers: ["Upload-Length: 11"])
        #expect(last.status == 204)
        #expect(last.header("Upload-Name") == "later.txt")
        #expect(server.contents(of: "later.txt") == Data("hello world".utf8))
    }

    @Test func aZeroLengthUploadIsStoredAtCreation() throws {
        let server = try TestServer()
        let created = try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 0", Self.metadata("empty.txt")])
        #expect(created.status == 201)
        #expect(created.header("Upload-Name") == "empty.txt")
        #expect(server.contents(of: "empty.txt") == Data())
        #expect(server.storedNames == ["empty.txt"])
    }

    @Test func creationWithUploadTakesTheFirstPiece() throws {
        let server = try TestServer()
        let data = randomData(50_000)
        let created = try server.client().request("POST", "/tus/", headers: [
            Self.tus, "Upload-Length: 50000", Self.metadata("first.bin"), Self.octets], body: data.prefix(20_000))
        #expect(created.status == 201)
        #expect(created.header("Upload-Offset") == "20000")
        let path = try #require(created.header("Location").flatMap(URL.init(string:))).path
        #expect(try Self.patch(server, path, offset: 20_000, data.suffix(from: 20_000)).status == 204)
        #expect(server.contents(of: "first.bin") == data)
        // All of it at once: stored by the creation itself.
        let whole = try server.client().request("POST", "/tus/", headers: [
            Self.tus, "Upload-Length: 50000", Self.metadata("whole.bin"), Self.octets,
            "Upload-Checksum: sha256 \(sha256(data))"], body: data)
        #expect(whole.status == 201)
        #expect(whole.header("Upload-Name") == "whole.bin")
        #expect(whole.header("Location") != nil)
        #expect(server.contents(of: "whole.bin") == data)
        #expect(server.storedNames == ["first.bin", "whole.bin"])
    }

    @Test func incompleteUploadsExpire() throws {
        let server = try TestServer(["--resumable-expiry", "2s"])
        let path = try Self.create(server, "old.bin", length: 100)
        #expect(try Self.patch(server, path, offset: 0, randomData(10)).status == 204)
        #expect(server.storedNames.count == 2)
        sleep(3)
        let gone = try Self.head(server, path)
        #expect(gone.status == 410 || gone.status == 404)
        #expect(server.storedNames.isEmpty, "its bytes are removed")
        #expect(try Self.patch(server, path, offset: 10, randomData(10)).status == 404)
        // Others go at the next creation's sweep, without a request of their own.
        let other = try Self.create(server, "other.bin", length: 100)
        #expect(try Self.patch(server, other, offset: 0, randomData(10)).status == 204)
        sleep(3)
        _ = try Self.create(server, "new.bin", length: 100)
        #expect(server.storedNames.count == 2, "\(server.storedNames)")
    }

    @Test func incompleteUploadsAreLimited() throws {
        let server = try TestServer(["--resumable-limit", "2"])
        let first = try Self.create(server, "1", length: 10)
        _ = try Self.create(server, "2", length: 10)
        let third = try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 10", Self.metadata("3")])
        #expect(third.status == 503)
        #expect(third.header("Retry-After") != nil)
        #expect(third.error != nil)
        #expect(try server.client().request("DELETE", first, headers: [Self.tus]).status == 204)
        _ = try Self.create(server, "3", length: 10)
    }

    @Test func theTokenCoversEveryRequestButOptions() throws {
        let server = try TestServer(["--token", "s3cret"])
        let auth = "Authorization: Bearer s3cret"
        let refused = try server.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 3", Self.metadata("t")])
        #expect(refused.status == 401)
        #expect(refused.header("Tus-Resumable") == "1.0.0")
        #expect(try server.client().request("OPTIONS", "/tus/").status == 204)
        let path = try Self.create(server, "t", length: 3, headers: [auth])
        #expect(try Self.head(server, path).status == 401)
        #expect(try Self.patch(server, path, offset: 0, Data("abc".utf8)).status == 401)
        #expect(try server.client().request("DELETE", path, headers: [Self.tus]).status == 401)
        #expect(try Self.head(server, path, headers: [Self.tus, auth]).status == 200)
        #expect(try Self.patch(server, path, offset: 0, Data("abc".utf8), headers: [auth]).status == 204)
        #expect(server.contents(of: "t") == Data("abc".utf8))
    }

    @Test func theConflictPolicyApplies() throws {
        let reject = try TestServer(["--on-conflict", "reject"])
        #expect(try reject.client().put("/upload/taken.txt", Data("old".utf8)).status == 201)
        let refused = try reject.client().request("POST", "/tus/", headers: [Self.tus, "Upload-Length: 3", Self.metadata("taken.txt")])
        #expect(refused.status == 409)
        #expect(refused.error != nil)
        // Taken between creation and the last byte: 409 then, and the old file stays.
        let path = try Self.create(reject, "late.txt", length: 3)
        #expect(try reject.client().put("/upload/late.txt", Data("old".utf8)).status == 201)
        #expect(try Self.patch(reject, path, offset: 0, Data("new".utf8)).status == 409)
        #expect(reject.contents(of: "late.txt") == Data("old".utf8))

        let rename = try TestServer(["--on-conflict", "rename"])
        #expect(try rename.client().put("/upload/a.txt", Data("1".utf8)).status == 201)
        let renamed = try Self.create(rename, "a.txt", length: 1)
        let last = try Self.patch(rename, renamed, offset: 0, Data("2".utf8))
        #expect(last.header("Upload-Name") == "a-1.txt")
        #expect(rename.contents(of: "a-1.txt") == Data("2".utf8))

        let overwrite = try TestServer()
        #expect(try overwrite.client().put("/upload/b.txt", Data("1".utf8)).status == 201)
        let replaced = try Self.create(overwrite, "b.txt", length: 1)
        #expect(try Self.patch(overwrite, replaced, offset: 0, Data("2".utf8)).header("Upload-Name") == "b.txt")
        #expect(overwrite.contents(of: "b.txt") == Data("2".utf8))
    }

    @Test func twoPatchesToOneUploadNeverInterleave() throws {
        let server = try TestServer()
        let data = randomData(400_000)
        let path = try Self.create(server, "one.bin", length: data.count)
        let first = try server.client()
        try first.send("PATCH \(path) HTTP/1.1\r\nHost: t\r\n\(Self.tus)\r\n\(Self.octets)\r\nUpload-Offset: 0\r\nContent-Length: \(data.count)\r\nConnection: close\r\n\r\n")
        try first.send(data.prefix(100_000))
        // The second PATCH comes at the offset the upload has now: only the lock refuses it.
        var offset = 0
        for _ in 0..<200 where offset != 100_000 {
            offset = Int(try Self.head(server, path).header("Upload-Offset") ?? "") ?? 0
            usleep(10_000)
        }
        #expect(offset == 100_000)
        let second = try Self.patch(server, path, offset: offset, randomData(300_000))
        #expect(second.status == 409)
        #expect(second.error != nil)
        let termination = try server.client().request("DELETE", path, headers: [Self.tus])
        #expect(termination.status == 409, "the writer holds it")
        try first.send(data.suffix(from: 100_000))
        #expect(try first.readResponse()?.status == 204)
        #expect(server.contents(of: "one.bin") == data)
    }

    @Test(arguments: [SIGTERM, SIGKILL])
    func anUploadOutlivesTheServer(signal: Int32) throws {
        let first = try TestServer()
        let data = randomData(500_000)
        let path = try Self.create(first, "survivor.bin", length: data.count)
        #expect(try Self.patch(first, path, offset: 0, data.prefix(200_000)).status == 204)
        _ = first.stop(signal: signal)
        let second = try TestServer(uploadDirectory: first.uploadDirectory)
        #expect(second.logText.contains("\"event\":\"resumable_uploads\",\"incomplete\":1,"), "\(second.logText)")
        let head = try Self.head(second, path)
        #expect(head.status == 200)
        #expect(head.header("Upload-Offset") == "200000")
        #expect(try Self.patch(second, path, offset: 200_000, data.suffix(from: 200_000)).status == 204)
        #expect(second.contents(of: "survivor.bin") == data)
        _ = second.stop()
        #expect(second.contents(of: "survivor.bin") == data)
    }

    @Test func memoryStaysFlatForALargePatch() throws {
        let server = try TestServer()
        let chunk = randomData(1 << 20)
        let count = 256
        let path = try Self.create(server, "big.bin", length: count << 20)
        let connection = try server.client(timeoutSeconds: 120)
        try connection.send("PATCH \(path) HTTP/1.1\r\nHost: t\r\n\(Self.tus)\r\n\(Self.octets)\r\nUpload-Offset: 0\r\n"
                            + "Content-Length: \(count << 20)\r\nConnection: close\r\n\r\n")
        for _ in 0..<count { try connection.send(chunk) }
        let response = try #require(try connection.readResponse())
        #expect(response.status == 204)
        #expect(response.header("Upload-Name") == "big.bin")
        let stored = try #require(FileHandle(forReadingAtPath: server.uploadDirectory.appendingPathComponent("big.bin").path))
        defer { try? stored.close() }
        for index in 0..<count {
            #expect(stored.readData(ofLength: chunk.count) == chunk, "MiB \(index) differs")
            if stored.offsetInFile != UInt64((index + 1) << 20) { break }
        }
        #expect(stored.readDataToEndOfFile().isEmpty)
        let peak = try #require(server.peakResidentKiB)
        #expect(peak < 48 * 1024, "peak resident memory \(peak) KiB for a 256 MiB PATCH")
    }

    @Test func terminationRemovesTheBytes() throws {
        let server = try TestServer()
        let path = try Self.create(server, "gone.bin", length: 100)
        #expect(try Self.patch(server, path, offset: 0, randomData(50)).status == 204)
        // X-HTTP-Method-Override, for clients that can only POST.
        let deleted = try server.client().request("POST", path, headers: [Self.tus, "X-HTTP-Method-Override: DELETE"])
        #expect(deleted.status == 204)
        #expect(deleted.header("Tus-Resumable") == "1.0.0")
        #expect(server.storedNames.isEmpty)
        #expect(try Self.head(server, path).status == 404)
        #expect(try server.client().request("DELETE", path, headers: [Self.tus]).status == 404)
    }

    @Test func crossOriginPagesSeeTheHeadersTheyNeed() throws {
        let server = try TestServer(["--allow-origin", "https://app.example"])
        let preflight = try server.client().request("OPTIONS", "/tus/", headers: [
            "Host: 127.0.0.1", "Origin: https://app.example", "Access-Control-Request-Method: POST"])
        #expect(preflight.status == 204)
        #expect(preflight.header("Access-Control-Allow-Origin") == "https://app.example")
        #expect(preflight.header("Access-Control-Allow-Headers")?.contains("Tus-Resumable") == true)
        #expect(preflight.header("Access-Control-Allow-Headers")?.contains("Upload-Offset") == true)
        #expect(preflight.header("Access-Control-Allow-Methods")?.contains("PATCH") == true)
        let created = try server.client().request("POST", "/tus/", headers: [
            Self.tus, "Upload-Length: 1", Self.metadata("c"), "Host: 127.0.0.1", "Origin: https://app.example"])
        #expect(created.status == 201)
        let exposed = created.header("Access-Control-Expose-Headers") ?? ""
        for name in ["Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Upload-Name", "Tus-Resumable"] {
            #expect(exposed.contains(name), "\(name)")
        }
        let foreign = try server.client().request("POST", "/tus/", headers: [
            Self.tus, "Upload-Length: 1", Self.metadata("d"), "Host: 127.0.0.1", "Origin: https://evil.example"])
        #expect(foreign.status == 403)
    }
}

extension HTTPConnection {
    /// Any request, with a Content-Length body (none for HEAD).
    func request(_ method: String, _ path: String, headers: [String] = [], body: Data = Data()) throws -> Response {
        var head = "\(method) \(path) HTTP/1.1\r\n\(Self.defaultHost(headers))Connection: close\r\n"
        for header in headers { head += header + "\r\n" }
        if !body.isEmpty || method == "PATCH" || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        try send(head + "\r\n")
        if !body.isEmpty { try send(body) }
        guard let response = try readResponse(toHead: method == "HEAD") else { throw TestFailure("no response") }
        return response
    }
}

private func sha256(_ data: Data) -> String { digest(data, "sha256sum") }
private func md5(_ data: Data) -> String { digest(data, "md5sum") }

/// Base64 of a digest, by the system's tool (the server's own code is what is tested).
private func digest(_ data: Data, _ tool: String) -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/\(tool)")
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try? process.run()
    input.fileHandleForWriting.write(data)
    try? input.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let hex = Array(text.prefix { $0 != " " }.utf8)
    var bytes = Data()
    var index = 0
    while index + 1 < hex.count {
        bytes.append(UInt8(String(decoding: hex[index...index + 1], as: UTF8.self), radix: 16) ?? 0)
        index += 2
    }
    return bytes.base64EncodedString()
}
