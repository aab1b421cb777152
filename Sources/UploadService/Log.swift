import MicroHTTPD
import Platform

/// JSON lines on stdout: one per request (the access log) and one per event.
public struct Log: Sendable {
    /// What is logged of a request's path at most: a line stays readable, and
    /// one client cannot make every line it causes 100 KB long.
    static let maximumPathBytes = 1024

    public init() {}

    public func info(_ event: String, _ fields: [(String, JSON)] = []) { write("info", event, fields) }
    public func warning(_ event: String, _ fields: [(String, JSON)] = []) { write("warning", event, fields) }
    public func error(_ event: String, _ fields: [(String, JSON)] = []) { write("error", event, fields) }

    /// Built by hand: it runs for every request.
    func access(_ record: RequestRecord) {
        var line = "{\"time\":\""
        let path = Self.shortened(record.path)
        line.reserveCapacity(200 + path.utf8.count)  // and the newline writeLine adds
        line += ProcessEnvironment.timestamp()
        line += "\",\"method\":"
        JSON.appendString(record.method, to: &line)
        line += ",\"path\":"
        JSON.appendString(path, to: &line)
        line += ",\"status\":"
        line += record.status.map { String($0) } ?? "null"
        line += ",\"bytes\":"
        line += String(record.bodyBytes)
        line += ",\"duration_ms\":"
        appendMilliseconds(record.durationNanoseconds, to: &line)
        line += ",\"peer\":"
        JSON.appendString(record.peer, to: &line)
        if record.termination != .completed {
            line += ",\"ended\":\""
            line += record.termination.label
            line += "\""
        }
        line += "}"
        ProcessEnvironment.writeLine(line)
    }

    /// The path, cut at a character boundary with `…` when it is too long.
    static func shortened(_ path: String) -> String {
        guard path.utf8.count > maximumPathBytes else { return path }
        var end = path.utf8.index(path.utf8.startIndex, offsetBy: maximumPathBytes)
        while end > path.startIndex && !path.unicodeScalars.indices.contains(end) { end = path.utf8.index(before: end) }
        return String(path[..<end]) + "…"
    }

    /// `12.345`: milliseconds with three decimals, without formatting a Double.
    private func appendMilliseconds(_ nanoseconds: UInt64, to line: inout String) {
        let microseconds = nanoseconds / 1_000
        line += String(microseconds / 1_000)
        let fraction = String(microseconds % 1_000)
        line += "."
        line += String(repeating: "0", count: 3 - fraction.utf8.count)
        line += fraction
    }

    private func write(_ level: String, _ event: String, _ fields: [(String, JSON)]) {
        let line = JSON.object([("time", .string(ProcessEnvironment.timestamp())), ("level", .string(level)),
                                ("event", .string(event))] + fields)
        ProcessEnvironment.writeLine(line.text)
    }
}
