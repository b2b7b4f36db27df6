import Crypto
import Foundation

/// A job's identity: SHA-256 over its stage kind, the stage's code version,
/// only the parameters that stage reads, and the keys of its inputs, in a
/// canonical JSON form (sorted keys, no whitespace). Equal keys are the
/// same computation, so a job whose key is done is reused, not rerun.
public struct JobKey: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    /// 64 lowercase hex digits.
    public let hex: String

    public init?(hex: String) {
        // Bytes, not Characters: every job message and dispatch checks a key (Unicode lookups were 3% of the coordinator).
        guard hex.utf8.count == 64, hex.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else { return nil }
        self.hex = hex
    }

    init(uncheckedHex: String) { hex = uncheckedHex }

    public var description: String { hex }
    /// The first 12 digits, for humans (`explain` accepts any unique prefix).
    public var short: String { String(hex.prefix(12)) }
    public static func < (a: JobKey, b: JobKey) -> Bool { a.hex < b.hex }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let key = JobKey(hex: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "'\(text)' is not a 64-digit job key"))
        }
        self = key
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }

    /// The key of a job of `kind` reading `parameters`, fed by `inputs`
    /// (named, since a stage's inputs play different roles).
    public static func of(kind: StageKind, parameters: [String: ParameterValue], inputs: [String: JobKey]) -> JobKey {
        let identity = KeyMaterial(kind: kind.rawValue, version: kind.codeVersion, parameters: parameters,
                                   inputs: inputs.mapValues(\.hex))
        return JobKey(uncheckedHex: hexDigest(SHA256.hash(data: identity.canonicalJSON)))
    }
}

/// What a key hashes, kept so that `explain` can say which part differs.
public struct KeyMaterial: Codable, Equatable, Sendable {
    public var kind: String
    public var version: Int
    public var parameters: [String: ParameterValue]
    public var inputs: [String: String]

    public init(kind: String, version: Int, parameters: [String: ParameterValue], inputs: [String: String]) {
        self.kind = kind; self.version = version; self.parameters = parameters; self.inputs = inputs
    }

    /// Sorted keys, no whitespace, strings escaped as JSON requires (and
    /// nothing more), numbers as Swift prints them. Written by hand: a
    ///100,000-job sweep hashes 100,000 of these, and JSONEncoder was most
    /// of the expansion's time.
    public var canonicalJSON: Data { Data(canonicalText.utf8) }

    public var canonicalText: String {
        let inputsText = inputs.keys.sorted().map { "\(CanonicalJSON.string($0)):\(CanonicalJSON.string(inputs[$0]!))" }.joined(separator: ",")
        return "{\"inputs\":{\(inputsText)},\"kind\":\(CanonicalJSON.string(kind)),\"parameters\":\(CanonicalJSON.object(parameters)),\"version\":\(version)}"
    }
}

/// Lowercase hex of a digest, by table (String(format:) per byte was a
/// tenth of a worker's time per no-op job).
func hexDigest(_ digest: some Sequence<UInt8>) -> String {
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var hex = [UInt8]()
    hex.reserveCapacity(64)
    for byte in digest { hex.append(digits[Int(byte >> 4)]); hex.append(digits[Int(byte & 15)]) }
    return String(decoding: hex, as: UTF8.self)
}

/// The canonical JSON text of the job model (see ``KeyMaterial/canonicalJSON``).
public enum CanonicalJSON {
    public static func string(_ s: String) -> String {
        // Most strings need no escape: checked on the bytes, copied whole.
        if s.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) { return "\"" + s + "\"" }
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    public static func value(_ v: ParameterValue) -> String {
        switch v {
        case .string(let s): string(s)
        case .int(let i): "\(i)"
        case .double(let d): d.isFinite ? "\(d)" : "null"
        case .bool(let b): b ? "true" : "false"
        }
    }

    public static func object(_ values: [String: ParameterValue]) -> String {
        "{" + values.keys.sorted().map { "\(string($0)):\(value(values[$0]!))" }.joined(separator: ",") + "}"
    }
}

/// A stage parameter: a string, an integer, a real number or a flag.
public enum ParameterValue: Codable, Hashable, Sendable, CustomStringConvertible {
    case string(String), int(Int), double(Double), bool(Bool)

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else { self = .string(try c.decode(String.self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .bool(let b): try c.encode(b)
        }
    }

    public var description: String {
        switch self {
        case .string(let s): s
        case .int(let i): "\(i)"
        case .double(let d): "\(d)"
        case .bool(let b): "\(b)"
        }
    }
}
