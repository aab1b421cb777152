import MicroHTTPD
import Platform

/// JSON lines on stdout: one per request (the access log) and one per event.
public struct Log: Sendable {
    /// What is logged of a request's path at most (and of its method, 32 bytes):
    /// a line stays readable and short enough to be written in one piece, and
    /// one client cannot make every line it causes 100 KB long.
    static let maximumPathBytes = 1024

    public init() {}

    /// One line for `event`, at its level, with `fields` after `time`, `level` and `event`.
    public func callAsFunction(_ event: LogEvent, _ fields: [(String, JSON)] = []) {
        let line = JSON.object([("time", .string(ProcessEnvironment.timestamp())), ("level", .string(event.level.rawValue)),
                                ("event", .string(event.rawValue))] + fields)
        ProcessEnvironment.writeLine(line.text)
    }

    func access(_ record: RequestRecord) {
        let path = Self.shortened(record.path)
        var line = JSONWriter(reserving: 200 + path.utf8.count)  // and the newline writeLine adds
        line.beginObject()
        line.key("time")
        line.string(ProcessEnvironment.timestamp())
        line.key("method")
        line.string(Self.shortened(record.method, to: 32))
        line.key("path")
        line.string(path)
        line.key("status")
        line.literal(record.status.map { String($0) } ?? "null")
        line.key("bytes")
        line.literal(String(record.bodyBytes))
        line.key("duration_ms")
        line.literal(Self.milliseconds(record.durationNanoseconds))
        line.key("peer")
        line.string(record.peer)
        if record.termination != .completed {
            line.key("ended")
            line.string(record.termination.label)
        }
        line.endObject()
        ProcessEnvironment.writeLine(line.text)
    }

    /// The text, cut before `limit` bytes at a character boundary, with `…`.
    static func shortened(_ path: String, to limit: Int = maximumPathBytes) -> String {
        let utf8 = path.utf8
        guard utf8.count > limit else { return path }
        var end = utf8.index(utf8.startIndex, offsetBy: limit)
        while end > utf8.startIndex && utf8[end] & 0xC0 == 0x80 { end = utf8.index(before: end) }  // a continuation byte
        return String(path[..<end]) + "…"
    }

    /// `12.345`: milliseconds with three decimals, without formatting a Double.
    static func milliseconds(_ nanoseconds: UInt64) -> String {
        let microseconds = nanoseconds / 1_000
        let fraction = String(microseconds % 1_000)
        return String(microseconds / 1_000) + "." + String(repeating: "0", count: 3 - fraction.utf8.count) + fraction
    }
}

/// Every event the server logs besides the access lines; docs/operations.md
/// lists them (a test compares the two).
public enum LogEvent: String, CaseIterable, Sendable {
    case started
    case connectionLimitLowered = "connection_limit_lowered"
    case noToken = "no_token"
    case networkFilesystem = "network_filesystem"
    case removedLeftovers = "removed_leftovers"
    case resumableUploads = "resumable_uploads"
    case resumableExpired = "resumable_expired"
    case resumableLimit = "resumable_limit"
    case resumableCutOff = "resumable_cut_off"
    case connectionRefused = "connection_refused"
    case uploadFailed = "upload_failed"
    case uploadAbandoned = "upload_abandoned"
    case uploadDirectoryUnavailable = "upload_dir_unavailable"
    case httpDaemon = "http_daemon"
    case stopping
    case stopped

    public enum Level: String, Sendable { case info, warning, error }

    public var level: Level {
        switch self {
        case .started, .removedLeftovers, .resumableUploads, .resumableExpired, .stopping, .stopped: .info
        case .connectionLimitLowered, .noToken, .networkFilesystem, .connectionRefused, .resumableLimit,
             .resumableCutOff, .uploadFailed, .uploadAbandoned, .httpDaemon: .warning
        case .uploadDirectoryUnavailable: .error
        }
    }
}
