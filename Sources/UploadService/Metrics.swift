import MicroHTTPD
import Platform
import Synchronization

/// Counters for `GET /metrics`, in Prometheus' text format. Requests are
/// counted once, from their finished record (`record`), whoever answered them:
/// the application, the library on its own, or nobody.
public final class Metrics: Sendable {
    private struct Counters {
        var failures: [String: UInt64] = [:]
        var responses: [Int: UInt64] = [:]
    }
    private let counters = Mutex(Counters())
    // Atomics where they do: a successful upload then takes the lock only once.
    private let filesStored = Atomic<UInt64>(0)
    private let bytesStored = Atomic<UInt64>(0)
    private let uploads: UploadsInFlight

    init(uploads: UploadsInFlight) { self.uploads = uploads }

    func stored(files: Int, bytes: UInt64) {
        filesStored.add(UInt64(files), ordering: .relaxed)
        bytesStored.add(bytes, ordering: .relaxed)
    }

    func record(_ record: RequestRecord) {
        let reason = Self.failureReason(status: record.status, termination: record.termination)
        counters.withLock { counters in
            if let status = record.status { counters.responses[status, default: 0] += 1 }
            if let reason { counters.failures[reason, default: 0] += 1 }
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
        let snapshot = counters.withLock { $0 }
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
        # HELP upload_server_failures_total Failed requests by reason.
        # TYPE upload_server_failures_total counter

        """
        for (reason, count) in snapshot.failures.sorted(by: { $0.key < $1.key }) {
            text += "upload_server_failures_total{reason=\"\(reason)\"} \(count)\n"
        }
        text += """
        # HELP upload_server_responses_total Responses sent, by status code.
        # TYPE upload_server_responses_total counter

        """
        for (status, count) in snapshot.responses.sorted(by: { $0.key < $1.key }) {
            text += "upload_server_responses_total{status=\"\(status)\"} \(count)\n"
        }
        return text
    }
}
