import Glibc
import Testing
@testable import Platform

@Suite struct PartialFileTests {
    /// The size is the offset, always: space reserved ahead does not change it,
    /// and is given back when the request ends.
    @Test func reservesAheadWithoutChangingTheSize() throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.directory.createPartial(".upload-tus-a")
        let bytes = pattern(3 << 20)
        var offset = 0
        while offset < bytes.count {
            let piece = Array(bytes[offset..<min(offset + 100_000, bytes.count)])
            try file.write(piece.span.bytes, expectedEnd: 64 << 20)
            offset += piece.count
            #expect(scratch.directory.status(of: ".upload-tus-a")?.size == UInt64(offset))
        }
        #expect(scratch.allocatedBytes(".upload-tus-a") > 3 << 20 + (1 << 20), "reserved ahead")
        file.releaseReservation()
        #expect(scratch.allocatedBytes(".upload-tus-a") < 3 << 20 + (64 << 10))
        try file.truncate(to: 1 << 20)
        file.close()
        #expect(scratch.contents(".upload-tus-a") == Array(bytes[..<(1 << 20)]))
    }

    @Test func aSecondOpenIsRefusedWhileTheFirstHoldsIt() throws {
        let scratch = try ScratchDirectory()
        let created = try scratch.directory.createPartial(".upload-tus-b")
        #expect(throws: SystemError.self) { try scratch.directory.openPartial(".upload-tus-b") }
        created.close()
        let opened = try scratch.directory.openPartial(".upload-tus-b")
        do {
            _ = try scratch.directory.openPartial(".upload-tus-b")
            Issue.record("opened twice")
        } catch {
            #expect(error.isBusy)
        }
        opened.close()
        #expect(throws: SystemError.self) { try scratch.directory.openPartial(".upload-tus-missing") }
    }

    /// Where flock is a POSIX lock (NFS), a second descriptor of the same process
    /// would get it too: the process's own claim must refuse it.
    @Test func theProcessClaimRefusesEvenWithoutTheLock() throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.directory.createPartial(".upload-tus-c")
        let (fd, claim) = file.handOver()
        defer { Glibc.close(fd) }
        flock(fd, LOCK_UN)  // as if the lock did not tell descriptors of one process apart
        do {
            _ = try scratch.directory.openPartial(".upload-tus-c")
            Issue.record("opened while this process holds it")
        } catch {
            #expect(error.isBusy)
        }
        OpenPartials.release(try #require(claim))
        try scratch.directory.openPartial(".upload-tus-c").close()
    }

    /// Published through a staged file, the claim lasts until that file is closed,
    /// and a name that no longer leads to the opened file is not opened.
    @Test func aPublishedPartialIsHeldUntilClosed() throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.directory.createPartial(".upload-tus-d")
        try file.write(Array("hello".utf8).span.bytes, expectedEnd: 5)
        let staged = scratch.directory.stagedFile(from: file)
        #expect(staged.size == 5)
        #expect(throws: SystemError.self) { try scratch.directory.openPartial(".upload-tus-d") }
        try scratch.directory.link(staged, as: "hello.txt")
        try staged.closeChecked()
        #expect(scratch.names == ["hello.txt"])
        #expect(scratch.contents("hello.txt") == Array("hello".utf8))
        #expect(throws: SystemError.self) { try scratch.directory.openPartial(".upload-tus-d") }
    }

    @Test func writesWholeFilesAtomically() throws {
        let scratch = try ScratchDirectory()
        try scratch.directory.writeAtomically("info", Array("one\n".utf8), durable: false)
        try scratch.directory.writeAtomically("info", Array("two\n".utf8), durable: true)
        #expect(scratch.names == ["info"])
        #expect(try scratch.directory.read("info") == Array("two\n".utf8))
        #expect(try scratch.directory.read("info", limit: 2) == Array("tw".utf8))
    }
}
