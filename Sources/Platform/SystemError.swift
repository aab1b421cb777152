import Glibc

/// A failed system call: which operation and its errno.
public struct SystemError: Error, Sendable, CustomStringConvertible {
    public let operation: String
    public let code: Int32

    public init(_ operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    public var reason: String { String(cString: strerror(code)) }
    public var description: String { "\(operation): \(reason)" }
    public var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }
    public var isExisting: Bool { code == EEXIST }
    public var isMissing: Bool { code == ENOENT }
    /// The process's or the system's open-files limit: a moment of overload, not a fault.
    public var isOutOfDescriptors: Bool { code == EMFILE || code == ENFILE }
}

/// Runs a system call that returns -1 and sets errno on failure, retrying it when
/// a signal interrupted it; errno is read right after the failing call, before
/// anything else can change it.
@discardableResult
func system<Result: BinaryInteger>(_ operation: @autoclosure () -> String,
                                   _ call: () -> Result) throws(SystemError) -> Result {
    while true {
        let result = call()
        if result >= 0 { return result }
        let code = errno
        if code != EINTR { throw SystemError(operation(), code: code) }
    }
}
