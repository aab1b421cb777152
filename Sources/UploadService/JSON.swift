/// The few JSON values this service writes (event log lines, `started`).
public enum JSON: Sendable {
    case string(String)
    case number(Int64)
    case unsigned(UInt64)
    case decimal(Double)
    case bool(Bool)
    case null
    case array([JSON])
    case object([(String, JSON)])

    public var text: String {
        var writer = JSONWriter()
        writer.value(self)
        return writer.text
    }
}

/// The one JSON writer, by hand to keep Foundation out of the binary: members
/// are appended to a string as they come, with no intermediate values, since it
/// runs for every request (the access log) and every stored upload (its answer).
struct JSONWriter {
    private(set) var text = ""
    private var needsComma = false

    init(reserving capacity: Int = 0) { text.reserveCapacity(capacity) }

    mutating func beginObject() { open("{") }
    mutating func endObject() { close("}") }
    mutating func beginArray() { open("[") }
    mutating func endArray() { close("]") }

    /// A member's key; its value comes next.
    mutating func key(_ key: String) {
        string(key)
        text += ":"
        needsComma = false
    }

    mutating func string(_ value: String) {
        separate()
        Self.appendString(value, to: &text)
        needsComma = true
    }

    /// A number, `true`, `null`...: text that is already JSON.
    mutating func literal(_ value: String) {
        separate()
        text += value
        needsComma = true
    }

    mutating func value(_ value: JSON) {
        switch value {
        case .string(let string): self.string(string)
        case .number(let number): literal(String(number))
        case .unsigned(let number): literal(String(number))
        case .decimal(let number): literal(number.isFinite ? String(number) : "null")
        case .bool(let flag): literal(flag ? "true" : "false")
        case .null: literal("null")
        case .array(let values):
            beginArray()
            for element in values { self.value(element) }
            endArray()
        case .object(let members):
            beginObject()
            for (name, member) in members {
                key(name)
                self.value(member)
            }
            endObject()
        }
    }

    private mutating func separate() {
        if needsComma { text += "," }
    }

    private mutating func open(_ bracket: String) {
        separate()
        text += bracket
        needsComma = false
    }

    private mutating func close(_ bracket: String) {
        text += bracket
        needsComma = true
    }

    /// Appends `value` as a JSON string literal.
    private static func appendString(_ value: String, to output: inout String) {
        output += "\""
        // Most strings need no escaping: append them whole.
        if !value.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == 0x7F }) {
            output += value
            output += "\""
            return
        }
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }
}
