import CMicroHTTPD
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
    public var isMissing: Bool { code == ENOENT }
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

    /// Device and inode of the directory opened.
    private let identity: (device: UInt64, inode: UInt64)

    /// Opens `path`, which must be a directory.
    public init(path: String) throws(SystemError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(path)") }
        var status = stat()
        fstat(fd, &status)
        self.path = path
        self.fd = fd
        identity = (UInt64(status.st_dev), UInt64(status.st_ino))
    }

    /// Whether `path` still leads to this directory: not removed, replaced or
    /// covered by a mount since it was opened.
    public var isCurrent: Bool {
        var status = stat()
        return stat(path, &status) == 0 && UInt64(status.st_dev) == identity.device
            && UInt64(status.st_ino) == identity.inode
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
    public func createFile(_ name: String, mode: mode_t = 0o644) throws(SystemError) -> StagedFile {
        let fd = openat(self.fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemError("create \(name)") }
        return StagedFile(fd: fd, temporaryName: name, linkByDescriptor: false)
    }

    /// How files can be staged here, tried once with `probeName` (removed again):
    /// unnamed (O_TMPFILE) if the filesystem has it, named later by descriptor
    /// (linkat AT_EMPTY_PATH, Linux 6.10 and later without privileges) or through
    /// /proc/self/fd; else named temporary files.
    public func bestStaging(probeName: String) -> Staging {
        for staging in [Staging.anonymous(byDescriptor: true), .anonymous(byDescriptor: false)] {
            guard let file = try? createStagedFile(staging, temporaryName: probeName) else { return .named }
            if (try? publish(file, as: probeName, replacing: false, temporaryName: probeName)) != nil {
                try? remove(probeName)
                return staging
            }
        }
        return .named
    }

    /// A file that receives an upload before it has its final name. `.anonymous`
    /// files have no name at all (nothing to clean up after a crash); `.named` ones
    /// are called `temporaryName` and locked (flock) while this process has them
    /// open, so that another instance sharing the directory knows they are not
    /// leftovers.
    public func createStagedFile(_ staging: Staging, temporaryName: @autoclosure () -> String) throws(SystemError) -> StagedFile {
        switch staging {
        case .anonymous(let byDescriptor):
            let fd = openat(self.fd, ".", temporaryFileFlag | O_WRONLY | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw SystemError("create a file in \(path)") }
            return StagedFile(fd: fd, temporaryName: nil, linkByDescriptor: byDescriptor)
        case .named:
            let name = temporaryName()
            let file = try createFile(name)
            guard flock(file.fd, LOCK_EX | LOCK_NB) == 0 else {
                let error = SystemError("lock \(name)")
                try? remove(name)
                throw error
            }
            return file
        }
    }

    /// Gives a staged file its final name. Without `replacing`, fails with EEXIST
    /// when the name exists: link(2) never replaces, so two uploads cannot take
    /// one name. With it, an existing file (or symlink) is replaced atomically by
    /// rename(2), which never follows a symlink either.
    public func publish(_ file: StagedFile, as name: String, replacing: Bool,
                        temporaryName: @autoclosure () -> String) throws(SystemError) {
        try file.flush()
        guard let staged = file.temporaryName else {
            do {
                try linkAnonymous(file, as: name)
            } catch where replacing && error.isExisting {
                let temporary = temporaryName()
                try linkAnonymous(file, as: temporary)
                guard renameat(fd, temporary, fd, name) == 0 else {
                    let error = SystemError("rename to \(name)")
                    try? remove(temporary)
                    throw error
                }
            }
            return
        }
        try file.close()  // some filesystems report write errors only here (NFS)
        if replacing {
            guard renameat(fd, staged, fd, name) == 0 else { throw SystemError("rename to \(name)") }
        } else {
            guard linkat(fd, staged, fd, name, 0) == 0 else { throw SystemError("link \(name)") }
            try? remove(staged)
        }
    }

    /// Removes a staged file that will not be published; false if a named one
    /// could not be removed (to be tried again later).
    public func discard(_ file: StagedFile) -> Bool {
        file.abandon()
        guard let name = file.temporaryName else { return true }
        do {
            try remove(name)
            return true
        } catch {
            return error.isMissing
        }
    }

    private func linkAnonymous(_ file: StagedFile, as name: String) throws(SystemError) {
        let result = file.linkByDescriptor
            ? linkat(file.fd, "", fd, name, emptyPathFlag)
            : linkat(AT_FDCWD, "/proc/self/fd/\(file.fd)", fd, name, AT_SYMLINK_FOLLOW)
        guard result == 0 else { throw SystemError("link \(name)") }
    }

    /// Removes `name` unless a live process holds its lock; true if removed.
    public func removeIfUnlocked(_ name: String) -> Bool {
        let fd = openat(self.fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        return unlinkat(self.fd, name, 0) == 0
    }

    public func exists(_ name: String) -> Bool {
        var status = stat()
        return fstatat(fd, name, &status, AT_SYMLINK_NOFOLLOW) == 0
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

/// O_TMPFILE, a macro Swift does not import: __O_TMPFILE (the same on every
/// Linux architecture Swift supports) with O_DIRECTORY.
private let temporaryFileFlag: Int32 = 0o20_000_000 | O_DIRECTORY

/// AT_EMPTY_PATH, which Swift does not import; the same on every Linux architecture.
private let emptyPathFlag: Int32 = 0x1000

/// FALLOC_FL_KEEP_SIZE, which Swift does not import: allocate without changing the size.
private let keepSizeFlag: Int32 = 0x01

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

/// A file being written, before it has its final name; closed when released.
///
/// Writes reach the file in whole `blockSize` blocks where a chunk crosses a block
/// boundary: the bytes past the last boundary wait (copied) for the next chunk.
/// The page cache takes aligned writes in large folios; the post-processor's
/// pieces are not aligned (122,772 bytes each here), and writing them as they
/// came cost about 20 % more kernel time per gigabyte, far more than the copy.
/// Files smaller than one block are written as they come and never copied.
///
/// Past its first MiB, a file also gets disk space allocated ahead of its bytes,
/// 8 MiB at a time (fallocate, beyond its end): writes into allocated space skip
/// ext4's delayed-allocation bookkeeping, a quarter less kernel time per gigabyte
/// here. Space follows the bytes received: a client holds at most 8 MiB beyond
/// what it sent, and what is left over goes back when the file is published or
/// dropped.
public final class StagedFile {
    static let blockSize = 64 * 1024
    static let reservationStart = 1 << 20
    static let reservationStep = 8 << 20

    fileprivate private(set) var fd: Int32
    /// nil for an anonymous (O_TMPFILE) file.
    public let temporaryName: String?
    fileprivate let linkByDescriptor: Bool
    /// Bytes in the file; a multiple of `blockSize` whenever `held` is not empty.
    private var written = 0
    /// Bytes past the last block boundary, not written yet (allocated at first use).
    private var held: UnsafeMutableRawBufferPointer?
    private var heldCount = 0
    /// Disk space is allocated up to here; beyond `written` only until `flush`.
    private var reservedEnd = 0
    /// The filesystem has no fallocate, or no room: writes allocate as they go.
    private var reservationFailed = false

    fileprivate init(fd: Int32, temporaryName: String?, linkByDescriptor: Bool) {
        self.fd = fd
        self.temporaryName = temporaryName
        self.linkByDescriptor = linkByDescriptor
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
        held?.deallocate()
    }

    public func write(_ bytes: BorrowedBytes) throws(SystemError) {
        let chunk = bytes.buffer
        guard chunk.count > 0 else { return }
        let end = written + heldCount + chunk.count
        let boundary = end - end % Self.blockSize
        guard boundary > written else {
            if heldCount == 0 {
                try writeAll(UnsafeRawBufferPointer(start: nil, count: 0), chunk)
                written += chunk.count
            } else {
                hold(chunk)
            }
            return
        }
        if boundary > reservedEnd && boundary >= Self.reservationStart && !reservationFailed {
            reserve(from: max(written, reservedEnd))
        }
        let direct = boundary - written - heldCount
        try writeAll(heldBytes, UnsafeRawBufferPointer(rebasing: chunk[..<direct]))
        written = boundary
        heldCount = 0
        hold(UnsafeRawBufferPointer(rebasing: chunk[direct...]))
    }

    private func reserve(from offset: Int) {
        if fallocate(fd, keepSizeFlag, off_t(offset), off_t(Self.reservationStep)) == 0 {
            reservedEnd = offset + Self.reservationStep
        } else {
            reservationFailed = true
            _ = ftruncate(fd, off_t(written))  // a failed fallocate may keep part of its space
            reservedEnd = written
        }
    }

    /// Writes what is held back and gives back reserved space beyond the end;
    /// before the file is published.
    public func flush() throws(SystemError) {
        if heldCount > 0 {
            try writeAll(heldBytes, UnsafeRawBufferPointer(start: nil, count: 0))
            written += heldCount
            heldCount = 0
        }
        if reservedEnd > written {
            guard ftruncate(fd, off_t(written)) == 0 else { throw SystemError("truncate") }
            reservedEnd = written
        }
    }

    private var heldBytes: UnsafeRawBufferPointer {
        guard let held else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(rebasing: held[..<heldCount])
    }

    private func hold(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let buffer = held ?? .allocate(byteCount: Self.blockSize, alignment: 64)
        held = buffer
        UnsafeMutableRawBufferPointer(rebasing: buffer[heldCount...]).copyMemory(from: bytes)
        heldCount += bytes.count
    }

    /// Writes `first` then `second` (either may be empty): one writev(2) unless
    /// it is interrupted or writes less.
    private func writeAll(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) throws(SystemError) {
        var first = first, second = second
        while first.count + second.count > 0 {
            var vectors = (iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress), iov_len: first.count),
                           iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count))
            let result = withUnsafeMutableBytes(of: &vectors) { writev(fd, $0.baseAddress?.assumingMemoryBound(to: iovec.self), 2) }
            if result < 0 {
                if errno == EINTR { continue }
                throw SystemError("write")
            }
            let fromFirst = min(result, first.count)
            first = UnsafeRawBufferPointer(rebasing: first[fromFirst...])
            second = UnsafeRawBufferPointer(rebasing: second[(result - fromFirst)...])
        }
    }

    /// Reports the errors some filesystems only give at close (NFS, quotas).
    public func close() throws(SystemError) {
        guard fd >= 0 else { return }
        let result = Glibc.close(fd)
        fd = -1
        if result != 0 { throw SystemError("close") }
    }

    fileprivate func abandon() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        heldCount = 0
    }
}
