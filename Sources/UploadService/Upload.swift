import MicroHTTPD
import Platform
import Synchronization

/// One upload request, whatever its framing (multipart `POST` or `PUT`): staged
/// files, the size limit, the first failure and the commit. Each file is
/// written to a staged file in the upload directory and, only when the whole
/// body has arrived intact, `Publication` gives all of them their final names.
/// Anything else removes every staged file.
final class Upload {
    /// After a failure, the rest of the body is read and dropped up to this many
    /// bytes so that the client gets the JSON error; past it, the connection is
    /// closed instead (libmicrohttpd can only answer after the whole body).
    static let discardAllowance = 64 << 20
    /// Each file stays open until the request ends: a bound on descriptors.
    static let maximumFiles = 100

    struct Settings {
        let uploadDirectory: UploadDirectory
        let staging: Staging
        let policy: ConflictPolicy
        let durable: Bool
        let limit: UInt64?
        let budget: StagingBudget
        let uploads: UploadsInFlight
        let metrics: Metrics
        let log: Log
    }

    private let settings: Settings
    /// The upload directory as it was when the request began.
    private let directory: Directory
    private let peer: String
    /// The body's Content-Length, when it has one: no file can grow past what is left of it.
    private let announcedLength: UInt64?

    private var received: UInt64 = 0
    private var discarded = 0
    private(set) var failure: UploadFailure?
    /// The files received so far; the last one is being written while `inFile`.
    private var parts: [Publication.Part] = []
    private(set) var inFile = false
    private var ended = false

    init(_ settings: Settings, directory: Directory, peer: String, announcedLength: UInt64?) {
        self.settings = settings
        self.directory = directory
        self.peer = peer
        self.announcedLength = announcedLength
        settings.uploads.begin()
    }

    /// Counts body bytes against the limit; after a failure, against the discard allowance.
    func receive(byteCount count: Int) -> BodyDecision {
        if failure != nil {
            discarded += count
            return discarded > Self.discardAllowance ? .close : .discard
        }
        received += UInt64(count)
        if let limit = settings.limit, received > limit {
            fail(.tooLarge(limit: limit))
            return .discard
        }
        return .parse
    }

    /// Starts a file under the (already sanitized) name; false after a failure.
    func beginFile(named name: String) -> Bool {
        guard endFile() else { return false }
        guard parts.count < Self.maximumFiles else {
            fail(.badRequest("more than \(Self.maximumFiles) files in one request"))
            return false
        }
        guard settings.budget.acquire() else {
            fail(.busy)
            return false
        }
        do {
            let file = try directory.createStagedFile(settings.staging)
            file.sizeLimit = announcedLength.map { Int(clamping: $0 - min($0, received)) }
            parts.append(Publication.Part(file: file, name: name))
            inFile = true
            return true
        } catch {
            settings.budget.release()
            fail(.storage(error))
            return false
        }
    }

    /// Where every byte of an upload is written.
    func write(_ bytes: RawSpan) -> Bool {
        guard inFile else { return true }
        do {
            try parts[parts.count - 1].file.write(bytes)
            return true
        } catch {
            fail(.storage(error))
            return false
        }
    }

    /// The current file is complete: its last bytes are written and what it held
    /// beyond them (reserved space, the block buffer) is given back at once, so
    /// that a request stalled after many files holds only their descriptors.
    @discardableResult
    func endFile() -> Bool {
        guard inFile else { return failure == nil }
        inFile = false
        do {
            try parts[parts.count - 1].file.finish()
            return true
        } catch {
            fail(.storage(error))
            return false
        }
    }

    /// The whole body has arrived: publishes the files or answers the failure.
    func finish() -> Result<[StoredFile], UploadFailure> {
        end()
        endFile()
        if failure == nil && parts.isEmpty { fail(.badRequest("no \"file\" part with a filename")) }
        if failure == nil {
            do {
                let stored = try Publication(directory: directory, policy: settings.policy,
                                             durable: settings.durable).publish(parts)
                settings.budget.release(parts.count)
                parts = []
                settings.metrics.stored(files: stored.count, bytes: stored.reduce(0) { $0 + UInt64($1.size) })
                return .success(stored)
            } catch {
                fail(error)
            }
        }
        return .failure(failure ?? .internalError("upload ended in no state"))
    }

    func abandon(_ reason: Termination) {
        end()
        let removed = removeStagedFiles()
        settings.log(.uploadAbandoned, [("reason", .string(reason.label)), ("peer", .string(peer)),
                                        ("bytes_received", .unsigned(received)),
                                        ("temporary_files_removed", .number(Int64(removed)))])
    }

    /// Records the first failure and removes what was written; the rest of the
    /// body is drained and the failure answered by `finish`.
    func fail(_ failure: UploadFailure) {
        guard self.failure == nil else { return }
        self.failure = failure
        let removed = removeStagedFiles()
        settings.log(.uploadFailed, [("status", .number(Int64(failure.status))), ("error", .string(failure.message)),
                                     ("peer", .string(peer)), ("temporary_files_removed", .number(Int64(removed)))])
    }

    private func end() {
        guard !ended else { return }
        ended = true
        settings.uploads.end()
    }

    @discardableResult
    private func removeStagedFiles() -> Int {
        inFile = false
        for part in parts {
            let name = part.file.temporaryName
            if !directory.discard(part.file), let name {
                settings.uploadDirectory.removeLater(name)
            }
        }
        settings.budget.release(parts.count)
        defer { parts = [] }
        return parts.count
    }
}

/// Uploads being received: for the metrics gauge, and for shutdown, which gives
/// them the grace period.
final class UploadsInFlight: Sendable {
    private let value = Atomic<Int>(0)

    var count: Int { value.load(ordering: .relaxed) }
    func begin() { value.add(1, ordering: .relaxed) }
    func end() { value.subtract(1, ordering: .relaxed) }
}

/// How many staged files may be open at once, across all requests: each holds a
/// descriptor until its request ends, and the process has a fixed number
/// (RLIMIT_NOFILE) that connections need too. Past it, an upload is refused
/// with 503 instead of the server running out of descriptors for everyone.
final class StagingBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    func acquire() -> Bool {
        if used.add(1, ordering: .relaxed).newValue <= limit { return true }
        used.subtract(1, ordering: .relaxed)
        return false
    }

    func release(_ count: Int = 1) {
        if count > 0 { used.subtract(count, ordering: .relaxed) }
    }
}
