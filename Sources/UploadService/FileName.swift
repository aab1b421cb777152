import Platform

/// Turns a client's filename into the name a file is stored under.
public enum FileName {
    public static let maximumBytes = 255

    /// Keeps the last path component (after `/` or `\`) and drops control
    /// characters; UTF-8 is kept as sent. Refuses what could not be stored as
    /// sent or would mislead: invalid UTF-8 (two such names must never become one),
    /// bidirectional overrides (a name that displays as something else), empty
    /// names, `.`, `..`, names over 255 bytes and the temporary files' prefix.
    public static func sanitize(_ raw: [UInt8]) -> Result<String, UploadFailure> {
        guard let text = String(validating: raw, as: UTF8.self) else {
            return .failure(.badRequest("filename is not valid UTF-8"))
        }
        let separator = text.utf8.lastIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "\\") }
        let lastComponent = separator.map { text[text.utf8.index(after: $0)...] } ?? text[...]
        if lastComponent.unicodeScalars.contains(where: isBidirectionalControl) {
            return .failure(.badRequest("filename contains a bidirectional text control character"))
        }
        var name = String(lastComponent)
        if lastComponent.unicodeScalars.contains(where: isControl) {
            var scalars = String.UnicodeScalarView()
            scalars.append(contentsOf: lastComponent.unicodeScalars.filter { !isControl($0) })
            name = String(scalars)
        }

        if name.isEmpty || name == "." || name == ".." {
            return .failure(.badRequest("unusable filename \(quoted(text)): no name left after removing directories"))
        }
        if name.utf8.count > maximumBytes {
            return .failure(.badRequest("filename is longer than \(maximumBytes) bytes"))
        }
        if name.hasPrefix(TemporaryName.prefix) {
            return .failure(.badRequest("filenames starting with \(quoted(TemporaryName.prefix)) are reserved for temporary files"))
        }
        return .success(name)
    }

    /// An alternative for a name that exists, `suffix` before the extension:
    /// `report-1.pdf`, `.env-1`, `notes-2`. Stays within 255 bytes by shortening
    /// the stem, then the extension, and never takes the temporary files' prefix.
    public static func alternative(_ name: String, suffix: String) -> String {
        var stem = Substring(name)
        var fileExtension = Substring("")
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            stem = name[..<dot]
            fileExtension = name[dot...]
        }
        while stem.utf8.count + suffix.utf8.count + fileExtension.utf8.count > maximumBytes {
            if !stem.isEmpty { stem = stem.dropLast() } else { fileExtension = fileExtension.dropLast() }
        }
        let candidate = String(stem) + suffix + String(fileExtension)
        // `.upload` + `-1` would look like a temporary file.
        return candidate.hasPrefix(TemporaryName.prefix) ? String(stem) + "_" + suffix.dropFirst() + String(fileExtension) : candidate
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// U+202A–U+202E (embeddings and overrides), U+2066–U+2069 (isolates).
    private static func isBidirectionalControl(_ scalar: Unicode.Scalar) -> Bool {
        (0x202A...0x202E).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value)
    }

    private static func quoted(_ text: String) -> String {
        "\"\(text.count > 64 ? String(text.prefix(64)) + "…" : text)\""
    }
}
