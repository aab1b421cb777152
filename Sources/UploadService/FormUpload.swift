import MicroHTTPD

/// `POST /upload`: a multipart/form-data body; every `file` part with a filename
/// is stored, other fields are read and ignored.
final class FormUpload: FormReceiver {
    private let upload: Upload
    /// Added to the answer (CORS).
    private let headers: [(name: String, value: String)]

    init(_ upload: Upload, headers: [(name: String, value: String)]) {
        self.upload = upload
        self.headers = headers
    }

    func receive(byteCount count: Int) -> BodyDecision { upload.receive(byteCount: count) }

    func partBegins(name: String, filename: [UInt8]?) -> Bool {
        guard upload.endFile() else { return false }
        guard name == "file" else { return true }
        guard let filename else {
            upload.fail(.badRequest("the \"file\" part has no filename"))
            return false
        }
        switch FileName.sanitize(filename) {
        case .failure(let failure):
            upload.fail(failure)
            return false
        case .success(let name):
            return upload.beginFile(named: name)
        }
    }

    func partData(_ bytes: RawSpan) -> Bool { upload.write(bytes) }

    func malformed() { upload.fail(.badRequest("malformed multipart body")) }

    func finish(parsed: Bool) -> Response {
        if !parsed { upload.fail(.badRequest("multipart body is truncated or malformed")) }
        switch upload.finish() {
        case .success(let stored): return .stored(stored, status: 200, headers: headers)
        case .failure(let failure): return failure.response.adding(headers)
        }
    }

    func abandon(_ reason: Termination) { upload.abandon(reason) }
}
