import MicroHTTPD
import Platform

/// Start-up checks, the daemon's life and an orderly shutdown.
public enum Server {
    /// Runs until SIGTERM or SIGINT; returns the process exit code.
    public static func run(_ config: Configuration) -> Int32 {
        let log = Log()
        let uid = ProcessEnvironment.userID, gid = ProcessEnvironment.groupID

        // Fail at once, with the fix, rather than answer 500 to every upload.
        let uploadDirectory: UploadDirectory
        let staging: Staging
        do {
            (uploadDirectory, staging) = try prepare(config, log: log)
        } catch {
            ProcessEnvironment.writeLine(
                "upload-server: cannot use the upload directory \"\(config.uploadDirectory)\" (\(error.reason)) "
                + "as uid \(uid) gid \(gid). Fix: make it writable for that user, for example "
                + "\"chown -R \(uid):\(gid) <dir>\" on the host for a bind mount, or run with --user set to the directory's owner.",
                toStandardError: true)
            return 1
        }

        // Before any thread starts, so that all of them inherit the mask.
        ProcessEnvironment.blockTerminationSignals()
        ProcessEnvironment.mapLargeAllocations()
        let budget = DescriptorBudget(openFiles: ProcessEnvironment.raiseOpenFileLimit(),
                                      connectionLimit: config.connectionLimit, threads: config.threads)

        guard let address = SocketAddress(host: config.host, port: config.port) else {
            ProcessEnvironment.writeLine("upload-server: invalid host \(config.host)", toStandardError: true)
            return 2
        }
        let application = UploadApplication(config: config, directory: uploadDirectory, staging: staging,
                                            connectionLimit: budget.connections, stagedFilesLimit: budget.stagedFiles, log: log)
        let daemon: Daemon
        do {
            daemon = try Daemon(application, options: DaemonOptions(
                address: address, threads: config.threads,
                connectionLimit: ConnectionPolicy.sockets(admitting: budget.connections),
                idleTimeoutSeconds: config.idleTimeoutSeconds))
        } catch {
            ProcessEnvironment.writeLine("upload-server: cannot \(error)", toStandardError: true)
            return 1
        }

        let library = Daemon.library
        let filesystem = (try? uploadDirectory.open())?.filesystem
        log(.started, [
            ("version", .string(ProcessEnvironment.buildVersion)),
            ("revision", .string(ProcessEnvironment.buildRevision)),
            ("libmicrohttpd", .string(library.version)),
            ("libmicrohttpd_patches", library.patches.map { .string($0) } ?? .string("none (stock library)")),
            ("host", .string(config.host)),
            ("port", .number(Int64(daemon.port))),
            ("upload_dir", .string(uploadDirectory.path)),
            ("staging", .string(staging.description)),
            ("filesystem", filesystem.map { .string($0.description) } ?? .null),
            ("max_upload_size", config.maxUploadSize.map { .string(ByteSize.format($0)) } ?? .string("unlimited")),
            ("on_conflict", .string(config.onConflict.rawValue)),
            ("threads", .number(Int64(config.threads))),
            ("connection_limit", .number(Int64(budget.connections))),
            ("connections_per_address", {
                if case .atMost(let count) = config.connectionsPerAddress { return .number(Int64(count)) }
                return .string(config.connectionsPerAddress.description)
            }()),
            ("staged_files_limit", .number(Int64(budget.stagedFiles))),
            ("timeout_s", .number(Int64(config.idleTimeoutSeconds))),
            ("shutdown_grace_s", .number(Int64(config.shutdownGraceSeconds))),
            ("token", .bool(config.token != nil)),
            ("fsync", .bool(config.durable)),
            ("web", .bool(config.web)),
            ("allowed_origins", .array(config.allowedOrigins.map { .string($0) })),
            ("public_names", .array(config.publicNames.map { .string($0) })),
            ("uid", .unsigned(UInt64(uid))),
            ("gid", .unsigned(UInt64(gid))),
            ("open_files_limit", .unsigned(UInt64(budget.openFiles))),
        ])
        if budget.connections < config.connectionLimit {
            log(.connectionLimitLowered, [
                ("requested", .number(Int64(config.connectionLimit))), ("connection_limit", .number(Int64(budget.connections))),
                ("reason", .string("the open-files limit (\(budget.openFiles)) must leave room for files in progress")),
            ])
        }
        if let filesystem, filesystem.isNetwork {
            log(.networkFilesystem, [("filesystem", .string(filesystem.description)), ("message", .string(
                "the upload directory is on a network filesystem: several hosts may share it when it is mounted "
                + "with the options in docs/operations.md (GlusterFS: deploy/glusterfs/); staging: \(staging)"))])
        }
        if config.token == nil && !address.isLoopback {
            log(.noToken, [("message", .string(
                "listening on \(config.host) without --token: anyone who can reach this port can store and overwrite files"))])
        }

        let signal = ProcessEnvironment.waitForTerminationSignal()
        daemon.quiesce()  // before the line that says so
        log(.stopping, [("signal", .string(signal)), ("uploads_in_flight", .number(Int64(application.uploadsInFlight)))])
        let deadline = ProcessEnvironment.monotonicNanoseconds() + UInt64(config.shutdownGraceSeconds) * 1_000_000_000
        while application.uploadsInFlight > 0 && ProcessEnvironment.monotonicNanoseconds() < deadline {
            ProcessEnvironment.sleep(milliseconds: 20)
        }
        let unfinished = application.uploadsInFlight
        daemon.stop()  // abandons what is left; each removes its temporary files
        if let current = try? uploadDirectory.open() { removeLeftovers(current) }
        log(.stopped, [("uploads_cut_off", .number(Int64(unfinished)))])
        return 0
    }

    /// Creates the directory if needed, proves it writable, chooses how files in
    /// progress are kept and removes leftovers of a crash.
    private static func prepare(_ config: Configuration, log: Log) throws(SystemError) -> (UploadDirectory, Staging) {
        try Directory.createPath(config.uploadDirectory)
        let directory = try Directory(path: config.uploadDirectory)
        try directory.checkWritable()
        // Unnamed files until complete where the filesystem allows (O_TMPFILE):
        // fewer directory updates, and nothing to clean up even after a crash.
        let staging = config.unnamedStaging ? directory.bestStaging() : .named
        let leftovers = removeLeftovers(directory)
        if leftovers > 0 { log(.removedLeftovers, [("temporary_files", .number(Int64(leftovers)))]) }
        let path = Directory.resolve(config.uploadDirectory) ?? config.uploadDirectory
        return (UploadDirectory(path: path, opened: try Directory(path: path)), staging)
    }

    /// An undo holds a name aside for microseconds, and a named staged file keeps
    /// its creation name as long; one older than this was left by a crash in between.
    static let abandonedAsideSeconds = 60

    /// A named file is created under a `TemporaryName.creating` name and locked
    /// at once; one unlocked this long after its creation was left by a crash.
    static let abandonedCreationSeconds = 2

    /// Temporary files that no running process holds, and names taken aside
    /// long ago: left by a crash or a kill.
    @discardableResult
    static func removeLeftovers(_ directory: Directory, asideAfterSeconds: Int = abandonedAsideSeconds) -> Int {
        let names = (try? directory.names()) ?? []
        let staged = names.filter(TemporaryName.matches).filter { directory.removeIfUnlocked($0) }
        let creating = names.filter(TemporaryName.isCreating).filter {
            directory.removeIfUnlocked($0, unchangedForSeconds: abandonedCreationSeconds)
        }
        let asides = names.filter(TemporaryName.isAside).filter {
            directory.removeIfUnchanged($0, forSeconds: asideAfterSeconds)
        }
        return staged.count + creating.count + asides.count
    }
}
