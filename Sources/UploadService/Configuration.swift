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
    /// Simultaneous connections from one IP address; 0: no limit (behind a proxy).
    public var connectionsPerAddress = 128
    public var idleTimeoutSeconds = 30
    public var token: String?
    public var shutdownGraceSeconds = 5
    /// false: always named temporary files, even where unnamed ones (O_TMPFILE) work.
    public var unnamedStaging = true
    /// fdatasync every file and fsync the directory before answering 200.
    public var durable = false
    /// Origins besides the server's own that may upload from a browser; `*`: any.
    public var allowedOrigins: [String] = []
    /// Serve the upload page at `/`.
    public var web = true

    /// Four threads per processor: creating and naming a file blocks on the
    /// directory's lock, and with one thread per core the cores wait with it
    /// (4 KiB uploads on 2 cores: about 8 % more requests/s with 8 threads than 2).
    public init(processors: Int) { threads = min(4 * processors, 1024) }
}

public struct ConfigurationError: Error, Equatable, CustomStringConvertible {
    public let description: String
}

public enum Command: Equatable {
    case serve(Configuration)
    case healthcheck(url: String, timeoutSeconds: Int)

    case help(String)
    case version
}

public enum CommandLineParser {
    /// `1.2.3 (<revision>)`, from the build (scripts/swift).
    public static var version: String { "\(ProcessEnvironment.buildVersion) (\(ProcessEnvironment.buildRevision))" }

    private struct Option {
        let flag: String
        let environment: String?
        let valueName: String
        let help: String
        let apply: @Sendable (inout Configuration, String) -> Bool
    }

    private static let options: [Option] = [
        Option(flag: "--host", environment: "HOST", valueName: "ADDRESS",
               help: "IP address to listen on (default 0.0.0.0; :: for IPv6)") { config, value in
            guard (SocketAddress(host: value, port: 0) != nil) else { return false }
            config.host = value
            return true
        },
        Option(flag: "--port", environment: "PORT", valueName: "PORT",
               help: "TCP port (default 9000; 0 picks a free one and logs it)") { config, value in
            guard let port = UInt16(value) else { return false }
            config.port = port
            return true
        },
        Option(flag: "--upload-dir", environment: "UPLOAD_DIR", valueName: "PATH",
               help: "where files are stored, created if missing (default ./upload)") { config, value in
            guard !value.isEmpty else { return false }
            config.uploadDirectory = value
            return true
        },
        Option(flag: "--max-upload-size", environment: "MAX_UPLOAD_SIZE", valueName: "SIZE",
               help: "largest request body: bytes, 512KiB, 10MiB, 1GiB; 0 = unlimited (default 1GiB)") { config, value in
            guard let size = ByteSize.parse(value) else { return false }
            config.maxUploadSize = size == 0 ? nil : size
            return true
        },
        Option(flag: "--on-conflict", environment: "ON_CONFLICT", valueName: "POLICY",
               help: "when the name exists: overwrite (default), rename or reject") { config, value in
            guard let policy = ConflictPolicy(rawValue: value) else { return false }
            config.onConflict = policy
            return true
        },
        Option(flag: "--threads", environment: "THREADS", valueName: "N",
               help: "worker threads (default: 4 per processor)") { config, value in
            guard let threads = Int(value), (1...1024).contains(threads) else { return false }
            config.threads = threads
            return true
        },
        Option(flag: "--connection-limit", environment: "CONNECTION_LIMIT", valueName: "N",
               help: "simultaneous connections (default 4096)") { config, value in
            guard let limit = Int(value), (1...1_000_000).contains(limit) else { return false }
            config.connectionLimit = limit
            return true
        },
        Option(flag: "--connections-per-address", environment: "CONNECTIONS_PER_ADDRESS", valueName: "N",
               help: "simultaneous connections from one IP address; 0 = no limit, for use behind a reverse proxy (default 128)") { config, value in
            guard let limit = Int(value), (0...1_000_000).contains(limit) else { return false }
            config.connectionsPerAddress = limit
            return true
        },
        Option(flag: "--timeout", environment: "TIMEOUT", valueName: "SECONDS",
               help: "close a connection idle this long (default 30)") { config, value in
            guard let seconds = Int(value), (1...86_400).contains(seconds) else { return false }
            config.idleTimeoutSeconds = seconds
            return true
        },
        Option(flag: "--token", environment: "UPLOAD_TOKEN", valueName: "TOKEN",
               help: "require 'Authorization: Bearer TOKEN' for uploads and /metrics (default: none)") { config, value in
            config.token = value.isEmpty ? nil : value
            return true
        },
        Option(flag: "--token-file", environment: "UPLOAD_TOKEN_FILE", valueName: "PATH",
               help: "read the token from a file (Docker and Kubernetes secrets)") { config, value in
            guard !value.isEmpty else { return true }  // an unset Compose variable
            guard let text = ProcessEnvironment.readSmallFile(value) else { return false }
            var token = Substring(text)
            while let last = token.last, last == "\n" || last == "\r" { token = token.dropLast() }
            guard !token.isEmpty else { return false }
            config.token = String(token)
            return true
        },
        Option(flag: "--allow-origin", environment: "ALLOW_ORIGIN", valueName: "ORIGINS",
               help: "comma-separated origins (https://example.com) whose pages may upload; * = any (default: the server's own only)") { config, value in
            let origins = value.split(separator: ",").map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
            guard origins.allSatisfy({ $0 == "*" || $0.hasPrefix("http://") || $0.hasPrefix("https://") }) else { return false }
            config.allowedOrigins = origins
            return true
        },
        Option(flag: "--shutdown-grace", environment: "SHUTDOWN_GRACE", valueName: "SECONDS",
               help: "on SIGTERM, time given to uploads in progress (default 5)") { config, value in
            guard let seconds = Int(value), (0...3_600).contains(seconds) else { return false }
            config.shutdownGraceSeconds = seconds
            return true
        },
        Option(flag: "--staging", environment: "STAGING", valueName: "MODE",
               help: "files in progress: auto (unnamed where the filesystem allows, default) or named") { config, value in
            guard value == "auto" || value == "named" else { return false }
            config.unnamedStaging = value == "auto"
            return true
        },
        Option(flag: "--fsync", environment: "FSYNC", valueName: "BOOL",
               help: "a 200 means the files reached the disk: fdatasync each, fsync the directory (default false)") { config, value in
            guard let flag = parseBool(value) else { return false }
            config.durable = flag
            return true
        },
        Option(flag: "--web", environment: "WEB", valueName: "BOOL",
               help: "serve the upload page at / (default true)") { config, value in
            guard let flag = parseBool(value) else { return false }
            config.web = flag
            return true
        },
    ]

    private static func parseBool(_ value: String) -> Bool? {
        switch value.lowercased() {
        case "true", "1", "yes", "on": true
        case "false", "0", "no", "off": false
        default: nil
        }
    }

    /// The environment variables that configure the server.
    public static var environmentNames: [String] { options.compactMap(\.environment) }

    public static var usage: String {
        var text = """
        upload-server \(version): stores files sent with POST /upload (multipart/form-data, field "file").

        Usage: upload-server [options]
               upload-server healthcheck [options] [--url URL] [--timeout SECONDS]

        Options (each also read from the environment variable shown; a flag wins):

        """
        for option in options {
            let left = "  \(option.flag) \(option.valueName)"
            let padded = left + String(repeating: " ", count: max(1, 32 - left.count))
            text += padded + option.help + (option.environment.map { " [\($0)]" } ?? "") + "\n"
        }
        text += """
          -h, --help                    show this help
          --version                     show the version

        healthcheck: GET URL (default http://HOST:PORT/healthz from the same options and environment as the
        server, loopback for a wildcard host) and exit 0 on 200, else 1.
        """
        return text
    }

    public static func parse(_ arguments: [String], environment: [String: String],
                             processors: Int) throws(ConfigurationError) -> Command {
        let isHealthcheck = arguments.first == "healthcheck"
        var config = Configuration(processors: processors)
        for option in options {
            guard let name = option.environment, let value = environment[name] else { continue }
            guard option.apply(&config, value) else {
                throw ConfigurationError(description: "invalid \(name)=\(value): expected \(option.valueName.lowercased()); \(option.help)")
            }
        }
        var remaining = arguments.dropFirst(isHealthcheck ? 1 : 0)
        var url: String?
        var timeout = 3
        while let argument = remaining.popFirst() {
            if argument == "-h" || argument == "--help" { return .help(usage) }
            if argument == "--version" { return .version }
            let (flag, inlineValue) = split(argument)
            if isHealthcheck && (flag == "--url" || flag == "--timeout") {
                guard let value = inlineValue ?? remaining.popFirst() else {
                    throw ConfigurationError(description: "healthcheck: \(flag) needs a value")
                }
                if flag == "--url" {
                    guard HealthcheckURL(value) != nil else {
                        throw ConfigurationError(description: "healthcheck: invalid --url '\(value)': expected http://IP:PORT/PATH")
                    }
                    url = value
                } else {
                    guard let seconds = Int(value), seconds > 0 else {
                        throw ConfigurationError(description: "healthcheck: invalid --timeout '\(value)': expected seconds")
                    }
                    timeout = seconds
                }
                continue
            }
            guard let option = options.first(where: { $0.flag == flag }) else {
                throw ConfigurationError(description: "unknown argument '\(argument)'; see --help")
            }
            // `--fsync` alone means `--fsync true`.
            let bare = option.valueName == "BOOL" && inlineValue == nil && remaining.first.map { $0.hasPrefix("--") } ?? true
            guard let value = bare ? "true" : inlineValue ?? remaining.popFirst() else {
                throw ConfigurationError(description: "\(flag) needs a value (\(option.valueName))")
            }
            guard option.apply(&config, value) else {
                throw ConfigurationError(description: "invalid \(flag) '\(value)': \(option.help)")
            }
        }
        if isHealthcheck {
            let target = url ?? "http://\(healthcheckHost(config.host)):\(config.port)/healthz"
            return .healthcheck(url: target, timeoutSeconds: timeout)
        }
        return .serve(config)
    }

    /// Where the server listens, as seen from inside its container: loopback for a
    /// wildcard address, else the address itself.
    static func healthcheckHost(_ host: String?) -> String {
        switch host {
        case nil, "", "0.0.0.0", "localhost": "127.0.0.1"
        case "::", "[::]": "[::1]"
        case let address? where address.contains(":") && !address.hasPrefix("["): "[\(address)]"
        case let address?: address
        }
    }

    private static func split(_ argument: String) -> (flag: String, value: String?) {
        guard argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") else { return (argument, nil) }
        return (String(argument[..<equals]), String(argument[argument.index(after: equals)...]))
    }
}

/// `http://HOST:PORT/PATH` with an IP literal host.
public struct HealthcheckURL: Equatable {
    public let host: String
    public let port: UInt16
    public let path: String

    public init?(_ text: String) {
        guard text.hasPrefix("http://") else { return nil }
        let rest = text.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        path = rest.count > authority.count ? String(rest.dropFirst(authority.count)) : "/"
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = String(authority[authority.startIndex...close])
            let after = authority[authority.index(after: close)...]
            port = after.isEmpty ? 80 : (after.hasPrefix(":") ? UInt16(after.dropFirst()) : nil) ?? 0
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            port = UInt16(authority[authority.index(after: colon)...]) ?? 0
        } else {
            host = String(authority)
            port = 80
        }
        guard port != 0, (SocketAddress(host: host, port: 0) != nil) else { return nil }
    }
}
