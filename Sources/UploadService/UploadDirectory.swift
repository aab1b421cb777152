import MicroHTTPD
import Synchronization

/// The upload directory, opened once: every file operation is relative to its
/// descriptor. When the directory is removed (and perhaps made anew), operations
/// on the old descriptor fail with ENOENT; `reopen` then follows the path again,
/// so that the service resumes as soon as the directory is back.
public final class UploadDirectory: Sendable {
    /// Absolute, resolved at start-up.
    public let path: String
    private let current: Mutex<Directory?>

    public init(path: String, opened: Directory) {
        self.path = path
        current = Mutex(opened)
    }

    public func open() throws(SystemError) -> Directory {
        if let directory = current.withLock({ $0 }) { return directory }
        return try reopen(replacing: nil)
    }

    /// Opens the path anew, unless another request already replaced `stale`.
    public func reopen(replacing stale: Directory?) throws(SystemError) -> Directory {
        let result: Result<Directory, SystemError> = current.withLock { current in
            if let directory = current, directory !== stale { return .success(directory) }
            do throws(SystemError) {
                let directory = try Directory(path: path)
                current = directory
                return .success(directory)
            } catch {
                current = nil
                return .failure(error)
            }
        }
        return try result.get()
    }
}
