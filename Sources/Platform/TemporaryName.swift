import Synchronization

/// Names of files in progress in named staging: `.upload-<16 hex>-<n>.part`, the
/// hex a random tag of this process's start. Stored files never begin with
/// `prefix`, and the leftover sweep removes only names of exactly this shape, so
/// it can never take a stored file.
public enum TemporaryName {
    public static let prefix = ".upload-"
    private static let suffix = ".part"
    private static let processTag: String = {
        let hex = String(UInt64.random(in: .min ... .max), radix: 16)
        return String(repeating: "0", count: 16 - hex.utf8.count) + hex
    }()
    private static let counter = Atomic<UInt64>(0)

    /// A name unique to this process (and, by its tag, to this start).
    public static func next() -> String {
        "\(prefix)\(processTag)-\(counter.add(1, ordering: .relaxed).newValue)\(suffix)"
    }

    private static let asidePrefix = prefix + "aside-"

    /// A private name for a file an undo has taken aside: reserved like every
    /// `prefix` name. It may hold another upload's file for an instant, so only
    /// one left far longer than an undo takes (a crash in the middle) is swept.
    public static func aside() -> String {
        "\(asidePrefix)\(processTag)-\(counter.add(1, ordering: .relaxed).newValue)"
    }

    /// Whether `name` has the exact shape `aside()` makes.
    public static func isAside(_ name: String) -> Bool {
        guard name.hasPrefix(asidePrefix) else { return false }
        let rest = Array(name.utf8.dropFirst(asidePrefix.utf8.count))
        let isHex = { (byte: UInt8) in (0x30...0x39).contains(byte) || (0x61...0x66).contains(byte) }
        return rest.count >= 18 && rest[..<16].allSatisfy(isHex) && rest[16] == UInt8(ascii: "-")
            && rest[17...].allSatisfy { (0x30...0x39).contains($0) }
    }

    private static let creatingSuffix = ".new"

    /// The name a named staged file is created under, `name` (made by `next()`)
    /// with `.new` for `.part`, until it is locked and renamed to `name`: the
    /// sweep never takes it at once, only once it is far older than that takes
    /// (a crash in between).
    public static func creating(_ name: String) -> String {
        String(name.dropLast(suffix.utf8.count)) + creatingSuffix
    }

    /// Whether `name` has the exact shape `creating(_:)` makes.
    public static func isCreating(_ name: String) -> Bool {
        guard name.hasSuffix(creatingSuffix) else { return false }
        return matches(String(name.dropLast(creatingSuffix.utf8.count)) + suffix)
    }

    /// Whether `name` has the exact shape `next()` makes.
    public static func matches(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        let head = Array(prefix.utf8), tail = Array(suffix.utf8)
        guard bytes.count >= head.count + 16 + 2 + tail.count,
              bytes.starts(with: head), bytes.suffix(tail.count).elementsEqual(tail) else { return false }
        let tag = bytes[head.count..<head.count + 16]
        let number = bytes[(head.count + 17)..<(bytes.count - tail.count)]
        let isHex = { (byte: UInt8) in (0x30...0x39).contains(byte) || (0x61...0x66).contains(byte) }
        return tag.allSatisfy(isHex) && bytes[head.count + 16] == UInt8(ascii: "-")
            && !number.isEmpty && number.allSatisfy { (0x30...0x39).contains($0) }
    }
}
