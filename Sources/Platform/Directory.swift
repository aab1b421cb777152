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
        let fd = try system("open \(path)") { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        var status = stat()
        fstat(fd, &status)
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
            if mkdir(prefix, mode) != 0 {
                let code = errno
                if code != EEXIST { throw SystemError("mkdir \(prefix)", code: code) }
            }
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
            let fd = try system("create a file in \(path)") {
                openat(self.fd, ".", temporaryFileFlag | O_WRONLY | O_CLOEXEC, 0o644)
            }
            return StagedFile(fd: fd, temporaryName: nil, linkByDescriptor: byDescriptor)
        case .named:
            // Another instance's sweep may take a new name between its creation
            // and its lock: the file is ours only if the name still leads to it
            // once locked. Otherwise a new name.
            for _ in 0..<8 {
                let name = TemporaryName.next()
                let fd = try system("create \(name)") {
                    openat(self.fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                }
                let file = StagedFile(fd: fd, temporaryName: name, linkByDescriptor: false)
                do {
                    try file.lock(waiting: true)
                } catch {
                    _ = discard(file)
                    throw error
                }
                var named = stat(), opened = stat()
                if fstatat(self.fd, name, &named, AT_SYMLINK_NOFOLLOW) == 0, fstat(fd, &opened) == 0,
                   FileIdentity(named) == FileIdentity(opened) {
                    return file
                }
                file.temporaryName = nil  // that name is no longer ours
                file.close()
            }
            throw SystemError("create a file in \(path)", code: EAGAIN)
        }
    }

    /// Gives a finished staged file `name`; fails with EEXIST when the name
    /// exists: link(2) never replaces, so two uploads cannot take one name. A named
    /// file's temporary name goes once it is linked.
    public func link(_ file: StagedFile, as name: String) throws(SystemError) {
        if let staged = file.temporaryName {
            try system("link \(name)") { linkat(fd, staged, fd, name, 0) }
            try? remove(staged)
            file.temporaryName = nil
        } else if file.linkByDescriptor {
            try system("link \(name)") { linkat(file.descriptor, "", fd, name, emptyPathFlag) }
        } else {
            try system("link \(name)") {
                linkat(AT_FDCWD, "/proc/self/fd/\(file.descriptor)", fd, name, AT_SYMLINK_FOLLOW)
            }
        }
    }

    /// Gives an unnamed staged file a `TemporaryName`, locked first so that no
    /// other instance's sweep removes it before it is renamed.
    public func nameTemporarily(_ file: StagedFile) throws(SystemError) {
        guard file.temporaryName == nil else { return }
        try file.lock()
        let name = TemporaryName.next()
        try link(file, as: name)
        file.temporaryName = name
    }

    /// Replaces `name` (a file or symlink, or nothing) with a staged file that has
    /// a temporary name, atomically: rename(2) never follows a symlink either.
    public func replace(_ name: String, with file: StagedFile) throws(SystemError) {
        guard let staged = file.temporaryName else { preconditionFailure("replace needs a named staged file") }
        try system("rename to \(name)") { renameat(fd, staged, fd, name) }
        file.temporaryName = nil
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
        guard renameat(fd, name, fd, aside) == 0 else { return false }
        var status = stat()
        if fstatat(fd, aside, &status, AT_SYMLINK_NOFOLLOW) == 0, FileIdentity(status) == mine {
            return unlinkat(fd, aside, 0) == 0
        }
        if renameat2(fd, aside, fd, name, renameNoReplaceFlag) != 0 {
            let code = errno
            if code == EEXIST {
                _ = unlinkat(fd, aside, 0)
            } else {
                _ = renameat(fd, aside, fd, name)  // no renameat2 here: put it back all the same
            }
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
        try system("fsync \(path)") { fsync(fd) }
    }

    /// Removes `name` unless a live process holds its lock; true if removed.
    public func removeIfUnlocked(_ name: String) -> Bool {
        // Opened for writing: on NFS, flock is a POSIX lock, and an exclusive
        // one needs a descriptor open for writing.
        let fd = openat(self.fd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        return unlinkat(self.fd, name, 0) == 0
    }

    public func exists(_ name: String) -> Bool { kind(of: name) != nil }

    public func remove(_ name: String) throws(SystemError) {
        try system("unlink \(name)") { unlinkat(fd, name, 0) }
    }

    /// Creates a regular file and removes it again: proves that files can be stored.
    public func checkWritable() throws(SystemError) {
        let name = TemporaryName.next()
        let created = try system("create \(name)") {
            openat(fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        }
        Glibc.close(created)
        try remove(name)
    }

    /// Names of the directory's entries, without `.` and `..`.
    public func names() throws(SystemError) -> [String] {
        let copy = try system("read \(path)") { dup(fd) }
        guard let stream = fdopendir(copy) else {
            let code = errno
            Glibc.close(copy)
            throw SystemError("read \(path)", code: code)
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

/// O_TMPFILE, a macro Swift does not import: __O_TMPFILE (the same on every
/// Linux architecture Swift supports) with O_DIRECTORY.
private let temporaryFileFlag: Int32 = 0o20_000_000 | O_DIRECTORY

/// RENAME_NOREPLACE, which Swift does not import.
private let renameNoReplaceFlag: UInt32 = 1

/// AT_EMPTY_PATH, which Swift does not import; the same on every Linux architecture.
private let emptyPathFlag: Int32 = 0x1000

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
