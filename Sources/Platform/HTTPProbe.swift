import Glibc

/// A minimal HTTP/1.1 GET for the `healthcheck` sub-command: the image has no
/// curl, and pulling in an HTTP client library would grow the binary.
public enum HTTPProbe {
    /// Returns the status code of `GET path`, or throws on a connection failure.
    public static func get(_ address: SocketAddress, path: String, timeoutSeconds: Int) throws(SystemError) -> Int {
        let fd = try syscall("socket") {
            socket(address.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        try syscall("connect \(address)") { address.withSockaddr { connect(fd, $0, $1) } }

        let request = "GET \(path) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\n\r\n"
        let sent = try syscall("send") {
            request.utf8CString.withUnsafeBytes { send(fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) }
        }
        guard sent == request.utf8.count else { throw SystemError("send", code: EPIPE) }

        // "HTTP/1.1 200 OK": the status is all we need.
        var head = [UInt8](repeating: 0, count: 64)
        var received = 0
        while received < 12 {
            let count = try syscall("receive") {
                head.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + received, $0.count - received, 0) }
            }
            guard count > 0 else { throw SystemError("receive", code: ECONNRESET) }
            received += count
        }
        let line = String(decoding: head[..<received], as: UTF8.self)
        guard line.hasPrefix("HTTP/1."), let status = Int(line.dropFirst(9).prefix(3)) else {
            throw SystemError("parse response", code: EPROTO)
        }
        return status
    }
}
