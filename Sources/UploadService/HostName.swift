import Platform

/// The `Host` header of a request, judged against the server's names.
enum HostName {
    /// Whether `host` (`name`, `name:port`, `[v6]:port`) is an IP literal,
    /// `localhost`, or one of `publicNames` (lower case). Names compare without
    /// case and without a trailing dot.
    static func isServerName(_ host: String, publicNames: [String]) -> Bool {
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let rest = host[host.index(after: close)...]
            return (rest.isEmpty || isPort(rest.dropFirst()) && rest.hasPrefix(":"))
                && SocketAddress(host: String(host[...close]), port: 0) != nil
        }
        var name = Substring(host)
        if let colon = name.lastIndex(of: ":") {
            guard isPort(name[name.index(after: colon)...]) else { return false }
            name = name[..<colon]
        }
        if name.hasSuffix(".") { name = name.dropLast() }
        let lowered = name.lowercased()
        guard !lowered.isEmpty else { return false }
        if lowered == "localhost" || publicNames.contains(lowered) { return true }
        return !lowered.contains(":") && SocketAddress(host: lowered, port: 0) != nil
    }

    private static func isPort(_ text: Substring) -> Bool {
        !text.isEmpty && text.utf8.count <= 5 && text.utf8.allSatisfy { (0x30...0x39).contains($0) }
    }
}
