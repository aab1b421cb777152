import Foundation
import Synchronization
import Testing

/// The real `upload-server` binary, started on a free port in its own directory.
final class TestServer: @unchecked Sendable {
    static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["UPLOAD_SERVER_BIN"] { return path }
        // The test bundle and the executable are built into the same folder.
        let bundle = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return bundle.deletingLastPathComponent().appendingPathComponent("upload-server").path
    }()

    let root: URL
    let uploadDirectory: URL
    let port: UInt16
    private let process: Process
    private let output: LineLog

    /// Starts the server and waits for its `started` line.
    init(_ arguments: [String] = [], environment: [String: String] = [:], uploadDirectory: URL? = nil,
         prefix: [String] = []) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("upload-server-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        self.uploadDirectory = uploadDirectory ?? root.appendingPathComponent("upload")
        let started = try TestServer.launch(
            arguments: ["--port", "0", "--host", "127.0.0.1", "--upload-dir", self.uploadDirectory.path] + arguments,
            environment: environment, directory: root, prefix: prefix)
        process = started.process
        output = started.output
        guard let port = TestServer.waitForPort(process: process, output: output) else {
            if process.isRunning { process.terminate() }
            throw TestFailure("server did not start: \(started.output.text)")
        }
        self.port = port
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: root)
    }

    var pid: Int32 { process.processIdentifier }

    /// Sockets the server process holds (its listening socket included).
    var socketCount: Int {
        let directory = "/proc/\(pid)/fd"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.filter {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)"))?.hasPrefix("socket:") == true
        }.count
    }
    var logLines: [String] { output.lines }
    var logText: String { logLines.joined(separator: "\n") }

    /// Names in the upload directory, sorted.
    var storedNames: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: uploadDirectory.path)) ?? []).sorted()
    }

    func contents(of name: String) -> Data? {
        FileManager.default.contents(atPath: uploadDirectory.appendingPathComponent(name).path)
    }

    /// Sends a signal and waits for the exit; returns the exit code.
    func stop(signal: Int32 = SIGTERM) -> Int32 {
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        return process.terminationStatus
    }

    func waitForExit(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Waits until a log line contains `text`.
    @discardableResult
    func waitForLog(_ text: String, timeout: Double = 5) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if logLines.contains(where: { $0.contains(text) }) { return true }
            usleep(10_000)
        }
        return false
    }

    /// Peak resident memory (VmHWM) in KiB.
    var peakResidentKiB: Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
        return line.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) }
    }

    func client() throws -> HTTPConnection { try HTTPConnection(port: port) }

    /// Runs the binary to completion (for start-up failures and sub-commands).
    static func runToExit(_ arguments: [String], environment: [String: String] = [:], prefix: [String] = [],
                          directory: URL = FileManager.default.temporaryDirectory) throws -> (status: Int32, output: String) {
        let started = try launch(arguments: arguments, environment: environment, directory: directory, prefix: prefix)
        let deadline = Date().addingTimeInterval(10)
        while started.process.isRunning && Date() < deadline { usleep(10_000) }
        if started.process.isRunning {
            started.process.terminate()
            throw TestFailure("\(arguments) did not exit within 10 s")
        }
        started.process.waitUntilExit()
        started.output.waitForEnd()
        return (started.process.terminationStatus, started.output.text)
    }

    private static func launch(arguments: [String], environment: [String: String], directory: URL,
                               prefix: [String]) throws -> (process: Process, output: LineLog) {
        let process = Process()
        if prefix.isEmpty {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: prefix[0])
            process.arguments = Array(prefix.dropFirst()) + [binary] + arguments
        }
        var env = ["PATH": "/usr/bin:/bin"]
        // Under `scripts/harden sanitizers` the server is sanitized too: its suppressions go with it.
        for name in ["ASAN_OPTIONS", "TSAN_OPTIONS"] {
            if let value = ProcessInfo.processInfo.environment[name] { env[name] = value }
        }
        env.merge(environment) { $1 }
        process.environment = env
        process.currentDirectoryURL = directory
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let output = LineLog()
        try process.run()
        let reader = pipe.fileHandleForReading
        Thread.detachNewThread {
            var pending = Data()
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...newline)
                    output.append(line)
                }
            }
            if !pending.isEmpty { output.append(String(decoding: pending, as: UTF8.self)) }
            output.end()
        }
        return (process, output)
    }

    private static func waitForPort(process: Process, output: LineLog) -> UInt16? {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let line = output.lines.first { $0.contains("\"event\":\"started\"") }
            if let line, let range = line.range(of: "\"port\":") {
                return UInt16(line[range.upperBound...].prefix { $0.isNumber })
            }
            if !process.isRunning { return nil }
            usleep(5_000)
        }
        return nil
    }
}

/// The server's output, one entry per line, filled by a reader thread.
final class LineLog: Sendable {
    private let storage = Mutex<(lines: [String], ended: Bool)>(([], false))
    var lines: [String] { storage.withLock { $0.lines } }
    var text: String { lines.joined(separator: "\n") }
    func append(_ line: String) { storage.withLock { $0.lines.append(line) } }
    func end() { storage.withLock { $0.ended = true } }

    /// Waits (bounded) until the process's output reached end of file.
    func waitForEnd() {
        for _ in 0..<500 where !storage.withLock({ $0.ended }) { usleep(10_000) }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
