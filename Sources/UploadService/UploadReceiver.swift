import MicroHTTPD

/// One upload: streams each `file` part into its own temporary file in the upload
/// directory and, only when the whole body has arrived intact, gives all of them
/// their final names. Anything else removes every temporary file.
final class UploadReceiver: FormReceiver {
    /// After a failure, the rest of the body is read and dropped up to this many
    /// bytes so that the client gets the JSON error; past it, the connection is
    /// closed instead (libmicrohttpd can only answer after the whole body).
    static let discardAllowance = 64 << 20
    /// Each file stays open until the request ends: a bound on descriptors.
    static let maximumFiles = 100

    private struct Part {
        let file: StagedFile
        var name: String
        var size: UInt64 = 0
    }

    private let uploadDirectory: UploadDirectory
    /// The upload directory as it was when the request began.
    private let directory: Directory
    private let staging: Staging
    private let policy: ConflictPolicy
    private let limit: UInt64?
    private let peer: String
    private let metrics: Metrics
    private let log: Log

    private var received: UInt64 = 0
    private var discarded = 0
    private var failure: UploadFailure?
    /// The files received so far; the last one is being written while `inFilePart`.
    private var parts: [Part] = []
    private var inFilePart = false
    private var ended = false

    init(directory: Directory, in uploadDirectory: UploadDirectory, staging: Staging, policy: ConflictPolicy,
         limit: UInt64?, peer: String, metrics: Metrics, log: Log) {
        self.directory = directory
        self.uploadDirectory = uploadDirectory
        self.staging = staging
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
        inFilePart = false
        guard name == "file" else { return true }  // other fields are read and ignored
        guard let filename else {
            fail(.badRequest("the \"file\" part has no filename"))
            return false
        }
        guard parts.count < Self.maximumFiles else {
            fail(.badRequest("more than \(Self.maximumFiles) files in one request"))
            return false
        }
        switch FileName.sanitize(filename) {
        case .failure(let failure):
            fail(failure)
            return false
        case .success(let name):
            do {
                let file = try directory.createStagedFile(staging, temporaryName: FileName.temporaryName())
                parts.append(Part(file: file, name: name))
                inFilePart = true
                return true
            } catch {
                fail(.storage(error))
                return false
            }
        }
    }

    /// Where every byte of an upload is written.
    func partData(_ bytes: BorrowedBytes) -> Bool {
        guard inFilePart else { return true }
        do {
            try parts[parts.count - 1].file.write(bytes)
            parts[parts.count - 1].size += UInt64(bytes.count)
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
        if failure == nil && parts.isEmpty { fail(.badRequest("no \"file\" part with a filename")) }
        if failure == nil {
            do {
                let stored = try commit()
                let bytes = stored.reduce(0) { $0 + $1.size }
                metrics.stored(files: stored.count, bytes: bytes)
                // {"files":[{"name":"a.txt","size":3}]}, built directly: it runs for every upload.
                var body = "{\"files\":["
                for (index, part) in stored.enumerated() {
                    body += index == 0 ? "{\"name\":" : ",{\"name\":"
                    JSON.appendString(part.name, to: &body)
                    body += ",\"size\":\(part.size)}"
                }
                body += "]}\n"
                return Response(status: 200, body: Array(body.utf8), headers: [(name: "Content-Type", value: "application/json")])
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

    @discardableResult
    private func removeTemporaryFiles() -> Int {
        inFilePart = false
        for part in parts {
            if !directory.discard(part.file), let name = part.file.temporaryName {
                uploadDirectory.removeLater(name)
            }
        }
        defer { parts = [] }
        return parts.count
    }

    /// Gives every staged file its final name, all or nothing.
    private func commit() throws(UploadFailure) -> [Part] {
        var committed: [Part] = []
        do throws(UploadFailure) {
            for var part in parts {
                switch policy {
                case .overwrite:
                    try storing { () throws(SystemError) in
                        try directory.publish(part.file, as: part.name, replacing: true,
                                              temporaryName: FileName.temporaryName())
                    }
                case .reject:
                    part = try publishUnderFreeName(part, alternatives: 0)
                case .rename:
                    part = try publishUnderFreeName(part, alternatives: 10_000)
                }
                committed.append(part)
            }
        } catch {
            // Undo the names this request created so that nothing of it remains.
            if policy != .overwrite {
                for part in committed { try? directory.remove(part.name) }
            }
            throw error
        }
        parts = []
        return committed
    }

    private func publishUnderFreeName(_ part: Part, alternatives: Int) throws(UploadFailure) -> Part {
        for number in 0...alternatives {
            var candidate = part
            if number > 0 { candidate.name = FileName.alternative(part.name, number: number) }
            do {
                try directory.publish(part.file, as: candidate.name, replacing: false,
                                      temporaryName: FileName.temporaryName())
                return candidate
            } catch where error.isExisting {
                continue
            } catch {
                throw UploadFailure.storage(error)
            }
        }
        throw UploadFailure.conflict(name: part.name)
    }

    private func storing(_ operation: () throws(SystemError) -> Void) throws(UploadFailure) {
        do { try operation() } catch { throw UploadFailure.storage(error) }
    }
}
