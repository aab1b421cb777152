import Foundation
import Glibc
import Testing

/// The review's attacks on the promises (issue 11), each failing before its fix.
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

    /// Issue 11.10 and 11.11: valid framing other multipart writers use (needs
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

    @Test func oneAddressCannotTakeEveryConnection() throws {
        let server = try TestServer(["--connections-per-address", "8", "--timeout", "20"])
        var idle: [HTTPConnection] = []
        for _ in 0..<8 {
            let connection = try server.client()
            try connection.send("GET /healthz HTTP/1.1\r\nHo")
            idle.append(connection)
        }
        // connect(2) returns before the server accepts: wait until it holds all
        // eight (and its listening socket), so that the ninth is the one refused.
        for _ in 0..<200 where server.socketCount < 9 { usleep(10_000) }
        let ninth = try server.client()
        try? ninth.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect((try? ninth.readResponse()) ?? nil == nil, "a ninth connection from one address is refused")
        let started = Date()
        let other = try HTTPConnection(port: server.port, source: "127.0.0.2")
        #expect(try other.get("/healthz").status == 200)
        #expect(Date().timeIntervalSince(started) < 1)
        #expect(server.logText.contains("\"connections_per_address\":8"))
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
        let evil = try server.client().upload(form, headers: ["Origin: http://evil.example"])
        #expect(evil.status == 403)
        #expect(evil.error?.contains("evil.example") == true)
        #expect(server.storedNames.isEmpty)
        #expect(try server.client().upload(form, headers: ["Origin: http://test"]).status == 200)  // Host: test
        let allowed = try TestServer(["--allow-origin", "https://app.example"])
        let response = try allowed.client().upload(form, headers: ["Origin: https://app.example"])
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
