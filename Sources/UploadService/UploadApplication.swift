import MicroHTTPD
import Platform

/// Routes requests and checks an upload's headers before any byte of its body
/// is read.
public final class UploadApplication: HTTPApplication {
    let config: Configuration
    let directory: UploadDirectory
    let uploads = UploadsInFlight()
    let metrics: Metrics
    let log: Log
    let connections: ConnectionPolicy
    private let settings: Upload.Settings
    private let page: WebPage?
    /// Resumable uploads (tus), `Resumable.swift`.
    let resumable: ResumableStore

    public init(config: Configuration, directory: UploadDirectory, staging: Staging, connectionLimit: Int,
                stagedFilesLimit: Int, log: Log) {
        self.config = config
        self.directory = directory
        self.log = log
        connections = ConnectionPolicy(limit: connectionLimit, perAddress: config.connectionsPerAddress)
        metrics = Metrics(uploads: uploads, connections: connections)
        settings = Upload.Settings(uploadDirectory: directory, staging: staging, policy: config.onConflict,
                                   durable: config.durable, limit: config.maxUploadSize,
                                   budget: StagingBudget(limit: stagedFilesLimit), uploads: uploads,
                                   metrics: metrics, log: log)
        page = config.web ? WebPage(maxUploadSize: config.maxUploadSize, tokenRequired: config.token != nil) : nil
        resumable = ResumableStore(expirySeconds: config.resumableExpirySeconds, limit: config.resumableLimit)
        startResumable()
    }

    public func connectionOpened(from group: AddressGroup) -> Admission {
        let decision = connections.opened(from: group)
        if case .admit = decision.admission { return .admit }
        metrics.refusedConnection(decision.admission)
        if decision.log {
            log(.connectionRefused, [
                ("address", .string(group.description)),
                ("reason", .string(Metrics.refusalReason(decision.admission))),
                ("holding", .number(Int64(decision.holding))),
                ("connections", .number(Int64(connections.admittedCount))),
                ("connections_per_address", .string(config.connectionsPerAddress.description)),
            ])
        }
        return decision.admission
    }

    public func connectionClosed(from group: AddressGroup, _ admission: Admission) {
        connections.closed(from: group, admission)
    }

    public func begin(_ head: borrowing RequestHead) -> RequestAction {
        let path = head.path, method = head.method
        if let refusal = head.refusal {
            return reject(.connectionRefused(refusal), cors: corsHeaders(head))
        }
        if path == "/upload" {
            switch method {
            case "POST": return beginForm(head)
            case "OPTIONS": return options(head, allow: "POST, OPTIONS")
            default: return reject(.methodNotAllowed(allow: "POST, OPTIONS"))
            }
        }
        if path.hasPrefix("/upload/") {
            switch method {
            case "PUT": return beginPut(head, segment: path.dropFirst("/upload/".count))
            case "OPTIONS": return options(head, allow: "PUT, OPTIONS")
            default: return reject(.methodNotAllowed(allow: "PUT, OPTIONS"))
            }
        }
        if path == "/tus" || path.hasPrefix("/tus/") { return beginResumable(head) }
        switch (path, method) {
        case ("/healthz", "GET"), ("/healthz", "HEAD"):
            return .respond(.json(200, .object([("status", .string("ok"))])))
        case ("/metrics", "GET"), ("/metrics", "HEAD"):
            if let token = config.token, !Self.bearer(head.header("Authorization"), matches: token) {
                return reject(.unauthorized)
            }
            return .respond(Response(status: 200, body: Array(metrics.render().utf8),
                                     headers: [(name: "Content-Type", value: "text/plain; version=0.0.4")]))
        case ("/healthz", _), ("/metrics", _):
            return reject(.methodNotAllowed(allow: "GET, HEAD"))
        default:
            guard let page, let response = page.response(path: path, method: method) else { return reject(.notFound) }
            return .respond(response)
        }
    }

    /// Where every request ends: counted and logged once.
    public func completed(_ record: RequestRecord) {
        metrics.record(record)
        log.access(record)
    }

    /// Uploads being received now (shutdown waits for them).
    public var uploadsInFlight: Int { uploads.count }

    public func daemonMessage(_ text: String) {
        log(.httpDaemon, [("message", .string(text))])
    }

    private func beginForm(_ head: borrowing RequestHead) -> RequestAction {
        if let refusal = checkUpload(head) { return reject(refusal, cors: corsHeaders(head)) }
        let cors = corsHeaders(head)
        let contentType = head.header("Content-Type") ?? ""
        guard Self.mediaType(of: contentType) == "multipart/form-data" else {
            return reject(.unsupportedMediaType(contentType), cors: cors)
        }
        guard let boundary = Self.parameter("boundary", of: contentType), !boundary.isEmpty else {
            return reject(.badRequest("multipart/form-data without a boundary parameter"), cors: cors)
        }
        guard boundary.utf8.count >= 2 else {
            // RFC 2046 allows one character; libmicrohttpd's post-processor does not.
            return reject(.badRequest("multipart boundary must be at least 2 characters long"), cors: cors)
        }
        switch openUpload(head) {
        case .success(let upload): return .receiveForm(FormUpload(upload, headers: cors))
        case .failure(let failure): return reject(failure, cors: cors)
        }
    }

    /// `PUT /upload/<name>`: the one path segment, percent-decoded once, is the name.
    private func beginPut(_ head: borrowing RequestHead, segment: Substring) -> RequestAction {
        let cors = corsHeaders(head)
        if let refusal = checkUpload(head) { return reject(refusal, cors: cors) }
        guard let raw = PathSegment.decode(segment) else {
            return reject(.badRequest("malformed percent-encoding in the file name"), cors: cors)
        }
        guard !raw.contains(UInt8(ascii: "/")) && !raw.contains(UInt8(ascii: "\\")) else {
            return reject(.badRequest("the file name must be one path segment, without / or \\"), cors: cors)
        }
        let name: String
        switch FileName.sanitize(raw) {
        case .success(let sanitized): name = sanitized
        case .failure(let failure): return reject(failure, cors: cors)
        }
        switch openUpload(head) {
        case .success(let upload):
            let receiver = PutUpload(upload, name: name, headers: cors)
            // Refused before the body (too many files in progress, say): answered now.
            if upload.failure != nil { return .respond(receiver.finish(parsed: true)) }
            return .receiveBody(receiver)
        case .failure(let failure):
            return reject(failure, cors: cors)
        }
    }

    /// What every upload must pass before its body is read: the browser checks,
    /// the token, the announced size.
    func checkUpload(_ head: borrowing RequestHead) -> UploadFailure? {
        if let refusal = checkBrowser(head) { return refusal }
        if let token = config.token, !Self.bearer(head.header("Authorization"), matches: token) {
            return .unauthorized
        }
        if let limit = config.maxUploadSize, let length = head.header("Content-Length").flatMap({ UInt64($0) }),
           length > limit {
            return .tooLarge(limit: limit)
        }
        return nil
    }

    private func openUpload(_ head: borrowing RequestHead) -> Result<Upload, UploadFailure> {
        do {
            return .success(Upload(settings, directory: try directory.open(), peer: head.peer,
                                   announcedLength: head.header("Content-Length").flatMap { UInt64($0) }))
        } catch {
            if error.isOutOfDescriptors { return .failure(.busy) }
            log(.uploadDirectoryUnavailable, [("path", .string(directory.path)), ("error", .string(error.description))])
            return .failure(.internalError("the upload directory is unavailable (\(error.reason))"))
        }
    }

    /// A browser (it sends `Origin` with every upload, and `Sec-Fetch-*`) must
    /// name this server in `Host`: after DNS rebinding, an attacker's page reaches
    /// this server under the attacker's name, and its origin then matches that
    /// `Host`. It must also come from the server's own origin or an allowed one:
    /// without a token, any page a user opens could otherwise store files here.
    /// Clients that send neither header (curl, scripts) are not affected.
    func checkBrowser(_ head: borrowing RequestHead) -> UploadFailure? {
        let origin = head.header("Origin")
        guard origin != nil || head.header("Sec-Fetch-Site") != nil || head.header("Sec-Fetch-Mode") != nil else {
            return nil
        }
        let host = head.header("Host") ?? ""
        guard HostName.isServerName(host, publicNames: config.publicNames) else { return .unknownHost(host) }
        if let origin, !originAllowed(origin, host: host) { return .forbiddenOrigin(origin) }
        return nil
    }

    func originAllowed(_ origin: String, host: String) -> Bool {
        if origin == "http://" + host || origin == "https://" + host { return true }
        return config.allowedOrigins.contains("*") || config.allowedOrigins.contains(origin)
    }

    /// For an allowed cross-origin request: what lets the browser read the answer,
    /// errors included (a page told "network error" cannot ask for the token).
    func corsHeaders(_ head: borrowing RequestHead) -> [(name: String, value: String)] {
        guard !config.allowedOrigins.isEmpty, let origin = head.header("Origin"),
              originAllowed(origin, host: head.header("Host") ?? "") else { return [] }
        return [(name: "Access-Control-Allow-Origin", value: origin), (name: "Vary", value: "Origin")]
    }

    /// `OPTIONS`: what the path accepts, and a CORS preflight's answer for an allowed origin.
    private func options(_ head: borrowing RequestHead, allow: String) -> RequestAction {
        if let refusal = checkBrowser(head) { return reject(refusal) }
        var headers = [(name: "Allow", value: allow)] + corsHeaders(head)
        if head.header("Access-Control-Request-Method") != nil && !headers.isEmpty {
            headers += [(name: "Access-Control-Allow-Methods", value: allow),
                        (name: "Access-Control-Allow-Headers", value: "Authorization, Content-Type"),
                        (name: "Access-Control-Max-Age", value: "600")]
        }
        return .respond(Response(status: 204, body: [], headers: headers))
    }

    func reject(_ failure: UploadFailure, cors: [(name: String, value: String)] = []) -> RequestAction {
        .respond(failure.response.adding(cors))
    }

    // Header values are parsed on their UTF-8 bytes: Character-based splitting
    // costs more than the rest of a small upload.

    /// `multipart/form-data` from `multipart/form-data; boundary=x`, lower-cased.
    static func mediaType(of contentType: String) -> String {
        let utf8 = contentType.utf8
        let end = utf8.firstIndex(of: UInt8(ascii: ";")) ?? utf8.endIndex
        return contentType[..<end].trimmingSpaces().lowercased()
    }

    /// A parameter of a header value, unquoted: `boundary` of `multipart/form-data; boundary="a b"`.
    static func parameter(_ name: String, of value: String) -> String? {
        let utf8 = value.utf8
        var start = utf8.firstIndex(of: UInt8(ascii: ";"))
        while let semicolon = start {
            let from = utf8.index(after: semicolon)
            let end = utf8[from...].firstIndex(of: UInt8(ascii: ";")) ?? utf8.endIndex
            start = end == utf8.endIndex ? nil : end
            guard let equals = utf8[from..<end].firstIndex(of: UInt8(ascii: "=")),
                  value[from..<equals].trimmingSpaces().lowercased() == name else { continue }
            var parameter = value[utf8.index(after: equals)..<end].trimmingSpaces()
            if parameter.utf8.count >= 2 && parameter.hasPrefix("\"") && parameter.hasSuffix("\"") {
                parameter = String(parameter.dropFirst().dropLast())
            }
            return parameter
        }
        return nil
    }

    /// Compares in time independent of where the first difference is.
    static func bearer(_ authorization: String?, matches token: String) -> Bool {
        guard let authorization, authorization.count > 7,
              authorization.prefix(7).lowercased() == "bearer " else { return false }
        let given = Array(authorization.utf8.dropFirst(7))
        let expected = Array(token.utf8)
        var difference = given.count ^ expected.count
        for index in 0..<expected.count {
            difference |= Int(expected[index] ^ (index < given.count ? given[index] : 0))
        }
        return difference == 0
    }
}

extension String {
    func trimmingSpaces() -> String { self[...].trimmingSpaces() }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (on the UTF-8 view: this runs
    /// for every request).
    func trimmingSpaces() -> String {
        let isText: (UInt8) -> Bool = { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }
        guard let first = utf8.firstIndex(where: isText), let last = utf8.lastIndex(where: isText) else { return "" }
        return String(self[first..<utf8.index(after: last)])
    }
}
