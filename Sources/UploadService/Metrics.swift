import MicroHTTPD
import Platform
import Synchronization

/// Counters for `GET /metrics`, in Prometheus' text format. Requests are
/// counted once, from their finished record (`record`), whoever answered them:
/// the application, the library on its own, or nobody.
public final class Metrics: Sendable {
    /// One counter; a class so that an array can hold them.
    private final class Counter: Sendable {
        let value = Atomic<UInt64>(0)
        func increment() { value.add(1, ordering: .relaxed) }
        var count: UInt64 { value.load(ordering: .relaxed) }
    }
    /// Responses by status, 100 to 599; failures are derived from them when
    /// rendered. Atomics, not a lock: every request counts, from every thread.
    private let responses = (0..<500).map { _ in Counter() }
    private let unanswered = Counter()
    private let cutOffByShutdown = Counter()
    private let filesStored = Atomic<UInt64>(0)
    private let bytesStored = Atomic<UInt64>(0)
    private let uploads: UploadsInFlight
    private let connections: ConnectionPolicy
    /// By `refusalReason`: busy, address_limit, dropped.
    private let refusedBusy = Atomic<UInt64>(0)
    private let refusedAddressLimit = Atomic<UInt64>(0)
    private let dropped = Atomic<UInt64>(0)

    init(uploads: UploadsInFlight, connections: ConnectionPolicy) {
        self.uploads = uploads
        self.connections = connections
    }

    func refusedConnection(_ admission: Admission) {
        switch admission {
        case .refuse(.busy): refusedBusy.add(1, ordering: .relaxed)
        case .refuse(.addressLimit): refusedAddressLimit.add(1, ordering: .relaxed)
        case .admit, .drop: dropped.add(1, ordering: .relaxed)
        }
    }

    /// The `reason` label of `upload_server_connections_refused_total`.
    static func refusalReason(_ admission: Admission) -> String {
        switch admission {
        case .refuse(.busy): "busy"
        case .refuse(.addressLimit): "address_limit"
        case .admit, .drop: "dropped"
        }
    }

    func stored(files: Int, bytes: UInt64) {
        filesStored.add(UInt64(files), ordering: .relaxed)
        bytesStored.add(bytes, ordering: .relaxed)
    }

    func record(_ record: RequestRecord) {
        switch record.status {
        case let status? where (100..<600).contains(status): responses[status - 100].increment()
        case .some: break
        case nil: (record.termination == .shutdown ? cutOffByShutdown : unanswered).increment()
        }
    }

    /// The `reason` label of `upload_server_failures_total`: what an error status
    /// means, or how a request ended without an answer.
    static func failureReason(status: Int?, termination: Termination) -> String? {
        guard let status else { return termination == .shutdown ? "shutdown" : "aborted" }
        return switch status {
        case ..<400: nil
        case 400: "bad_request"
        case 401: "unauthorized"
        case 403: "forbidden_origin"
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 409: "conflict"
        case 410: "expired"
        case 412: "precondition_failed"
        case 413: "too_large"
        case 415: "unsupported_media_type"
        case 431: "header_too_large"
        case 460: "checksum_mismatch"
        case 501: "not_implemented"
        case 503: "busy"
        case 507: "no_space"
        case 500: "internal"
        default: "http_\(status)"
        }
    }

    /// `upload_server_build_info`: which build answers, as Prometheus labels.
    private static let buildInfo: String = {
        let library = Daemon.library
        let labels = [("version", ProcessEnvironment.buildVersion), ("revision", ProcessEnvironment.buildRevision),
                      ("libmicrohttpd", library.version + (library.patches.map { " (\($0))" } ?? " (stock)"))]
        return labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",")
    }()

    private static func escapeLabel(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    public func render() -> String {
        var responseCounts: [(status: Int, count: UInt64)] = []
        for (index, counter) in responses.enumerated() where counter.count > 0 {
            responseCounts.append((index + 100, counter.count))
        }
        var failures: [String: UInt64] = [:]
        for (status, count) in responseCounts {
            if let reason = Self.failureReason(status: status, termination: .completed) { failures[reason, default: 0] += count }
        }
        for (counter, termination) in [(unanswered, Termination.clientAborted), (cutOffByShutdown, .shutdown)]
        where counter.count > 0 {
            failures[Self.failureReason(status: nil, termination: termination)!, default: 0] += counter.count
        }
        var text = """
        # HELP upload_server_build_info The build that answers: version, revision, libmicrohttpd.
        # TYPE upload_server_build_info gauge
        upload_server_build_info{\(Self.buildInfo)} 1
        # HELP upload_server_files_stored_total Files stored by successful uploads.
        # TYPE upload_server_files_stored_total counter
        upload_server_files_stored_total \(filesStored.load(ordering: .relaxed))
        # HELP upload_server_bytes_stored_total Bytes of the files stored.
        # TYPE upload_server_bytes_stored_total counter
        upload_server_bytes_stored_total \(bytesStored.load(ordering: .relaxed))
        # HELP upload_server_uploads_in_flight Uploads being received now.
        # TYPE upload_server_uploads_in_flight gauge
        upload_server_uploads_in_flight \(uploads.count)
        # HELP upload_server_connections Connections admitted by the connection policy, open now.
        # TYPE upload_server_connections gauge
        upload_server_connections \(connections.admittedCount)
        # HELP upload_server_connections_refused_total Connections the policy refused: busy and address_limit are answered 503, dropped are closed unanswered.
        # TYPE upload_server_connections_refused_total counter
        upload_server_connections_refused_total{reason="address_limit"} \(refusedAddressLimit.load(ordering: .relaxed))
        upload_server_connections_refused_total{reason="busy"} \(refusedBusy.load(ordering: .relaxed))
        upload_server_connections_refused_total{reason="dropped"} \(dropped.load(ordering: .relaxed))
        # HELP upload_server_failures_total Failed requests by reason.
        # TYPE upload_server_failures_total counter

        """
        for (reason, count) in failures.sorted(by: { $0.key < $1.key }) {
            text += "upload_server_failures_total{reason=\"\(reason)\"} \(count)\n"
        }
        text += """
        # HELP upload_server_responses_total Responses sent, by status code.
        # TYPE upload_server_responses_total counter

        """
        for (status, count) in responseCounts {
            text += "upload_server_responses_total{status=\"\(status)\"} \(count)\n"
        }
        return text
    }
}
