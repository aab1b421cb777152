import MicroHTTPD
import Synchronization

/// The upload directory. Every file operation is relative to an open descriptor
/// of it, which is kept while the path still leads to the same directory (one
/// stat(2) per upload) and opened anew when the directory was removed and made
/// again, or another filesystem was mounted there: the service follows the path.
public final class UploadDirectory: Sendable {
    /// Absolute, resolved at start-up.
    public let path: String
    private let current: Mutex<Directory?>
    /// Temporary files that could not be removed when their upload failed (a
    /// directory made read-only, say): removed as soon as that works again.
    private let pendingRemovals = Mutex<[String]>([])

    public init(path: String, opened: Directory) {
        self.path = path
        current = Mutex(opened)
    }

    /// The directory at `path` now.
    public func open() throws(SystemError) -> Directory {
        let result: Result<Directory, SystemError> = current.withLock { current in
            if let directory = current, directory.isCurrent { return .success(directory) }
            do throws(SystemError) {
                let directory = try Directory(path: path)
                current = directory
                return .success(directory)
            } catch {
                current = nil
                return .failure(error)
            }
        }
        let directory = try result.get()
        retryRemovals(in: directory)
        return directory
    }

    func removeLater(_ name: String) {
        pendingRemovals.withLock { $0.append(name) }
    }

    private func retryRemovals(in directory: Directory) {
        let names = pendingRemovals.withLock { pending -> [String] in
            defer { pending = [] }
            return pending
        }
        guard !names.isEmpty else { return }
        for name in names where !directory.removeIfUnlocked(name) && directory.exists(name) {
            removeLater(name)
        }
    }
}
