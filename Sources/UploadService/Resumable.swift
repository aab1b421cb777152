import MicroHTTPD
import Platform

/// Resumable uploads: tus 1.0.0 at `/tus/` (https://tus.io/protocols/resumable-upload),
/// with the extensions creation, creation-with-upload, creation-defer-length,
/// termination, checksum and expiration. `POST /tus/` creates an upload,
/// `PATCH /tus/<id>` appends at its offset, `HEAD` tells the offset, `DELETE`
/// ends it. The bytes and what is known of an upload live in the upload
/// directory (`ResumableStore`); the file gets its name through the same
/// `Publication` as any upload, when its last byte is in, and not before.
enum Resumable {
    static let version = "1.0.0"
    static let extensions = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration"
    static let mediaType = "application/offset+octet-stream"
    static let allowCollection = "POST, OPTIONS"
    static let allowUpload = "HEAD, PATCH, DELETE, OPTIONS"
    /// What a page on another origin may read of the answers.
    static let exposedHeaders = "Location, Upload-Offset, Upload-Length, Upload-Defer-Length, Upload-Metadata, "
        + "Upload-Expires, Upload-Name, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"
    static let allowedRequestHeaders = "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Defer-Length, "
        + "Upload-Metadata, Upload-Offset, Upload-Checksum, X-HTTP-Method-Override, X-Requested-With"
}

extension UploadApplication {
    /// At start: expired uploads go, the incomplete ones are counted.
    func startResumable() {
        guard config.resumableLimit > 0, let current = try? directory.open() else { return }
        let removed = resumable.sweep(current, now: ProcessEnvironment.wallClockSeconds())
        let incomplete = resumable.incomplete
        guard removed > 0 || incomplete > 0 else { return }
        log(.resumableUploads, [("incomplete", .number(Int64(incomplete))), ("expired_removed", .number(Int64(removed))),
                                ("expiry", .string(DurationText.format(config.resumableExpirySeconds))),
                                ("limit", .number(Int64(config.resumableLimit)))])
    }

    /// `/tus` and everything under it.
    func beginResumable(_ head: borrowing RequestHead) -> RequestAction {
        guard config.resumableLimit > 0 else { return reject(.notFound) }
        var method = head.method
        // For clients that can send only GET and POST (tus 1.0.0, "X-HTTP-Method-Override").
        if method == "POST", let override = head.header("X-HTTP-Method-Override"), !override.isEmpty {
            method = override.trimmingSpaces().uppercased()
        }
        let rest = head.path.dropFirst("/tus".count)
        let id: Substring? = rest.isEmpty || rest == "/" ? nil : rest.dropFirst()
        var headers = [(name: "Tus-Resumable", value: Resumable.version)]
        let cors = corsHeaders(head)
        if !cors.isEmpty { headers += cors + [(name: "Access-Control-Expose-Headers", value: Resumable.exposedHeaders)] }

        if method == "OPTIONS" { return resumableOptions(head, headers: headers, allow: id == nil ? Resumable.allowCollection : Resumable.allowUpload) }
        if let refusal = checkUpload(head) { return .respond(refusal.response.adding(headers)) }
        let given = head.header("Tus-Resumable")
        guard given == Resumable.version else { return .respond(UploadFailure.tusVersion(given).response.adding(headers)) }

        guard let id else {
            guard method == "POST" else {
                return .respond(UploadFailure.methodNotAllowed(allow: Resumable.allowCollection).response.adding(headers))
            }
            return createResumable(head, headers: headers)
        }
        guard method == "HEAD" || method == "PATCH" || method == "DELETE" else {
            return .respond(UploadFailure.methodNotAllowed(allow: Resumable.allowUpload).response.adding(headers))
        }
        guard ResumableStore.isValidID(id) else { return .respond(UploadFailure.notFound.response.adding(headers)) }
        let current: Directory
        do { current = try directory.open() } catch {
            log(.uploadDirectoryUnavailable, [("path", .string(directory.path)), ("error", .string(error.description))])
            return .respond(UploadFailure.storage(error).response.adding(headers))
        }
        let upload = String(id)
        switch method {
        case "HEAD": return .respond(resumableStatus(upload, in: current, headers: headers))
        case "PATCH": return patchResumable(head, id: upload, in: current, headers: headers)
        default: return .respond(terminateResumable(upload, in: current, headers: headers))
        }
    }

    /// `OPTIONS /tus/`: what this server speaks (no `Tus-Resumable` needed), and a
    /// CORS preflight's answer for an allowed origin.
    private func resumableOptions(_ head: borrowing RequestHead, headers: [(name: String, value: String)],
                                  allow: String) -> RequestAction {
        if let refusal = checkBrowser(head) { return .respond(refusal.response.adding(headers)) }
        var answer = headers + [(name: "Allow", value: allow), (name: "Tus-Version", value: Resumable.version),
                                (name: "Tus-Extension", value: Resumable.extensions),
                                (name: "Tus-Checksum-Algorithm", value: UploadChecksum.supported)]
        if let limit = config.maxUploadSize { answer.append((name: "Tus-Max-Size", value: String(limit))) }
        if head.header("Access-Control-Request-Method") != nil && answer.contains(where: { $0.name == "Access-Control-Allow-Origin" }) {
            answer += [(name: "Access-Control-Allow-Methods", value: "POST, HEAD, PATCH, DELETE, OPTIONS"),
                       (name: "Access-Control-Allow-Headers", value: Resumable.allowedRequestHeaders),
                       (name: "Access-Control-Max-Age", value: "600")]
        }
        return .respond(Response(status: 204, body: [], headers: answer))
    }

    /// `POST /tus/`: checks the length and the name, makes the upload's two files,
    /// and reads a first piece of the body if there is one (creation-with-upload).
    private func createResumable(_ head: borrowing RequestHead, headers: [(name: String, value: String)]) -> RequestAction {
        func refuse(_ failure: UploadFailure) -> RequestAction { .respond(failure.response.adding(headers)) }
        let lengthHeader = head.header("Upload-Length"), deferHeader = head.header("Upload-Defer-Length")
        let length: UInt64?
        switch (lengthHeader, deferHeader) {
        case (let text?, nil):
            guard let value = parseOffset(text) else { return refuse(.badRequest("Upload-Length must be a whole number of bytes")) }
            if let limit = config.maxUploadSize, value > limit { return refuse(.tooLarge(limit: limit)) }
            length = value
        case (nil, "1"?): length = nil
        case (nil, _?): return refuse(.badRequest("Upload-Defer-Length must be 1"))
        case (_?, _?): return refuse(.badRequest("send Upload-Length or Upload-Defer-Length, not both"))
        case (nil, nil): return refuse(.badRequest("Upload-Length (or Upload-Defer-Length: 1) is required"))
        }
        guard let metadata = UploadMetadata(head.header("Upload-Metadata") ?? "") else {
            return refuse(.badRequest("Upload-Metadata must be comma-separated \"key base64value\" pairs (at most \(UploadMetadata.maximumBytes) bytes)"))
        }
        guard let rawName = metadata["filename"] ?? metadata["name"] else {
            return refuse(.badRequest("Upload-Metadata needs the file's name: filename <base64 name>"))
        }
        let name: String
        switch FileName.sanitize(rawName) {
        case .success(let sanitized): name = sanitized
        case .failure(let failure): return refuse(failure)
        }

        let contentLength = head.header("Content-Length").flatMap { UInt64($0) }
        let hasBody = (contentLength ?? 0) > 0 || head.header("Transfer-Encoding") != nil
        let contentType = head.header("Content-Type") ?? ""
        if hasBody && Self.mediaType(of: contentType) != Resumable.mediaType {
            return refuse(.wrongMediaType(expected: Resumable.mediaType, got: contentType))
        }
        if let length, let contentLength, contentLength > length { return refuse(.lengthExceeded(length: length)) }
        var checksum: UploadChecksum?
        if hasBody, let header = head.header("Upload-Checksum") {
            switch UploadChecksum.parse(header) {
            case .success(let parsed): checksum = parsed
            case .failure(let failure): return refuse(failure)
            }
        }

        let current: Directory
        do { current = try directory.open() } catch {
            log(.uploadDirectoryUnavailable, [("path", .string(directory.path)), ("error", .string(error.description))])
            return refuse(.storage(error))
        }
        // Under reject, a taken name is refused now rather than after the last byte
        // (it is checked again then: another upload may take it meanwhile).
        if config.onConflict == .reject && current.exists(name) { return refuse(.conflict(name: name)) }
        let now = ProcessEnvironment.wallClockSeconds()
        let removed = resumable.sweepIfDue(current, now: now)
        if removed > 0 { log(.resumableExpired, [("uploads_removed", .number(Int64(removed)))]) }
                                                 guard resumable.admit() else {
                                                 log(.resumableLimit, [("limit", .number(Int64(resumable.limit))), ("peer", .string(head.peer))])
            return refuse(.tooManyIncomplete(limit: resumable.limit))
        }

        let id = ResumableStore.newID()
        let info = ResumableInfo(length: length, name: name, metadata: metadata.text, created: now)
        let file: PartialFile
        do throws(SystemError) {
            file = try current.createPartial(ResumableStore.dataName(id))
            do throws(SystemError) {
                try resumable.writeInfo(info, id: id, in: current, durable: config.durable)
            } catch {
                try? current.remove(file.name)
                file.close()
                throw error
            }
        } catch {
            resumable.release()
            return refuse(.storage(error))
        }
        let location = resumableLocation(head, id: id)
        var created = headers + [(name: "Location", value: location)]
        if length == 0 {
            // Nothing to wait for: published at once.
            let context = resumableContext(peer: head.peer)
            switch context.complete(file, id: id, info: info, in: current) {
            case .success(let stored):
                return .respond(Response(status: 201, body: [], headers: created + [
                    (name: "Upload-Offset", value: "0"), (name: "Upload-Length", value: "0"),
                    (name: "Upload-Name", value: PathSegment.encode(stored.name))]))
            case .failure(let failure):
                return refuse(failure)
            }
        }
        created.append((name: "Upload-Expires", value: HTTPDate.format(resumable.expires(lastWrite: now))))
        guard hasBody else {
            file.close()
            return .respond(Response(status: 201, body: [], headers: created + [(name: "Upload-Offset", value: "0")]))
        }
        return .receiveBody(ResumablePatch(resumableContext(peer: head.peer), file: file, id: id, info: info,
                                           directory: current, checksum: checksum, headers: created, status: 201))
    }

    /// `HEAD /tus/<id>`: the offset, and what was said at creation.
    private func resumableStatus(_ id: String, in current: Directory, headers: [(name: String, value: String)]) -> Response {
        var answer = headers + [(name: "Cache-Control", value: "no-store")]
        guard let info = resumable.readInfo(id, in: current),
              var status = current.status(of: ResumableStore.dataName(id)) else {
            return UploadFailure.notFound.response.adding(answer)
        }
        let now = ProcessEnvironment.wallClockSeconds()
        if resumable.isExpired(lastWrite: status.modified, now: now) {
            if removeExpired(id, in: current, now: now) { return UploadFailure.uploadExpired.response.adding(answer) }
            // Being written: not expired after all.
            guard let again = current.status(of: ResumableStore.dataName(id)) else {
                return UploadFailure.notFound.response.adding(answer)
            }
            status = again
        }
        if !info.metadata.isEmpty { answer.append((name: "Upload-Metadata", value: info.metadata)) }
        answer.append((name: "Upload-Offset", value: String(status.size)))
        if let length = info.length {
            answer.append((name: "Upload-Length", value: String(length)))
        } else {
            answer.append((name: "Upload-Defer-Length", value: "1"))
        }
        answer.append((name: "Upload-Expires", value: HTTPDate.format(resumable.expires(lastWrite: status.modified))))
        return Response(status: 200, body: [], headers: answer)
    }

    /// Removes an upload found expired, under its lock; false if a request holds it.
    private func removeExpired(_ id: String, in current: Directory, now: Int64) -> Bool {
        guard let file = try? current.openPartial(ResumableStore.dataName(id)) else { return false }
        defer { file.close() }
        guard resumable.isExpired(lastWrite: file.modificationSeconds, now: now) else { return false }
        try? current.remove(file.name)
        try? current.remove(ResumableStore.infoName(id))
        resumable.release()
        log(.resumableExpired, [("uploads_removed", .number(1))])
        return true
    }

    /// `PATCH /tus/<id>`: checks everything that can be checked before the body,
    /// under the upload's lock, which the receiver keeps until the request ends.
    private func patchResumable(_ head: borrowing RequestHead, id: String, in current: Directory,
                                headers: [(name: String, value: String)]) -> RequestAction {
        func refuse(_ failure: UploadFailure) -> RequestAction { .respond(failure.response.adding(headers)) }
        let contentType = head.header("Content-Type") ?? ""
        guard Self.mediaType(of: contentType) == Resumable.mediaType else {
            return refuse(.wrongMediaType(expected: Resumable.mediaType, got: contentType))
        }
        guard let offset = parseOffset(head.header("Upload-Offset")) else {
            return refuse(.badRequest("Upload-Offset must be a whole number of bytes"))
        }
        var checksum: UploadChecksum?
        if let header = head.header("Upload-Checksum") {
            switch UploadChecksum.parse(header) {
            case .success(let parsed): checksum = parsed
            case .failure(let failure): return refuse(failure)
            }
        }
        let file: PartialFile
        do {
            file = try current.openPartial(ResumableStore.dataName(id))
        } catch where error.isBusy {
            return refuse(.uploadLocked)
        } catch where error.isMissing {
            return refuse(.notFound)
        } catch {
            return refuse(.storage(error))
        }
        guard var info = resumable.readInfo(id, in: current) else {
            file.close()
            return refuse(.notFound)
        }
        let now = ProcessEnvironment.wallClockSeconds()
        if resumable.isExpired(lastWrite: file.modificationSeconds, now: now) {
            try? current.remove(file.name)
            try? current.remove(ResumableStore.infoName(id))
            file.close()
            resumable.release()
            log(.resumableExpired, [("uploads_removed", .number(1))])
            return refuse(.uploadExpired)
        }
        guard offset == file.size else {
            let size = file.size
            file.close()
            return refuse(.offsetMismatch(given: offset, current: size))
        }
        if let text = head.header("Upload-Length") {
            guard let length = parseOffset(text) else {
                file.close()
                return refuse(.badRequest("Upload-Length must be a whole number of bytes"))
            }
            if let known = info.length {
                guard known == length else {
                    file.close()
                    return refuse(.badRequest("Upload-Length was \(known) at creation; it cannot change"))
                }
            } else {
                if let limit = config.maxUploadSize, length > limit {
                    file.close()
                    return refuse(.tooLarge(limit: limit))
                }
                guard length >= file.size else {
                    file.close()
                    return refuse(.badRequest("Upload-Length \(length) is less than the \(file.size) bytes received"))
                }
                info.length = length
                do {
                    try resumable.writeInfo(info, id: id, in: current, durable: config.durable)
                } catch {
                    file.close()
                    return refuse(.storage(error))
                }
            }
        }
        if let contentLength = head.header("Content-Length").flatMap({ UInt64($0) }) {
            if let length = info.length, offset + contentLength > length {
                file.close()
                return refuse(.lengthExceeded(length: length))
            }
            if info.length == nil, let limit = config.maxUploadSize, offset + contentLength > limit {
                file.close()
                return refuse(.tooLarge(limit: limit))
            }
        }
        return .receiveBody(ResumablePatch(resumableContext(peer: head.peer), file: file, id: id, info: info,
                                           directory: current, checksum: checksum, headers: headers, status: 204))
    }

    /// `DELETE /tus/<id>` (termination): the bytes and the sidecar go. Waits a
    /// moment for a request that still writes it (a client that cancels closes
    /// that request's connection first).
    private func terminateResumable(_ id: String, in current: Directory, headers: [(name: String, value: String)]) -> Response {
        var attempts = 0
        while true {
            do {
                let file = try current.openPartial(ResumableStore.dataName(id))
                try? current.remove(file.name)
                try? current.remove(ResumableStore.infoName(id))
                file.close()
                resumable.release()
                return Response(status: 204, body: [], headers: headers)
            } catch where error.isBusy && attempts < 50 {
                attempts += 1
                ProcessEnvironment.sleep(milliseconds: 20)
            } catch where error.isBusy {
                return UploadFailure.uploadLocked.response.adding(headers)
            } catch where error.isMissing {
                return UploadFailure.notFound.response.adding(headers)
            } catch {
                return UploadFailure.storage(error).response.adding(headers)
            }
        }
    }

    /// The upload's absolute URL: scheme and host from the request, or from
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` behind a proxy (as tusd does;
    /// some clients need an absolute `Location`). Without a usable host, a path.
    func resumableLocation(_ head: borrowing RequestHead, id: String) -> String {
        func first(_ value: String?) -> String? {
            guard let value else { return nil }
            let part = value.split(separator: ",", maxSplits: 1).first.map { $0.trimmingSpaces() } ?? ""
            return part.isEmpty ? nil : part
        }
        let path = "/tus/" + id
        let scheme = first(head.header("X-Forwarded-Proto")).map { $0.lowercased() }
        let host = first(head.header("X-Forwarded-Host")) ?? head.header("Host")
        guard let host, !host.isEmpty, host.utf8.count <= 255, host.utf8.allSatisfy({ byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "_"): true
            default: false
            }
        }) else { return path }
        return "\(scheme == "https" ? "https" : "http")://\(host)\(path)"
    }

    private func resumableContext(peer: String) -> ResumableContext {
        ResumableContext(store: resumable, policy: config.onConflict, durable: config.durable,
                         maxUploadSize: config.maxUploadSize, uploads: uploads, metrics: metrics, log: log, peer: peer)
    }
}

/// What a resumable request needs of the application.
struct ResumableContext {
    let store: ResumableStore
    let policy: ConflictPolicy
    let durable: Bool
    let maxUploadSize: UInt64?
    let uploads: UploadsInFlight
    let metrics: Metrics
    let log: Log
    let peer: String

    /// The last byte is in: the file gets its name through `Publication` (the
    /// conflict policy, `--fsync`), and the sidecar goes. A conflict
    /// under `reject` ends the upload (nothing could ever publish it); another
    /// failure keeps it, and an empty PATCH at its end tries again.
    func complete(_ file: PartialFile, id: String, info: ResumableInfo, in directory: Directory) -> Result<StoredFile, UploadFailure> {
        file.releaseReservation()
        let staged = directory.stagedFile(from: file)
        let stored: StoredFile
        do {
            stored = try Publication(directory: directory, policy: policy, durable: durable)
                .publish([Publication.Part(file: staged, name: info.name)])[0]
        } catch {
            if case .conflict = error {
                try? directory.remove(ResumableStore.dataName(id))
                try? directory.remove(ResumableStore.infoName(id))
                store.release()
            }
            staged.close()
            log(.uploadFailed, [("status", .number(Int64(error.status))), ("error", .string(error.message)),
                                ("peer", .string(peer)), ("resumable", .string(id))])
            return .failure(error)
        }
        store.release()
        // Done: no reserved name is left (the answer's Upload-Name is the only notice).
        try? directory.remove(ResumableStore.infoName(id))
        metrics.stored(files: 1, bytes: UInt64(stored.size))
        return .success(stored)
    }
}

/// The body of a `PATCH` (or of a `POST` with creation-with-upload): appended to
/// the data file as it arrives, under the lock taken before. Bytes are kept as
/// they arrive, so a request cut off keeps what came; with `Upload-Checksum`
/// they are kept only if the whole body matches. Nothing past the length is
/// ever written.
final class ResumablePatch: RawBodyReceiver {
    private let context: ResumableContext
    private let file: PartialFile
    private let id: String
    private let info: ResumableInfo
    private let directory: Directory
    private let start: UInt64
    private var digest: Digest?
    private let checksum: UploadChecksum?
    private let headers: [(name: String, value: String)]
    /// 204 for PATCH, 201 for a creation.
    private let status: Int
    private var failure: UploadFailure?
    private var discarded = 0
    private var ended = false

    init(_ context: ResumableContext, file: PartialFile, id: String, info: ResumableInfo, directory: Directory,
         checksum: UploadChecksum?, headers: [(name: String, value: String)], status: Int) {
        self.context = context
        self.file = file
        self.id = id
        self.info = info
        self.directory = directory
        self.checksum = checksum
        self.headers = headers
        self.status = status
        start = file.size
        digest = checksum.map { Digest($0.algorithm) }
        context.uploads.begin()
    }

    deinit { end() }

    func receive(byteCount count: Int) -> BodyDecision {
        if failure != nil {
            discarded += count
            return discarded > Upload.discardAllowance ? .close : .discard
        }
        let end = file.size + UInt64(count)
        if let length = info.length, end > length {
            fail(.lengthExceeded(length: length))
            return .discard
        }
        if info.length == nil, let limit = context.maxUploadSize, end > limit {
            fail(.tooLarge(limit: limit))
            return .discard
        }
        return .parse
    }

    func bodyData(_ bytes: RawSpan) -> Bool {
        guard failure == nil else { return false }
        do {
            try file.write(bytes, expectedEnd: info.length)
            digest?.update(bytes)
            return true
        } catch {
            fail(.storage(error))
            return false
        }
    }

    func finish(parsed: Bool) -> Response {
        defer { end() }
        if let failure { return failure.response.adding(headers) }
        if let checksum, var digest, digest.finish() != checksum.expected {
            drop(.checksumMismatch(algorithm: checksum.algorithm.rawValue))
            return failure!.response.adding(headers)
        }
        if context.durable {
            do { try file.synchronize() } catch {
                drop(.storage(error))
                return failure!.response.adding(headers)
            }
        }
        let size = file.size
        if let length = info.length, size == length {
            switch context.complete(file, id: id, info: info, in: directory) {
            case .success(let stored):
                return Response(status: status, body: [], headers: headers + [
                    (name: "Upload-Offset", value: String(size)), (name: "Upload-Name", value: PathSegment.encode(stored.name))])
            case .failure(let failure):
                return failure.response.adding(headers)
            }
        }
        file.releaseReservation()
        let expires = context.store.expires(lastWrite: file.modificationSeconds)
        file.close()
        return Response(status: status, body: [], headers: headers + [
            (name: "Upload-Offset", value: String(size)), (name: "Upload-Expires", value: HTTPDate.format(expires))])
    }

    /// Cut off: what arrived stays (HEAD tells it), unless a checksum was to vouch for it.
    func abandon(_ reason: Termination) {
        if checksum != nil, failure == nil { try? file.truncate(to: start) }
        file.releaseReservation()
        context.log(.resumableCutOff, [("reason", .string(reason.label)), ("peer", .string(context.peer)),
                                       ("resumable", .string(id)), ("offset", .unsigned(file.size)),
                                       ("bytes_kept", .unsigned(file.size - min(file.size, start)))])
        file.close()
        end()
    }

    /// The request fails: this request's bytes go, the earlier ones stay.
    private func fail(_ failure: UploadFailure) {
        guard self.failure == nil else { return }
        drop(failure)
    }

    private func drop(_ failure: UploadFailure) {
        self.failure = failure
        try? file.truncate(to: start)
        file.releaseReservation()
        file.close()
        context.log(.uploadFailed, [("status", .number(Int64(failure.status))), ("error", .string(failure.message)),
                                    ("peer", .string(context.peer)), ("resumable", .string(id))])
    }

    private func end() {
        guard !ended else { return }
        ended = true
        context.uploads.end()
    }
}
