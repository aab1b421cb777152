import CPlatform
import Glibc
import Synchronization

/// The data file of a resumable upload: it lives in the upload directory under a
/// reserved name for as long as the upload is incomplete, and its size is the
/// upload's offset. A `PartialFile` is open only while it is locked (flock,
/// exclusive), which is what keeps two requests, in this process or in another
/// instance on the same directory, from ever writing it at once.
///
/// Disk space is reserved ahead of the bytes as `StagedFile` does, but with
/// FALLOC_FL_KEEP_SIZE only: the size must stay the offset, also after a crash.
public final class PartialFile {
    static let reservationStart: UInt64 = 1 << 20
    static let reservationStep: UInt64 = 8 << 20

    private var fd: Int32
    public let name: String
    /// The file's claim in this process (`OpenPartials`), released on close.
    private var claim: FileIdentity?
    /// Bytes in the file: the offset.
    public private(set) var size: UInt64
    /// Disk space is allocated up to here (beyond `size` only while writing).
    private var reservedEnd: UInt64 = 0
    private var reservationStopped = false

    init(fd: Int32, name: String, size: UInt64, claim: FileIdentity?) {
        self.fd = fd
        self.name = name
        self.size = size
        self.claim = claim
        reservedEnd = size
    }

    deinit { close() }

    /// Seconds since the epoch of the last write.
    public var modificationSeconds: Int64 {
        var status = stat()
        guard fd >= 0, fstat(fd, &status) == 0 else { return 0 }
        return Int64(status.st_mtim.tv_sec)
    }

    /// Appends a piece of the upload at `size`. `expectedEnd`: where the request
    /// says it will end, so that no space is reserved past it.
    public func write(_ bytes: RawSpan, expectedEnd: UInt64?) throws(SystemError) {
        let count = UInt64(bytes.byteCount)
        guard count > 0 else { return }
        let end = size + count
        if end > reservedEnd && end >= Self.reservationStart && !reservationStopped {
            reserve(from: max(size, reservedEnd), limit: expectedEnd)
        }
        try bytes.withUnsafeBytes { (chunk) throws(SystemError) in
            var done = 0
            while done < chunk.count {
                let result = try syscall("write \(name)") {
                    pwrite(fd, chunk.baseAddress! + done, chunk.count - done, off_t(size) + off_t(done))
                }
                done += result
            }
        }
        size = end
    }

    private func reserve(from offset: UInt64, limit: UInt64?) {
        let length = min(Self.reservationStep, (limit ?? .max) - min(limit ?? .max, offset))
        guard length >= Self.reservationStart else {
            reservationStopped = true
            return
        }
        if fallocate(fd, keepSizeFlag, off_t(offset), off_t(length)) == 0 {
            reservedEnd = offset + length
        } else {
            reservationStopped = true
            releaseReservation()
        }
    }

    /// Gives back space reserved beyond the end (ftruncate to the same size does:
    /// it drops blocks allocated past the end).
    public func releaseReservation() {
        guard fd >= 0 else { return }
        _ = ftruncate(fd, off_t(size))
        reservedEnd = size
    }

    /// Cuts the file back to `length` bytes (a checksum mismatch, bytes past the
    /// upload's length): the request's bytes are gone, the earlier ones stay.
    public func truncate(to length: UInt64) throws(SystemError) {
        try syscall("truncate \(name)") { ftruncate(fd, off_t(length)) }
        size = length
        reservedEnd = length
    }

    /// `--fsync`: the bytes reach the disk.
    public func synchronize() throws(SystemError) {
        try syscall("fdatasync \(name)") { fdatasync(fd) }
    }

    /// Closes the file, which drops the lock.
    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        if let claim { OpenPartials.release(claim) }
        claim = nil
    }

    /// Gives the open, locked descriptor (and the claim) to a `StagedFile` named
    /// `name`, for `Publication`; this file is closed.
    func handOver() -> (fd: Int32, claim: FileIdentity?) {
        defer {
            fd = -1
            claim = nil
        }
        return (fd, claim)
    }
}

/// Partial files open in this process, by device and inode. flock alone is not
/// enough on every filesystem: on NFS it becomes a POSIX lock, which belongs to
/// the process (a second descriptor of the same process gets it too) and which
/// closing any descriptor of the file drops. So a partial file is opened at
/// most once in a process, and the lock settles it between processes.
enum OpenPartials {
    private static let open = Mutex<Set<FileIdentity>>([])

    static func claim(_ identity: FileIdentity) -> Bool { open.withLock { $0.insert(identity).inserted } }
    static func release(_ identity: FileIdentity) { _ = open.withLock { $0.remove(identity) } }
}

extension Directory {
    /// Creates `name` (which must not exist), locked.
    public func createPartial(_ name: String) throws(SystemError) -> PartialFile {
        let fd = try syscall("create \(name)") {
            openat(descriptor, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        }
        var status = stat()
        fstat(fd, &status)
        let identity = FileIdentity(status)
        let claimed = OpenPartials.claim(identity)  // a new inode: always
        let file = PartialFile(fd: fd, name: name, size: 0, claim: claimed ? identity : nil)
        // A sweep may hold it for an instant (it then finds it live and leaves it).
        do { try syscall("lock \(name)") { flock(fd, LOCK_EX) } } catch {
            file.close()
            throw error
        }
        return file
    }

    /// Opens and locks `name` without waiting: EWOULDBLOCK while another request
    /// (here or in another instance) holds it, ENOENT when it does not exist or
    /// stopped being that file before the lock was had (completed, terminated).
    public func openPartial(_ name: String) throws(SystemError) -> PartialFile {
        let fd = try syscall("open \(name)") { openat(descriptor, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) }
        var opened = stat()
        guard fstat(fd, &opened) == 0, opened.st_mode & S_IFMT == S_IFREG else {
            Glibc.close(fd)
            throw SystemError("open \(name)", code: ENOENT)
        }
        let identity = FileIdentity(opened)
        guard OpenPartials.claim(identity) else {
            Glibc.close(fd)
            throw SystemError("lock \(name)", code: EWOULDBLOCK)
        }
        let file = PartialFile(fd: fd, name: name, size: 0, claim: identity)
        try syscall("lock \(name)") { flock(fd, LOCK_EX | LOCK_NB) }
        var named = stat()
        guard fstatat(descriptor, name, &named, AT_SYMLINK_NOFOLLOW) == 0, fstat(fd, &opened) == 0,
              FileIdentity(named) == identity else {
            throw SystemError("open \(name)", code: ENOENT)
        }
        let (handed, claim) = file.handOver()
        return PartialFile(fd: handed, name: name, size: UInt64(opened.st_size), claim: claim)
    }

    /// Size and modification time (seconds) of a regular file, without opening it.
    public func status(of name: String) -> (size: UInt64, modified: Int64)? {
        var status = stat()
        guard fstatat(descriptor, name, &status, AT_SYMLINK_NOFOLLOW) == 0, status.st_mode & S_IFMT == S_IFREG else {
            return nil
        }
        return (UInt64(status.st_size), Int64(status.st_mtim.tv_sec))
    }

    /// A small file's bytes (at most `limit`).
    public func read(_ name: String, limit: Int = 64 * 1024) throws(SystemError) -> [UInt8] {
        let fd = try syscall("open \(name)") { openat(descriptor, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) }
        defer { Glibc.close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: limit, alignment: 8)
        defer { buffer.deallocate() }
        var count = 0
        while count < limit {
            let result = try syscall("read \(name)") { Glibc.read(fd, buffer.baseAddress! + count, limit - count) }
            if result == 0 { break }
            count += result
        }
        return Array(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
    }

    /// Writes `name` whole or not at all: a locked temporary name (the leftover
    /// sweep removes it after a crash, never while it is written), then rename(2).
    public func writeAtomically(_ name: String, _ bytes: [UInt8], durable: Bool) throws(SystemError) {
        let file = try createStagedFile(.named)
        let temporary = file.temporaryName ?? ""
        do throws(SystemError) {
            let written: Result<Void, SystemError> = bytes.withUnsafeBytes { buffer in
                var done = 0
                while done < buffer.count {
                    do throws(SystemError) {
                        done += try syscall("write \(temporary)") { Glibc.write(file.descriptor, buffer.baseAddress! + done, buffer.count - done) }
                    } catch {
                        return .failure(error)
                    }
                }
                return .success(())
            }
            try written.get()
            if durable { try file.synchronize() }
            try replace(name, with: file)
            file.close()
        } catch {
            _ = discard(file)
            throw error
        }
    }

    /// A locked partial file as a staged file of that name, for `Publication`:
    /// published like any upload's file. `partial` is closed.
    public func stagedFile(from partial: PartialFile) -> StagedFile {
        let size = Int(clamping: partial.size)
        let (fd, claim) = partial.handOver()
        let file = StagedFile(fd: fd, temporaryName: partial.name, linkByDescriptor: false, size: size)
        file.claimedPartial = claim
        return file
    }
}

extension SystemError {
    /// A lock another request holds.
    public var isBusy: Bool { code == EWOULDBLOCK || code == EAGAIN }
}

extension ProcessEnvironment {
    /// Seconds since the epoch (the wall clock: expiry times outlive the process).
    public static func wallClockSeconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec)
    }
}

/// FALLOC_FL_KEEP_SIZE, which Swift does not import.
private let keepSizeFlag: Int32 = 0x01
