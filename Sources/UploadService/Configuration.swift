import Platform

public struct Configuration: Sendable, Equatable {
    public var host = "0.0.0.0"
    public var port: UInt16 = 9000
    public var uploadDirectory = "./upload"
    /// nil: unlimited.
    public var maxUploadSize: UInt64? = 1 << 30
    public var onConflict = ConflictPolicy.overwrite
    public var threads: Int
    public var connectionLimit = 4096
    /// Connections from one address (IPv6: one /64); see `ConnectionPolicy`.
    public var connectionsPerAddress = PerAddressLimit.automatic
    public var idleTimeoutSeconds = 30
    public var token: String?
    public var shutdownGraceSeconds = 5
    /// false: always named temporary files, even where unnamed ones (O_TMPFILE) work.
    public var unnamedStaging = true
    /// fdatasync every file and fsync the directory before answering 200.
    public var durable = false
    /// Origins besides the server's own that may upload from a browser; `*`: any.
    public var allowedOrigins: [String] = []
    /// Host names (lower case) by which browsers reach the server, besides IP
    /// literals and `localhost`: a browser's request naming any other `Host` is
    /// refused (DNS rebinding).
    public var publicNames: [String] = []
    /// Serve the upload page at `/`.
    public var web = true
    /// An incomplete resumable upload (tus, `/tus/`) is removed this long after its last byte.
    public var resumableExpirySeconds = 86_400
    /// Incomplete resumable uploads in the upload directory at most; 0 turns `/tus/` off.
    public var resumableLimit = 1000

    /// Four threads per processor: creating and naming a file blocks on the
    /// directory's lock, and with one thread per core the cores wait with it
    /// (docs/performance.md).
    public init(processors: Int) { threads = min(4 * processors, 1024) }
}
