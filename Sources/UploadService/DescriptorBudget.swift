import MicroHTTPD

/// How the process's descriptors (RLIMIT_NOFILE) are shared: connections (the
/// admitted ones and the policy's refused ones awaiting their 503), files in
/// progress, and what the process and the library hold by themselves. One
/// request may hold up to `Upload.maximumFiles` files, so the files get their
/// own budget (503 past it) rather than a share per connection.
struct DescriptorBudget {
    /// Standard streams, the listening socket, the upload directory (one per
    /// request being opened), the log, `/proc` reads: the process's own.
    static let reserved = 64
    /// Each worker thread's epoll and eventfd.
    static let perThread = 2
    /// At least this many files in progress, even if connections must give way.
    static let minimumStagedFiles = 64

    let openFiles: Int
    /// Admitted connections.
    let connections: Int
    let stagedFiles: Int

    init(openFiles: UInt64, connectionLimit: Int, threads: Int) {
        self.openFiles = Int(min(openFiles, UInt64(Int.max)))
        let held = Self.reserved + Self.perThread * threads + Daemon.lingeringDescriptors
        let available = max(2, self.openFiles - held)
        connections = min(connectionLimit, ConnectionPolicy.admittable(within: available - Self.minimumStagedFiles))
        stagedFiles = max(1, available - ConnectionPolicy.sockets(admitting: connections))
    }
}
