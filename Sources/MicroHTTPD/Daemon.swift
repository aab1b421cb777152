import CMicroHTTPD
import Glibc
import Platform

// The libmicrohttpd boundary: the daemon, its C callbacks, the multipart
// post-processor and responses. Everything above it is plain Swift.

/// What the application sees of a request when its headers have arrived.
/// Headers are read from libmicrohttpd's connection on demand, so a head is valid
/// only during `HTTPApplication.begin`: it cannot be copied, and `begin` only
/// borrows it, so the compiler keeps it from escaping.
public struct RequestHead: ~Copyable {
    public let method: String
    public let path: String
    public let peer: String
    /// Set when the connection policy refused the connection this request came on.
    public let refusal: ConnectionRefusal?
    private let connection: OpaquePointer

    init(method: String, path: String, peer: String, refusal: ConnectionRefusal?, connection: OpaquePointer) {
        self.method = method
        self.path = path
        self.peer = peer
        self.refusal = refusal
        self.connection = connection
    }

    /// The header of that name (case-insensitive).
    public func header(_ name: String) -> String? {
        string(MHD_lookup_connection_value(connection, .HEADER_KIND, name))
    }
}

public struct Response: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var headers: [(name: String, value: String)]

    public init(status: Int, body: [UInt8], headers: [(name: String, value: String)]) {
        self.status = status
        self.body = body
        self.headers = headers
    }
}

public enum RequestAction {
    /// Answer at once; a request body, if any, is not read and the connection closes.
    case respond(Response)
    /// Read the body as multipart/form-data into this receiver.
    case receiveForm(any FormReceiver)
    /// Hand the body over as it arrives, unparsed.
    case receiveBody(any RawBodyReceiver)
}

/// What to do with the next piece of a request body.
public enum BodyDecision {
    case parse
    /// Read and drop it, to answer once the body has ended.
    case discard
    /// Close the connection without an answer.
    case close
}

/// Why a request ended.
public enum Termination: Sendable {
    case completed, clientAborted, timedOut, shutdown, failed

    public var label: String {
        switch self {
        case .completed: "completed"
        case .clientAborted: "client_aborted"
        case .timedOut: "timed_out"
        case .shutdown: "shutdown"
        case .failed: "failed"
        }
    }
}

/// Takes the body of one request. libmicrohttpd serves a connection from one
/// thread at a time, so a receiver needs no locking.
public protocol BodyReceiver: AnyObject {
    /// `count` more body bytes arrived (before they are handed over).
    func receive(byteCount count: Int) -> BodyDecision
    /// The whole body arrived; `parsed` is false if a multipart body ended early.
    func finish(parsed: Bool) -> Response
    /// The connection ended before `finish`.
    func abandon(_ reason: Termination)
}

/// Takes a multipart/form-data body, part by part.
public protocol FormReceiver: BodyReceiver {
    /// A part begins: its field name and the filename's bytes as sent (nil
    /// without a filename parameter); false stops parsing.
    func partBegins(name: String, filename: [UInt8]?) -> Bool
    /// Content of the current part, lent for the call only; false stops parsing.
    func partData(_ bytes: RawSpan) -> Bool
    /// The body is not valid multipart.
    func malformed()
}

/// Takes a body as it arrives (`PUT`).
public protocol RawBodyReceiver: BodyReceiver {
    /// The next piece of the body, lent for the call only; false: the receiver
    /// failed, the rest of the body is only counted.
    func bodyData(_ bytes: RawSpan) -> Bool
}

/// One finished request, for the access log and metrics.
public struct RequestRecord: Sendable {
    public let method: String
    public let path: String
    public let peer: String
    /// nil when no response was sent.
    public let status: Int?
    public let bodyBytes: UInt64
    public let durationNanoseconds: UInt64
    public let termination: Termination
}

/// Why the connection policy refused a connection.
public enum ConnectionRefusal: Int, Sendable {
    /// The server is close to its connection limit and the address holds many.
    case busy = 1
    /// The address holds `--connections-per-address` connections already.
    case addressLimit = 2
}

/// What becomes of a new connection.
public enum Admission: Sendable, Equatable {
    case admit
    /// Kept just long enough to answer its first request with a refusal.
    case refuse(ConnectionRefusal)
    /// Closed without an answer: too many refused connections are open already.
    case drop
}

public protocol HTTPApplication: Sendable {
    /// A connection was accepted; decides whether it is served. Every call is
    /// matched by one `connectionClosed` with the same group and admission.
    func connectionOpened(from group: AddressGroup) -> Admission
    func connectionClosed(from group: AddressGroup, _ admission: Admission)
    func begin(_ head: borrowing RequestHead) -> RequestAction
    func completed(_ record: RequestRecord)
    func daemonMessage(_ text: String)
}

public struct DaemonOptions: Sendable {
    public var address: SocketAddress
    public var threads: Int
    /// Every connection the library holds, refused ones included: the
    /// application's policy admits fewer.
    public var connectionLimit: Int
    public var idleTimeoutSeconds: Int
    /// Per-connection memory; what the request's head leaves of it bounds each
    /// read from the socket (docs/performance.md). Our libmicrohttpd build gives
    /// an idle connection's memory back between requests instead of zeroing it.
    public var connectionMemory: Int
    /// The post-processor's buffer (at most; a smaller body gets a smaller one):
    /// the largest piece of a part handed over at once.
    public var formBufferSize: Int

    public init(address: SocketAddress, threads: Int, connectionLimit: Int, idleTimeoutSeconds: Int, connectionMemory: Int = 128 * 1024, formBufferSize: Int = 128 * 1024) {
        self.address = address
        self.threads = threads
        self.connectionLimit = connectionLimit
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.connectionMemory = connectionMemory
        self.formBufferSize = formBufferSize
    }
}

/// A running libmicrohttpd daemon: internal epoll threads, a thread pool, and the
/// inter-thread channel that quiescing needs. It must be stopped before it is
/// dropped: its threads would go on calling into freed state.
public final class Daemon: @unchecked Sendable {
    private var handle: OpaquePointer?
    private let context: Unmanaged<DaemonContext>
    public let port: UInt16

    public init(_ application: any HTTPApplication, options: DaemonOptions) throws(SystemError) {
        let context = Unmanaged.passRetained(DaemonContext(application, formBufferSize: options.formBufferSize))
        var flags = MHD_USE_INTERNAL_POLLING_THREAD.rawValue | MHD_USE_EPOLL.rawValue
            | MHD_USE_ITC.rawValue | MHD_USE_ERROR_LOG.rawValue
        // "::" also accepts IPv4, as people expect of a wildcard address.
        if options.address.isIPv6 {
            flags |= options.address.isWildcard ? MHD_USE_DUAL_STACK.rawValue : MHD_USE_IPv6.rawValue
        }

        let handle: OpaquePointer? = options.address.withSockaddr { address, _ in
            var items: [MHD_OptionItem] = [
                .init(option: .SOCK_ADDR, value: 0, ptr_value: UnsafeMutableRawPointer(mutating: address)),
                .init(option: .THREAD_POOL_SIZE, value: max(1, options.threads), ptr_value: nil),
                .init(option: .CONNECTION_LIMIT, value: options.connectionLimit, ptr_value: nil),
                .init(option: .CONNECTION_TIMEOUT, value: options.idleTimeoutSeconds, ptr_value: nil),
                .init(option: .CONNECTION_MEMORY_LIMIT, value: options.connectionMemory, ptr_value: nil),
                // Lets a read grow past half of that memory into what the request's
                // head leaves free: 120 KiB instead of 64 KiB per read from 128 KiB.
                .init(option: .CONNECTION_MEMORY_INCREMENT, value: options.connectionMemory, ptr_value: nil),
                .init(option: .LISTEN_BACKLOG_SIZE, value: 1024, ptr_value: nil),
                // No LISTENING_ADDRESS_REUSE: with SO_REUSEPORT a second instance
                // on the same port would start and silently take part of the traffic.
                .init(option: .END, value: 0, ptr_value: nil),
            ]
            let opaque = context.toOpaque()
            return items.withUnsafeMutableBufferPointer {
                shim_start_daemon(flags, accessHandler, opaque, requestCompleted, opaque, logMessage, opaque,
                                  errorResponse, opaque, connectionNotified, opaque, $0.baseAddress)
            }
        }
        guard let handle else {
            let code = errno
            context.release()
            throw SystemError("listen on \(options.address)", code: code == 0 ? EADDRINUSE : code)
        }
        self.handle = handle
        self.context = context
        self.port = shim_daemon_port(handle)
    }

    /// Stops accepting connections; requests already in progress go on.
    public func quiesce() {
        guard let handle else { return }
        let listener = MHD_quiesce_daemon(handle)
        if listener >= 0 { close(listener) }
    }

    /// Closes every connection (requests still running are abandoned) and joins the threads.
    public func stop() {
        guard let handle else { return }
        MHD_stop_daemon(handle)
        self.handle = nil
        context.release()
    }

    deinit { precondition(handle == nil, "Daemon dropped while running: call stop() first") }

    /// Descriptors our library build may hold after their connection ended, to
    /// drain what the client still sends so that an early answer is not lost.
    public static var lingeringDescriptors: Int { Int(shim_lingering_descriptors()) }

    /// `0.9.75 (stock)` or `0.9.75 (upload-server patches ...)`: which library runs.
    public static var library: (version: String, patches: String?) {
        (String(cString: MHD_get_version()), shim_patches().map { String(cString: $0) })
    }
}

/// Shared by every thread of the daemon; immutable.
private final class DaemonContext: Sendable {
    let application: any HTTPApplication
    let formBufferSize: Int

    init(_ application: any HTTPApplication, formBufferSize: Int) {
        self.application = application
        self.formBufferSize = formBufferSize
    }
}

/// Where a request's body goes.
private enum Body {
    case form(any FormReceiver)
    case raw(any RawBodyReceiver)

    var receiver: any BodyReceiver {
        switch self {
        case .form(let receiver): receiver
        case .raw(let receiver): receiver
        }
    }
}

/// The state of one request, owned by libmicrohttpd's `con_cls` from the first
/// call of the access handler until the completion callback.
private final class Exchange {
    let method: String
    let path: String
    let peer: String
    let started = ProcessEnvironment.monotonicNanoseconds()
    var status: Int?
    var bodyBytes: UInt64 = 0
    /// Where the body goes: parsed by `postProcessor` into a form receiver, or as it is.
    var body: Body?
    /// An answer to a request without a body, sent on the handler's next call:
    /// one queued on the first call makes libmicrohttpd close the connection.
    var deferred: Response?
    var postProcessor: OpaquePointer?
    var finished = false
    // The post-processor reports a new part only as "offset 0"; see `formData`.
    var partName: String?
    var partFilename: [UInt8]?
    var partBytes: UInt64 = 0

    init(_ head: borrowing RequestHead) {
        method = head.method
        path = head.path
        peer = head.peer
    }

    func queue(_ response: Response, on connection: OpaquePointer) -> MHD_Result {
        status = response.status
        let mhdResponse = response.body.withUnsafeBytes {
            MHD_create_response_from_buffer($0.count, UnsafeMutableRawPointer(mutating: $0.baseAddress), .RESPMEM_MUST_COPY)
        }
        guard let mhdResponse else { return .NO }
        defer { MHD_destroy_response(mhdResponse) }
        for header in response.headers {
            MHD_add_response_header(mhdResponse, header.name, header.value)
        }
        return MHD_queue_response(connection, UInt32(response.status), mhdResponse)
    }

    /// One call of the post-processor's iterator.
    func formData(name: UnsafePointer<CChar>?, filename: UnsafePointer<CChar>?, data: UnsafePointer<CChar>?,
                  offset: UInt64, size: Int) -> Bool {
        guard case .form(let receiver) = body else { return false }
        // libmicrohttpd may call twice at offset 0 for one part (once empty, then
        // with data), so a new part is an offset of 0 after data, or a new name.
        // An empty part followed by a part with the same name and filename reads
        // as one part; with either name it ends the same way on disk. The names
        // become Swift strings only at offset 0: the other calls are the hot path.
        if offset == 0 {
            let name = string(name) ?? "", filename = filename.map { Array(UnsafeRawBufferPointer(start: $0, count: strlen($0))) }
            if partBytes > 0 || partName != name || partFilename != filename {
                partName = name
                partFilename = filename
                partBytes = 0
                guard receiver.partBegins(name: name, filename: filename) else { return false }
            }
        }
        guard size > 0, let data else { return true }
        partBytes += UInt64(size)
        let buffer = UnsafeRawBufferPointer(start: data, count: size)
        return receiver.partData(buffer.bytes)
    }
}

private func string(_ pointer: UnsafePointer<CChar>?) -> String? {
    pointer.map { String(cString: $0) }
}

private let accessHandler: MHD_AccessHandlerCallback = { cls, connection, url, method, _, uploadData, uploadDataSize, conCls in
    guard let cls, let connection, let conCls, let uploadDataSize else { return .NO }
    let context = Unmanaged<DaemonContext>.fromOpaque(cls).takeUnretainedValue()

    guard let existing = conCls.pointee else {
        // First call: the headers have arrived, the body (if any) has not.
        let peer = shim_client_address(connection).flatMap { SocketAddress($0)?.description } ?? "-"
        let refusal = ConnectionDecision(shim_socket_context(connection)).refusal
        let head = RequestHead(method: string(method) ?? "", path: string(url) ?? "", peer: peer,
                               refusal: refusal, connection: connection)
        let exchange = Exchange(head)
        conCls.pointee = Unmanaged.passRetained(exchange).toOpaque()

        switch context.application.begin(head) {
        case .respond(let response):
            let hasBody = head.header("Transfer-Encoding") != nil
                || head.header("Content-Length").map { $0 != "0" } ?? false
            guard hasBody else {
                exchange.deferred = response
                return .YES
            }
            return exchange.queue(response, on: connection)
        case .receiveBody(let receiver):
            exchange.body = .raw(receiver)
            return .YES
        case .receiveForm(let receiver):
            exchange.body = .form(receiver)
            // The buffer never needs to be larger than the body: a small upload
            // then allocates (and zeroes) a small one.
            let length = min(head.header("Content-Length").flatMap { Int($0) } ?? .max, context.formBufferSize)
            let bufferSize = min(context.formBufferSize, max(length, 1024) + 256)
            exchange.postProcessor = MHD_create_post_processor(
                connection, bufferSize, formIterator, Unmanaged.passUnretained(exchange).toOpaque())
            if exchange.postProcessor == nil { receiver.malformed() }
            // Returning without a response makes libmicrohttpd send
            // "100 Continue" when asked and read the body.
            return .YES
        }
    }

    let exchange = Unmanaged<Exchange>.fromOpaque(existing).takeUnretainedValue()
    let size = uploadDataSize.pointee
    if size > 0 {
        uploadDataSize.pointee = 0
        exchange.bodyBytes += UInt64(size)
        guard let body = exchange.body else { return .YES }
        switch body.receiver.receive(byteCount: size) {
        case .close:
            return .NO
        case .discard:
            return .YES
        case .parse:
            switch body {
            case .raw(let receiver):
                guard let uploadData else { break }
                let buffer = UnsafeRawBufferPointer(start: uploadData, count: size)
                _ = receiver.bodyData(buffer.bytes)
            case .form(let receiver):
                if let postProcessor = exchange.postProcessor, MHD_post_process(postProcessor, uploadData, size) == .NO {
                    receiver.malformed()
                }
            }
            return .YES
        }
    }

    // The body is complete.
    if let response = exchange.deferred {
        exchange.deferred = nil
        return exchange.queue(response, on: connection)
    }
    guard exchange.status == nil, let receiver = exchange.body?.receiver else { return .YES }
    var parsed = false
    if let postProcessor = exchange.postProcessor {
        parsed = MHD_destroy_post_processor(postProcessor) == .YES
        exchange.postProcessor = nil
    }
    exchange.finished = true
    return exchange.queue(receiver.finish(parsed: parsed), on: connection)
}

private let formIterator: MHD_PostDataIterator = { cls, _, key, filename, _, _, data, offset, size in
    guard let cls else { return .NO }
    let exchange = Unmanaged<Exchange>.fromOpaque(cls).takeUnretainedValue()
    let accepted = exchange.formData(name: key, filename: filename, data: data, offset: offset, size: size)
    return accepted ? .YES : .NO
}

private let requestCompleted: MHD_RequestCompletedCallback = { cls, _, conCls, code in
    guard let cls, let conCls, let pointer = conCls.pointee else { return }
    conCls.pointee = nil
    let context = Unmanaged<DaemonContext>.fromOpaque(cls).takeUnretainedValue()
    let exchange = Unmanaged<Exchange>.fromOpaque(pointer).takeRetainedValue()

    let termination: Termination = switch code {
    case .REQUEST_TERMINATED_COMPLETED_OK: .completed
    case .REQUEST_TERMINATED_TIMEOUT_REACHED: .timedOut
    case .REQUEST_TERMINATED_DAEMON_SHUTDOWN: .shutdown
    case .REQUEST_TERMINATED_CLIENT_ABORT, .REQUEST_TERMINATED_READ_ERROR: .clientAborted
    default: .failed
    }
    if let postProcessor = exchange.postProcessor {
        _ = MHD_destroy_post_processor(postProcessor)
        exchange.postProcessor = nil
    }
    if let receiver = exchange.body?.receiver, !exchange.finished {
        receiver.abandon(termination)
    }
    exchange.body = nil
    context.application.completed(RequestRecord(
        method: exchange.method, path: exchange.path, peer: exchange.peer,
        status: exchange.status, bodyBytes: exchange.bodyBytes,
        durationNanoseconds: ProcessEnvironment.monotonicNanoseconds() - exchange.started,
        termination: exchange.status == nil && termination == .completed ? .failed : termination))
}

/// A connection's admission, kept in its socket context as a small number (not
/// an address: nothing to allocate or free per connection).
private struct ConnectionDecision {
    let admission: Admission

    init(_ admission: Admission) { self.admission = admission }

    init(_ context: UnsafeMutableRawPointer?) {
        admission = switch Int(bitPattern: context) {
        case 0: .admit
        case -1: .drop
        case let code: ConnectionRefusal(rawValue: code).map { .refuse($0) } ?? .drop
        }
    }

    var context: UnsafeMutableRawPointer? {
        switch admission {
        case .admit: nil
        case .refuse(let refusal): UnsafeMutableRawPointer(bitPattern: refusal.rawValue)
        case .drop: UnsafeMutableRawPointer(bitPattern: -1)
        }
    }

    var refusal: ConnectionRefusal? {
        if case .refuse(let refusal) = admission { return refusal }
        return nil
    }
}

/// A refused connection is kept only this long for its first request.
private let refusedConnectionTimeoutSeconds: UInt32 = 2

private let connectionNotified: MHD_NotifyConnectionCallback = { cls, connection, socketContext, code in
    guard let cls, let connection, let socketContext,
          let group = shim_client_address(connection).flatMap({ SocketAddress($0)?.group }) else { return }
    let context = Unmanaged<DaemonContext>.fromOpaque(cls).takeUnretainedValue()
    switch code {
    case .CONNECTION_NOTIFY_STARTED:
        let decision = ConnectionDecision(context.application.connectionOpened(from: group))
        socketContext.pointee = decision.context
        switch decision.admission {
        case .admit: break
        case .refuse: shim_set_connection_timeout(connection, refusedConnectionTimeoutSeconds)
        case .drop: shim_shut_down(connection)
        }
    case .CONNECTION_NOTIFY_CLOSED:
        context.application.connectionClosed(from: group, ConnectionDecision(socketContext.pointee).admission)
    @unknown default:
        break
    }
}

private let logMessage: MHD_LogCallback = { cls, format, arguments in
    guard let cls, let format else { return }
    let context = Unmanaged<DaemonContext>.fromOpaque(cls).takeUnretainedValue()
    var text = [CChar](repeating: 0, count: 512)
    guard let arguments else { return }
    vsnprintf(&text, text.count, format, arguments)
    var message = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    while message.last?.isNewline == true { message.removeLast() }
    context.application.daemonMessage(message)
}

/// Our libmicrohttpd build calls this when it answers a request by itself (a
/// header too large, bad chunking, an absurd Content-Length, an unsupported
/// transfer coding) with a JSON body of its own; the answer is recorded like
/// every other. A request the application has seen is logged at its
/// completion, with this status; any other is logged here.
private let errorResponse: ErrorResponseCallback = { cls, connection, requestContext, status, method, url in
    guard let cls else { return }
    if let pointer = requestContext?.pointee {
        Unmanaged<Exchange>.fromOpaque(pointer).takeUnretainedValue().status = Int(status)
        return
    }
    let context = Unmanaged<DaemonContext>.fromOpaque(cls).takeUnretainedValue()
    let peer = connection.flatMap(shim_client_address).flatMap { SocketAddress($0)?.description } ?? "-"
    context.application.completed(RequestRecord(
        method: string(method) ?? "-", path: string(url) ?? "-", peer: peer, status: Int(status),
        bodyBytes: 0, durationNanoseconds: 0, termination: .completed))
}
