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
        }
    }

    public var response: Response {
        var headers = [(name: "Content-Type", value: "application/json")]
        switch self {
        case .methodNotAllowed(let allow): headers.append((name: "Allow", value: allow))
        case .unauthorized: headers.append((name: "WWW-Authenticate", value: "Bearer"))
        case .busy: headers.append((name: "Retry-After", value: "1"))
        case .connectionRefused:
            headers += [(name: "Retry-After", value: "1"), (name: "Connection", value: "close")]
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
