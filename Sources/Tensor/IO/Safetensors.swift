import AtomicWrite
import Foundation

/// Errors reading or writing a safetensors file. Each names the file and
/// what is wrong with it.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case unreadable(file: String, reason: String)
    case truncated(file: String, detail: String)
    case badHeader(file: String, detail: String)
    case badEntry(file: String, tensor: String, detail: String)
    case missingTensor(file: String, tensor: String)
    case unsupportedDType(file: String, tensor: String, dtype: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): "\(file): cannot read safetensors file: \(reason)"
        case let .truncated(file, detail): "\(file): truncated safetensors file: \(detail)"
        case let .badHeader(file, detail): "\(file): malformed safetensors header: \(detail)"
        case let .badEntry(file, tensor, detail): "\(file): tensor '\(tensor)': \(detail)"
        case let .missingTensor(file, tensor): "\(file): no tensor named '\(tensor)'"
        case let .unsupportedDType(file, tensor, dtype):
            "\(file): tensor '\(tensor)' has dtype \(dtype); only F32, F16, BF16 and F64 are read as Float"
        }
    }
}

/// The safetensors format (Hugging Face): an 8-byte little-endian header
/// length N, N bytes of JSON mapping tensor names to
/// `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the
/// data section) plus an optional `"__metadata__"` string map, then the data.
public struct SafetensorsFile: Sendable {
    public struct Entry: Equatable, Sendable {
        public let name: String
        public let dtype: String
        public let shape: [Int]
        /// Byte range inside the data section.
        public let offsets: Range<Int>
    }

    public let source: String
    public let metadata: [String: String]
    /// Entries in data order.
    public let entries: [Entry]
    private let data: Data
    private let dataStart: Int

    static let elementSize = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                              "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8]
    static let maxHeaderSize = 100 << 20

    public init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw SafetensorsError.unreadable(file: url.path, reason: error.localizedDescription)
        }
        try self.init(data: data, source: url.path)
    }

    /// Parses and validates the header of `data`; `source` names it in errors.
    public init(data: Data, source: String) throws {
        self.source = source
        self.data = data
        guard data.count >= 8 else {
            throw SafetensorsError.truncated(file: source, detail: "\(data.count) bytes, the header length alone needs 8")
        }
        let n = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard n <= UInt64(Self.maxHeaderSize) else {
            throw SafetensorsError.badHeader(file: source, detail: "header length \(n) exceeds \(Self.maxHeaderSize) bytes")
        }
        guard Int(n) <= data.count - 8 else {
            throw SafetensorsError.truncated(file: source, detail: "header claims \(n) bytes, file has \(data.count - 8) after the length")
        }
        dataStart = 8 + Int(n)
        let dataSize = data.count - dataStart
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<dataStart))
        } catch {
            throw SafetensorsError.badHeader(file: source, detail: "header is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw SafetensorsError.badHeader(file: source, detail: "header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in object {
            if name == "__metadata__" {
                guard let map = value as? [String: Any] else {
                    throw SafetensorsError.badHeader(file: source, detail: "__metadata__ is not an object")
                }
                for (k, v) in map {
                    guard let s = v as? String else {
                        throw SafetensorsError.badHeader(file: source, detail: "__metadata__ value for '\(k)' is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            entries.append(try Self.entry(name: name, value: value, dataSize: dataSize, source: source))
        }
        entries.sort { ($0.offsets.lowerBound, $0.offsets.upperBound) < ($1.offsets.lowerBound, $1.offsets.upperBound) }
        var end = 0
        for e in entries {
            guard e.offsets.lowerBound >= end || e.offsets.isEmpty else {
                throw SafetensorsError.badEntry(file: source, tensor: e.name, detail: "data overlaps another tensor")
            }
            end = max(end, e.offsets.upperBound)
        }
        self.metadata = metadata
        self.entries = entries
    }

    private static func entry(name: String, value: Any, dataSize: Int, source: String) throws -> Entry {
        func bad(_ detail: String) -> SafetensorsError { .badEntry(file: source, tensor: name, detail: detail) }
        guard let dict = value as? [String: Any] else { throw bad("entry is not an object") }
        guard let dtype = dict["dtype"] as? String else { throw bad("missing or non-string 'dtype'") }
        guard let size = elementSize[dtype] else { throw bad("unknown dtype '\(dtype)'") }
        guard let rawShape = dict["shape"] as? [Any] else { throw bad("missing or non-array 'shape'") }
        let shape = try rawShape.map { item -> Int in
            guard let number = item as? NSNumber, let dim = Int(exactly: number.doubleValue), dim >= 0 else {
                throw bad("shape \(rawShape) has a non-integer or negative dimension")
            }
            return dim
        }
        guard let rawOffsets = dict["data_offsets"] as? [Any], rawOffsets.count == 2,
              let begin = (rawOffsets[0] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }),
              let end = (rawOffsets[1] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) })
        else { throw bad("'data_offsets' must be two integers") }
        guard begin >= 0, begin <= end, end <= dataSize else {
            throw bad("data_offsets [\(begin), \(end)] outside the \(dataSize)-byte data section")
        }
        let (elements, overflow) = shape.reduce((1, false)) { acc, d in
            let (product, o) = acc.0.multipliedReportingOverflow(by: d)
            return (product, acc.1 || o)
        }
        guard !overflow, elements.multipliedReportingOverflow(by: size).partialValue == end - begin,
              !elements.multipliedReportingOverflow(by: size).overflow else {
            throw bad("shape \(shape) of \(dtype) needs \(elements * size) bytes, data_offsets give \(end - begin)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, offsets: begin..<end)
    }

    public var names: [String] { entries.map(\.name) }

    public func entry(_ name: String) throws -> Entry {
        guard let e = entries.first(where: { $0.name == name }) else {
            throw SafetensorsError.missingTensor(file: source, tensor: name)
        }
        return e
    }

    /// The tensor `name` as Float (F32 as is; F16, BF16 and F64 converted).
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        let count = e.shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        let start = dataStart + e.offsets.lowerBound
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = UnsafeRawBufferPointer(rebasing: raw[start..<(start + e.offsets.count)])
            switch e.dtype {
            case "F32":
                for i in 0..<count { values[i] = Float(bitPattern: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian) }
            case "F64":
                for i in 0..<count { values[i] = Float(Double(bitPattern: bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian)) }
            case "F16":
                for i in 0..<count { values[i] = halfToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) }
            case "BF16":
                for i in 0..<count { values[i] = Float(bitPattern: UInt32(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16) }
            default:
                break
            }
        }
        guard ["F32", "F64", "F16", "BF16"].contains(e.dtype) else {
            throw SafetensorsError.unsupportedDType(file: source, tensor: name, dtype: e.dtype)
        }
        return Tensor(shape: e.shape, storage: values)
    }

    /// Serialises F32 tensors (names sorted, data in that order, header
    /// padded with spaces to a multiple of 8 bytes, as the reference writer does).
    public static func encode(_ tensors: [String: Tensor], metadata: [String: String] = [:]) -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.count]] as [String: Any]
            offset += 4 * t.count
        }
        var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for name in names {
            tensors[name]!.withUnsafeBufferPointer { buf in
                for v in buf { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
            }
        }
        return out
    }

    /// Writes `tensors` atomically (a temporary file renamed into place).
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL) throws {
        do {
            try AtomicFile.write(encode(tensors, metadata: metadata), to: url)
        } catch {
            throw SafetensorsError.unreadable(file: url.path, reason: "cannot write: \(error.localizedDescription)")
        }
    }
}

/// IEEE 754 binary16 to binary32 (subnormals, infinities and NaN included).
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = Int((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0 {
        let magnitude = Float(mantissa) * 0x1p-24
        return sign == 0 ? magnitude : -magnitude
    }
    if exponent == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
    return Float(bitPattern: sign | UInt32(exponent + 112) << 23 | (mantissa << 13))
}
