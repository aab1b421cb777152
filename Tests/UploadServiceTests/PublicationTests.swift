import Foundation
import Testing
import Platform
@testable import UploadService

/// The conflict policy against a real directory: all or nothing, never a
/// temporary-looking name, never another upload's file.
@Suite struct PublicationTests {
    final class Scratch {
        let url: URL
        let directory: Directory
        init() throws {
            url = FileManager.default.temporaryDirectory.appendingPathComponent("upload-server-publication-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            directory = try Directory(path: url.path)
        }
        deinit { try? FileManager.default.removeItem(at: url) }
        var names: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }
        func text(_ name: String) -> String? {
            FileManager.default.contents(atPath: url.appendingPathComponent(name).path).map { String(decoding: $0, as: UTF8.self) }
        }
        func write(_ text: String, to name: String) {
            _ = FileManager.default.createFile(atPath: url.appendingPathComponent(name).path, contents: Data(text.utf8))
        }
        func part(_ name: String, _ text: String, staging: Staging) throws -> Publication.Part {
            let file = try directory.createStagedFile(staging)
            try file.write(Array(text.utf8).span.bytes)
            try file.finish()
            return Publication.Part(file: file, name: name)
        }
    }

    static let stagings = [Staging.named, Staging.anonymous(byDescriptor: false)]

    /// A crash inside an undo leaves a name taken aside: the sweep removes it once
    /// it is far older than an undo takes, never a fresh one or a stored file.
    @Test func theSweepRemovesAbandonedAsidesOnly() throws {
        let scratch = try Scratch()
        let aside = TemporaryName.aside()
        #expect(TemporaryName.isAside(aside))
        for other in [".upload-aside-1", ".upload-aside-0123456789abcdef-", ".upload-aside-0123456789ABCDEF-1", "a.txt"] {
            #expect(!TemporaryName.isAside(other), "\(other)")
        }
        scratch.write("held", to: aside)
        scratch.write("kept", to: ".upload-aside-not-ours")
        scratch.write("stored", to: "a.txt")
        // A file a crash left between its creation and its lock, and one being created now (locked).
        let abandoned = TemporaryName.creating(TemporaryName.next())
        scratch.write("", to: abandoned)
        let creating = try scratch.directory.createStagedFile(.named)
        #expect(Server.removeLeftovers(scratch.directory) == 0)
        #expect(scratch.names.contains(aside), "a fresh aside may be another upload's file for an instant")
        #expect(scratch.names.contains(abandoned), "another host may be about to lock a fresh one")
        sleep(UInt32(Server.abandonedCreationSeconds))
        #expect(Server.removeLeftovers(scratch.directory, asideAfterSeconds: 1) == 2)
        #expect(Set(scratch.names) == [".upload-aside-not-ours", "a.txt", try #require(creating.temporaryName)])
        _ = scratch.directory.discard(creating)
    }

    /// `a.txt` keeps "OLD" when the request fails on `sub`.
    @Test(arguments: stagings)
    func overwriteFailingOnALaterTargetChangesNothing(staging: Staging) throws {
        let scratch = try Scratch()
        scratch.write("OLD", to: "a.txt")
        try FileManager.default.createDirectory(at: scratch.url.appendingPathComponent("sub"), withIntermediateDirectories: false)
        let parts = [try scratch.part("a.txt", "NEW", staging: staging), try scratch.part("sub", "X", staging: staging)]
        #expect(throws: UploadFailure.notAFile(name: "sub")) {
            try Publication(directory: scratch.directory, policy: .overwrite, durable: false).publish(parts)
        }
        #expect(scratch.text("a.txt") == "OLD")
        for part in parts { _ = scratch.directory.discard(part.file) }
        #expect(scratch.names == ["a.txt", "sub"])
    }

    @Test(arguments: stagings)
    func overwriteReplacesEveryFileAndSaysWhichExisted(staging: Staging) throws {
        let scratch = try Scratch()
        scratch.write("OLD", to: "a.txt")
        let parts = [try scratch.part("a.txt", "NEW", staging: staging), try scratch.part("b.txt", "B", staging: staging)]
        let stored = try Publication(directory: scratch.directory, policy: .overwrite, durable: true).publish(parts)
        #expect(stored.map(\.name) == ["a.txt", "b.txt"])
        #expect(stored.map(\.replaced) == [true, false])
        #expect(scratch.text("a.txt") == "NEW")
        #expect(scratch.names == ["a.txt", "b.txt"])
    }

    /// A reject whose second file conflicts stores nothing of the request.
    @Test(arguments: stagings)
    func rejectUndoesEverything(staging: Staging) throws {
        let scratch = try Scratch()
        scratch.write("THEIRS", to: "b.txt")
        let parts = [try scratch.part("a.txt", "A", staging: staging), try scratch.part("b.txt", "B", staging: staging)]
        #expect(throws: UploadFailure.conflict(name: "b.txt")) {
            try Publication(directory: scratch.directory, policy: .reject, durable: false).publish(parts)
        }
        for part in parts { _ = scratch.directory.discard(part.file) }
        #expect(scratch.names == ["b.txt"])
        #expect(scratch.text("b.txt") == "THEIRS")
    }

    /// `rename` never makes a temporary-looking name, keeps
    /// long names within 255 bytes, and does not run out of alternatives.
    @Test(arguments: stagings)
    func renameAlwaysFindsAUsableName(staging: Staging) throws {
        let scratch = try Scratch()
        let publication = Publication(directory: scratch.directory, policy: .rename, durable: false)
        let longName = "a." + String(repeating: "x", count: 253)
        var stored: [String] = []
        for name in [".upload.part", ".upload.part", ".upload.part", longName, longName] {
            stored += try publication.publish([try scratch.part(name, name, staging: staging)]).map(\.name)
        }
        #expect(Set(stored).count == stored.count)
        for name in stored {
            #expect(!name.hasPrefix(TemporaryName.prefix), "\(name)")
            #expect(name.utf8.count <= 255)
        }
        for number in 1...Publication.sequentialAlternatives { scratch.write("", to: "n-\(number).txt") }
        scratch.write("", to: "n.txt")
        let beyond = try publication.publish([try scratch.part("n.txt", "late", staging: staging)])
        #expect(beyond[0].name.hasPrefix("n-") && beyond[0].name.hasSuffix(".txt"))
        #expect(scratch.text(beyond[0].name) == "late")
    }
}
