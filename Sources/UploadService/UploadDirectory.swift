import Platform
import Synchronization

/// The upload directory. Every file operation is relative to an open descriptor
/// of it, which is kept while the path still leads to the same directory (one
/// stat(2) per upload) and opened anew when the directory was removed and made
/// again, or another filesystem was mounted there: the service follows the path.
public final class UploadDirectory: Sendable {
    /// Absolute, resolved at start-up.
    public let path: String
    private struct State {
        var current: Directory?
        /// Temporary files that could not be removed when their upload failed (a
        /// directory made read-only, say): removed as soon as that works again.
        var pendingRemovals: [String] = []
    }
    private let state: Mutex<State>

    public init(path: String, opened: Directory) {
        self.path = path
        state = Mutex(State(current: opened))
    }

    /// The directory at `path` now. Runs for every upload: one short lock, and
    /// the stat(2) outside it.
    public func open() throws(SystemError) -> Directory {
        let (known, pending) = state.withLock { state in
            defer { state.pendingRemovals = [] }
            return (state.current, state.pendingRemovals)
        }
        let directory: Directory
        do {
            directory = if let known, known.isCurrent { known } else { try reopen(replacing: known) }
        } catch {
            for name in pending { removeLater(name) }
            throw error
        }
        for name in pending where !directory.removeIfUnlocked(name) && directory.exists(name) {
            removeLater(name)
        }
        return directory
    }

    func removeLater(_ name: String) {
        state.withLock { $0.pendingRemovals.append(name) }
    }

    private func reopen(replacing stale: Directory?) throws(SystemError) -> Directory {
        try state.withLock { state throws(SystemError) -> Directory in
            // Another upload may have reopened it meanwhile.
            if let current = state.current, current !== stale, current.isCurrent { return current }
            do throws(SystemError) {
                let directory = try Directory(path: path)
                state.current = directory
                return directory
            } catch {
                state.current = nil
                throw error
            }
        }
    }
}
