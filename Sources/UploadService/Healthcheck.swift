import Platform

/// `upload-server healthcheck`: the image has no curl or shell.
public enum Healthcheck {
    public static func run(url text: String, timeoutSeconds: Int) -> Int32 {
        guard let url = HealthcheckURL(text), let address = SocketAddress(host: url.host, port: url.port) else {
            ProcessEnvironment.writeLine("healthcheck: invalid URL \(text)", toStandardError: true)
            return 1
        }
        do {
            let status = try HTTPProbe.get(address, path: url.path, timeoutSeconds: timeoutSeconds)
            ProcessEnvironment.writeLine("healthcheck: \(text) answered \(status)")
            return status == 200 ? 0 : 1
        } catch {
            ProcessEnvironment.writeLine("healthcheck: \(text): \(error)", toStandardError: true)
            return 1
        }
    }
}

/// `http://HOST:PORT/PATH` with an IP literal host.
public struct HealthcheckURL: Equatable {
    public let host: String
    public let port: UInt16
    public let path: String

    public init?(_ text: String) {
        guard text.hasPrefix("http://") else { return nil }
        let rest = text.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        path = rest.count > authority.count ? String(rest.dropFirst(authority.count)) : "/"
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = String(authority[authority.startIndex...close])
            let after = authority[authority.index(after: close)...]
            port = after.isEmpty ? 80 : (after.hasPrefix(":") ? UInt16(after.dropFirst()) : nil) ?? 0
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            port = UInt16(authority[authority.index(after: colon)...]) ?? 0
        } else {
            host = String(authority)
            port = 80
        }
        guard port != 0, (SocketAddress(host: host, port: 0) != nil) else { return nil }
    }
}
