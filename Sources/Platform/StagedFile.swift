import CPlatform
import Glibc

/// A file being written, before it has its final name (see `Directory`).
///
/// Writes reach the file in whole `blockSize` blocks where a piece crosses a
/// block boundary: the bytes past the last boundary wait (copied) for the next
/// piece. The page cache takes aligned writes in large folios; the pieces the
/// post-processor hands over are not aligned, and writing them as they came cost
/// measurably more kernel time per gigabyte than the copy (docs/performance.md).
/// Files smaller than one block are written as they come and never copied.
///
/// Past its first MiB, a file also gets disk space allocated ahead of its bytes,
/// `reservationStep` at a time (fallocate, beyond its end): writes into allocated
/// space skip ext4's delayed-allocation bookkeeping. Nothing is reserved past
/// `sizeLimit` (what the request can still deliver), so a file that is about to
/// end reserves nothing. A client holds at most one step beyond what it sent,
/// and only while the file is being written: `finish`
/// gives back what is left over and frees the block buffer, so that the finished
/// files of a stalled request hold neither.
public final class StagedFile {
    static let blockSize = 64 * 1024
    static let reservationStart = 1 << 20
    static let reservationStep = 8 << 20

    /// Where the file is in its life. Only the file changes it, at the steps
    /// `Directory` takes with it (named, published).
    public enum Stage: Equatable, Sendable {
        /// An unnamed (O_TMPFILE) file.
        case unnamed
        /// Under a reserved `TemporaryName`, locked.
        case temporary(String)
        /// Its bytes have their final name: nothing of it is left to clean up.
        case published
    }

    private var fd: Int32
    public private(set) var stage: Stage
    /// The reserved name it has while `.temporary`.
    public var temporaryName: String? {
        if case .temporary(let name) = stage { return name }
        return nil
    }
    let linkByDescriptor: Bool
    /// Device and inode: an undo removes a name only while it still leads here.
    /// Read while the file is open (`rememberIdentity` keeps it past `close`).
    private var knownIdentity: FileIdentity?
    var identity: FileIdentity? {
        rememberIdentity()
        return knownIdentity
    }
    /// Bytes in the file; a multiple of `blockSize` whenever `held` is not empty.
    private var written = 0
    /// Bytes past the last block boundary, not written yet (allocated at first use).
    private var held: UnsafeMutableRawBufferPointer?
    private var heldCount = 0
    /// Disk space is allocated up to here; beyond `written` only until `finish`.
    private var reservedEnd = 0
    /// No more reservations: the filesystem has no fallocate, or no room, or the
    /// file is close to `sizeLimit`. Writes allocate as they go.
    private var reservationStopped = false
    /// The most this file can grow to, when the request says (its Content-Length).
    public var sizeLimit: Int?

    /// `size`: bytes already in the file (a resumable upload's, published as a whole).
    init(fd: Int32, temporaryName: String?, linkByDescriptor: Bool, size: Int = 0) {
        self.fd = fd
        stage = temporaryName.map { .temporary($0) } ?? .unnamed
        self.linkByDescriptor = linkByDescriptor
        written = size
    }

    /// It now has the reserved `name` (created, renamed or linked there).
    func named(_ name: String) {
        precondition(stage != .published, "a published file takes no temporary name")
        stage = .temporary(name)
    }

    /// Its bytes now have their final name; a temporary name is gone with it.
    func published() { stage = .published }

    /// A partial file handed over for publication stays claimed in this
    /// process (`OpenPartials`) until it is closed.
    var claimedPartial: FileIdentity?

    deinit {
        if fd >= 0 { Glibc.close(fd) }
        held?.deallocate()
        if let claimedPartial { OpenPartials.release(claimedPartial) }
    }

    private func releaseClaim() {
        if let claimedPartial { OpenPartials.release(claimedPartial) }
        claimedPartial = nil
    }

    var descriptor: Int32 { fd }

    /// Bytes written so far, held ones included.
    public var size: Int { written + heldCount }

    /// Appends a piece of the upload.
    public func write(_ bytes: RawSpan) throws(SystemError) {
        try bytes.withUnsafeBytes { (chunk) throws(SystemError) in try write(chunk) }
    }

    private func write(_ chunk: UnsafeRawBufferPointer) throws(SystemError) {
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
        if boundary > reservedEnd && boundary >= Self.reservationStart && !reservationStopped {
            reserve(from: max(written, reservedEnd))
        }
        let direct = boundary - written - heldCount
        try writeAll(heldBytes, UnsafeRawBufferPointer(rebasing: chunk[..<direct]))
        written = boundary
        heldCount = 0
        hold(UnsafeRawBufferPointer(rebasing: chunk[direct...]))
    }

    private func reserve(from offset: Int) {
        let length = min(Self.reservationStep, (sizeLimit ?? .max) - offset)
        guard length >= Self.reservationStart else {
            reservationStopped = true
            return
        }
        do {
            try syscall("reserve space") { fallocate(fd, cplatform_falloc_keep_size, off_t(offset), off_t(length)) }
            reservedEnd = offset + length
        } catch {
            reservationStopped = true
            _ = try? syscall("truncate") { ftruncate(fd, off_t(written)) }  // a failed fallocate may keep part of its space
            reservedEnd = written
        }
    }

    /// The last byte has arrived: writes what is held back, gives back reserved
    /// space beyond the end and frees the block buffer.
    public func finish() throws(SystemError) {
        if heldCount > 0 {
            try writeAll(heldBytes, UnsafeRawBufferPointer(start: nil, count: 0))
            written += heldCount
            heldCount = 0
        }
        held?.deallocate()
        held = nil
        if reservedEnd > written {
            try syscall("truncate") { ftruncate(fd, off_t(written)) }
            reservedEnd = written
        }
    }

    /// Reads the file's device and inode while it is open; later calls keep them.
    public func rememberIdentity() {
        guard knownIdentity == nil, fd >= 0 else { return }
        var status = stat()
        if (try? syscall("stat") { fstat(fd, &status) }) != nil { knownIdentity = FileIdentity(status) }
    }

    /// Makes the file's bytes durable (`--fsync`), before it gets its name.
    public func synchronize() throws(SystemError) {
        try syscall("fdatasync") { fdatasync(fd) }
    }

    /// Takes the lock that tells other instances this file is in use; `waiting`:
    /// for as long as another instance's sweep holds it (an instant).
    func lock(waiting: Bool = false) throws(SystemError) {
        try syscall("lock") { flock(fd, waiting ? LOCK_EX : LOCK_EX | LOCK_NB) }
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
            let result = try syscall("write") {
                withUnsafeMutableBytes(of: &vectors) { writev(fd, $0.baseAddress?.assumingMemoryBound(to: iovec.self), 2) }
            }
            let fromFirst = min(result, first.count)
            first = UnsafeRawBufferPointer(rebasing: first[fromFirst...])
            second = UnsafeRawBufferPointer(rebasing: second[(result - fromFirst)...])
        }
    }

    /// Closes the file once it is published; some filesystems report write errors
    /// only here (NFS, quotas).
    public func closeChecked() throws(SystemError) {
        guard fd >= 0 else { return }
        defer {
            fd = -1
            releaseClaim()
        }
        try syscall("close", retrying: false) { Glibc.close(fd) }
    }

    /// Closes the file, dropping its lock; an unnamed one is gone with it.
    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        heldCount = 0
        releaseClaim()
    }
}
