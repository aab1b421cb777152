import Foundation
import Glibc
import Testing

/// Attacks on the promises, each of which failed before its fix.
@Suite("Promises under attack") struct AttackTests {
    @Test func failedMultiFileOverwriteLeavesEveryOldFile() throws {
        let server = try TestServer()
        try Data("OLD".utf8).write(to: server.uploadDirectory.appendingPathComponent("a.txt"))
        try FileManager.default.createDirectory(at: server.uploadDirectory.appendingPathComponent("sub"),
                                                withIntermediateDirectories: false)
        let response = try server.client().upload(Multipart().file("a.txt", Data("NEW".utf8)).file("sub", Data("X".utf8)))
        #expect(response.status == 409)
        #expect(response.error == "\"sub\" exists and is not a file")
        #expect(server.contents(of: "a.txt") == Data("OLD".utf8))
        #expect(server.storedNames == ["a.txt", "sub"])
    }

    @Test func renameNeverStoresUnderATemporaryNameThatASweepWouldTake() throws {
        let server = try TestServer(["--on-conflict", "rename", "--staging", "named"])
        var names: [String] = []
        for _ in 0..<3 {
            let response = try server.client().upload(Multipart().file(".upload.part", Data("x".utf8)))
            #expect(response.status == 200)
            names += response.files.map(\.name)
        }
        #expect(names.allSatisfy { !$0.hasPrefix(".upload-") }, "\(names)")
        // Another instance starts on the directory and sweeps leftovers.
        _ = try TestServer(["--staging", "named"], uploadDirectory: server.uploadDirectory)
        #expect(server.storedNames == names.sorted())
    }

    @Test func invalidUTF8NamesAreRefusedNotMerged() throws {
        let server = try TestServer()
        for byte: UInt8 in [0xE9, 0xE8] {
            var body = Data("--xyzzy\r\nContent-Disposition: form-data; name=\"file\"; filename=\"caf".utf8)
            body.append(byte)
            body.append(Data(".txt\"\r\n\r\ncontent\r\n--xyzzy--\r\n".utf8))
            let connection = try server.client()
            try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=xyzzy\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n")
            try connection.send(body)
            let response = try #require(try connection.readResponse())
            #expect(response.status == 400)
            #expect(response.error == "filename is not valid UTF-8")
        }
        #expect(server.storedNames.isEmpty)
    }

    /// Valid framing other multipart writers use (needs
    /// our libmicrohttpd patch 0007).
    @Test(arguments: [
        ("Boundary=xyzzy", "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"", ""),
        ("boundary=xyzzy; charset=utf-8", "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"", ""),
        ("boundary=\"xyzzy\"", "Content-Disposition:form-data;name=\"file\";filename=\"a.txt\"", ""),
        ("boundary=xyzzy", "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"", "\r\n\r\n"),
        ("boundary=xyzzy", "content-disposition: form-data; name=\"file\"; filename=\"a.txt\"", "  \r\nepilogue"),
    ])
    func otherMultipartWritersAreUnderstood(parameters: String, disposition: String, epilogue: String) throws {
        let server = try TestServer()
        let body = Data("--xyzzy\r\n\(disposition)\r\n\r\ncontent\r\n--xyzzy--\(epilogue)".utf8)
        let connection = try server.client()
        try connection.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; \(parameters)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n")
        try connection.send(body)
        let response = try #require(try connection.readResponse())
        #expect(response.status == 200, "\(response.text)")
        #expect(server.contents(of: "a.txt") == Data("content".utf8))
    }

    @Test func renameKeepsLongNamesWithinTheLimit() throws {
        let server = try TestServer(["--on-conflict", "rename"])
        let name = "a." + String(repeating: "x", count: 253)
        for _ in 0..<2 {
            #expect(try server.client().upload(Multipart().file(name, Data("x".utf8))).status == 200)
        }
        #expect(server.storedNames.count == 2)
    }

    @Test func aSecondInstanceOnTheSamePortExits() throws {
        let server = try TestServer()
        let result = try TestServer.runToExit(["--port", "\(server.port)", "--host", "127.0.0.1",
                                               "--upload-dir", server.uploadDirectory.path])
        #expect(result.status == 1)
        #expect(result.output.contains("Address already in use"))
    }

    @Test func logLinesStayWholeUnderLongConcurrentPaths() throws {
        let server = try TestServer()
        let path = "/" + String(repeating: "p", count: 100_000)
        DispatchQueue.concurrentPerform(iterations: 6) { _ in
            for _ in 0..<20 { _ = try? server.client().get(path) }
        }
        #expect(server.waitForLog("\"status\":404"))
        usleep(200_000)
        let lines = server.logLines
        #expect(lines.count > 100)
        for line in lines {
            #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "\(line.prefix(80))")
            #expect(line.utf8.count < 8192)
        }
    }

    @Test func healthcheckTakesTheServersFlags() throws {
        let server = try TestServer()
        let result = try TestServer.runToExit(["healthcheck", "--port", "\(server.port)", "--host", "127.0.0.1"],
                                              environment: ["PORT": "1"])
        #expect(result.status == 0)
    }

    @Test func crossSiteUploadsAreRefused() throws {
        let server = try TestServer()
        let form = Multipart().file("a.txt", Data("x".utf8))
        let evil = try server.client().upload(form, headers: ["Host: 127.0.0.1", "Origin: http://evil.example"])
        #expect(evil.status == 403)
        #expect(evil.error?.contains("evil.example") == true)
        #expect(server.storedNames.isEmpty)
        let own = "127.0.0.1:\(server.port)"
        #expect(try server.client().upload(form, headers: ["Host: \(own)", "Origin: http://\(own)"]).status == 200)
        let allowed = try TestServer(["--allow-origin", "https://app.example"])
        let response = try allowed.client().upload(form, headers: ["Host: 127.0.0.1", "Origin: https://app.example"])
        #expect(response.status == 200)
        #expect(response.header("Access-Control-Allow-Origin") == "https://app.example")
    }

    @Test func metricsFollowTheToken() throws {
        let server = try TestServer(["--token", "t"])
        #expect(try server.client().get("/metrics").status == 401)
        let connection = try server.client()
        try connection.send("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n")
        #expect(try connection.readResponse()?.status == 200)
        #expect(try server.client().get("/healthz").status == 200)
    }

    @Test func anExposedServerWithoutATokenSaysSo() throws {
        let exposed = try TestServer(["--host", "0.0.0.0"])
        #expect(exposed.waitForLog("\"event\":\"no_token\""))  // the line after `started`
        let local = try TestServer()
        #expect(!local.logText.contains("no_token"))
    }

    @Test func fsyncStoresAsUsual() throws {
        let server = try TestServer(["--fsync"])
        #expect(server.logText.contains("\"fsync\":true"))
        let data = randomData(200_000)
        #expect(try server.client().upload(Multipart().file("a.bin", data).file("b.bin", data)).status == 200)
        #expect(server.contents(of: "b.bin") == data)
    }
}

/// A browser's request must name this server in `Host` (DNS rebinding), and an
/// allowed page sees every answer, errors included.
@Suite struct BrowserRequestTests {
    @Test func aRebindingPageCannotUpload() throws {
        let server = try TestServer()
        let attacker = "attacker.example:\(server.port)"
        // After rebinding, the page's origin and the request's Host agree, on the attacker's name.
        let rebound = try server.client().put("/upload/a.txt", Data("evil".utf8),
                                              headers: ["Host: \(attacker)", "Origin: http://\(attacker)"])
        #expect(rebound.status == 403)
        #expect(rebound.error?.contains("--public-name") == true)
        let fetchOnly = try server.client().put("/upload/a.txt", Data("evil".utf8),
                                                headers: ["Host: \(attacker)", "Sec-Fetch-Site: same-origin"])
        #expect(fetchOnly.status == 403)
        let preflight = try server.client()
        try preflight.send("OPTIONS /upload/a.txt HTTP/1.1\r\nHost: \(attacker)\r\nOrigin: http://\(attacker)\r\n"
                           + "Access-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n")
        #expect(try preflight.readResponse()?.status == 403)
        #expect(server.storedNames.isEmpty)
        // The server's own names: IP literals, localhost, and --public-name.
        for host in ["127.0.0.1:\(server.port)", "localhost:\(server.port)", "[::1]:\(server.port)", "LOCALHOST."] {
            let own = try server.client().put("/upload/b.txt", Data("ok".utf8), headers: ["Host: \(host)", "Origin: http://\(host)"])
            #expect(own.status == 201 || own.status == 200, "\(host)")
        }
        // Scripts send neither Origin nor Sec-Fetch-*: any Host works for them.
        #expect(try server.client().put("/upload/c.txt", Data("ok".utf8), headers: ["Host: anything.example"]).status == 201)
        let named = try TestServer(["--public-name", "uploads.example.com"])
        let site = "uploads.example.com:\(named.port)"
        #expect(try named.client().put("/upload/d.txt", Data("ok".utf8), headers: ["Host: \(site)", "Origin: http://\(site)"]).status == 201)
        #expect(try named.client().put("/upload/d.txt", Data("x".utf8), headers: ["Host: \(attacker)", "Origin: http://\(attacker)"]).status == 403)
    }

    @Test func anAllowedPageSeesEarlyErrors() throws {
        let server = try TestServer(["--allow-origin", "https://app.example", "--token", "t", "--max-upload-size", "1KiB"])
        let page = ["Host: 127.0.0.1:\(server.port)", "Origin: https://app.example"]
        let form = Multipart().file("a.txt", Data("x".utf8))
        let unauthorized = try server.client().upload(form, headers: page)
        #expect(unauthorized.status == 401)
        #expect(unauthorized.header("Access-Control-Allow-Origin") == "https://app.example")
        let tooLarge = try server.client().put("/upload/big.bin", randomData(4096), headers: page + ["Authorization: Bearer t"])
        #expect(tooLarge.status == 413)
        #expect(tooLarge.header("Access-Control-Allow-Origin") == "https://app.example")
        let badName = try server.client().put("/upload/..", Data("x".utf8), headers: page + ["Authorization: Bearer t"])
        #expect(badName.status == 400)
        #expect(badName.header("Access-Control-Allow-Origin") == "https://app.example")
        let connection = try server.client()
        try connection.send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://app.example\r\n"
                            + "Authorization: Bearer t\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
        let unsupported = try connection.readResponse()
        #expect(unsupported?.status == 415)
        #expect(unsupported?.header("Access-Control-Allow-Origin") == "https://app.example")
        // Another page learns nothing: no CORS header on its refusal.
        let other = try server.client().upload(form, headers: ["Host: 127.0.0.1", "Origin: https://evil.example"])
        #expect(other.status == 403)
        #expect(other.header("Access-Control-Allow-Origin") == nil)
    }
}

@Suite struct DescriptorTests {
    /// At --threads 64 the workers' epoll and eventfd descriptors alone take 128
    /// of 400: what is left must still be shared without a `Too many open files`.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit"), "needs prlimit (util-linux)"))
    func aTightOpenFilesLimitAnswers503NotAnError() throws {
        ConnectionTests.raiseOpenFileLimit()
        let server = try TestServer(["--threads", "64"], prefix: ["/usr/bin/prlimit", "--nofile=400:400"])
        var idle: [HTTPConnection] = []
        for index in 0..<250 {
            let source = "127.0.0.\(10 + index % 5)"
            guard let connection = try? HTTPConnection(port: server.port, source: source, timeoutSeconds: 10) else { break }
            try? connection.send("GET /healthz HTTP/1.1\r\nHo")
            idle.append(connection)
        }
        usleep(300_000)
        // Another address is admitted beside the flood; its files fit the budget,
        // and past the budget the answer is 503, never 500.
        for (count, statuses) in [(60, [200]), (100, [200, 503])] {
            var form = Multipart()
            for index in 0..<count { form = form.file("f\(index).bin", randomData(100)) }
            let connection = try HTTPConnection(port: server.port, source: "127.0.0.2", timeoutSeconds: 10)
            let response = try connection.upload(form)
            #expect(statuses.contains(response.status), "\(count) files: \(response.status) \(response.text)")
            if response.status == 503 { #expect(response.header("Retry-After") != nil) }
        }
        #expect(!server.logText.contains("Too many open files"))
    }
}
