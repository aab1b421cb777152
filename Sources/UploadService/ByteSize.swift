/// Byte counts as people write them: `1048576`, `512KiB`, `1MiB`, `1GiB`, `10MB`.
public enum ByteSize {
    private static let units: [(suffix: String, factor: UInt64)] = [
        ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40),
        ("kb", 1_000), ("mb", 1_000_000), ("gb", 1_000_000_000), ("tb", 1_000_000_000_000),
        // Single letters are binary, as in docker's --memory.
        ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40),
        ("b", 1),
    ]

    public static func parse(_ text: String) -> UInt64? {
        let lowered = text.lowercased().trimmingSpaces()
        let unit = units.first { lowered.hasSuffix($0.suffix) && lowered.count > $0.suffix.count }
        // A space may separate the number and the unit: `1 GiB`.
        let digits = unit.map { String(lowered.dropLast($0.suffix.count)).trimmingSpaces() } ?? lowered
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let number = UInt64(digits) else {
            return nil
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: unit?.factor ?? 1)
        return overflow ? nil : bytes
    }

    /// The largest binary unit that divides `bytes` exactly: `1GiB`, `1536KiB`, `1000`.
    public static func format(_ bytes: UInt64) -> String {
        for (suffix, factor) in [("TiB", UInt64(1) << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        where bytes >= factor && bytes % factor == 0 {
            return "\(bytes / factor)\(suffix)"
        }
        return "\(bytes)"
    }
}
