import Synchronization

/// Turns a client's filename into the name a file is stored under.
public enum FileName {
    /// Temporary files are named `.upload-<random>.part`; no stored name may begin
    /// with this prefix, so an upload can never collide with one.
    public static let reservedPrefix = ".upload-"
    public static let maximumBytes = 255
    private static let processTag = String(UInt64.random(in: .min ... .max), radix: 16)
    private static let counter = Atomic<UInt64>(0)

    /// A temporary name unique to this process (and, by its random tag, to this start).
    public static func temporaryName() -> String {
        "\(reservedPrefix)\(processTag)-\(counter.add(1, ordering: .relaxed).newValue).part"
    }

    /// Keeps the last path component (after `/` or `\`) and drops control
    /// characters; UTF-8 is kept as sent.
    public static func sanitize(_ raw: String) -> Result<String, UploadFailure> {
        let separator = raw.utf8.lastIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "\\") }
        let lastComponent = separator.map { raw[raw.utf8.index(after: $0)...] } ?? raw[...]
        var name = String(lastComponent)
        if lastComponent.unicodeScalars.contains(where: isControl) {
            var scalars = String.UnicodeScalarView()
            scalars.append(contentsOf: lastComponent.unicodeScalars.filter { !isControl($0) })
            name = String(scalars)
        }

        if name.isEmpty || name == "." || name == ".." {
            return .failure(.badRequest("unusable filename \(quoted(raw)): no name left after removing directories"))
        }
        if name.utf8.count > maximumBytes {
            return .failure(.badRequest("filename is longer than \(maximumBytes) bytes"))
        }
        if name.hasPrefix(reservedPrefix) {
            return .failure(.badRequest("filenames starting with \(quoted(reservedPrefix)) are reserved for temporary files"))
        }
        return .success(name)
    }

    /// The `n`th alternative for a name that exists: `report-1.pdf`, `.env-1`, `notes-2`.
    public static func alternative(_ name: String, number: Int) -> String {
        let suffix = "-\(number)"
        var stem = Substring(name)
        var fileExtension = Substring("")
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            stem = name[..<dot]
            fileExtension = name[dot...]
        }
        // Stay within the length limit by shortening the stem.
        while stem.utf8.count + suffix.utf8.count + fileExtension.utf8.count > maximumBytes, !stem.isEmpty {
            stem = stem.dropLast()
        }
        return String(stem) + suffix + String(fileExtension)
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    private static func quoted(_ text: String) -> String {
        "\"\(text.count > 64 ? String(text.prefix(64)) + "…" : text)\""
    }
}
