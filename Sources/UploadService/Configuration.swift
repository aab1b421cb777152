import MicroHTTPD

/// What to do with a name that already exists in the upload directory.
public enum ConflictPolicy: String, Sendable, CaseIterable {
    /// Replace the existing file atomically (what the original service did).
    case overwrite
    /// Store under `name-1.ext`, `name-2.ext`, ...
    case rename
    /// Answer 409 and store nothing.
    case reject
}

public struct Configuration: Sendable, Equatable {
    public var host = "0.0.0.0"
    public var port: UInt16 = 9000
    public var uploadDirectory = "./upload"
    /// nil: unlimited.
    public var maxUploadSize: UInt64? = 1 << 30
    public var onConflict = ConflictPolicy.overwrite
    public var threads: Int
    public var connectionLimit = 4096
    public var idleTimeoutSeconds = 30
    public var token: String?
    public var shutdownGraceSeconds = 5
    /// false: always named temporary files, even where unnamed ones (O_TMPFILE) work.
    public var unnamedStaging = true

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
    public static let version = "0.1.0"

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
        Option(flag: "--timeout", environment: "TIMEOUT", valueName: "SECONDS",
               help: "close a connection idle this long (default 30)") { config, value in
            guard let seconds = Int(value), (1...86_400).contains(seconds) else { return false }
            config.idleTimeoutSeconds = seconds
            return true
        },
        Option(flag: "--token", environment: "UPLOAD_TOKEN", valueName: "TOKEN",
               help: "require 'Authorization: Bearer TOKEN' for uploads (default: none)") { config, value in
            config.token = value.isEmpty ? nil : value
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
    ]

    /// The environment variables that configure the server.
    public static var environmentNames: [String] { options.compactMap(\.environment) }

    public static var usage: String {
        var text = """
        upload-server \(version): stores files sent with POST /upload (multipart/form-data, field "file").

        Usage: upload-server [options]
               upload-server healthcheck [--url URL] [--timeout SECONDS]

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

        healthcheck: GET URL (default http://$HOST:$PORT/healthz, loopback for a wildcard HOST) and exit 0 on 200, else 1.
        """
        return text
    }

    public static func parse(_ arguments: [String], environment: [String: String],
                             processors: Int) throws(ConfigurationError) -> Command {
        if arguments.first == "healthcheck" {
            return try parseHealthcheck(Array(arguments.dropFirst()), environment: environment)
        }
        var config = Configuration(processors: processors)
        for option in options {
            guard let name = option.environment, let value = environment[name] else { continue }
            guard option.apply(&config, value) else {
                throw ConfigurationError(description: "invalid \(name)=\(value): expected \(option.valueName.lowercased()); \(option.help)")
            }
        }
        var remaining = arguments[...]
        while let argument = remaining.popFirst() {
            if argument == "-h" || argument == "--help" { return .help(usage) }
            if argument == "--version" { return .version }
            let (flag, inlineValue) = split(argument)
            guard let option = options.first(where: { $0.flag == flag }) else {
                throw ConfigurationError(description: "unknown argument '\(argument)'; see --help")
            }
            guard let value = inlineValue ?? remaining.popFirst() else {
                throw ConfigurationError(description: "\(flag) needs a value (\(option.valueName))")
            }
            guard option.apply(&config, value) else {
                throw ConfigurationError(description: "invalid \(flag) '\(value)': \(option.help)")
            }
        }
        return .serve(config)
    }

    private static func parseHealthcheck(_ arguments: [String], environment: [String: String]) throws(ConfigurationError) -> Command {
        var url = "http://\(healthcheckHost(environment["HOST"])):\(environment["PORT"].flatMap { UInt16($0) } ?? 9000)/healthz"
        var timeout = 3
        var remaining = arguments[...]
        while let argument = remaining.popFirst() {
            if argument == "-h" || argument == "--help" { return .help(usage) }
            let (flag, inlineValue) = split(argument)
            guard flag == "--url" || flag == "--timeout", let value = inlineValue ?? remaining.popFirst() else {
                throw ConfigurationError(description: "healthcheck: unknown or incomplete argument '\(argument)'; see --help")
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
        }
        return .healthcheck(url: url, timeoutSeconds: timeout)
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
