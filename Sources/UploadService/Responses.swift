import MicroHTTPD

/// The answers the service builds: JSON bodies, the stored files' list, extra headers.
extension Response {
    static func json(_ status: Int, _ value: JSON) -> Response {
        Response(status: status, body: Array((value.text + "\n").utf8),
                 headers: [(name: "Content-Type", value: "application/json")])
    }

    /// `{"files":[{"name":"a.txt","size":3}]}`.
    static func stored(_ files: [StoredFile], status: Int, headers: [(name: String, value: String)] = []) -> Response {
        var body = JSONWriter(reserving: 64 * files.count)
        body.beginObject()
        body.key("files")
        body.beginArray()
        for file in files {
            body.beginObject()
            body.key("name")
            body.string(file.name)
            body.key("size")
            body.literal(String(file.size))
            body.endObject()
        }
        body.endArray()
        body.endObject()
        return Response(status: status, body: Array((body.text + "\n").utf8),
                        headers: [(name: "Content-Type", value: "application/json")] + headers)
    }

    func adding(_ headers: [(name: String, value: String)]) -> Response {
        Response(status: status, body: body, headers: self.headers + headers)
    }
}
