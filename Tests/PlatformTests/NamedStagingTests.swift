import Foundation
import Glibc
import Testing

@testable import Platform

/// Named staging on a directory several instances share (issue 21): a staged file
/// has its sweepable `.part` name only once it is locked, so another instance's
/// leftover sweep can never take it, not even on a network filesystem whose
/// client answers a check of the name from its cache.
@Suite struct NamedStagingTests {
    @Test func aPartNameIsLockedFromItsFirstInstant() throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.directory.createStagedFile(.named)
        let name = try #require(file.temporaryName)
        #expect(TemporaryName.matches(name))
        #expect(scratch.names == [name], "no creation name left")
        #expect(!scratch.directory.removeIfUnlocked(name), "another instance's sweep took a file in use")
        _ = scratch.directory.discard(file)
        #expect(scratch.names.isEmpty)
    }

    @Test func creationNamesHaveTheirOwnShape() {
        let name = TemporaryName.next()
        let creating = TemporaryName.creating(name)
        #expect(TemporaryName.isCreating(creating))
        #expect(!TemporaryName.matches(creating), "the sweep of unlocked .part names would take it at once")
        #expect(!TemporaryName.isCreating(name))
        #expect(!TemporaryName.isAside(creating))
        #expect(!TemporaryName.isCreating("photo.new"))
    }

    /// Proving the directory writable at start creates a `.part`-shaped name that
    /// another instance's sweep may remove before it is removed here: still a start.
    @Test func aProbeTakenByAnotherSweepStillProvesTheDirectoryWritable() throws {
        let scratch = try ScratchDirectory()
        try scratch.directory.checkWritable()
        #expect(scratch.names.isEmpty)
    }
}
