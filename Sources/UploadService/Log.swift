import MicroHTTPD

/// JSON lines on stdout: one per request (the access log) and one per event.
public struct Log: Sendable {
    public init() {}

    public func info(_ event: String, _ fields: [(String, JSON)] = []) { write("info", event, fields) }
    public func warning(_ event: String, _ fields: [(String, JSON)] = []) { write("warning", event, fields) }
    public func error(_ event: String, _ fields: [(String, JSON)] = []) { write("error", event, fields) }

    func access(_ record: RequestRecord) {
        var fields: [(String, JSON)] = [
            ("time", .string(ProcessEnvironment.timestamp())),
            ("method", .string(record.method)),
            ("path", .string(record.path)),
            ("status", record.status.map { .number(Int64($0)) } ?? .null),
            ("bytes", .unsigned(record.bodyBytes)),
            ("duration_ms", .decimal(Double(record.durationNanoseconds / 1_000) / 1_000)),
            ("peer", .string(record.peer)),
        ]
        if record.termination != .completed { fields.append(("ended", .string(record.termination.label))) }
        ProcessEnvironment.writeLine(JSON.object(fields).text)
    }

    private func write(_ level: String, _ event: String, _ fields: [(String, JSON)]) {
        let line = JSON.object([("time", .string(ProcessEnvironment.timestamp())), ("level", .string(level)),
                                ("event", .string(event))] + fields)
        ProcessEnvironment.writeLine(line.text)
    }
}
