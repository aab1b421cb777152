import Synchronization

/// Counters for `GET /metrics`, in Prometheus' text format.
public final class Metrics: Sendable {
    private struct Counters {
        var failures: [String: UInt64] = [:]
        var responses: [Int: UInt64] = [:]
    }
    private let counters = Mutex(Counters())
    // Atomics where they do: a successful upload then takes the lock only once.
    private let filesStored = Atomic<UInt64>(0)
    private let bytesStored = Atomic<UInt64>(0)
    private let uploadsInFlight = Atomic<Int>(0)

    public init() {}

    public var inFlight: Int { uploadsInFlight.load(ordering: .relaxed) }

    func uploadStarted() { uploadsInFlight.add(1, ordering: .relaxed) }
    func uploadEnded() { uploadsInFlight.subtract(1, ordering: .relaxed) }

    func stored(files: Int, bytes: UInt64) {
        filesStored.add(UInt64(files), ordering: .relaxed)
        bytesStored.add(bytes, ordering: .relaxed)
    }

    func failed(_ reason: String) {
        counters.withLock { $0.failures[reason, default: 0] += 1 }
    }

    func responded(_ status: Int) {
        counters.withLock { $0.responses[status, default: 0] += 1 }
    }

    public func render() -> String {
        let snapshot = counters.withLock { $0 }
        var text = """
        # HELP upload_server_files_stored_total Files stored by successful uploads.
        # TYPE upload_server_files_stored_total counter
        upload_server_files_stored_total \(filesStored.load(ordering: .relaxed))
        # HELP upload_server_bytes_stored_total Bytes of the files stored.
        # TYPE upload_server_bytes_stored_total counter
        upload_server_bytes_stored_total \(bytesStored.load(ordering: .relaxed))
        # HELP upload_server_uploads_in_flight Uploads being received now.
        # TYPE upload_server_uploads_in_flight gauge
        upload_server_uploads_in_flight \(inFlight)
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
