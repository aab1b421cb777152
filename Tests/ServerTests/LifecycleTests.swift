import Foundation
import Testing

@Suite("Command line, start-up and shutdown")
struct LifecycleTests {
    @Test func helpAndVersionExitZero() throws {
        let help = try TestServer.runToExit(["--help"])
        #expect(help.status == 0)
        #expect(help.output.contains("--max-upload-size SIZE"))
        #expect(help.output.contains("[UPLOAD_TOKEN]"))
        let version = try TestServer.runToExit(["--version"])
        #expect(version.status == 0)
        #expect(version.output.hasPrefix("upload-server "))
    }

    @Test(arguments: [
        (["--port", "70000"], [String: String]()),
        (["--max-upload-size", "lots"], [:]),
        (["--on-conflict", "merge"], [:]),
        (["--threads", "0"], [:]),
        (["--bogus"], [:]),
        (["--port"], [:]),
        ([], ["PORT": "x"]),
        ([], ["MAX_UPLOAD_SIZE": "1.5GiB"]),
        ([], ["HOST": "my-laptop"]),
    ])
    func aBadValueIsOneLineAndExitCode2(arguments: [String], environment: [String: String]) throws {
        let result = try TestServer.runToExit(arguments, environment: environment)
        #expect(result.status == 2)
        #expect(result.output.split(separator: "\n").count == 1, "\(result.output)")
        #expect(result.output.hasPrefix("upload-server: "))
    }

    @Test func environmentConfiguresAndFlagsWin() throws {
        let server = try TestServer(["--on-conflict", "reject"],
                                    environment: ["ON_CONFLICT": "rename", "MAX_UPLOAD_SIZE": "512KiB", "THREADS": "3"])
        let started = try #require(server.logLines.first { $0.contains("\"event\":\"started\"") })
        #expect(started.contains("\"on_conflict\":\"reject\""))
        #expect(started.contains("\"max_upload_size\":\"512KiB\""))
        #expect(started.contains("\"threads\":3"))
        #expect(started.contains("\"upload_dir\":\"\(server.uploadDirectory.path)\""))
    }

    @Test func theDefaultUploadDirectoryIsRelativeToTheWorkingDirectory() throws {
        // The last --upload-dir wins; the server runs in `root`. The default itself is a unit test.
        let server = try TestServer(["--upload-dir", "./upload"])
        #expect(server.storedNames.isEmpty)
        #expect(FileManager.default.fileExists(atPath: server.root.appendingPathComponent("upload").path))
        #expect(server.logText.contains("\"upload_dir\":\"\(server.root.path)/upload\""))
    }

    @Test func anUnwritableUploadDirectoryStopsTheStartWithTheFix() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("upload-server-ro-\(UUID().uuidString)")
        let directory = root.appendingPathComponent("upload")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root.path)
        try FileManager.default.setAttributes([.posixPermissions: 0o555], ofItemAtPath: directory.path)
        // As root every directory is writable: run as nobody instead.
        let prefix = getuid() == 0 ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []
        let result = try TestServer.runToExit(["--port", "0", "--upload-dir", directory.path], prefix: prefix, directory: root)
        let uid = getuid() == 0 ? 65534 : getuid()
        #expect(result.status == 1)
        #expect(result.output.contains("cannot use the upload directory \"\(directory.path)\""))
        #expect(result.output.contains("uid \(uid)"))
        #expect(result.output.contains("chown"))
        #expect(!result.output.contains("\"event\":\"started\""))
    }

    @Test func leftoverTemporaryFilesAreRemovedAtStart() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("upload-server-left-\(UUID().uuidString)")
        let directory = root.appendingPathComponent("upload")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        try Data("partial".utf8).write(to: directory.appendingPathComponent(".upload-0123456789abcdef-1.part"))
        try Data("mine".utf8).write(to: directory.appendingPathComponent("kept.txt"))
        // Only the exact shape of a temporary file is swept, never a stored file.
        try Data("stored".utf8).write(to: directory.appendingPathComponent(".upload-1.part"))
        let server = try TestServer(uploadDirectory: directory)
        #expect(server.storedNames == [".upload-1.part", "kept.txt"])
        #expect(server.logText.contains("\"event\":\"removed_leftovers\""))
    }

    @Test func aSecondInstanceLeavesTheFirstOnesFilesInProgressAlone() throws {
        let first = try TestServer(["--staging", "named"])
        let form = Multipart().file("shared.bin", randomData(300_000))
        let connection = try first.client()
        try connection.startUpload(form, sending: 100_000)
        for _ in 0..<100 where first.storedNames.isEmpty { usleep(10_000) }
        let inProgress = first.storedNames
        #expect(inProgress.count == 1)
        // A crash leftover is removed; the locked file of the running upload is not.
        try Data("old".utf8).write(to: first.uploadDirectory.appendingPathComponent(".upload-00000000000000de-1.part"))
        let second = try TestServer(["--staging", "named"], uploadDirectory: first.uploadDirectory)
        #expect(second.logText.contains("\"temporary_files\":1"))
        #expect(first.storedNames == inProgress)
        try connection.send(form.body.dropFirst(100_000))
        #expect(try connection.readResponse()?.status == 200)
        #expect(first.storedNames == ["shared.bin"])
    }

    @Test func sigtermLetsAnUploadInProgressFinish() throws {
        let server = try TestServer(["--shutdown-grace", "5"])
        let form = Multipart().file("finishing.bin", randomData(500_000))
        let connection = try server.client()
        try connection.startUpload(form, sending: 100_000)
        #expect(server.waitForLog("\"event\":\"started\""))
        usleep(100_000)
        kill(server.pid, SIGTERM)
        #expect(server.waitForLog("\"event\":\"stopping\""))
        // New connections are refused while the upload in progress completes.
        #expect(throws: (any Error).self) { try server.client().get("/healthz") }
        try connection.send(form.body.dropFirst(100_000))
        #expect(try connection.readResponse()?.status == 200)
        #expect(server.waitForExit(timeout: 5) == 0)
        #expect(server.storedNames == ["finishing.bin"])
    }

    @Test(arguments: Staging.allCases)
    func sigtermCutsOffAStalledUploadAfterTheGracePeriod(staging: Staging) throws {
        let server = try TestServer(["--shutdown-grace", "1"] + staging.arguments)
        let form = Multipart().file("stalled.bin", randomData(500_000))
        let connection = try server.client()
        try connection.startUpload(form, sending: 100_000)
        usleep(200_000)
        let start = Date()
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit(timeout: 4) == 0)
        #expect(Date().timeIntervalSince(start) < 3)
        #expect(server.storedNames.isEmpty)
        #expect(server.logText.contains("\"reason\":\"shutdown\""))
        #expect(server.logText.contains("\"event\":\"stopped\""))
    }

    @Test func sigintStopsAnIdleServerAtOnce() throws {
        let server = try TestServer()
        let start = Date()
        #expect(server.stop(signal: SIGINT) == 0)
        // Milliseconds normally; the bound leaves room for a sanitizer build on a busy machine.
        #expect(Date().timeIntervalSince(start) < 2)
    }

    @Test(.enabled(if: Capabilities.ipv6, "needs IPv6 (::1 cannot be bound here)"))
    func theIPv6WildcardAcceptsBothFamilies() throws {
        let server = try TestServer(["--host", "::"])
        #expect(try server.client().get("/healthz").status == 200)  // the client connects to 127.0.0.1
        let viaIPv6 = try TestServer.runToExit(["healthcheck"], environment: ["HOST": "::", "PORT": "\(server.port)"])
        #expect(viaIPv6.status == 0, "\(viaIPv6.output)")
    }

    @Test func healthcheckSubcommand() throws {
        let server = try TestServer()
        let healthy = try TestServer.runToExit(["healthcheck", "--url", "http://127.0.0.1:\(server.port)/healthz"])
        #expect(healthy.status == 0)
        let viaPort = try TestServer.runToExit(["healthcheck"], environment: ["PORT": "\(server.port)"])
        #expect(viaPort.status == 0)
        let notFound = try TestServer.runToExit(["healthcheck", "--url", "http://127.0.0.1:\(server.port)/nope"])
        #expect(notFound.status == 1)
        _ = server.stop()
        let down = try TestServer.runToExit(["healthcheck", "--url", "http://127.0.0.1:\(server.port)/healthz", "--timeout", "1"])
        #expect(down.status == 1)
        #expect(down.output.contains("connect"))
    }
}
