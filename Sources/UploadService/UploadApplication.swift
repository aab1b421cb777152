import MicroHTTPD

/// Routes requests and checks an upload's headers before any byte of its body
/// is read.
public final class UploadApplication: HTTPApplication {
    let config: Configuration
    let directory: UploadDirectory
    let staging: Staging
    public let metrics = Metrics()
    let log: Log

    public init(config: Configuration, directory: UploadDirectory, staging: Staging, log: Log) {
        self.config = config
        self.directory = directory
        self.staging = staging
        self.log = log
    }

    public func begin(_ head: RequestHead) -> RequestAction {
        switch (head.path, head.method) {
        case ("/upload", "POST"):
            return beginUpload(head)
        case ("/upload", _):
            return reject(.methodNotAllowed(allow: "POST"))
        case ("/healthz", "GET"), ("/healthz", "HEAD"):
            return .respond(.json(200, .object([("status", .string("ok"))])))
        case ("/metrics", "GET"), ("/metrics", "HEAD"):
            return .respond(Response(status: 200, body: Array(metrics.render().utf8),
                                     headers: [(name: "Content-Type", value: "text/plain; version=0.0.4")]))
        case ("/healthz", _), ("/metrics", _):
            return reject(.methodNotAllowed(allow: "GET, HEAD"))
        default:
            return reject(.notFound)
        }
    }

    public func completed(_ record: RequestRecord) {
        if let status = record.status { metrics.responded(status) }
        log.access(record)
    }

    public func daemonMessage(_ text: String) {
        log.warning("http_daemon", [("message", .string(text))])
    }

    private func beginUpload(_ head: RequestHead) -> RequestAction {
        if let token = config.token, !Self.bearer(head.header("Authorization"), matches: token) {
            return reject(.unauthorized)
        }
        let contentType = head.header("Content-Type") ?? ""
        guard Self.mediaType(of: contentType) == "multipart/form-data" else {
            return reject(.unsupportedMediaType(contentType))
        }
        guard let boundary = Self.parameter("boundary", of: contentType), !boundary.isEmpty else {
            return reject(.badRequest("multipart/form-data without a boundary parameter"))
        }
        guard boundary.utf8.count >= 2 else {
            // RFC 2046 allows one character; libmicrohttpd's post-processor does not.
            return reject(.badRequest("multipart boundary must be at least 2 characters long"))
        }
        if let limit = config.maxUploadSize, let length = head.header("Content-Length").flatMap({ UInt64($0) }),
           length > limit {
            return reject(.tooLarge(limit: limit))
        }
        let current: Directory
        do {
            current = try directory.open()
        } catch {
            log.error("upload_dir_unavailable", [("path", .string(directory.path)), ("error", .string(error.description))])
            return reject(.internalError("the upload directory is unavailable (\(error.reason))"))
        }
        return .receiveForm(UploadReceiver(directory: current, in: directory, staging: staging, policy: config.onConflict,
                                           limit: config.maxUploadSize, peer: head.peer, metrics: metrics, log: log))
    }

    private func reject(_ failure: UploadFailure) -> RequestAction {
        metrics.failed(failure.reason)
        return .respond(failure.response)
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
