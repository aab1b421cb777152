import Foundation
import Testing

@Suite("Uploads")
struct UploadTests {
    @Test func storesOneFileWithTheSameBytes() throws {
        let server = try TestServer()
        let content = randomData(300_000)
        let response = try server.client().upload(Multipart().file("report.pdf", content))
        #expect(response.status == 200)
        #expect(response.header("Content-Type") == "application/json")
        #expect(response.files.map(\.name) == ["report.pdf"])
        #expect(response.files.map(\.size) == [300_000])
        #expect(server.contents(of: "report.pdf") == content)
        #expect(server.storedNames == ["report.pdf"])  // no temporary file, no probe, no staging folder
    }

    @Test func worksWithCurlAsTheReadmeShows() throws {
        let server = try TestServer()
        let source = server.root.appendingPathComponent("curl input.bin")
        let content = randomData(1_000_000)
        try content.write(to: source)
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        curl.arguments = ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F", "file=@\(source.path)",
                          "http://127.0.0.1:\(server.port)/upload"]
        let pipe = Pipe()
        curl.standardOutput = pipe
        try curl.run()
        curl.waitUntilExit()
        #expect(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) == "200")
        #expect(server.contents(of: "curl input.bin") == content)
    }

    @Test(arguments: Staging.allCases)
    func storesEveryFilePartAndIgnoresOtherFields(staging: Staging) throws {
        let server = try TestServer(staging.arguments)
        let first = randomData(10_000), second = randomData(20_000)
        let form = Multipart().field("comment", "ignored").file("a.bin", first).field("other", "x")
            .file("b.bin", second).file("empty.txt", Data())
        let response = try server.client().upload(form)
        #expect(response.status == 200)
        #expect(response.files.map(\.name) == ["a.bin", "b.bin", "empty.txt"])
        #expect(response.files.map(\.size) == [10_000, 20_000, 0])
        #expect(server.contents(of: "a.bin") == first)
        #expect(server.contents(of: "b.bin") == second)
        #expect(server.contents(of: "empty.txt") == Data())
        #expect(server.storedNames == ["a.bin", "b.bin", "empty.txt"])
    }

    // Staged files are written in aligned 64 KiB blocks (the bytes past the last
    // boundary wait for the next piece) and, past 1 MiB, get disk space reserved
    // ahead: every size around a block must come out whole.
    @Test(arguments: Staging.allCases)
    func filesOfEverySizeAroundAWriteBlockArriveWhole(staging: Staging) throws {
        let server = try TestServer(staging.arguments)
        for size in [65_535, 65_536, 65_537, 131_071, 131_073, 1_048_575, 1_048_577, 3_000_001] {
            let content = randomData(size)
            let response = try server.client().upload(Multipart().file("size-\(size).bin", content))
            #expect(response.status == 200)
            #expect(server.contents(of: "size-\(size).bin") == content, "\(size) bytes")
        }
    }

    @Test func aBodySentInSmallPiecesArrivesWhole() throws {
        let server = try TestServer()
        let content = randomData(400_000)
        let form = Multipart().file("pieces.bin", content)
        let connection = try server.client()
        try connection.startUpload(form, sending: 0)
        var offset = 0
        while offset < form.body.count {  // pauses make the server read pieces of odd sizes
            let end = min(offset + 7_919, form.body.count)
            try connection.send(form.body.subdata(in: offset..<end))
            offset = end
            usleep(500)
        }
        #expect(try connection.readResponse()?.status == 200)
        #expect(server.contents(of: "pieces.bin") == content)
    }

    @Test func spaceReservedAheadOfAFileIsGivenBack() throws {
        // Each file past 1 MiB has space reserved 8 MiB ahead of its bytes.
        let server = try TestServer()
        let first = randomData(3_000_000), second = randomData(2_000_000)
        let response = try server.client().upload(Multipart().file("first.bin", first).file("second.bin", second))
        #expect(response.status == 200)
        #expect(server.contents(of: "first.bin") == first)
        #expect(server.contents(of: "second.bin") == second)
        for (name, size) in [("first.bin", 3_000_000), ("second.bin", 2_000_000)] {
            var status = stat()
            #expect(stat(server.uploadDirectory.appendingPathComponent(name).path, &status) == 0)
            #expect(Int(status.st_size) == size)
            #expect(Int(status.st_blocks) * 512 < size + 500_000, "\(name) keeps \(status.st_blocks * 512) bytes of disk")
        }
    }

    @Test func contentThatLooksLikeABoundaryIsKept() throws {
        let server = try TestServer()
        let form = Multipart(boundary: "XyZ")
        // Near misses of the delimiter "\r\n--XyZ" (which a client never puts in content).
        let content = Data("line\r\n--XyQ\r\n--Xy\r\n\r\n-XyZ\r\n-".utf8) + randomData(5000) + Data("\r\n--Xy".utf8)
        let response = try server.client().upload(form.file("tricky.bin", content))
        #expect(response.status == 200)
        #expect(server.contents(of: "tricky.bin") == content)
    }

    @Test func keepAliveServesSeveralRequestsOnOneConnection() throws {
        let server = try TestServer()
        let connection = try server.client()
        for index in 0..<3 {
            let response = try connection.upload(Multipart().file("keep-\(index).txt", Data("\(index)".utf8)), keepAlive: true)
            #expect(response.status == 200)
        }
        #expect(try connection.get("/healthz", keepAlive: true).status == 200)
        #expect(server.storedNames == ["keep-0.txt", "keep-1.txt", "keep-2.txt"])
    }

    @Test func acceptsAChunkedBody() throws {
        let server = try TestServer()
        let content = randomData(200_000)
        let body = Multipart().file("chunked.bin", content)
        let connection = try server.client()
        try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: \(body.contentType)\r\nTransfer-Encoding: chunked\r\n\r\n")
        var remaining = body.body[...]
        while !remaining.isEmpty {
            let piece = remaining.prefix(Int.random(in: 1...9000))
            remaining = remaining.dropFirst(piece.count)
            try connection.send(String(piece.count, radix: 16) + "\r\n")
            try connection.send(Data(piece) + Data("\r\n".utf8))
        }
        try connection.send("0\r\n\r\n")
        let response = try #require(try connection.readResponse())
        #expect(response.status == 200)
        #expect(server.contents(of: "chunked.bin") == content)
    }

    @Test func answersExpectContinueBeforeTheBody() throws {
        let server = try TestServer()
        let body = Multipart().file("expect.txt", Data("hello".utf8))
        let connection = try server.client()
        try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: \(body.contentType)\r\nContent-Length: \(body.body.count)\r\nExpect: 100-continue\r\n\r\n")
        let interim = try #require(try connection.readResponse())
        #expect(interim.status == 100)
        try connection.send(body.body)
        let response = try #require(try connection.readResponse())
        #expect(response.status == 200)
        #expect(server.contents(of: "expect.txt") == Data("hello".utf8))
    }

    @Test func memoryStaysFlatForALargeFile() throws {
        let server = try TestServer()
        // 256 MiB streamed in pieces, never held by the test either.
        let chunk = randomData(1 << 20)
        let form = Multipart()
        let head = Data("--\(form.boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n".utf8)
        let tail = Data("\r\n--\(form.boundary)--\r\n".utf8)
        let count = 256
        let connection = try server.client(timeoutSeconds: 120)
        try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: \(form.contentType)\r\nContent-Length: \(head.count + count * chunk.count + tail.count)\r\n\r\n")
        try connection.send(head)
        for _ in 0..<count { try connection.send(chunk) }
        try connection.send(tail)
        let response = try #require(try connection.readResponse())
        #expect(response.status == 200)
        #expect(response.files.map(\.size) == [count << 20])
        let stored = try #require(FileHandle(forReadingAtPath: server.uploadDirectory.appendingPathComponent("big.bin").path))
        defer { try? stored.close() }
        for index in 0..<count {
            #expect(stored.readData(ofLength: chunk.count) == chunk, "MiB \(index) differs")
            if stored.offsetInFile != UInt64((index + 1) << 20) { break }
        }
        let peak = try #require(server.peakResidentKiB)
        #expect(peak < 48 * 1024, "peak resident memory \(peak) KiB for a 256 MiB upload")
    }

    @Test func servesHundredsOfSimultaneousUploads() throws {
        // All from 127.0.0.1, as behind a reverse proxy.
        let server = try TestServer(["--connections-per-address", "0"])
        let clients = 200
        // Every connection sends half its body before any of them finishes.
        let forms = (0..<clients).map { Multipart().file("many-\($0).bin", randomData(2_000 + $0)) }
        var connections: [HTTPConnection] = []
        for form in forms {
            let connection = try server.client()
            let body = form.body
            try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: \(form.contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n")
            try connection.send(body.prefix(body.count / 2))
            connections.append(connection)
        }
        var inFlight = ""
        for _ in 0..<500 where !inFlight.contains("upload_server_uploads_in_flight \(clients)\n") {
            inFlight = try server.client().get("/metrics").text
            usleep(10_000)
        }
        #expect(inFlight.contains("upload_server_uploads_in_flight \(clients)\n"))
        for (connection, form) in zip(connections, forms) {
            try connection.send(form.body.dropFirst(form.body.count / 2))
        }
        for connection in connections {
            #expect(try connection.readResponse()?.status == 200)
        }
        #expect(server.storedNames.count == clients)
        #expect(server.contents(of: "many-7.bin")?.count == 2_007)
    }

    @Test(arguments: Staging.allCases)
    func concurrentUploadsOfOneNameEndAsOneCompleteFile(staging: Staging) async throws {
        let server = try TestServer(staging.arguments)
        let contents = (0..<12).map { _ in randomData(Int.random(in: 100_000...400_000)) }
        await withTaskGroup(of: Void.self) { group in
            for content in contents {
                group.addTask {
                    let response = try? server.client().upload(Multipart().file("same.bin", content))
                    #expect(response?.status == 200)
                }
            }
        }
        #expect(server.storedNames == ["same.bin"])
        let stored = try #require(server.contents(of: "same.bin"))
        #expect(contents.contains(stored), "the stored file is a mix of uploads")
    }

    @Test(arguments: Staging.allCases)
    func concurrentUploadsOfOneNameWithRenameKeepEveryFile(staging: Staging) async throws {
        let server = try TestServer(["--on-conflict", "rename"] + staging.arguments)
        let contents = (0..<12).map { _ in randomData(Int.random(in: 50_000...200_000)) }
        await withTaskGroup(of: Void.self) { group in
            for content in contents {
                group.addTask {
                    let response = try? server.client().upload(Multipart().file("same.bin", content))
                    #expect(response?.status == 200)
                }
            }
        }
        let names = server.storedNames
        #expect(Set(names) == Set(["same.bin"] + (1..<12).map { "same-\($0).bin" }))
        let stored = Set(names.compactMap { server.contents(of: $0) })
        #expect(stored == Set(contents))
    }

    @Test func healthAndMetrics() throws {
        let server = try TestServer()
        let health = try server.client().get("/healthz")
        #expect(health.status == 200)
        #expect(health.text.contains("\"ok\""))
        #expect(try server.client().get("/healthz", method: "HEAD").status == 200)
        _ = try server.client().upload(Multipart().file("m.txt", Data("12345".utf8)))
        _ = try server.client().get("/nope")
        // A request is counted when it completes, just after its answer is sent.
        var metrics = try server.client().get("/metrics")
        for _ in 0..<100 where !metrics.text.contains("reason=\"not_found\"") {
            usleep(20_000)
            metrics = try server.client().get("/metrics")
        }
        #expect(metrics.status == 200)
        #expect(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
        #expect(metrics.text.contains("upload_server_files_stored_total 1\n"))
        #expect(metrics.text.contains("upload_server_bytes_stored_total 5\n"))
        #expect(metrics.text.contains("upload_server_failures_total{reason=\"not_found\"} 1\n"))
        #expect(metrics.text.contains("upload_server_uploads_in_flight 0\n"))
        #expect(metrics.text.contains("upload_server_build_info{version=\""))
        #expect(metrics.text.contains(",libmicrohttpd=\""))
    }

    @Test func logsOneJSONLinePerRequest() throws {
        let server = try TestServer()
        _ = try server.client().upload(Multipart().file("log.txt", Data("abc".utf8)))
        _ = try server.client().get("/missing")
        // A request is logged when libmicrohttpd reports it complete, after the answer was sent.
        #expect(server.waitForLog("\"path\":\"/missing\""))
        #expect(server.waitForLog("\"path\":\"/upload\""))
        let access = server.logLines.filter { $0.contains("\"method\":") }.sorted { $0.contains("/upload") && !$1.contains("/upload") }
        #expect(access.count == 2)
        for line in access {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            for key in ["time", "method", "path", "status", "bytes", "duration_ms", "peer"] {
                #expect(object[key] != nil, "\(key) missing in \(line)")
            }
        }
        #expect(access[0].contains("\"status\":200"))
        #expect(access[1].contains("\"status\":404"))
        #expect(access[0].contains("\"peer\":\"127.0.0.1:"))
    }
}

/// How the server keeps files in progress: `--staging auto` uses unnamed (O_TMPFILE)
/// files on this filesystem, `--staging named` the fallback for filesystems without.
enum Staging: String, CaseIterable, CustomTestStringConvertible {
    case auto, named
    var arguments: [String] { ["--staging", rawValue] }
    var testDescription: String { rawValue }
}

extension TestServer {
    func client(timeoutSeconds: Int) throws -> HTTPConnection { try HTTPConnection(port: port, timeoutSeconds: timeoutSeconds) }
}
