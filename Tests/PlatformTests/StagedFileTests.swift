import Foundation
import Glibc
import Testing
@testable import Platform

/// A fresh directory under /tmp, removed at the end.
final class ScratchDirectory {
    let url: URL
    let directory: Directory

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("upload-server-unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        directory = try Directory(path: url.path)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    var names: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }
    func contents(_ name: String) -> [UInt8]? { FileManager.default.contents(atPath: url.appendingPathComponent(name).path).map(Array.init) }
    func write(_ text: String, to name: String) { _ = FileManager.default.createFile(atPath: url.appendingPathComponent(name).path, contents: Data(text.utf8)) }
    func allocatedBytes(_ name: String) -> Int {
        var status = stat()
        guard stat(url.appendingPathComponent(name).path, &status) == 0 else { return -1 }
        return Int(status.st_blocks) * 512
    }
}

/// Deterministic bytes: a file's content depends on its offset, so a piece
/// written twice, dropped or out of order shows.
func pattern(_ count: Int, seed: Int = 7) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ ($0 >> 11) ^ seed) }
}

func write(_ file: StagedFile, _ bytes: [UInt8], pieces: [Int]) throws {
    var offset = 0, index = 0
    while offset < bytes.count {
        let count = min(pieces[index % pieces.count], bytes.count - offset)
        let piece = Array(bytes[offset..<offset + count])
        try file.write(piece.span.bytes)
        offset += count
        index += 1
    }
}

let blockSize = StagedFile.blockSize

@Suite struct StagedFileTests {

    /// Every size around a block boundary, in pieces that are and are not aligned,
    /// in both staging modes: the stored bytes are exactly the bytes sent.
    @Test(arguments: [0, 1, blockSize - 1, blockSize, blockSize + 1, 2 * blockSize + 3, StagedFile.reservationStart + blockSize + 5])
    func storesEveryByteOnce(size: Int) throws {
        for staging in [Staging.named, Staging.anonymous(byDescriptor: false)] {
            for pieces in [[size == 0 ? 1 : size], [7], [1000, 65_535, 3], [122_772], [blockSize]] where size < 300_000 || pieces != [7] {
                let scratch = try ScratchDirectory()
                let file = try scratch.directory.createStagedFile(staging)
                let bytes = pattern(size)
                try write(file, bytes, pieces: pieces)
                #expect(file.size == size)
                try file.finish()
                try scratch.directory.link(file, as: "out")
                try file.closeChecked()
                let stored = scratch.contents("out") == bytes  // a Bool: a failure prints no megabytes
                #expect(stored, "size \(size), pieces \(pieces), \(staging)")
                #expect(scratch.names == ["out"], "no temporary name left")
            }
        }
    }

    /// Space reserved ahead while a large file is written goes back when it is finished.
    @Test func reservationIsGivenBackAtFinish() throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.directory.createStagedFile(.named)
        let size = 3 << 20
        try write(file, pattern(size), pieces: [100_000])
        let name = try #require(file.temporaryName)
        let during = scratch.allocatedBytes(name)
        try file.finish()
        let after = scratch.allocatedBytes(name)
        // A filesystem without fallocate reserves nothing; then both are the same.
        #expect(during >= after)
        #expect(after < size + StagedFile.reservationStep / 2, "reserved space kept after finish: \(after)")
        _ = scratch.directory.discard(file)
        #expect(scratch.names.isEmpty)
    }

    /// link(2) semantics: never replaces; replace renames over; a failed link leaves both.
    @Test func linkNeverReplacesAndReplaceDoes() throws {
        for staging in [Staging.named, Staging.anonymous(byDescriptor: false)] {
            let scratch = try ScratchDirectory()
            scratch.write("OLD", to: "a.txt")
            let file = try scratch.directory.createStagedFile(staging)
            try file.write(Array("NEW".utf8).span.bytes)
            try file.finish()
            #expect(throws: SystemError.self) { try scratch.directory.link(file, as: "a.txt") }
            #expect(scratch.contents("a.txt") == Array("OLD".utf8))
            try scratch.directory.nameTemporarily(file)
            try scratch.directory.replace("a.txt", with: file)
            #expect(scratch.contents("a.txt") == Array("NEW".utf8))
            #expect(scratch.names == ["a.txt"])
        }
    }

    /// Issue 15: another instance's sweep must never take a file in progress,
    /// from its creation to its rename, in either staging mode.
    @Test func stagedFilesStayLockedUntilPublished() throws {
        for staging in [Staging.named, Staging.anonymous(byDescriptor: false)] {
            let scratch = try ScratchDirectory()
            let file = try scratch.directory.createStagedFile(staging)
            try file.write(Array("x".utf8).span.bytes)
            try file.finish()
            try scratch.directory.nameTemporarily(file)
            let name = try #require(file.temporaryName)
            #expect(TemporaryName.matches(name))
            #expect(!scratch.directory.removeIfUnlocked(name), "swept while in progress (\(staging))")
            try scratch.directory.replace("final", with: file)
            try file.closeChecked()
            #expect(scratch.names == ["final"])
        }
    }

    /// Issue 15: an undo removes a name only while it still leads to its own file.
    @Test func removeIfSameSparesAnotherUploadsFile() throws {
        let scratch = try ScratchDirectory()
        let mine = try scratch.directory.createStagedFile(.anonymous(byDescriptor: false))
        try mine.write(Array("mine".utf8).span.bytes)
        try mine.finish()
        try scratch.directory.link(mine, as: "a.txt")
        scratch.write("theirs", to: "b.tmp")
        #expect(rename(scratch.url.appendingPathComponent("b.tmp").path, scratch.url.appendingPathComponent("a.txt").path) == 0)
        #expect(!scratch.directory.removeIfSame("a.txt", as: mine))
        #expect(scratch.contents("a.txt") == Array("theirs".utf8))
        let other = try scratch.directory.createStagedFile(.named)
        try other.finish()
        try scratch.directory.link(other, as: "c.txt")
        #expect(scratch.directory.removeIfSame("c.txt", as: other))
        #expect(scratch.names == ["a.txt"])
    }
}

extension StagedFileTests {
    /// A file whose request can deliver only a little more reserves nothing ahead.
    @Test func nothingIsReservedPastTheSizeLimit() throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.directory.createStagedFile(.named)
        let size = StagedFile.reservationStart + 100_000
        file.sizeLimit = size
        try write(file, pattern(size), pieces: [65_536])
        let name = try #require(file.temporaryName)
        #expect(scratch.allocatedBytes(name) < size + StagedFile.reservationStart, "reserved past the limit")
        _ = scratch.directory.discard(file)
    }
}

/// A staged file's stage follows what the directory did with it, and only succeeded steps move it.
@Suite struct StagedFileStageTests {
    @Test func unnamedThenTemporaryThenPublished() throws {
        let scratch = try ScratchDirectory()
        let staging = scratch.directory.bestStaging()
        let file = try scratch.directory.createStagedFile(staging)
        #expect(file.stage == (staging == .named ? .temporary(file.temporaryName ?? "") : .unnamed))
        try scratch.directory.nameTemporarily(file)
        let temporary = try #require(file.temporaryName)
        #expect(TemporaryName.matches(temporary))
        scratch.write("taken", to: "a.txt")
        #expect(throws: SystemError.self) { try scratch.directory.link(file, as: "a.txt") }
        #expect(file.stage == .temporary(temporary), "a failed link leaves the file where it was")
        try scratch.directory.replace("a.txt", with: file)
        #expect(file.stage == .published)
        #expect(file.temporaryName == nil)
        #expect(scratch.names == ["a.txt"])
        file.close()
    }
}
