import Platform
import Synchronization

/// What is kept of a resumable upload besides its bytes, in a sidecar file
/// beside them (`.upload-tus-<id>.info`, replaced whole with write + rename):
/// the length (or that it is deferred), the name, the metadata as sent, when it
/// was created. Both go when the upload is complete.
struct ResumableInfo: Equatable {
    /// nil: deferred (`Upload-Defer-Length: 1`) until a PATCH says it.
    var length: UInt64?
    /// Sanitized (`FileName.sanitize`).
    var name: String
    /// `Upload-Metadata` as sent (checked), for `HEAD`.
    var metadata: String
    /// Seconds since the epoch.
    var created: Int64

    func encoded() -> [UInt8] {
        var text = "tus 1\n"
        text += "length \(length.map { String($0) } ?? "deferred")\n"
        text += "name \(PathSegment.encode(name))\n"
        text += "created \(created)\n"
        text += "metadata \(metadata)\n"
        return Array(text.utf8)
    }

    init(length: UInt64?, name: String, metadata: String, created: Int64) {
        self.length = length
        self.name = name
        self.metadata = metadata
        self.created = created
    }

    init?(decoding bytes: [UInt8]) {
        var fields: [Substring: Substring] = [:]
        let text = String(decoding: bytes, as: UTF8.self)
        for line in text.split(separator: "\n") {
            let key = line.prefix { $0 != " " }
            fields[key] = line.dropFirst(key.count + 1)
        }
        guard fields["tus"] == "1", let lengthText = fields["length"],
              let name = fields["name"].flatMap(PathSegment.decode).flatMap({ String(validating: $0, as: UTF8.self) }),
              let created = fields["created"].flatMap({ Int64($0) }) else { return nil }
        if lengthText == "deferred" {
            length = nil
        } else {
            guard let value = UInt64(lengthText) else { return nil }
            length = value
        }
        self.name = name
        self.created = created
        metadata = fields["metadata"].map(String.init) ?? ""
    }
}

/// Where resumable uploads live: in the upload directory itself, so that they
/// share its filesystem, outlive a restart or a `kill -9`, and any instance on
/// the same directory (also on another host, on a network filesystem) can
/// continue them. Each has two reserved names, never a stored file's
/// (`FileName.sanitize` refuses the prefix) and never taken by the leftover
/// sweep (`TemporaryName.matches`):
///
/// - `.upload-tus-<id>`: the bytes so far; its size is the offset, and an
///   exclusive flock is held on it while a request writes it;
/// - `.upload-tus-<id>.info`: `ResumableInfo`.
///
/// An upload expires `expirySeconds` after its last byte arrived (the data
/// file's modification time); `sweep` removes expired ones, at start and now
/// and then at a creation. A completed upload leaves neither name behind.
final class ResumableStore: Sendable {
    static let prefix = TemporaryName.prefix + "tus-"
    private static let infoSuffix = ".info"

    let expirySeconds: Int64
    /// Incomplete uploads in the directory at most (all instances); 0: off.
    let limit: Int

    private struct State {
        var lastSweep: Int64 = .min
        /// Incomplete uploads: exact at each sweep, then counted here.
        var incomplete = 0
    }
    private let state = Mutex(State())

    init(expirySeconds: Int, limit: Int) {
        self.expirySeconds = Int64(expirySeconds)
        self.limit = limit
    }

    /// 32 hex digits of randomness.
    static func newID() -> String {
        var id = ""
        for _ in 0..<2 {
            let hex = String(UInt64.random(in: .min ... .max), radix: 16)
            id += String(repeating: "0", count: 16 - hex.utf8.count) + hex
        }
        return id
    }

    static func isValidID<Text: StringProtocol>(_ id: Text) -> Bool {
        id.utf8.count == 32 && id.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    static func dataName(_ id: String) -> String { prefix + id }
    static func infoName(_ id: String) -> String { prefix + id + infoSuffix }

    /// The id in a data file's or sidecar's name.
    static func id(in name: String) -> (id: String, isInfo: Bool)? {
        guard name.hasPrefix(prefix) else { return nil }
        var rest = name.dropFirst(prefix.count)
        let isInfo = rest.hasSuffix(infoSuffix)
        if isInfo { rest = rest.dropLast(infoSuffix.count) }
        return isValidID(rest) ? (String(rest), isInfo) : nil
    }

    func readInfo(_ id: String, in directory: Directory) -> ResumableInfo? {
        (try? directory.read(Self.infoName(id))).flatMap(ResumableInfo.init(decoding:))
    }

    func writeInfo(_ info: ResumableInfo, id: String, in directory: Directory, durable: Bool) throws(SystemError) {
        try directory.writeAtomically(Self.infoName(id), info.encoded(), durable: durable)
    }

    func expires(lastWrite: Int64) -> Int64 { lastWrite + expirySeconds }

    func isExpired(lastWrite: Int64, now: Int64) -> Bool { now >= lastWrite + expirySeconds }

    /// Incomplete uploads as counted now.
    var incomplete: Int { state.withLock { $0.incomplete } }

    /// Takes a place for a new incomplete upload; false at the limit.
    func admit() -> Bool {
        state.withLock { state in
            guard state.incomplete < limit else { return false }
            state.incomplete += 1
            return true
        }
    }

    /// An incomplete upload ended: completed, terminated or expired.
    func release() {
        state.withLock { $0.incomplete = max(0, $0.incomplete - 1) }
    }

    /// Sweeps when the last sweep is older than a minute (or the expiry, if shorter).
    func sweepIfDue(_ directory: Directory, now: Int64) -> Int {
        let due = state.withLock { state in
            guard now - state.lastSweep >= min(60, expirySeconds) else { return false }
            state.lastSweep = now
            return true
        }
        return due ? sweep(directory, now: now) : 0
    }

    /// Removes expired uploads (a data file no request holds whose last write is
    /// older than the expiry, and its sidecar; a sidecar alone that old, left by
    /// a crash) and counts the incomplete ones left. Returns how many were removed.
    @discardableResult
    func sweep(_ directory: Directory, now: Int64) -> Int {
        guard let names = try? directory.names() else { return 0 }
        let present = Set(names)
        var removed = 0, live = 0
        for name in names {
            guard let (id, isInfo) = Self.id(in: name) else { continue }
            if isInfo {
                // A sidecar alone: a crash between removing the data and it.
                guard !present.contains(Self.dataName(id)),
                      let status = directory.status(of: name), isExpired(lastWrite: status.modified, now: now),
                      directory.status(of: Self.dataName(id)) == nil else { continue }
                try? directory.remove(name)
                continue
            }
            guard let status = directory.status(of: name) else { continue }
            if !isExpired(lastWrite: status.modified, now: now) {
                live += 1
                continue
            }
            // Expired by its time stamp: certain only under its lock (a request
            // may be writing it right now).
            guard let file = try? directory.openPartial(name) else {
                live += 1
                continue
            }
            if isExpired(lastWrite: file.modificationSeconds, now: now) {
                try? directory.remove(name)
                try? directory.remove(Self.infoName(id))
                removed += 1
            } else {
                live += 1
            }
            file.close()
        }
        state.withLock {
            $0.incomplete = live
            $0.lastSweep = now
        }
        return removed
    }
}
