import Foundation
import Testing

/// What this machine allows: a test that needs more is skipped with the reason
/// (Swift Testing prints it), never failed. A plain root container has no IPv6
/// and no CAP_SYS_ADMIN.
enum Capabilities {
    /// An IPv6 socket can bind ::1.
    static let ipv6: Bool = {
        let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr = in6addr_loopback
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
            }
        }
    }()

    /// A tmpfs can be mounted (root with CAP_SYS_ADMIN): tried once, on a scratch directory.
    static let mountTmpfs: Bool = {
        guard getuid() == 0 else { return false }
        let point = FileManager.default.temporaryDirectory.appendingPathComponent("upload-server-probe-\(UUID().uuidString)")
        guard (try? FileManager.default.createDirectory(at: point, withIntermediateDirectories: true)) != nil else { return false }
        defer { try? FileManager.default.removeItem(at: point) }
        guard run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", point.path]) else { return false }
        _ = run("/bin/umount", [point.path])
        return true
    }()

    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}
