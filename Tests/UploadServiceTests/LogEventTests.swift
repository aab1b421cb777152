import Foundation
import Testing
@testable import UploadService

/// The docs' table of log events (docs/operations.md, "Log events") is the code's list.
@Suite struct LogEventTests {
    @Test func theDocsListEveryEventAtItsLevel() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("docs/operations.md"), encoding: .utf8)
        let after = try #require(text.components(separatedBy: "### Log events").dropFirst().first)
        let section = after.components(separatedBy: "\n#").first ?? ""
        var documented: [String: String] = [:]
        for line in section.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            documented[cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))] = cells[1]
        }
        let coded = Dictionary(uniqueKeysWithValues: LogEvent.allCases.map { ($0.rawValue, $0.level.rawValue) })
        #expect(documented == coded)
    }
}
