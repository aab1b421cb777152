import MicroHTTPD
import Platform

/// Every way a request can fail, and the one place where each becomes a status
/// code and a JSON body (`Metrics.failureReason` names the status for metrics).
public enum UploadFailure: Error, Equatable, Sendable {
    case badRequest(String)
    case unauthorized
    case forbiddenOrigin(String)
    case unknownHost(String)
    case notFound
    case methodNotAllowed(allow: String)
    case conflict(name: String)
    case notAFile(name: String)
    case tooLarge(limit: UInt64)
    case unsupportedMediaType(String)
    case noSpace
    case busy
    case connectionRefused(ConnectionRefusal)
    case internalError(String)
    // Resumable uploads (tus, `Resumable`).
    /// No or another `Tus-Resumable` than 1.0.0.
    case tusVersion(String?)
    /// `Upload-Offset` is not where the upload is.
    case offsetMismatch(given: UInt64, current: UInt64)
    /// Another request (here or in another instance) is writing that upload.
    case uploadLocked
    /// `Upload-Checksum` does not match the request's body: nothing of it is kept.
    case checksumMismatch(algorithm: String)
    /// The upload expired (`--resumable-expiry`) and its bytes are removed.
    case uploadExpired
    /// Bytes past `Upload-Length`.
    case lengthExceeded(length: UInt64)
    /// A body of another media type than the one the request needs.
    case wrongMediaType(expected: String, got: String)
    /// `--resumable-limit` incomplete uploads in the directory already.
    case tooManyIncomplete(limit: Int)

    public var status: Int {
        switch self {
        case .badRequest: 400
        case .unauthorized: 401
        case .forbiddenOrigin, .unknownHost: 403
        case .notFound: 404
        case .methodNotAllowed: 405
        case .conflict, .notAFile: 409
        case .tooLarge: 413
        case .unsupportedMediaType: 415
        case .noSpace: 507
        case .busy, .connectionRefused: 503
        case .internalError: 500
        case .tusVersion: 412
        case .offsetMismatch, .uploadLocked: 409
        case .checksumMismatch: 460
        case .uploadExpired: 410
        case .lengthExceeded: 413
        case .wrongMediaType: 415
        case .tooManyIncomplete: 503
        }
    }

    public var message: String {
        switch self {
        case .badRequest(let detail): detail
        case .unauthorized: "missing or wrong bearer token"
        case .forbiddenOrigin(let origin): "cross-origin request from \(origin) refused; see --allow-origin"
        case .unknownHost(let host):
            "a browser reached this server as \"\(host)\", which is not one of its names; see --public-name"
        case .notFound: "not found"
        case .methodNotAllowed(let allow): "method not allowed; use \(allow)"
        case .conflict(let name): "\"\(name)\" already exists"
        case .notAFile(let name): "\"\(name)\" exists and is not a file"
        case .tooLarge(let limit): "request body is larger than the limit of \(ByteSize.format(limit))"
        case .unsupportedMediaType(let type): "expected multipart/form-data, got \(type.isEmpty ? "no Content-Type" : type)"
        case .noSpace: "no space left on the server's disk"
        case .busy: "the server has too many files in progress; try again shortly"
        case .connectionRefused(.busy): "the server is busy and this address holds many connections; try again shortly"
        case .connectionRefused(.addressLimit): "too many connections from this address; see --connections-per-address"
        case .internalError(let detail): detail
        case .tusVersion(let given):
            "this is tus 1.0.0: send Tus-Resumable: 1.0.0" + (given.map { " (got \"\($0.count > 32 ? String($0.prefix(32)) + "…" : $0)\")" } ?? "")
        case .offsetMismatch(let given, let current): "Upload-Offset is \(given), but the upload has \(current) bytes; continue from there"
        case .uploadLocked: "another request is writing this upload; try again shortly"
        case .checksumMismatch(let algorithm): "the body does not match its \(algorithm) Upload-Checksum; none of it was kept"
        case .uploadExpired: "the upload expired and its bytes were removed; start a new one"
        case .lengthExceeded(let length): "the upload's length is \(length) bytes; bytes past it are refused and none of this request's were kept"
        case .wrongMediaType(let expected, let type): "expected \(expected), got \(type.isEmpty ? "no Content-Type" : type)"
        case .tooManyIncomplete(let limit): "\(limit) incomplete resumable uploads are waiting already; finish or delete some, or try again later"
        }
    }

    public var response: Response {
        var headers = [(name: "Content-Type", value: "application/json")]
        switch self {
        case .methodNotAllowed(let allow): headers.append((name: "Allow", value: allow))
        case .unauthorized: headers.append((name: "WWW-Authenticate", value: "Bearer"))
        case .busy, .uploadLocked: headers.append((name: "Retry-After", value: "1"))
        case .connectionRefused:
            headers += [(name: "Retry-After", value: "1"), (name: "Connection", value: "close")]
        case .tooManyIncomplete: headers.append((name: "Retry-After", value: "60"))
        case .tusVersion: headers.append((name: "Tus-Version", value: "1.0.0"))
        case .offsetMismatch(_, let current): headers.append((name: "Upload-Offset", value: String(current)))
        default: break
        }
        let body = JSON.object([("error", .string(message))]).text + "\n"
        return Response(status: status, body: Array(body.utf8), headers: headers)
    }

    /// A failed file operation: a full disk is the client's to know, the rest is ours.
    static func storage(_ error: SystemError) -> UploadFailure {
        if error.isNoSpace { return .noSpace }
        if error.isOutOfDescriptors { return .busy }
        if error.isMissing { return .internalError("the upload directory is missing") }
        return .internalError("could not store the file (\(error.reason))")
    }
}
