import Glibc
import Synchronization

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

/// The one way Platform makes a system call that returns -1 and sets errno:
/// errno is read right after the failing call, before anything else can change
/// it; a call a signal interrupted is retried (not `close`, whose descriptor is
/// gone even then: `retrying: false`); a bad descriptor or address is a
/// programming error and traps rather than becoming an answer.
@discardableResult
func syscall<Result: BinaryInteger>(_ operation: @autoclosure () -> String, retrying: Bool = true,
                                    _ call: () -> Result) throws(SystemError) -> Result {
    #if DEBUG
    if let faults = InjectedFaults.current, let code = faults.failure(for: operation()) {
        throw SystemError(operation(), code: code)
    }
    #endif
    while true {
        let result = call()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR && retrying { continue }
        precondition(code != EBADF && code != EFAULT, "\(operation()): \(String(cString: strerror(code)))")
        throw SystemError(operation(), code: code)
    }
}

/// `syscall` for a call that returns nil and sets errno on failure.
func syscall<Result>(_ operation: @autoclosure () -> String, _ call: () -> Result?) throws(SystemError) -> Result {
    var value: Result?
    try syscall(operation()) { () -> Int32 in
        value = call()
        return value == nil ? -1 : 0
    }
    return value!
}

#if DEBUG
/// Makes chosen system calls fail in tests (debug builds only), so that a full
/// disk or a failed link is tested without root:
/// `InjectedFaults.$current.withValue(InjectedFaults(["write": ENOSPC])) { ... }`.
/// A call fails when its operation starts with a key, after `passing` calls went through.
public final class InjectedFaults: Sendable {
    @TaskLocal public static var current: InjectedFaults?

    private let failures: [String: Int32]
    private let passed = Mutex([String: Int]())
    private let passing: Int

    public init(_ failures: [String: Int32], passing: Int = 0) {
        self.failures = failures
        self.passing = passing
    }

    func failure(for operation: String) -> Int32? {
        guard let (key, code) = failures.first(where: { operation.hasPrefix($0.key) }) else { return nil }
        let count = passed.withLock { passed in
            passed[key, default: 0] += 1
            return passed[key]!
        }
        return count > passing ? code : nil
    }
}
#endif
