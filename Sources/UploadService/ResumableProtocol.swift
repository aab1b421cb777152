import Platform

// The pieces of tus 1.0.0 that are plain text: metadata, base64, checksums,
// HTTP dates, durations. No state here; `Resumable` and `ResumableStore` use them.

enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Standard base64 (RFC 4648 §4), padding optional; nil for anything else.
    static func decode<Text: StringProtocol>(_ text: Text) -> [UInt8]? {
        var bytes = Array(text.utf8)
        while bytes.last == UInt8(ascii: "=") { bytes.removeLast() }
        guard text.utf8.count - bytes.count <= 2, bytes.count % 4 != 1 else { return nil }
        if text.utf8.count != bytes.count && text.utf8.count % 4 != 0 { return nil }  // padding, but wrong
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count * 3 / 4)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            default: return nil
            }
            buffer = buffer << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        // The bits left over must be zero: one encoding per value.
        guard buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return output
    }

    static func encode(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            var value: UInt32 = 0
            for (position, byte) in chunk.enumerated() { value |= UInt32(byte) << UInt32(16 - 8 * position) }
            for position in 0..<4 {
                if position <= chunk.count {
                    output.append(alphabet[Int(value >> UInt32(18 - 6 * position) & 63)])
                } else {
                    output.append(UInt8(ascii: "="))
                }
            }
            index += 3
        }
        return String(decoding: output, as: UTF8.self)
    }
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be
/// missing). Kept as sent, for `HEAD`, once it has been checked.
struct UploadMetadata: Equatable {
    /// Longer headers are refused: they are stored with the upload.
    static let maximumBytes = 4096

    let text: String
    let pairs: [(key: String, value: [UInt8])]

    static func == (lhs: UploadMetadata, rhs: UploadMetadata) -> Bool { lhs.text == rhs.text }

    /// nil: malformed (a key with spaces or commas, a value that is not base64,
    /// a key twice, control characters).
    init?(_ text: String) {
        guard text.utf8.count <= Self.maximumBytes,
              text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return nil }
        var pairs: [(key: String, value: [UInt8])] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) where !text.isEmpty {
            let item = item.trimmingSpaces()
            let fields = item.split(separator: " ", omittingEmptySubsequences: true)
            guard let key = fields.first, fields.count <= 2 else { return nil }
            guard let value = fields.count == 2 ? Base64.decode(fields[1]) : [] else { return nil }
            guard !pairs.contains(where: { $0.key == key }) else { return nil }
            pairs.append((String(key), value))
        }
        self.text = text
        self.pairs = pairs
    }

    subscript(key: String) -> [UInt8]? { pairs.first { $0.key == key }?.value }
}

/// `Upload-Checksum: sha1 <base64 digest>`.
struct UploadChecksum {
    static let supported = DigestAlgorithm.allCases.map(\.rawValue).joined(separator: ",")

    let algorithm: DigestAlgorithm
    let expected: [UInt8]

    /// nil with the reason when the header is malformed or names an algorithm we do not have.
    static func parse(_ header: String) -> Result<UploadChecksum, UploadFailure> {
        let fields = header.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count == 2 else {
            return .failure(.badRequest("Upload-Checksum must be \"<algorithm> <base64 digest>\""))
        }
        guard let algorithm = DigestAlgorithm(rawValue: fields[0].lowercased()) else {
            return .failure(.badRequest("unsupported checksum algorithm \"\(fields[0].prefix(16))\"; supported: \(supported)"))
        }
        guard let digest = Base64.decode(fields[1]), digest.count == algorithm.length else {
            return .failure(.badRequest("the \(algorithm.rawValue) Upload-Checksum is not a base64 digest of \(algorithm.length) bytes"))
        }
        return .success(UploadChecksum(algorithm: algorithm, expected: digest))
    }
}

/// RFC 7231 HTTP-dates (IMF-fixdate), for `Upload-Expires`.
enum HTTPDate {
    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `Sun, 06 Nov 1994 08:49:37 GMT` for seconds since the epoch.
    static func format(_ seconds: Int64) -> String {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let second = seconds - days * 86_400
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let weekday = Int(((days % 7) + 11) % 7)  // 1970-01-01 was a Thursday
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(weekdays[weekday]), \(two(day)) \(months[Int(month) - 1]) \(year) "
            + "\(two(second / 3600)):\(two(second / 60 % 60)):\(two(second % 60)) GMT"
    }
}

/// `90s`, `30m`, `24h`, `7d`, or plain seconds.
enum DurationText {
    static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingSpaces().lowercased()
        let factors: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var digits = Substring(trimmed)
        var factor = 1
        if let last = trimmed.last, let unit = factors[last] {
            digits = digits.dropLast()
            factor = unit
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(digits) else { return nil }
        let (seconds, overflow) = number.multipliedReportingOverflow(by: factor)
        return overflow || seconds <= 0 || seconds > 3650 * 86_400 ? nil : seconds
    }

    /// `24h`, `90m`, `45s`: the largest unit that divides exactly.
    static func format(_ seconds: Int) -> String {
        for (unit, factor) in [("d", 86_400), ("h", 3600), ("m", 60)] where seconds % factor == 0 {
            return "\(seconds / factor)\(unit)"
        }
        return "\(seconds)s"
    }
}

/// A header's whole number: digits only (no sign, no spaces), as tus requires.
func parseOffset(_ text: String?) -> UInt64? {
    guard let text, !text.isEmpty, text.utf8.count <= 20, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else {
        return nil
    }
    return UInt64(text)
}
