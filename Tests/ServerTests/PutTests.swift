import Foundation
import Testing

@Suite("PUT uploads and the page") struct PutTests {
    @Test func putStoresTheBodyAndSaysWhetherItWasNew() throws {
        let server = try TestServer()
        let data = randomData(300_000)
        let created = try server.client().put("/upload/report.pdf", data)
        #expect(created.status == 201)
        #expect(created.header("Location") == "/upload/report.pdf")
        #expect(created.files.map(\.name) == ["report.pdf"])
        #expect(created.files.map(\.size) == [300_000])
        #expect(server.contents(of: "report.pdf") == data)
        let replaced = try server.client().put("/upload/report.pdf", Data("new".utf8))
        #expect(replaced.status == 200)
        #expect(server.contents(of: "report.pdf") == Data("new".utf8))
    }

    @Test func putNameIsOnePercentDecodedSegment() throws {
        let server = try TestServer()
        let spaced = try server.client().put("/upload/r%C3%A9sum%C3%A9%20final.txt", Data("x".utf8))
        #expect(spaced.status == 201)
        #expect(spaced.files.map(\.name) == ["résumé final.txt"])
        #expect(spaced.header("Location") == "/upload/r%C3%A9sum%C3%A9%20final.txt")
        for path in ["/upload/", "/upload/a%2Fb", "/upload/a%5Cb", "/upload/..", "/upload/.", "/upload/%2e%2e",
                     "/upload/bad%zz", "/upload/caf%E9.txt", "/upload/.upload-x"] {
            let refused = try server.client().put(path, Data("x".utf8))
            #expect(refused.status == 400, "\(path)")
            #expect(refused.error != nil)
        }
        #expect(server.storedNames == ["résumé final.txt"])
    }

    @Test func putFollowsTheConflictPolicy() throws {
        let rename = try TestServer(["--on-conflict", "rename"])
        #expect(try rename.client().put("/upload/a.txt", Data("1".utf8)).status == 201)
        let second = try rename.client().put("/upload/a.txt", Data("2".utf8))
        #expect(second.status == 201)
        #expect(second.header("Location") == "/upload/a-1.txt")
        let reject = try TestServer(["--on-conflict", "reject"])
        #expect(try reject.client().put("/upload/a.txt", Data("1".utf8)).status == 201)
        #expect(try reject.client().put("/upload/a.txt", Data("2".utf8)).status == 409)
        #expect(reject.contents(of: "a.txt") == Data("1".utf8))
    }

    @Test func putChecksTokenSizeAndCutOffBodies() throws {
        let server = try TestServer(["--token", "s3cret", "--max-upload-size", "1KiB"])
        #expect(try server.client().put("/upload/a", Data("x".utf8)).status == 401)
        let tooLarge = try server.client().put("/upload/a", randomData(2000), headers: ["Authorization: Bearer s3cret"])
        #expect(tooLarge.status == 413)
        let cut = try server.client()
        try cut.send("PUT /upload/cut HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\nContent-Length: 1000\r\n\r\n")
        try cut.send(randomData(500))
        cut.reset()
        let chunked = try server.client()
        try chunked.send("PUT /upload/chunked HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        #expect(try chunked.readResponse()?.status == 201)
        usleep(200_000)
        #expect(server.storedNames == ["chunked"])
    }

    @Test func optionsAndWrongMethodsSayWhatIsAllowed() throws {
        let server = try TestServer()
        let options = try server.client().get("/upload/x", method: "OPTIONS")
        #expect(options.status == 204)
        #expect(options.header("Allow") == "PUT, OPTIONS")
        #expect(try server.client().get("/upload", method: "OPTIONS").header("Allow") == "POST, OPTIONS")
        let wrong = try server.client().get("/upload/x", method: "DELETE")
        #expect(wrong.status == 405)
        #expect(wrong.header("Allow") == "PUT, OPTIONS")
        #expect(wrong.error != nil)
    }

    @Test func thePageIsServedWithAStrictPolicyAndCanBeTurnedOff() throws {
        let server = try TestServer(["--max-upload-size", "10MiB", "--token", "t"])
        let page = try server.client().get("/")
        #expect(page.status == 200)
        #expect(page.header("Content-Type") == "text/html; charset=utf-8")
        #expect(page.header("Content-Security-Policy")?.contains("default-src 'none'") == true)
        #expect(page.text.contains("data-max-upload-size=\"10485760\""))
        #expect(page.text.contains("data-token-required=\"true\""))
        #expect(!page.text.contains("{{"))
        #expect(!page.text.contains("<script>"), "no inline script")
        #expect(try server.client().get("/app.js").header("Content-Type") == "text/javascript; charset=utf-8")
        #expect(try server.client().get("/app.css").status == 200)
        let off = try TestServer(["--web", "false"])
        #expect(try off.client().get("/").status == 404)
        #expect(try off.client().get("/app.js").status == 404)
    }
}
