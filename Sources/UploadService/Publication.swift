import Platform

/// What to do with a name that already exists in the upload directory.
public enum ConflictPolicy: String, Sendable, CaseIterable {
    /// Replace the existing file atomically (what the original service did).
    case overwrite
    /// Store under `name-1.ext`, `name-2.ext`, ...
    case rename
    /// Answer 409 and store nothing.
    case reject
}

/// A file an upload stored: under which name, how large, and whether it replaced one.
struct StoredFile {
    let name: String
    let size: Int
    let replaced: Bool
}

/// Where the conflict policy is decided: gives a request's finished files their
/// final names, all or nothing, in a directory that other requests and other
/// instances write at the same time.
///
/// - `overwrite`: every target is checked first (a directory there fails the
///   request before anything changes), then every file gets a locked temporary
///   name (the step that can run out of space), and only then are they renamed
///   over their targets, so a failure leaves every old file as it was.
/// - `rename` and `reject`: link(2), which never replaces. A later file that
///   fails undoes the earlier ones, removing a name only while it still leads
///   to this request's file, never a file another upload put there since.
struct Publication {
    let directory: Directory
    let policy: ConflictPolicy
    /// `--fsync`: the files' bytes and the directory entries reach the disk
    /// before the answer.
    let durable: Bool

    /// Sequential alternatives tried under `rename` before random ones: cheap to
    /// read, and a name taken by many uploads cannot run out.
    static let sequentialAlternatives = 99

    struct Part {
        let file: StagedFile
        let name: String
    }

    func publish(_ parts: [Part]) throws(UploadFailure) -> [StoredFile] {
        if durable {
            for part in parts { try storing { () throws(SystemError) in try part.file.synchronize() } }
        }
        let stored = policy == .overwrite ? try overwrite(parts) : try linkEach(parts)
        if policy != .overwrite {
            for part in parts { part.file.rememberIdentity() }  // for an undo after a failed close
        }
        do throws(SystemError) {
            for part in parts { try part.file.closeChecked() }
            if durable { try directory.synchronize() }
        } catch {
            if policy != .overwrite {
                for (part, file) in zip(parts, stored) { directory.removeIfSame(file.name, as: part.file) }
            }
            throw UploadFailure.storage(error)
        }
        return stored
    }

    private func overwrite(_ parts: [Part]) throws(UploadFailure) -> [StoredFile] {
        // The common case, one new unnamed file: one link(2), nothing checked
        // first (a single file has no other file to leave as it was).
        if parts.count == 1, parts[0].file.stage == .unnamed {
            do {
                try directory.link(parts[0].file, as: parts[0].name)
                return [StoredFile(name: parts[0].name, size: parts[0].file.size, replaced: false)]
            } catch where error.isExisting {
                // replaced below
            } catch {
                throw UploadFailure.storage(error)
            }
        }
        var existed: [Bool] = []
        for part in parts {
            switch directory.kind(of: part.name) {
            case .directory?, .other?: throw UploadFailure.notAFile(name: part.name)
            case .file?: existed.append(true)
            case nil: existed.append(false)
            }
        }
        for part in parts { try storing { () throws(SystemError) in try directory.nameTemporarily(part.file) } }
        for part in parts { try storing { () throws(SystemError) in try directory.replace(part.name, with: part.file) } }
        return zip(parts, existed).map { StoredFile(name: $0.name, size: $0.file.size, replaced: $1) }
    }

    private func linkEach(_ parts: [Part]) throws(UploadFailure) -> [StoredFile] {
        if policy == .reject, let taken = parts.first(where: { directory.exists($0.name) }) {
            throw UploadFailure.conflict(name: taken.name)
        }
        var stored: [StoredFile] = []
        do throws(UploadFailure) {
            for part in parts {
                let name = try linkUnderFreeName(part)
                stored.append(StoredFile(name: name, size: part.file.size, replaced: false))
            }
        } catch {
            for (part, file) in zip(parts, stored) { directory.removeIfSame(file.name, as: part.file) }
            throw error
        }
        return stored
    }

    /// `reject`: the name or 409. `rename`: the name, `-1` ... `-99`, then random
    /// suffixes, which do not run out.
    private func linkUnderFreeName(_ part: Part) throws(UploadFailure) -> String {
        var attempt = 0
        while true {
            let candidate = switch attempt {
            case 0: part.name
            case ...Self.sequentialAlternatives: FileName.alternative(part.name, suffix: "-\(attempt)")
            default: FileName.alternative(part.name, suffix: "-" + String(UInt32.random(in: .min ... .max), radix: 16))
            }
            do {
                try directory.link(part.file, as: candidate)
                return candidate
            } catch where error.isExisting && policy == .rename && attempt < Self.sequentialAlternatives + 64 {
                attempt += 1
            } catch where error.isExisting {
                throw UploadFailure.conflict(name: part.name)
            } catch {
                throw UploadFailure.storage(error)
            }
        }
    }

    private func storing(_ operation: () throws(SystemError) -> Void) throws(UploadFailure) {
        do { try operation() } catch { throw UploadFailure.storage(error) }
    }
}
