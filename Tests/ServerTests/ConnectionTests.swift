import Foundation
import Glibc
import Testing

/// The connection policy: one address may use the server while it has room,
/// but never the slots its neighbours need; whoever is refused is told so.
@Suite struct ConnectionTests {
    init() { Self.raiseOpenFileLimit() }

    /// The test process holds thousands of sockets.
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// Connections to the server, each connected before the next is opened.
    static func open(_ count: Int, to server: TestServer, source: String? = nil) throws -> [HTTPConnection] {
        try (0..<count).map { _ in try HTTPConnection(port: server.port, source: source, timeoutSeconds: 30) }
    }

    @Test func twoHundredParallelUploadsFromOneAddressAllSucceed() throws {
        let server = try TestServer()
        let connections = try Self.open(200, to: server)
        let forms = (0..<200).map { Multipart().file("f\($0).txt", Data("\($0)".utf8)) }
        for (form, connection) in zip(forms, connections) {
            try connection.startUpload(form, sending: form.body.count - 10)
        }
        var statuses: [Int: Int] = [:]
        for (form, connection) in zip(forms, connections) {
            try? connection.send(form.body.suffix(10))
            statuses[(try? connection.readResponse())??.status ?? 0, default: 0] += 1
        }
        #expect(statuses == [200: 200], "status: count (0: no answer)")
        #expect(server.storedNames.count == 200)
    }

    @Test func threeThousandIdleKeepAliveConnectionsFromOneAddress() throws {
        let server = try TestServer()
        let connections = try Self.open(3000, to: server)
        var answered = 0
        for round in 0..<2 {
            for connection in connections where (try? connection.get("/healthz", keepAlive: true).status) == 200 {
                answered += 1
            }
            #expect(answered == 3000 * (round + 1), "round \(round)")
        }
    }

    @Test func aFloodFromOneAddressLeavesRoomForOthers() throws {
        let server = try TestServer(["--connection-limit", "400"])
        // Headers that never end, from one address: 360 admitted (the last tenth of
        // the 400 slots is kept), then refused ones awaiting their answer.
        var flood: [HTTPConnection] = []
        for _ in 0..<380 {
            let connection = try HTTPConnection(port: server.port, timeoutSeconds: 30)
            try? connection.send("GET /healthz HTTP/1.1\r\nHo")
            flood.append(connection)
        }
        #expect(server.waitForLog("\"event\":\"connection_refused\""))
        for source in ["127.0.0.2", "127.0.0.3"] {
            let started = Date()
            #expect(try HTTPConnection(port: server.port, source: source, timeoutSeconds: 5).get("/healthz").status == 200)
            #expect(Date().timeIntervalSince(started) < 1)
        }
        // The flooder's newest connection is the refused one, and it is told why.
        let refused = try HTTPConnection(port: server.port, timeoutSeconds: 5)
        let answer = try refused.get("/healthz")
        #expect(answer.status == 503)
        #expect(answer.header("Retry-After") == "1")
        #expect(answer.error?.contains("busy") == true)
        let metrics = try HTTPConnection(port: server.port, source: "127.0.0.2").get("/metrics").text
        #expect(metrics.contains("upload_server_connections_refused_total{reason=\"busy\"}"))
        #expect(!metrics.contains("upload_server_connections_refused_total{reason=\"busy\"} 0"))
        // Logged at most once a second for the address, not once per connection.
        let lines = server.logLines.filter { $0.contains("\"event\":\"connection_refused\"") }
        #expect((1...3).contains(lines.count), "\(lines.count) connection_refused lines")
        #expect(lines.first?.contains("\"address\":\"127.0.0.1\"") == true)
    }

    @Test func aHardCapRefusesTheFifthConnectionWith503() throws {
        let server = try TestServer(["--connections-per-address", "4"])
        let held = try Self.open(4, to: server)
        for connection in held { #expect(try connection.get("/healthz", keepAlive: true).status == 200) }
        let fifth = try server.client().get("/healthz")
        #expect(fifth.status == 503)
        #expect(fifth.header("Retry-After") == "1")
        #expect(fifth.error?.contains("--connections-per-address") == true)
        #expect(try HTTPConnection(port: server.port, source: "127.0.0.2").get("/healthz").status == 200)
        #expect(server.logText.contains("\"connections_per_address\":4"))
        #expect(server.waitForLog("\"reason\":\"address_limit\""))
        // A connection given back makes room again.
        held[0].reset()
        var status = 0
        for _ in 0..<100 where status != 200 {
            status = (try? server.client().get("/healthz").status) ?? 0
            if status != 200 { usleep(20_000) }
        }
        #expect(status == 200)
    }
}
