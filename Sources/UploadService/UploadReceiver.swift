import MicroHTTPD

/// One upload: streams each `file` part into its own temporary file in the upload
/// directory and, only when the whole body has arrived intact, gives all of them
/// their final names. Anything else removes every temporary file.
final class UploadReceiver: FormReceiver {
    /// After a failure, the rest of the body is read and dropped up to this many
    /// bytes so that the client gets the JSON error; past it, the connection is
    /// closed instead (libmicrohttpd can only answer after the whole body).
    static let discardAllowance = 64 << 20

    private struct StagedFile {
        let temporaryName: String
        var name: String
        var size: UInt64 = 0
    }

    private let directory: Directory
    private let policy: ConflictPolicy
    private let limit: UInt64?
    private let peer: String
    private let metrics: Metrics
    private let log: Log

    private var received: UInt64 = 0
    private var discarded = 0
    private var failure: UploadFailure?
    private var staged: [StagedFile] = []
    /// The file of the part being received; nil in other parts.
    private var open: WritableFile?
    private var ended = false

    init(directory: Directory, policy: ConflictPolicy, limit: UInt64?, peer: String, metrics: Metrics, log: Log) {
        self.directory = directory
        self.policy = policy
        self.limit = limit
        self.peer = peer
        self.metrics = metrics
        self.log = log
        metrics.uploadStarted()
    }

    func receive(byteCount count: Int) -> BodyDecision {
        if failure != nil {
            discarded += count
            return discarded > Self.discardAllowance ? .close : .discard
        }
        received += UInt64(count)
        if let limit, received > limit {
            fail(.tooLarge(limit: limit))
            return .discard
        }
        return .parse
    }

    func partBegins(name: String, filename: String?) -> Bool {
        guard closeOpenFile() else { return false }
        guard name == "file" else { return true }  // other fields are read and ignored
        guard let filename else {
            fail(.badRequest("the \"file\" part has no filename"))
            return false
        }
        switch FileName.sanitize(filename) {
        case .failure(let failure):
            fail(failure)
            return false
        case .success(let name):
            do {
                let temporaryName = FileName.reservedPrefix + Self.randomHex() + ".part"
                open = try directory.createTemporaryFile(temporaryName)
                staged.append(StagedFile(temporaryName: temporaryName, name: name))
                return true
            } catch {
                fail(.storage(error))
                return false
            }
        }
    }

    /// Where every byte of an upload is written.
    func partData(_ bytes: BorrowedBytes) -> Bool {
        guard let open else { return true }
        do {
            try open.write(bytes)
            staged[staged.count - 1].size += UInt64(bytes.count)
            return true
        } catch {
            fail(.storage(error))
            return false
        }
    }

    func malformed() {
        fail(.badRequest("malformed multipart body"))
    }

    func finish(parsed: Bool) -> Response {
        end()
        if failure == nil && !parsed { fail(.badRequest("multipart body is truncated or malformed")) }
        if failure == nil { _ = closeOpenFile() }
        if failure == nil && staged.isEmpty { fail(.badRequest("no \"file\" part with a filename")) }
        if failure == nil {
            do {
                let stored = try commit()
                let bytes = stored.reduce(0) { $0 + $1.size }
                metrics.stored(files: stored.count, bytes: bytes)
                return .json(200, .object([("files", .array(stored.map {
                    .object([("name", .string($0.name)), ("size", .unsigned($0.size))])
                }))]))
            } catch {
                fail(error)
            }
        }
        guard let failure else { return UploadFailure.internalError("upload ended in no state").response }
        metrics.failed(failure.reason)
        return failure.response
    }

    func abandon(_ reason: Termination) {
        end()
        let removed = removeTemporaryFiles()
        metrics.failed(reason == .shutdown ? "shutdown" : "aborted")
        log.warning("upload_abandoned", [("reason", .string(reason.label)), ("peer", .string(peer)),
                                         ("bytes_received", .unsigned(received)),
                                         ("temporary_files_removed", .number(Int64(removed)))])
    }

    private func end() {
        guard !ended else { return }
        ended = true
        metrics.uploadEnded()
    }

    /// Records the first failure and removes what was written; the rest of the
    /// body is drained and the failure answered by `finish`.
    private func fail(_ failure: UploadFailure) {
        guard self.failure == nil else { return }
        self.failure = failure
        let removed = removeTemporaryFiles()
        log.warning("upload_failed", [("status", .number(Int64(failure.status))), ("error", .string(failure.message)),
                                      ("peer", .string(peer)), ("temporary_files_removed", .number(Int64(removed)))])
    }

    private func closeOpenFile() -> Bool {
        guard let file = open else { return true }
        open = nil
        do {
            try file.close()
            return true
        } catch {
            fail(.storage(error))
            return false
        }
    }

    @discardableResult
    private func removeTemporaryFiles() -> Int {
        open = nil
        var removed = 0
        for file in staged where (try? directory.remove(file.temporaryName)) != nil {
            removed += 1
        }
        staged = []
        return removed
    }

    /// Gives every temporary file its final name, all or nothing.
    private func commit() throws(UploadFailure) -> [StagedFile] {
        var committed: [StagedFile] = []
        do throws(UploadFailure) {
            for var file in staged {
                switch policy {
                case .overwrite:
                    // rename(2) replaces atomically: readers see the old or the new file.
                    try storing { () throws(SystemError) in try directory.rename(file.temporaryName, to: file.name) }
                case .reject:
                    file = try linkUnderFreeName(file, alternatives: 0)
                case .rename:
                    file = try linkUnderFreeName(file, alternatives: 10_000)
                }
                committed.append(file)
            }
        } catch {
            // Undo the names this request created so that nothing of it remains.
            if policy != .overwrite {
                for file in committed { try? directory.remove(file.name) }
            }
            throw error
        }
        for file in committed where policy != .overwrite { try? directory.remove(file.temporaryName) }
        staged = []
        return committed
    }

    /// link(2) never replaces a name, so two uploads can never take the same one.
    private func linkUnderFreeName(_ file: StagedFile, alternatives: Int) throws(UploadFailure) -> StagedFile {
        for number in 0...alternatives {
            var candidate = file
            if number > 0 { candidate.name = FileName.alternative(file.name, number: number) }
            do {
                try directory.link(file.temporaryName, to: candidate.name)
                return candidate
            } catch where error.isExisting {
                continue
            } catch {
                throw UploadFailure.storage(error)
            }
        }
        throw UploadFailure.conflict(name: file.name)
    }

    private func storing(_ operation: () throws(SystemError) -> Void) throws(UploadFailure) {
        do { try operation() } catch { throw UploadFailure.storage(error) }
    }

    private static func randomHex() -> String {
        let value = UInt64.random(in: .min ... .max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
