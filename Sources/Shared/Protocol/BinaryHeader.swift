import Foundation

/// The headers of the messages every job sends — job, done, results, ack, ready —
/// in a fixed binary layout instead of JSON (JSON encoding and decoding was
/// a sixth of the coordinator's time per no-op job, and half the workers').
/// Little-endian; a string is a UInt32 byte count and its UTF-8; a map is a
/// UInt32 entry count and its entries in key order; an optional is a 0/1
/// byte then the value. A reader checks every count against the bytes left
/// and that nothing is left over: a malformed header is a ``WireError``.
protocol BinaryHeader {
    init(reading r: inout HeaderReader) throws
    func write(to w: inout HeaderWriter)
}

struct HeaderWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func int(_ v: Int64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func int(_ v: Int) { int(Int64(v)) }
    mutating func double(_ v: Double) { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
    mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    mutating func count(_ n: Int) { withUnsafeBytes(of: UInt32(n).littleEndian) { bytes += $0 } }
    mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { count($0.count); bytes += $0 }
    }
    mutating func optional<T>(_ v: T?, _ write: (inout HeaderWriter, T) -> Void) {
        bool(v != nil)
        if let v { write(&self, v) }
    }
    mutating func map<V>(_ m: [String: V], _ write: (inout HeaderWriter, V) -> Void) {
        count(m.count)
        for key in m.keys.sorted() { string(key); write(&self, m[key]!) }
    }
}

struct HeaderReader {
    private let bytes: [UInt8]
    private var offset = 0
    private let type: String

    init(_ data: Data, type: String) { bytes = [UInt8](data); self.type = type }

    private func problem(_ what: String) -> WireError { WireError(problem: "\(type) header: \(what) at byte \(offset) of \(bytes.count)") }

    private mutating func take(_ n: Int, _ what: String) throws -> ArraySlice<UInt8> {
        guard n >= 0, bytes.count - offset >= n else { throw problem("\(what) runs past the end") }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    private mutating func fixed<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let raw = try take(MemoryLayout<T>.size, what)
        return raw.reversed().reduce(T(0)) { $0 << 8 | T($1) }
    }

    mutating func int64(_ what: String) throws -> Int64 { try fixed(Int64.self, what) }
    mutating func int(_ what: String) throws -> Int { Int(try int64(what)) }
    mutating func double(_ what: String) throws -> Double { Double(bitPattern: try fixed(UInt64.self, what)) }
    mutating func bool(_ what: String) throws -> Bool {
        switch try take(1, what).first! {
        case 0: return false
        case 1: return true
        case let b: throw problem("\(what) is byte \(b), not 0 or 1")
        }
    }
    /// An entry count, at most one entry per byte left (every entry takes at least one).
    mutating func count(_ what: String) throws -> Int {
        let n = Int(try fixed(UInt32.self, what))
        guard n <= bytes.count - offset else { throw problem("\(what) counts \(n) with \(bytes.count - offset) bytes left") }
        return n
    }
    mutating func string(_ what: String) throws -> String {
        let n = try count("\(what)'s length")
        guard let s = String(validating: try take(n, what), as: UTF8.self) else { throw problem("\(what) is not UTF-8") }
        return s
    }
    mutating func optional<T>(_ what: String, _ read: (inout HeaderReader) throws -> T) throws -> T? {
        try bool("\(what)'s presence") ? try read(&self) : nil
    }
    mutating func map<V>(_ what: String, _ read: (inout HeaderReader) throws -> V) throws -> [String: V] {
        var m: [String: V] = [:]
        for _ in 0..<(try count(what)) {
            let key = try string("a key of \(what)")
            guard m.updateValue(try read(&self), forKey: key) == nil else { throw problem("\(what) repeats key '\(key.prefix(64))'") }
        }
        return m
    }
    func finish() throws {
        guard offset == bytes.count else { throw problem("\(bytes.count - offset) bytes left over") }
    }

    static func decode<T: BinaryHeader>(_: T.Type, _ data: Data, type: String) throws -> T {
        var r = HeaderReader(data, type: type)
        let value = try T(reading: &r)
        try r.finish()
        return value
    }
}

extension HeaderWriter {
    static func encode(_ header: some BinaryHeader) -> Data {
        var w = HeaderWriter()
        header.write(to: &w)
        return Data(w.bytes)
    }
}

extension WireMessage.Job: BinaryHeader {
    init(reading r: inout HeaderReader) throws {
        let token = try r.int64("token")
        let hex = try r.string("key")
        guard let key = JobKey(hex: hex) else { throw WireError(problem: "job header: key '\(hex.prefix(80))' is not 64 lowercase hex digits") }
        let kindName = try r.string("kind")
        guard let kind = StageKind(rawValue: kindName) else { throw WireError(problem: "job header: unknown stage kind '\(kindName.prefix(64))'") }
        self.init(token: token, key: key, kind: kind, category: try r.string("category"), parameters: try r.string("parameters"),
                  inputs: try r.map("inputs") { try $0.map("an input role") { try $0.string("an input hash") } },
                  inputsManifest: try r.optional("inputs manifest") { try $0.string("inputs manifest") })
    }
    func write(to w: inout HeaderWriter) {
        w.int(token); w.string(key.hex); w.string(kind.rawValue); w.string(category); w.string(parameters)
        w.map(inputs) { w, role in w.map(role) { $0.string($1) } }
        w.optional(inputsManifest) { $0.string($1) }
    }
}

extension WireMessage.Output: BinaryHeader {
    init(reading r: inout HeaderReader) throws {
        self.init(hash: try r.string("output hash"), size: try r.int("output size"), inline: try r.bool("inline"))
    }
    func write(to w: inout HeaderWriter) { w.string(hash); w.int(size); w.bool(inline) }
}

extension WireMessage.Done: BinaryHeader {
    init(reading r: inout HeaderReader) throws {
        self.init(token: try r.int64("token"), outputs: try r.map("outputs") { try WireMessage.Output(reading: &$0) },
                  manifest: try r.optional("manifest") { try WireMessage.Output(reading: &$0) },
                  metrics: try r.map("metrics") { try $0.double("a metric") }, seconds: try r.double("seconds"),
                  peakMiB: try r.optional("peak") { try $0.double("peak") }, next: try r.int("next"))
    }
    func write(to w: inout HeaderWriter) {
        w.int(token)
        w.map(outputs) { $1.write(to: &$0) }
        w.optional(manifest) { $1.write(to: &$0) }
        w.map(metrics) { $0.double($1) }
        w.double(seconds)
        w.optional(peakMiB) { $0.double($1) }
        w.int(next)
    }
}

extension WireMessage.Done {
    /// The bytes of its header on the wire.
    public var headerBytes: Int { HeaderWriter.encode(self).count }
}

extension WireMessage.Ack: BinaryHeader {
    init(reading r: inout HeaderReader) throws {
        self.init(token: try r.int64("token"), accepted: try r.bool("accepted"), error: try r.optional("error") { try $0.string("error") })
    }
    func write(to w: inout HeaderWriter) { w.int(token); w.bool(accepted); w.optional(error) { $0.string($1) } }
}

extension WireMessage {
    /// A ready's header: how many jobs.
    struct Ready: BinaryHeader {
        var jobs: Int
        init(jobs: Int) { self.jobs = jobs }
        init(reading r: inout HeaderReader) throws { jobs = try r.int("jobs") }
        func write(to w: inout HeaderWriter) { w.int(jobs) }
    }

    /// A results message's header: a count, then each result's done header.
    struct ResultsHeader: BinaryHeader {
        var results: [Done]
        init(results: [Done]) { self.results = results }
        init(reading r: inout HeaderReader) throws {
            results = try (0..<r.count("results")).map { _ in try Done(reading: &r) }
        }
        func write(to w: inout HeaderWriter) {
            w.count(results.count)
            for done in results { done.write(to: &w) }
        }
    }
}

extension WireMessage.Empty: BinaryHeader {
    init(reading r: inout HeaderReader) throws { self.init() }
    func write(to w: inout HeaderWriter) {}
}
