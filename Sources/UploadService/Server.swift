import MicroHTTPD

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
        let openFiles = ProcessEnvironment.raiseOpenFileLimit()

        guard let address = SocketAddress(host: config.host, port: config.port) else {
            ProcessEnvironment.writeLine("upload-server: invalid host \(config.host)", toStandardError: true)
            return 2
        }
        let application = UploadApplication(config: config, directory: uploadDirectory, staging: staging, log: log)
        let daemon: Daemon
        do {
            daemon = try Daemon(application, options: DaemonOptions(
                address: address, threads: config.threads, connectionLimit: config.connectionLimit,
                idleTimeoutSeconds: config.idleTimeoutSeconds))
        } catch {
            ProcessEnvironment.writeLine("upload-server: cannot \(error)", toStandardError: true)
            return 1
        }

        log.info("started", [
            ("version", .string(CommandLineParser.version)),
            ("host", .string(config.host)),
            ("port", .number(Int64(daemon.port))),
            ("upload_dir", .string(uploadDirectory.path)),
            ("staging", .string(staging.description)),
            ("max_upload_size", config.maxUploadSize.map { .string(ByteSize.format($0)) } ?? .string("unlimited")),
            ("on_conflict", .string(config.onConflict.rawValue)),
            ("threads", .number(Int64(config.threads))),
            ("connection_limit", .number(Int64(config.connectionLimit))),
            ("timeout_s", .number(Int64(config.idleTimeoutSeconds))),
            ("shutdown_grace_s", .number(Int64(config.shutdownGraceSeconds))),
            ("token", .bool(config.token != nil)),
            ("uid", .unsigned(UInt64(uid))),
            ("gid", .unsigned(UInt64(gid))),
            ("open_files_limit", .unsigned(openFiles)),
        ])

        let signal = ProcessEnvironment.waitForTerminationSignal()
        log.info("stopping", [("signal", .string(signal)), ("uploads_in_flight", .number(Int64(application.metrics.inFlight)))])
        daemon.quiesce()
        let deadline = ProcessEnvironment.monotonicNanoseconds() + UInt64(config.shutdownGraceSeconds) * 1_000_000_000
        while application.metrics.inFlight > 0 && ProcessEnvironment.monotonicNanoseconds() < deadline {
            ProcessEnvironment.sleep(milliseconds: 20)
        }
        let unfinished = application.metrics.inFlight
        daemon.stop()  // abandons what is left; each removes its temporary files
        if let current = try? uploadDirectory.open() { removeLeftovers(current) }
        log.info("stopped", [("uploads_cut_off", .number(Int64(unfinished)))])
        return 0
    }

    /// Creates the directory if needed, proves it writable, chooses how files in
    /// progress are kept and removes leftovers of a crash.
    private static func prepare(_ config: Configuration, log: Log) throws(SystemError) -> (UploadDirectory, Staging) {
        try Directory.createPath(config.uploadDirectory)
        let directory = try Directory(path: config.uploadDirectory)
        try checkWritable(directory)
        // Unnamed files until complete where the filesystem allows (O_TMPFILE):
        // fewer directory updates, and nothing to clean up even after a crash.
        let staging = config.unnamedStaging ? directory.bestStaging(probeName: FileName.temporaryName()) : .named
        let leftovers = removeLeftovers(directory)
        if leftovers > 0 { log.info("removed_leftovers", [("temporary_files", .number(Int64(leftovers)))]) }
        let path = Directory.resolve(config.uploadDirectory) ?? config.uploadDirectory
        return (UploadDirectory(path: path, opened: try Directory(path: path)), staging)
    }

    /// Creates and removes a file: proves that uploads can be stored.
    private static func checkWritable(_ directory: Directory) throws(SystemError) {
        let name = FileName.temporaryName()
        let file = try directory.createFile(name)
        try file.close()
        try directory.remove(name)
    }

    /// Temporary files that no running process holds: left by a crash or a kill.
    @discardableResult
    private static func removeLeftovers(_ directory: Directory) -> Int {
        let names = (try? directory.names()) ?? []
        return names.filter { $0.hasPrefix(FileName.reservedPrefix) && $0.hasSuffix(".part") }
            .filter { directory.removeIfUnlocked($0) }.count
    }
}

/// `upload-server healthcheck`: the image has no curl or shell.
public enum Healthcheck {
    public static func run(url text: String, timeoutSeconds: Int) -> Int32 {
        guard let url = HealthcheckURL(text), let address = SocketAddress(host: url.host, port: url.port) else {
            ProcessEnvironment.writeLine("healthcheck: invalid URL \(text)", toStandardError: true)
            return 1
        }
        do {
            let status = try HTTPProbe.get(address, path: url.path, timeoutSeconds: timeoutSeconds)
            ProcessEnvironment.writeLine("healthcheck: \(text) answered \(status)")
            return status == 200 ? 0 : 1
        } catch {
            ProcessEnvironment.writeLine("healthcheck: \(text): \(error)", toStandardError: true)
            return 1
        }
    }
}
