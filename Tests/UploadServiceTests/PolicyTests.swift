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
        #expect(try FileName.sanitize(raw).get() == name)
    }

    @Test(arguments: ["", ".", "..", "a/..", "dir/", "\u{1}", ".upload-1.part", ".upload-", String(repeating: "a", count: 256),
                      String(repeating: "€", count: 86)])
    func rejects(raw: String) {
        guard case .failure(let failure) = FileName.sanitize(raw) else {
            Issue.record("\(raw) was accepted")
            return
        }
        #expect(failure.status == 400)
    }

    @Test func acceptsExactly255Bytes() {
        #expect((try? FileName.sanitize(String(repeating: "a", count: 255)).get()) != nil)
        #expect((try? FileName.sanitize(String(repeating: "€", count: 85)).get()) != nil)  // 255 bytes
    }

    @Test func alternatives() {
        #expect(FileName.alternative("report.pdf", number: 1) == "report-1.pdf")
        #expect(FileName.alternative("a.tar.gz", number: 2) == "a.tar-2.gz")
        #expect(FileName.alternative(".env", number: 1) == ".env-1")
        #expect(FileName.alternative("notes", number: 3) == "notes-3")
        let long = String(repeating: "x", count: 251) + ".txt"
        let alternative = FileName.alternative(long, number: 12)
        #expect(alternative.utf8.count == 255)
        #expect(alternative.hasSuffix("-12.txt"))
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
    }

    @Test func flagsAndTheirEnvironmentTwins() throws {
        let environment = ["HOST": "::1", "PORT": "8080", "UPLOAD_DIR": "/data", "MAX_UPLOAD_SIZE": "0",
                           "ON_CONFLICT": "rename", "THREADS": "8", "CONNECTION_LIMIT": "100", "TIMEOUT": "5",
                           "UPLOAD_TOKEN": "t", "SHUTDOWN_GRACE": "2", "STAGING": "named"]
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
        #expect(Set(CommandLineParser.environmentNames) == Set(environment.keys))

        let flagsWin = try serve(["--port", "1234", "--on-conflict=reject", "--max-upload-size", "2MiB"], environment)
        #expect(flagsWin.port == 1234)
        #expect(flagsWin.onConflict == .reject)
        #expect(flagsWin.maxUploadSize == 2 << 20)
        #expect(flagsWin.uploadDirectory == "/data")
    }

    @Test(arguments: [["--port", "-1"], ["--host", "example.com"], ["--timeout", "0"], ["--nope"], ["--threads"],
                      ["--connection-limit", "many"], ["--upload-dir", ""], ["--staging", "tmp"]])
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
