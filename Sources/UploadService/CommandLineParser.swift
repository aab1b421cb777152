import Platform

/// What the command line asks for: flags and their environment twins, the help
/// text, the `healthcheck` sub-command's options.
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

        init(flag: String, environment: String?, valueName: String, help: String,
             apply: @escaping @Sendable (inout Configuration, String) -> Bool) {
            self.flag = flag
            self.environment = environment
            self.valueName = valueName
            self.help = help
            self.apply = apply
        }

        /// Stores what `parse` makes of the value; nil from `parse`: invalid.
        init<Value>(flag: String, environment: String, valueName: String, help: String,
                    field: WritableKeyPath<Configuration, Value> & Sendable,
                    parse: @escaping @Sendable (String) -> Value?) {
            self.init(flag: flag, environment: environment, valueName: valueName, help: help) { config, value in
                guard let parsed = parse(value) else { return false }
                config[keyPath: field] = parsed
                return true
            }
        }

        /// A whole number in `range`.
        static func number(_ flag: String, _ environment: String, _ valueName: String, help: String,
                           in range: ClosedRange<Int>, _ field: WritableKeyPath<Configuration, Int> & Sendable) -> Option {
            Option(flag: flag, environment: environment, valueName: valueName, help: help, field: field) {
                Int($0).flatMap { range.contains($0) ? $0 : nil }
            }
        }

        /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
        static func boolean(_ flag: String, _ environment: String, help: String,
                            _ field: WritableKeyPath<Configuration, Bool> & Sendable) -> Option {
            Option(flag: flag, environment: environment, valueName: "BOOL", help: help, field: field, parse: parseBool)
        }
    }

    private static let options: [Option] = [
        Option(flag: "--host", environment: "HOST", valueName: "ADDRESS",
               help: "IP address to listen on (default 0.0.0.0; :: for IPv6)") { config, value in
            guard (SocketAddress(host: value, port: 0) != nil) else { return false }
            config.host = value
            return true
        },
        Option(flag: "--port", environment: "PORT", valueName: "PORT",
               help: "TCP port (default 9000; 0 picks a free one and logs it)", field: \.port) { UInt16($0) },
        Option(flag: "--upload-dir", environment: "UPLOAD_DIR", valueName: "PATH",
               help: "where files are stored, created if missing (default ./upload)", field: \.uploadDirectory) {
            $0.isEmpty ? nil : $0
        },
        Option(flag: "--max-upload-size", environment: "MAX_UPLOAD_SIZE", valueName: "SIZE",
               help: "largest request body: bytes, 512KiB, 10MiB, 1GiB; 0 = unlimited (default 1GiB)",
               field: \.maxUploadSize) { ByteSize.parse($0).map { $0 == 0 ? nil : $0 } },
        Option(flag: "--on-conflict", environment: "ON_CONFLICT", valueName: "POLICY",
               help: "when the name exists: overwrite (default), rename or reject", field: \.onConflict) {
            ConflictPolicy(rawValue: $0)
        },
        .number("--threads", "THREADS", "N", help: "worker threads (default: 4 per processor)", in: 1...1024, \.threads),
        .number("--connection-limit", "CONNECTION_LIMIT", "N", help: "simultaneous connections (default 4096)",
                in: 1...1_000_000, \.connectionLimit),
        Option(flag: "--connections-per-address", environment: "CONNECTIONS_PER_ADDRESS", valueName: "N",
               help: "connections from one address (IPv6: one /64): auto (default: any free slot, but the last "
                   + "tenth is kept for addresses holding few), unlimited (behind a reverse proxy), or a hard cap",
               field: \.connectionsPerAddress) { PerAddressLimit($0) },
        .number("--timeout", "TIMEOUT", "SECONDS", help: "close a connection idle this long (default 30)",
                in: 1...86_400, \.idleTimeoutSeconds),
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
        Option(flag: "--public-name", environment: "PUBLIC_NAME", valueName: "NAMES",
               help: "comma-separated host names browsers use to reach this server (uploads.example.com); "
                   + "IP addresses and localhost always work (default: none)") { config, value in
            let names = value.split(separator: ",").map { $0.trimmingSpaces().lowercased() }.filter { !$0.isEmpty }
            guard names.allSatisfy({ name in !name.contains(":") && !name.contains("/") && !name.contains(" ") }) else { return false }
            config.publicNames = names
            return true
        },
        .number("--shutdown-grace", "SHUTDOWN_GRACE", "SECONDS",
                help: "on SIGTERM, time given to uploads in progress (default 5)", in: 0...3_600, \.shutdownGraceSeconds),
        Option(flag: "--staging", environment: "STAGING", valueName: "MODE",
               help: "files in progress: auto (unnamed where the filesystem allows, default) or named",
               field: \.unnamedStaging) { ["auto": true, "named": false][$0] },
        .boolean("--fsync", "FSYNC", help: "a 200 means the files reached the disk: fdatasync each, fsync the directory (default false)",
                 \.durable),
        .boolean("--web", "WEB", help: "serve the upload page at / (default true)", \.web),
        Option(flag: "--resumable-expiry", environment: "RESUMABLE_EXPIRY", valueName: "DURATION",
               help: "remove an incomplete resumable upload (/tus/) this long after its last byte: 90s, 30m, 24h, 7d (default 24h)",
               field: \.resumableExpirySeconds) { DurationText.parse($0) },
        .number("--resumable-limit", "RESUMABLE_LIMIT", "N",
                help: "incomplete resumable uploads in the upload directory at most; 0 turns /tus/ off (default 1000)",
                in: 0...1_000_000, \.resumableLimit),
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
