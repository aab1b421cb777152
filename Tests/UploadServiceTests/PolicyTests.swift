import Glibc
import Platform
import Testing
@testable import UploadService

@Suite struct ByteSizeTests {
    @Test(arguments: [("512KiB", 524_288), ("1MiB", 1_048_576), ("1GiB", 1_073_741_824), ("1048576", 1_048_576),
                      ("0", 0), ("10MB", 10_000_000), ("2k", 2048), ("1 GiB", 1_073_741_824), ("5b", 5), ("3gib", 3 << 30)])
    func parses(text: String, bytes: UInt64) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "abc", "-1", "1.5GiB", "GiB", "99999999999999999999", "20000000000TiB", "1 0"])
    func rejects(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }

    @Test func formats() {
        #expect(ByteSize.format(1 << 30) == "1GiB")
        #expect(ByteSize.format(1536 << 10) == "1536KiB")
        #expect(ByteSize.format(1000) == "1000")
    }
}

@Suite struct FileNameTests {
    @Test(arguments: [
        ("report.pdf", "report.pdf"), ("../../etc/passwd", "passwd"), ("a\\b\\c.txt", "c.txt"),
        ("x/y\\z", "z"), ("tab\there", "tabhere"), ("del\u{7F}", "del"), ("c1\u{85}x", "c1x"),
        ("日本語.txt", "日本語.txt"), ("...", "..."), (" spaced ", " spaced "),
    ])
    func sanitizes(raw: String, name: String) throws {
        #expect(try FileName.sanitize(Array(raw.utf8)).get() == name)
    }

    @Test(arguments: ["", ".", "..", "a/..", "dir/", "\u{1}", ".upload-1.part", ".upload-", String(repeating: "a", count: 256),
                      String(repeating: "€", count: 86)])
    func rejects(raw: String) {
        guard case .failure(let failure) = FileName.sanitize(Array(raw.utf8)) else {
            Issue.record("\(raw) was accepted")
            return
        }
        #expect(failure.status == 400)
    }

    @Test func acceptsExactly255Bytes() {
        #expect((try? FileName.sanitize(Array(String(repeating: "a", count: 255).utf8)).get()) != nil)
        #expect((try? FileName.sanitize(Array(String(repeating: "€", count: 85).utf8)).get()) != nil)  // 255 bytes
    }

    @Test func alternatives() {
        #expect(FileName.alternative("report.pdf", suffix: "-1") == "report-1.pdf")
        #expect(FileName.alternative("a.tar.gz", suffix: "-2") == "a.tar-2.gz")
        #expect(FileName.alternative(".env", suffix: "-1") == ".env-1")
        #expect(FileName.alternative("notes", suffix: "-3") == "notes-3")
        let long = String(repeating: "x", count: 251) + ".txt"
        let alternative = FileName.alternative(long, suffix: "-12")
        #expect(alternative.utf8.count == 255)
        #expect(alternative.hasSuffix("-12.txt"))
    }

    /// A long extension is shortened too: the name never grows past 255 bytes.
    @Test func alternativeShortensALongExtension() {
        let name = "a." + String(repeating: "x", count: 253)
        let alternative = FileName.alternative(name, suffix: "-1")
        #expect(alternative.utf8.count <= 255)
        #expect(alternative != name)
        #expect(alternative.contains("-1"))
    }

    /// `.upload.part` and `.upload` must never become a temporary file's name.
    @Test(arguments: [".upload.part", ".upload", ".upload.x.y"])
    func alternativeNeverLooksTemporary(name: String) {
        for number in 1...3 {
            let alternative = FileName.alternative(name, suffix: "-\(number)")
            #expect(!alternative.hasPrefix(TemporaryName.prefix), "\(alternative)")
            #expect((try? FileName.sanitize(Array(alternative.utf8)).get()) == alternative)
        }
    }

    /// Two names that differ only in invalid bytes must not collapse into one.
    @Test func refusesInvalidUTF8() {
        for raw: [UInt8] in [Array("caf".utf8) + [0xE9] + Array(".txt".utf8), [0xFF], Array("a".utf8) + [0xC3]] {
            guard case .failure(let failure) = FileName.sanitize(raw) else {
                Issue.record("\(raw) was accepted")
                continue
            }
            #expect(failure.status == 400)
            #expect(failure.message.contains("UTF-8"))
        }
    }

    /// A name that displays as something else.
    @Test(arguments: ["\u{202E}fdp.exe", "a\u{2066}b", "x\u{202A}"])
    func refusesBidirectionalControls(raw: String) {
        guard case .failure(let failure) = FileName.sanitize(Array(raw.utf8)) else {
            Issue.record("\(raw) was accepted")
            return
        }
        #expect(failure.status == 400)
    }
}

@Suite struct TemporaryNameTests {
    @Test func matchesOnlyItsOwnShape() {
        let name = TemporaryName.next()
        #expect(TemporaryName.matches(name))
        #expect(TemporaryName.next() != name)
        for other in [".upload-1.part", ".upload-2.part", ".upload.part", ".upload-abc-1.part",
                      ".upload-0123456789abcdef-.part", ".upload-0123456789ABCDEF-1.part",
                      ".upload-0123456789abcdef-1.part.x", "upload-0123456789abcdef-1.part"] {
            #expect(!TemporaryName.matches(other), "\(other)")
        }
        #expect(TemporaryName.matches(".upload-0123456789abcdef-42.part"))
        #expect(TemporaryName.matches(".upload-0123456789abcdef-7.part"))
    }
}

@Suite struct PathSegmentTests {
    @Test func decodesOnce() {
        #expect(PathSegment.decode("report.pdf") == Array("report.pdf".utf8))
        #expect(PathSegment.decode("a%20b") == Array("a b".utf8))
        #expect(PathSegment.decode("%2541") == Array("%41".utf8))
        #expect(PathSegment.decode("r%C3%A9sum%C3%A9") == Array("résumé".utf8))
        #expect(PathSegment.decode("a%2Fb") == Array("a/b".utf8))
        #expect(PathSegment.decode("bad%2") == nil)
        #expect(PathSegment.decode("bad%zz") == nil)
    }

    @Test func encodesForLocation() {
        #expect(PathSegment.encode("a b/é.txt") == "a%20b%2F%C3%A9.txt")
        #expect(PathSegment.encode("report-1.pdf") == "report-1.pdf")
    }
}

@Suite struct CommandLineTests {
    private func serve(_ arguments: [String], _ environment: [String: String] = [:]) throws -> Configuration {
        guard case .serve(let config) = try CommandLineParser.parse(arguments, environment: environment, processors: 4) else {
            throw ConfigurationError(description: "not serve")
        }
        return config
    }

    @Test func defaults() throws {
        let config = try serve([])
        #expect(config.host == "0.0.0.0")
        #expect(config.port == 9000)
        #expect(config.uploadDirectory == "./upload")
        #expect(config.maxUploadSize == 1 << 30)
        #expect(config.onConflict == .overwrite)
        #expect(config.threads == 16)  // 4 per processor
        #expect(config.token == nil)
        #expect(config.idleTimeoutSeconds == 30)
        #expect(config.shutdownGraceSeconds < 10)
        #expect(config.unnamedStaging)
        #expect(config.connectionsPerAddress == .automatic)
        #expect(config.publicNames.isEmpty)
        #expect(!config.durable)
        #expect(config.web)
        #expect(config.allowedOrigins.isEmpty)
    }

    @Test func flagsAndTheirEnvironmentTwins() throws {
        let environment = ["HOST": "::1", "PORT": "8080", "UPLOAD_DIR": "/data", "MAX_UPLOAD_SIZE": "0",
                           "ON_CONFLICT": "rename", "THREADS": "8", "CONNECTION_LIMIT": "100", "TIMEOUT": "5",
                           "UPLOAD_TOKEN": "t", "SHUTDOWN_GRACE": "2", "STAGING": "named",
                           "CONNECTIONS_PER_ADDRESS": "0", "FSYNC": "true", "WEB": "false",
                           "PUBLIC_NAME": "Uploads.Example.com, files.example.org",
                           "ALLOW_ORIGIN": "https://a.example, http://b.example:8080",
                           "RESUMABLE_EXPIRY": "2h", "RESUMABLE_LIMIT": "7"]
        // UPLOAD_TOKEN_FILE: a secret mounted as a file, its newline dropped.
        #expect(throws: ConfigurationError.self) { try serve([], ["UPLOAD_TOKEN_FILE": "/nonexistent"]) }
        let tokenFile = "/tmp/upload-server-token-\(UInt32.random(in: .min ... .max))"
        FileManagerless.write("s3cret\n", to: tokenFile)
        defer { FileManagerless.remove(tokenFile) }
        #expect(try serve([], ["UPLOAD_TOKEN_FILE": tokenFile]).token == "s3cret")
        #expect(try serve(["--token-file", tokenFile]).token == "s3cret")
        let fromEnvironment = try serve([], environment)
        #expect(fromEnvironment.host == "::1")
        #expect(fromEnvironment.port == 8080)
        #expect(fromEnvironment.uploadDirectory == "/data")
        #expect(fromEnvironment.maxUploadSize == nil)
        #expect(fromEnvironment.onConflict == .rename)
        #expect(fromEnvironment.threads == 8)
        #expect(fromEnvironment.connectionLimit == 100)
        #expect(fromEnvironment.idleTimeoutSeconds == 5)
        #expect(fromEnvironment.token == "t")
        #expect(fromEnvironment.shutdownGraceSeconds == 2)
        #expect(fromEnvironment.unnamedStaging == false)
        #expect(fromEnvironment.connectionsPerAddress == .unlimited)
        #expect(fromEnvironment.publicNames == ["uploads.example.com", "files.example.org"])
        #expect(try serve(["--connections-per-address", "4"]).connectionsPerAddress == .atMost(4))
        #expect(try serve(["--connections-per-address", "unlimited"]).connectionsPerAddress == .unlimited)
        #expect(try serve(["--connections-per-address", "auto"], environment).connectionsPerAddress == .automatic)
        #expect(fromEnvironment.durable)
        #expect(!fromEnvironment.web)
        #expect(fromEnvironment.allowedOrigins == ["https://a.example", "http://b.example:8080"])
        #expect(fromEnvironment.resumableExpirySeconds == 7_200)
        #expect(fromEnvironment.resumableLimit == 7)
        #expect(Set(CommandLineParser.environmentNames) == Set(environment.keys).union(["UPLOAD_TOKEN_FILE"]))
        #expect(try serve(["--fsync"]).durable)
        #expect(try serve(["--fsync", "--port", "1"]).durable)
        #expect(try serve(["--fsync", "false"]).durable == false)

        let flagsWin = try serve(["--port", "1234", "--on-conflict=reject", "--max-upload-size", "2MiB"], environment)
        #expect(flagsWin.port == 1234)
        #expect(flagsWin.onConflict == .reject)
        #expect(flagsWin.maxUploadSize == 2 << 20)
        #expect(flagsWin.uploadDirectory == "/data")
    }

    @Test(arguments: [["--port", "-1"], ["--host", "example.com"], ["--timeout", "0"], ["--nope"], ["--threads"],
                      ["--connection-limit", "many"], ["--upload-dir", ""], ["--staging", "tmp"], ["--web", "maybe"],
                      ["--allow-origin", "example.com"], ["--connections-per-address", "-1"],
                      ["--connections-per-address", "some"], ["--public-name", "a.example:80"]])
    func badFlags(arguments: [String]) {
        #expect(throws: ConfigurationError.self) { try CommandLineParser.parse(arguments, environment: [:], processors: 1) }
    }

    @Test func badEnvironmentNamesTheVariable() {
        #expect(throws: ConfigurationError.self) {
            try CommandLineParser.parse([], environment: ["ON_CONFLICT": "merge"], processors: 1)
        }
        do {
            _ = try CommandLineParser.parse([], environment: ["ON_CONFLICT": "merge"], processors: 1)
        } catch {
            #expect(error.description.hasPrefix("invalid ON_CONFLICT=merge"))
        }
    }

    @Test func helpVersionAndHealthcheck() throws {
        #expect(try CommandLineParser.parse(["--version"], environment: [:], processors: 1) == .version)
        guard case .help = try CommandLineParser.parse(["-h"], environment: [:], processors: 1) else {
            Issue.record("no help")
            return
        }
        #expect(try CommandLineParser.parse(["healthcheck"], environment: ["PORT": "8081"], processors: 1)
                == .healthcheck(url: "http://127.0.0.1:8081/healthz", timeoutSeconds: 3))
        #expect(try CommandLineParser.parse(["healthcheck"], environment: ["HOST": "10.1.2.3"], processors: 1)
                == .healthcheck(url: "http://10.1.2.3:9000/healthz", timeoutSeconds: 3))
        #expect(try CommandLineParser.parse(["healthcheck"], environment: ["HOST": "::"], processors: 1)
                == .healthcheck(url: "http://[::1]:9000/healthz", timeoutSeconds: 3))
        #expect(try CommandLineParser.parse(["healthcheck"], environment: ["HOST": "fd00::5"], processors: 1)
                == .healthcheck(url: "http://[fd00::5]:9000/healthz", timeoutSeconds: 3))
        #expect(try CommandLineParser.parse(["healthcheck", "--url", "http://[::1]:9/h"], environment: [:], processors: 1)
                == .healthcheck(url: "http://[::1]:9/h", timeoutSeconds: 3))
        // The server's own flags, so the image's HEALTHCHECK follows --port.
        #expect(try CommandLineParser.parse(["healthcheck", "--port", "8080"], environment: ["PORT": "9"], processors: 1)
                == .healthcheck(url: "http://127.0.0.1:8080/healthz", timeoutSeconds: 3))
        #expect(try CommandLineParser.parse(["healthcheck", "--host=10.0.0.7", "--port", "81", "--timeout", "2"],
                                            environment: [:], processors: 1)
                == .healthcheck(url: "http://10.0.0.7:81/healthz", timeoutSeconds: 2))
        #expect(throws: ConfigurationError.self) {
            try CommandLineParser.parse(["healthcheck", "--url", "https://x/"], environment: [:], processors: 1)
        }
    }

    @Test func healthcheckURLs() {
        #expect(HealthcheckURL("http://127.0.0.1:9000/healthz") == HealthcheckURL("http://127.0.0.1:9000/healthz"))
        #expect(HealthcheckURL("http://127.0.0.1:9000/healthz")?.port == 9000)
        #expect(HealthcheckURL("http://10.0.0.1/")?.port == 80)
        #expect(HealthcheckURL("http://[::1]:8080/x")?.host == "[::1]")
        #expect(HealthcheckURL("http://name:80/") == nil)
        #expect(HealthcheckURL("ftp://1.2.3.4/") == nil)
    }
}

@Suite struct RequestPolicyTests {
    @Test func mediaTypeAndBoundary() {
        #expect(UploadApplication.mediaType(of: "Multipart/Form-Data; boundary=x") == "multipart/form-data")
        #expect(UploadApplication.parameter("boundary", of: "multipart/form-data; boundary=abc") == "abc")
        #expect(UploadApplication.parameter("boundary", of: "multipart/form-data; charset=utf-8; BOUNDARY=\"a b\"") == "a b")
        #expect(UploadApplication.parameter("boundary", of: "multipart/form-data") == nil)
    }

    @Test func bearerToken() {
        #expect(UploadApplication.bearer("Bearer abc", matches: "abc"))
        #expect(UploadApplication.bearer("bearer abc", matches: "abc"))
        #expect(!UploadApplication.bearer("Bearer abd", matches: "abc"))
        #expect(!UploadApplication.bearer("Bearer ab", matches: "abc"))
        #expect(!UploadApplication.bearer("Bearer abcd", matches: "abc"))
        #expect(!UploadApplication.bearer(nil, matches: "abc"))
        #expect(!UploadApplication.bearer("abc", matches: "abc"))
    }

    @Test func errorsAreJSONWithTheRightStatus() {
        let cases: [(UploadFailure, Int)] = [(.badRequest("x"), 400), (.unauthorized, 401), (.notFound, 404),
                                             (.methodNotAllowed(allow: "POST"), 405), (.conflict(name: "a"), 409),
                                             (.tooLarge(limit: 1024), 413), (.unsupportedMediaType("text/plain"), 415),
                                             (.noSpace, 507), (.internalError("x"), 500)]
        for (failure, status) in cases {
            #expect(failure.response.status == status)
            #expect(String(decoding: failure.response.body, as: UTF8.self) == "{\"error\":\"\(failure.message.replacingQuotes())\"}\n")
        }
        #expect(UploadFailure.methodNotAllowed(allow: "POST").response.headers.contains { $0.name == "Allow" && $0.value == "POST" })
    }

    @Test func jsonEscaping() {
        #expect(JSON.string("a\"b\\c\n\u{1}é").text == "\"a\\\"b\\\\c\\n\\u0001é\"")
        #expect(JSON.object([("n", .number(-1)), ("a", .array([.bool(true), .null]))]).text == "{\"n\":-1,\"a\":[true,null]}")
    }
}

private extension String {
    func replacingQuotes() -> String {
        var result = ""
        for character in self { result += character == "\"" ? "\\\"" : String(character) }
        return result
    }
}

/// Writes and removes small files without Foundation's FileManager (Glibc is enough).
enum FileManagerless {
    static func write(_ text: String, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = text.utf8CString.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count - 1) }
        close(fd)
    }

    static func remove(_ path: String) { unlink(path) }
}
