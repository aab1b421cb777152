import Foundation
import Glibc

/// A raw HTTP/1.1 connection, so that tests control every byte: chunked bodies,
/// `Expect: 100-continue`, keep-alive, and bodies cut off part way.
final class HTTPConnection {
    struct Response {
        let status: Int
        let headers: [(String, String)]
        let body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
        /// The `error` member of a JSON error body.
        var error: String? {
            (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["error"] as? String
        }
        /// `files` of a 200 answer as (name, size).
        var files: [(name: String, size: Int)] {
            let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any]
            let files = object?["files"] as? [[String: Any]] ?? []
            return files.map { ($0["name"] as? String ?? "", $0["size"] as? Int ?? -1) }
        }
    }

    private let fd: Int32
    private var buffer = Data()

    /// `source`: the client's own address (another loopback address is another client).
    init(port: UInt16, host: String = "127.0.0.1", source: String? = nil, timeoutSeconds: Int = 20) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { throw TestFailure("bind \(source): errno \(errno)") }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw TestFailure("connect to port \(port): errno \(errno)")
        }
    }

    deinit { close(fd) }

    func send(_ data: Data) throws {
        try data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let sent = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                guard sent > 0 else { throw TestFailure("send: errno \(errno)") }
                offset += sent
            }
        }
    }

    func send(_ text: String) throws { try send(Data(text.utf8)) }

    /// Abortive close: the server sees a reset, as when a client process dies.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// True when the server closed the connection (EOF or reset) before sending anything more.
    func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        let count = recv(fd, &byte, 1, 0)
        return count == 0 || (count < 0 && errno == ECONNRESET)
    }

    /// Reads one response; nil if the connection closed first.
    func readResponse(toHead: Bool = false) throws -> Response? {
        guard let headEnd = try fill(until: { $0.range(of: Data("\r\n\r\n".utf8)) }) else { return nil }
        let head = String(decoding: buffer[buffer.startIndex..<headEnd.lowerBound], as: UTF8.self)
        buffer.removeSubrange(buffer.startIndex..<headEnd.upperBound)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw TestFailure("bad status line in \(head)") }
        let headers = lines.compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let response0 = Response(status: status, headers: headers, body: Data())
        let length = Int(response0.header("Content-Length") ?? "0") ?? 0
        if status == 100 || toHead { return response0 }
        guard try fill(until: { $0.count >= length ? $0.startIndex..<$0.startIndex : nil }) != nil else {
            throw TestFailure("connection closed inside a response body")
        }
        let body = buffer.prefix(length)
        buffer.removeFirst(length)
        return Response(status: status, headers: headers, body: Data(body))
    }

    private func fill(until found: (Data) -> Range<Data.Index>?) throws -> Range<Data.Index>? {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let range = found(buffer) { return range }
            let count = recv(fd, &chunk, chunk.count, 0)
            if count == 0 || (count < 0 && errno == ECONNRESET) { return nil }
            guard count > 0 else { throw TestFailure("recv: errno \(errno)") }
            buffer.append(contentsOf: chunk[0..<count])
        }
    }
}

/// A multipart/form-data body.
struct Multipart {
    let boundary: String
    private(set) var parts: [Data] = []

    init(boundary: String = "----upload-server-test-\(UInt32.random(in: 0 ... .max))") { self.boundary = boundary }

    func file(_ filename: String, _ content: Data, field: String = "file") -> Multipart {
        var copy = self
        var part = Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(field)\"; filename=\"\(filename)\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8)
        part.append(content)
        part.append(Data("\r\n".utf8))
        copy.parts.append(part)
        return copy
    }

    func field(_ name: String, _ value: String) -> Multipart {
        var copy = self
        copy.parts.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8))
        return copy
    }

    var contentType: String { "multipart/form-data; boundary=\(boundary)" }

    var body: Data {
        var data = Data()
        for part in parts { data.append(part) }
        data.append(Data("--\(boundary)--\r\n".utf8))
        return data
    }
}

extension HTTPConnection {
    /// POST /upload with a Content-Length body; returns the response.
    func upload(_ form: Multipart, headers: [String] = [], keepAlive: Bool = false) throws -> Response {
        let body = form.body
        var head = "POST /upload HTTP/1.1\r\n\(Self.defaultHost(headers))Content-Type: \(form.contentType)\r\nContent-Length: \(body.count)\r\n"
        for header in headers { head += header + "\r\n" }
        if !keepAlive { head += "Connection: close\r\n" }
        try send(head + "\r\n")
        try send(body)
        guard let response = try readResponse() else { throw TestFailure("no response") }
        return response
    }

    /// Sends the head of POST /upload with a Content-Length body and the first
    /// `byteCount` bytes of that body; the test sends the rest, or does not.
    func startUpload(_ form: Multipart, sending byteCount: Int) throws {
        try send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: \(form.contentType)\r\nContent-Length: \(form.body.count)\r\n\r\n")
        try send(form.body.prefix(byteCount))
    }

    /// PUT with a Content-Length body.
    func put(_ path: String, _ body: Data, headers: [String] = []) throws -> Response {
        var head = "PUT \(path) HTTP/1.1\r\n\(Self.defaultHost(headers))Content-Length: \(body.count)\r\nConnection: close\r\n"
        for header in headers { head += header + "\r\n" }
        try send(head + "\r\n")
        try send(body)
        guard let response = try readResponse() else { throw TestFailure("no response") }
        return response
    }

    /// `Host: test` unless the test gives its own.
    static func defaultHost(_ headers: [String]) -> String {
        headers.contains { $0.lowercased().hasPrefix("host:") } ? "" : "Host: test\r\n"
    }

    func get(_ path: String, method: String = "GET", keepAlive: Bool = false) throws -> Response {
        try send("\(method) \(path) HTTP/1.1\r\nHost: test\r\n\(keepAlive ? "" : "Connection: close\r\n")\r\n")
        guard let response = try readResponse(toHead: method == "HEAD") else { throw TestFailure("no response") }
        return response
    }
}

/// Random bytes of a given size.
func randomData(_ count: Int) -> Data {
    var generator = SystemRandomNumberGenerator()
    var data = Data(count: count)
    data.withUnsafeMutableBytes { bytes in
        let words = bytes.bindMemory(to: UInt8.self)
        var index = 0
        while index + 8 <= count {
            let value = generator.next()
            withUnsafeBytes(of: value) { for byte in $0 { words[index] = byte; index += 1 } }
        }
        while index < count { words[index] = UInt8.random(in: 0...255); index += 1 }
    }
    return data
}
