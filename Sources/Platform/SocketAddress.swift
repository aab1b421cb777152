import Glibc

/// An IPv4 or IPv6 address and port. Only literals: name resolution would need
/// NSS libraries that a static binary in a scratch image does not have.
public struct SocketAddress: Sendable, CustomStringConvertible {
    private enum Storage: Sendable {
        case v4(sockaddr_in)
        case v6(sockaddr_in6)
    }
    private let storage: Storage

    /// Parses `127.0.0.1`, `::1` or `[::1]`; `localhost` means 127.0.0.1.
    public init?(host: String, port: UInt16) {
        var literal = host == "localhost" ? "127.0.0.1" : host
        if literal.hasPrefix("[") && literal.hasSuffix("]") {
            literal = String(literal.dropFirst().dropLast())
        }
        var v4 = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: port.bigEndian, sin_addr: in_addr(), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        var v6 = sockaddr_in6()
        v6.sin6_family = sa_family_t(AF_INET6)
        v6.sin6_port = port.bigEndian
        if inet_pton(AF_INET, literal, &v4.sin_addr) == 1 {
            storage = .v4(v4)
        } else if inet_pton(AF_INET6, literal, &v6.sin6_addr) == 1 {
            storage = .v6(v6)
        } else {
            return nil
        }
    }

    public init?(_ address: UnsafePointer<sockaddr>) {
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            storage = .v4(UnsafeRawPointer(address).load(as: sockaddr_in.self))
        case AF_INET6:
            storage = .v6(UnsafeRawPointer(address).load(as: sockaddr_in6.self))
        default:
            return nil
        }
    }

    public var isIPv6: Bool {
        if case .v6 = storage { return true }
        return false
    }

    /// 0.0.0.0 or ::
    public var isWildcard: Bool { host == "0.0.0.0" || host == "::" }

    /// 127.0.0.0/8 or ::1: reachable from this machine (or container) only.
    public var isLoopback: Bool { host.hasPrefix("127.") || host == "::1" }

    public var port: UInt16 {
        switch storage {
        case .v4(let address): UInt16(bigEndian: address.sin_port)
        case .v6(let address): UInt16(bigEndian: address.sin6_port)
        }
    }

    public var host: String {
        // Runs for every request (the access log's peer): no heap buffer.
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(INET6_ADDRSTRLEN)) { text in
            let result = switch storage {
            case .v4(var address): inet_ntop(AF_INET, &address.sin_addr, text.baseAddress, socklen_t(text.count))
            case .v6(var address): inet_ntop(AF_INET6, &address.sin6_addr, text.baseAddress, socklen_t(text.count))
            }
            return result.map { String(cString: $0) } ?? ""
        }
    }

    /// `1.2.3.4:80` or `[::1]:80`.
    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Lends the C form of the address for the duration of `body`.
    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch storage {
        case .v4(var address):
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6(var address):
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }
}

/// The clients one connection policy treats as one: an IPv4 address, or an IPv6
/// /64 (one host is given a whole /64 and can use any address in it). An
/// IPv4-mapped IPv6 address (a dual-stack listener) is its IPv4 address.
public struct AddressGroup: Hashable, Sendable, CustomStringConvertible {
    /// The IPv4 address, or the /64 prefix, in network byte order.
    private let bits: UInt64
    private let isIPv6: Bool

    public init(ipv4 bits: UInt32) {
        self.bits = UInt64(bits)
        isIPv6 = false
    }

    public init(ipv6Prefix bits: UInt64) {
        self.bits = bits
        isIPv6 = true
    }

    public var description: String {
        if !isIPv6 {
            return (0..<4).map { String((bits >> (24 - 8 * $0)) & 0xff) }.joined(separator: ".")
        }
        let words = (0..<4).map { String((bits >> (48 - 16 * $0)) & 0xffff, radix: 16) }
        return words.joined(separator: ":") + "::/64"
    }
}

extension SocketAddress {
    public var group: AddressGroup {
        switch storage {
        case .v4(let address):
            return AddressGroup(ipv4: UInt32(bigEndian: address.sin_addr.s_addr))
        case .v6(let address):
            let bytes = withUnsafeBytes(of: address.sin6_addr) { Array($0) }
            let isMapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
            if isMapped {
                return AddressGroup(ipv4: bytes[12..<16].reduce(0) { $0 << 8 | UInt32($1) })
            }
            return AddressGroup(ipv6Prefix: bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) })
        }
    }
}
