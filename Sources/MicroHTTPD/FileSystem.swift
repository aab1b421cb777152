import Glibc

/// A failed system call: which operation and its errno.
public struct SystemError: Error, Sendable, CustomStringConvertible {
    public let operation: String
    public let code: Int32

    public init(_ operation: String, code: Int32 = errno) {
        self.operation = operation
        self.code = code
    }

    public var reason: String { String(cString: strerror(code)) }
    public var description: String { "\(operation): \(reason)" }
    public var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }
    public var isExisting: Bool { code == EEXIST }
}

/// Bytes lent by libmicrohttpd for the duration of one callback. They cannot be
/// read outside this module; `WritableFile.write` is the only consumer.
public struct BorrowedBytes {
    let buffer: UnsafeRawBufferPointer
    public var count: Int { buffer.count }
}

/// An open directory; every file operation is relative to its descriptor, so a
/// name can never reach outside it, and none of them follows a symlink.
public final class Directory: Sendable {
    public let path: String
    private let fd: Int32

    /// Opens `path`, which must be a directory.
    public init(path: String) throws(SystemError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(path)") }
        self.path = path
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    /// `mkdir -p`.
    public static func createPath(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if mkdir(prefix, mode) != 0 && errno != EEXIST {
                throw SystemError("mkdir \(prefix)")
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

    /// Creates a new file; fails if the name exists, even as a dangling symlink.
    public func createFile(_ name: String, mode: mode_t = 0o644) throws(SystemError) -> WritableFile {
        let fd = openat(self.fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemError("create \(name)") }
        return WritableFile(fd: fd)
    }

    /// A new file, locked (flock) while this process has it open, so that another
    /// instance sharing the directory knows it is not a leftover.
    public func createTemporaryFile(_ name: String) throws(SystemError) -> WritableFile {
        let file = try createFile(name)
        guard flock(file.descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let error = SystemError("lock \(name)")
            try? remove(name)
            throw error
        }
        return file
    }

    /// Removes `name` unless a live process holds its lock; true if removed.
    public func removeIfUnlocked(_ name: String) -> Bool {
        let fd = openat(self.fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        return unlinkat(self.fd, name, 0) == 0
    }

    /// Atomically replaces `to` (a symlink there is replaced, not followed).
    public func rename(_ from: String, to: String) throws(SystemError) {
        guard renameat(fd, from, fd, to) == 0 else { throw SystemError("rename \(from) to \(to)") }
    }

    /// Gives the file `from` the additional name `to`; fails with EEXIST if `to` exists.
    public func link(_ from: String, to: String) throws(SystemError) {
        guard linkat(fd, from, fd, to, 0) == 0 else { throw SystemError("link \(from) to \(to)") }
    }

    public func remove(_ name: String) throws(SystemError) {
        guard unlinkat(fd, name, 0) == 0 else { throw SystemError("unlink \(name)") }
    }

    /// Names of the directory's entries, without `.` and `..`.
    public func names() throws(SystemError) -> [String] {
        let copy = dup(fd)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { Glibc.close(copy) }
            throw SystemError("read \(path)")
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

/// A file open for writing; closed on `close()` or when released.
public final class WritableFile {
    private var fd: Int32
    var descriptor: Int32 { fd }

    init(fd: Int32) { self.fd = fd }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    public func write(_ bytes: BorrowedBytes) throws(SystemError) {
        guard var next = bytes.buffer.baseAddress else { return }
        var remaining = bytes.buffer.count
        while remaining > 0 {
            let written = Glibc.write(fd, next, remaining)
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemError("write")
            }
            next += written
            remaining -= written
        }
    }

    /// Reports the errors some filesystems only give at close (NFS, quotas).
    public func close() throws(SystemError) {
        guard fd >= 0 else { return }
        let result = Glibc.close(fd)
        fd = -1
        if result != 0 { throw SystemError("close") }
    }
}
