import CPlatform
import Glibc

/// An open directory; every file operation is relative to its descriptor, so a
/// name can never reach outside it, and none of them follows a symlink.
public final class Directory: Sendable {
    public let path: String
    private let fd: Int32

    /// Device and inode of the directory opened.
    private let identity: FileIdentity

    /// Opens `path`, which must be a directory.
    public init(path: String) throws(SystemError) {
        let fd = try syscall("open \(path)") { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        var status = stat()
        do {
            try syscall("stat \(path)") { fstat(fd, &status) }
        } catch {
            Glibc.close(fd)
            throw error
        }
        self.path = path
        self.fd = fd
        identity = FileIdentity(status)
    }

    /// Whether `path` still leads to this directory: not removed, replaced or
    /// covered by a mount since it was opened.
    public var isCurrent: Bool {
        var status = stat()
        return stat(path, &status) == 0 && FileIdentity(status) == identity
    }

    deinit { Glibc.close(fd) }

    var descriptor: Int32 { fd }

    /// `mkdir -p`.
    public static func createPath(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            do {
                try syscall("mkdir \(prefix)") { mkdir(prefix, mode) }
            } catch where error.isExisting {}
            prefix += "/"
        }
    }

    /// The absolute, symlink-free path of `path`, or nil when it does not resolve.
    public static func resolve(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// How files can be staged here, tried once (and removed again): unnamed
    /// What kind of filesystem holds the directory (statfs), for the `started`
    /// line; nil when it cannot be told.
    public var filesystem: Filesystem? {
        var info = statfs()
        guard (try? syscall("statfs \(path)") { fstatfs(fd, &info) }) != nil else { return nil }
        return Filesystem(type: UInt64(truncatingIfNeeded: info.f_type))
    }

    /// (O_TMPFILE) if the filesystem has it, named later by descriptor (linkat
    /// AT_EMPTY_PATH, Linux 6.10 and later without privileges) or through
    /// /proc/self/fd; else named temporary files.
    public func bestStaging() -> Staging {
        let probe = TemporaryName.next()
        for staging in [Staging.anonymous(byDescriptor: true), .anonymous(byDescriptor: false)] {
            guard let file = try? createStagedFile(staging) else { return .named }
            if (try? link(file, as: probe)) != nil {
                try? remove(probe)
                file.close()
                return staging
            }
            _ = discard(file)
        }
        return .named
    }

    /// A file that receives an upload before it has its final name. `.anonymous`
    /// files have no name at all (nothing to clean up after a crash); `.named` ones
    /// get a `TemporaryName` and are locked (flock) from creation until they are
    /// published or removed, so that another instance sharing the directory
    /// never takes them for leftovers.
    public func createStagedFile(_ staging: Staging) throws(SystemError) -> StagedFile {
        switch staging {
        case .anonymous(let byDescriptor):
            let fd = try syscall("create a file in \(path)") {
                openat(self.fd, ".", cplatform_o_tmpfile | O_WRONLY | O_CLOEXEC, 0o644)
            }
            return StagedFile(fd: fd, temporaryName: nil, linkByDescriptor: byDescriptor)
        case .named:
            // Created under a name no sweep takes at once (`TemporaryName.creating`),
            // locked, and only then renamed to its `.part` name: another instance's
            // sweep never finds it unlocked. (Creating the `.part` name, locking it and
            // checking that the name still leads to it is not enough on a network
            // filesystem: the check is answered from the client's cache, and a file
            // another host's sweep removed in between looked like ours.)
            let name = TemporaryName.next()
            let creating = TemporaryName.creating(name)
            let fd = try syscall("create \(creating)") {
                openat(self.fd, creating, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            }
            let file = StagedFile(fd: fd, temporaryName: creating, linkByDescriptor: false)
            do {
                try file.lock()
                try syscall("rename \(creating)") { renameat(self.fd, creating, self.fd, name) }
            } catch {
                _ = discard(file)
                throw error
            }
            file.named(name)
            return file
        }
    }

    /// Gives a finished staged file `name`; fails with EEXIST when the name
    /// exists: link(2) never replaces, so two uploads cannot take one name. A named
    /// file's temporary name goes once it is linked.
    public func link(_ file: StagedFile, as name: String) throws(SystemError) {
        if let staged = file.temporaryName {
            try syscall("link \(name)") { linkat(fd, staged, fd, name, 0) }
            try? remove(staged)
        } else {
            try linkUnnamed(file, as: name)
        }
        file.published()
    }

    /// Links an unnamed (O_TMPFILE) file's bytes to `name`.
    private func linkUnnamed(_ file: StagedFile, as name: String) throws(SystemError) {
        if file.linkByDescriptor {
            try syscall("link \(name)") { linkat(file.descriptor, "", fd, name, cplatform_at_empty_path) }
        } else {
            try syscall("link \(name)") {
                linkat(AT_FDCWD, "/proc/self/fd/\(file.descriptor)", fd, name, AT_SYMLINK_FOLLOW)
            }
        }
    }

    /// Gives an unnamed staged file a `TemporaryName`, locked first so that no
    /// other instance's sweep removes it before it is renamed.
    public func nameTemporarily(_ file: StagedFile) throws(SystemError) {
        guard file.stage == .unnamed else { return }
        try file.lock()
        let name = TemporaryName.next()
        try linkUnnamed(file, as: name)
        file.named(name)
    }

    /// Replaces `name` (a file or symlink, or nothing) with a staged file that has
    /// a temporary name, atomically: rename(2) never follows a symlink either.
    public func replace(_ name: String, with file: StagedFile) throws(SystemError) {
        guard let staged = file.temporaryName else { preconditionFailure("replace needs a named staged file") }
        try syscall("rename to \(name)") { renameat(fd, staged, fd, name) }
        file.published()
    }

    /// Removes `name` only if it is still `file` (same device and inode): undoing
    /// a publication must never take a file that another upload has put there
    /// since. Checking and then unlinking would leave an instant in which another
    /// instance can rename its file over the name, so the name is first moved
    /// aside (rename(2) is atomic), then checked: another upload's file goes
    /// back, unless a later upload has taken the name meanwhile, which would
    /// have replaced it anyway.
    @discardableResult
    public func removeIfSame(_ name: String, as file: StagedFile) -> Bool {
        guard let mine = file.identity else { return false }
        let aside = TemporaryName.aside()
        guard (try? syscall("rename \(name) aside") { renameat(fd, name, fd, aside) }) != nil else { return false }
        var status = stat()
        if (try? syscall("stat \(aside)") { fstatat(fd, aside, &status, AT_SYMLINK_NOFOLLOW) }) != nil,
           FileIdentity(status) == mine {
            return (try? remove(aside)) != nil
        }
        do {
            try syscall("rename \(aside) back") { renameat2(fd, aside, fd, name, cplatform_rename_noreplace) }
        } catch where error.isExisting {
            try? remove(aside)  // a later upload took the name: it would have replaced that file anyway
        } catch {
            // No renameat2 here: put it back all the same.
            _ = try? syscall("rename \(aside) back") { renameat(fd, aside, fd, name) }
        }
        return false
    }

    /// Closes a staged file that will not be published and removes its temporary
    /// name; false if that name could not be removed (to be tried again later).
    public func discard(_ file: StagedFile) -> Bool {
        let name = file.temporaryName
        file.close()
        guard let name else { return true }
        do {
            try remove(name)
            return true
        } catch {
            return error.isMissing
        }
    }

    /// What `name` is, without following a symlink; nil when it does not exist.
    public func kind(of name: String) -> EntryKind? {
        var status = stat()
        guard fstatat(fd, name, &status, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        switch status.st_mode & S_IFMT {
        case S_IFDIR: return .directory
        case S_IFREG, S_IFLNK: return .file
        default: return .other
        }
    }

    /// Makes the directory's entries durable (after names were created or replaced).
    public func synchronize() throws(SystemError) {
        try syscall("fsync \(path)") { fsync(fd) }
    }

    /// Removes `name` unless a live process holds its lock; true if removed.
    /// With `unchangedForSeconds`, only once its inode has not changed for that long.
    public func removeIfUnlocked(_ name: String, unchangedForSeconds seconds: Int = 0) -> Bool {
        // Opened for writing: on NFS, flock is a POSIX lock, and an exclusive
        // one needs a descriptor open for writing.
        guard let fd = try? syscall("open \(name)", { openat(self.fd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) })
        else { return false }
        defer { Glibc.close(fd) }
        guard (try? syscall("lock \(name)") { flock(fd, LOCK_EX | LOCK_NB) }) != nil else { return false }
        if seconds > 0 {
            var status = stat()
            var now = timespec()
            guard (try? syscall("stat \(name)") { fstat(fd, &status) }) != nil, clock_gettime(CLOCK_REALTIME, &now) == 0,
                  now.tv_sec - status.st_ctim.tv_sec >= seconds else { return false }
        }
        return (try? remove(name)) != nil
    }

    /// Removes `name` if its inode last changed (a rename changes it) at least
    /// `seconds` ago; true if removed.
    public func removeIfUnchanged(_ name: String, forSeconds seconds: Int) -> Bool {
        var status = stat()
        var now = timespec()
        guard fstatat(fd, name, &status, AT_SYMLINK_NOFOLLOW) == 0, clock_gettime(CLOCK_REALTIME, &now) == 0,
              now.tv_sec - status.st_ctim.tv_sec >= seconds else { return false }
        return unlinkat(fd, name, 0) == 0
    }

    public func exists(_ name: String) -> Bool { kind(of: name) != nil }

    public func remove(_ name: String) throws(SystemError) {
        try syscall("unlink \(name)") { unlinkat(fd, name, 0) }
    }

    /// Creates a regular file and removes it again: proves that files can be stored.
    public func checkWritable() throws(SystemError) {
        let name = TemporaryName.next()
        let created = try syscall("create \(name)") {
            openat(fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        }
        Glibc.close(created)
        // Another instance's sweep may have taken it already (an unlocked `.part`
        // name): it was created all the same.
        do { try remove(name) } catch where error.isMissing {}
    }

    /// Names of the directory's entries, without `.` and `..`.
    public func names() throws(SystemError) -> [String] {
        let copy = try syscall("read \(path)") { dup(fd) }
        let stream: OpaquePointer
        do {
            stream = try syscall("read \(path)") { fdopendir(copy) }
        } catch {
            Glibc.close(copy)
            throw error
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { tuple in
                tuple.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: tuple.pointee)) {
                    String(cString: $0)
                }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

public enum EntryKind: Sendable, Equatable {
    /// A regular file or a symlink: a name an upload may replace.
    case file
    case directory
    /// A socket, device or pipe.
    case other
}

struct FileIdentity: Hashable {
    let device: UInt64
    let inode: UInt64

    init(_ status: stat) {
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
    }
}

public enum Staging: Sendable, Equatable, CustomStringConvertible {
    /// O_TMPFILE, linked by its descriptor (AT_EMPTY_PATH) or through /proc/self/fd.
    case anonymous(byDescriptor: Bool)
    /// `.upload-*.part` files, locked while in use.
    case named

    public var description: String {
        switch self {
        case .anonymous(true): "unnamed files (O_TMPFILE, linkat AT_EMPTY_PATH)"
        case .anonymous(false): "unnamed files (O_TMPFILE, linkat /proc/self/fd)"
        case .named: "named temporary files"
        }
    }
}
