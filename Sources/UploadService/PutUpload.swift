import MicroHTTPD

/// `PUT /upload/<name>`: the body is the file, written as it arrives with no
/// framing to parse.
final class PutUpload: RawBodyReceiver {
    private let upload: Upload
    /// Added to the answer (CORS).
    private let headers: [(name: String, value: String)]

    /// `name` is already sanitized; the file is created before the first byte.
    init(_ upload: Upload, name: String, headers: [(name: String, value: String)]) {
        self.upload = upload
        self.headers = headers
        _ = upload.beginFile(named: name)
    }

    func receive(byteCount count: Int) -> BodyDecision { upload.receive(byteCount: count) }

    func bodyData(_ bytes: RawSpan) -> Bool { upload.write(bytes) }

    /// 201 with `Location` for a new file (also one stored under another name),
    /// 200 for a replaced one.
    func finish(parsed: Bool) -> Response {
        switch upload.finish() {
        case .success(let stored):
            let file = stored[0]
            return .stored(stored, status: file.replaced ? 200 : 201,
                           headers: [(name: "Location", value: "/upload/" + PathSegment.encode(file.name))] + headers)
        case .failure(let failure):
            return failure.response.adding(headers)
        }
    }

    func abandon(_ reason: Termination) { upload.abandon(reason) }
}

/// One segment of a URL path.
enum PathSegment {
    /// Percent-decodes once; nil for a malformed escape.
    static func decode(_ text: Substring) -> [UInt8]? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    /// Percent-encodes all but unreserved characters (RFC 3986).
    static func encode(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                 UInt8(ascii: "_"), UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                result += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return result
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
