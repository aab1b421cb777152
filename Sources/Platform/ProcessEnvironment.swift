import CPlatform
import Glibc

/// Process-wide facilities: signals, limits, identity, clocks and output.
public enum ProcessEnvironment {
    /// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts
    /// later, so that only `waitForTerminationSignal` sees them. As PID 1 in a
    /// container no default action exists, so they must be taken this way.
    public static func blockTerminationSignals() {
        signal(SIGPIPE, SIG_IGN)
        var set = terminationSignals()
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Waits for SIGTERM or SIGINT and returns its name.
    public static func waitForTerminationSignal() -> String {
        var set = terminationSignals()
        var received: Int32 = 0
        while sigwait(&set, &received) != 0 {}
        return received == SIGINT ? "SIGINT" : "SIGTERM"
    }

    private static func terminationSignals() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        return set
    }

    /// Raises the soft limit on open files to the hard limit; returns the new soft limit.
    @discardableResult
    public static func raiseOpenFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return UInt64(limit.rlim_cur)
    }

    public static var onlineProcessors: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
    public static var userID: UInt32 { getuid() }
    public static var groupID: UInt32 { getgid() }

    public static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// Allocations of 64 KiB and more (a post-processor's buffer, a staged file's
    /// held block) get mappings of their own, returned to the system when freed.
    /// glibc would otherwise raise this threshold after the first such free and
    /// keep them in its heap, where the resident size drifts with the uploads.
    public static func mapLargeAllocations() {
        _ = mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    }

    public static func sleep(milliseconds: Int) {
        usleep(UInt32(milliseconds * 1000))
    }

    /// Monotonic time in nanoseconds, for durations.
    public static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// The current UTC time as `2026-11-29T10:00:00.123Z`.
    public static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let fields: [(value: Int, digits: Int, separator: UInt8)] = [
            (Int(parts.tm_year) + 1900, 4, UInt8(ascii: "-")), (Int(parts.tm_mon) + 1, 2, UInt8(ascii: "-")),
            (Int(parts.tm_mday), 2, UInt8(ascii: "T")), (Int(parts.tm_hour), 2, UInt8(ascii: ":")),
            (Int(parts.tm_min), 2, UInt8(ascii: ":")), (Int(parts.tm_sec), 2, UInt8(ascii: ".")),
            (now.tv_nsec / 1_000_000, 3, UInt8(ascii: "Z")),
        ]
        return String(unsafeUninitializedCapacity: 24) { buffer in
            var position = 0
            for field in fields {
                var value = field.value
                for index in stride(from: field.digits - 1, through: 0, by: -1) {
                    buffer[position + index] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
                buffer[position + field.digits] = field.separator
                position += field.digits + 1
            }
            return position
        }
    }

    /// Writes one line, whole: lines from several threads never interleave.
    /// write(2) is atomic on a pipe (stdout under Docker) up to PIPE_BUF, so a
    /// line that short goes out in one write and only shares the lock; a longer
    /// one, written in pieces, holds it alone. Nothing waits in a buffer.
    public static func writeLine(_ line: consuming String, toStandardError: Bool = false) {
        var text = line  // a line passed at its last use is moved here, not copied
        text.append("\n")
        let fd: Int32 = toStandardError ? 2 : 1
        text.withUTF8 { bytes in
            outputLock.withLock(exclusive: bytes.count > pipeAtomicBytes) {
                var offset = 0
                while offset < bytes.count {
                    guard let written = try? syscall("write", { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) })
                    else { return }
                    offset += written
                }
            }
        }
    }

    /// PIPE_BUF on Linux.
    private static let pipeAtomicBytes = 4096
    private static let outputLock = ReadWriteLock()

    /// The version this binary was built from: `1.2.3` from a release tag,
    /// `0.0.0-dev+<sha>` otherwise (scripts/swift).
    public static var buildVersion: String { String(cString: upload_server_version()) }
    /// The full commit, or `unknown`.
    public static var buildRevision: String { String(cString: upload_server_revision()) }
}

extension ProcessEnvironment {
    /// The contents of a small text file (a secret), or nil when it cannot be read.
    public static func readSmallFile(_ path: String, limit: Int = 64 * 1024) -> String? {
        guard let fd = try? syscall("open \(path)", { open(path, O_RDONLY | O_CLOEXEC) }) else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= limit {
            guard let count = try? syscall("read \(path)", { buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } })
            else { return nil }
            if count == 0 { return String(validating: bytes, as: UTF8.self) }
            bytes += buffer[..<count]
        }
        return nil
    }
}

/// pthread's reader-writer lock: shared holders do not wait for each other.
final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(lock, nil)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func withLock<Result>(exclusive: Bool, _ body: () throws -> Result) rethrows -> Result {
        if exclusive { pthread_rwlock_wrlock(lock) } else { pthread_rwlock_rdlock(lock) }
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
