import MicroHTTPD

/// The upload page (`WebAssets`, generated from web/): rendered once at start
/// with the server's limit and whether a token is needed, served with a
/// Content-Security-Policy that allows nothing but our own script and style.
struct WebPage {
    private let index: [UInt8]

    init(maxUploadSize: UInt64?, tokenRequired: Bool) {
        let values = [
            ("{{MAX_UPLOAD_SIZE}}", maxUploadSize.map { String($0) } ?? "0"),
            ("{{MAX_UPLOAD_SIZE_TEXT}}", maxUploadSize.map { ByteSize.format($0) } ?? "unlimited"),
            ("{{TOKEN_REQUIRED}}", tokenRequired ? "true" : "false"),
        ]
        index = Array(values.reduce(WebAssets.indexHTML) { $0.replacingAll($1.0, with: $1.1) }.utf8)
    }

    static let securityHeaders = [
        (name: "Content-Security-Policy",
         value: "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
             + "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
        (name: "X-Content-Type-Options", value: "nosniff"),
        // Not no-referrer: a form POST would then carry "Origin: null", which the
        // cross-origin check refuses.
        (name: "Referrer-Policy", value: "same-origin"),
    ]

    /// The page's answer for `GET`/`HEAD` of one of its paths, else nil.
    func response(path: String, method: String) -> Response? {
        guard method == "GET" || method == "HEAD" else { return nil }
        let (body, type): ([UInt8], String)
        switch path {
        case "/": (body, type) = (index, "text/html; charset=utf-8")
        case "/app.js": (body, type) = (Array(WebAssets.appJS.utf8), "text/javascript; charset=utf-8")
        case "/app.css": (body, type) = (Array(WebAssets.appCSS.utf8), "text/css; charset=utf-8")
        default: return nil
        }
        return Response(status: 200, body: body,
                        headers: [(name: "Content-Type", value: type), (name: "Cache-Control", value: "no-cache")]
                            + Self.securityHeaders)
    }
}

extension String {
    /// Every occurrence of `target` replaced (no Foundation in the server).
    func replacingAll(_ target: String, with replacement: String) -> String {
        let text = Array(utf8), pattern = Array(target.utf8)
        var result: [UInt8] = []
        var index = 0
        while index < text.count {
            if index + pattern.count <= text.count && text[index..<index + pattern.count].elementsEqual(pattern) {
                result += replacement.utf8
                index += pattern.count
            } else {
                result.append(text[index])
                index += 1
            }
        }
        return String(decoding: result, as: UTF8.self)
    }
}
