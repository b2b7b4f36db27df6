import Foundation

// The parameters of every method stage, as one `Codable` type each (DESIGN.md:
// in the job model, so the coordinator never links Stages). The sweep
// expander builds them, the job key hashes them (``ParameterEncoder``: each
// field under its snake_case name, numbers keeping their type), the wire
// carries them as JSON and the worker decodes them once into the same type.
// A parameter's name is its property's name, written once.

/// The pretrained encoders a sweep may name (Stages loads them).
public enum BackboneName: String, Codable, CaseIterable, Hashable, Sendable {
    case efficientNetLite0 = "efficientnet-lite0"
    case efficientNetLite1 = "efficientnet-lite1"
    case efficientNetLite2 = "efficientnet-lite2"
    case resnet18, resnet50, resnet101
    case wideResnet50 = "wide_resnet50_2"
    case wideResnet101 = "wide_resnet101_2"
}

/// Which losses train the segmenter (the paper's ablation: sup, +L_H, +L_H+L_hist).
public enum LossSet: String, Codable, CaseIterable, Hashable, Sendable {
    case sup
    case supEntropy = "sup+H"
    case supEntropyHistogram = "sup+H+hist"
}

/// How a bank's distances are scaled before they are added (Anomaly's `ScaleType`).
public enum ScaleName: String, Codable, CaseIterable, Hashable, Sendable {
    case max, std, none
}

/// How the enabled banks' scaled distances make an image's score: their sum
/// (the paper's), or their maximum (an image is as anomalous as its most
/// anomalous bank; with max scaling each bank's train images lie in [0, 1]).
public enum BankCombine: String, Codable, CaseIterable, Hashable, Sendable {
    case sum, max
}

/// The banks a score adds: letters h, c, p, n, g in that order, at least one
/// (Anomaly's `MemoryType`; n, the part-instance bank, and g, the part-geometry
/// bank, are the project's).
public struct MemoryCombination: Codable, Hashable, Sendable, CustomStringConvertible {
    public let letters: String
    static let order: [Character] = ["h", "c", "p", "n", "g"]
    public init?(_ letters: String) {
        guard !letters.isEmpty, letters.allSatisfy(Self.order.contains), Set(letters).count == letters.count else { return nil }
        self.letters = String(Self.order.filter(letters.contains))
    }
    /// What a refusal of `text` says.
    public static func invalid(_ text: some StringProtocol) -> String {
        "'\(text)' is not a combination of h, c, p, n and g"
    }
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = MemoryCombination(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: Self.invalid(text)))
        }
        self = value
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(letters)
    }
    public var description: String { letters }
    /// All three banks: the method as published.
    public static let hcp = MemoryCombination("hcp")!
}

/// How PatchCore's input is made from an image: resized to a square whatever
/// its shape (the reference's 256 x 256), or resized on its long side and
/// padded as the segmentation input is.
public enum PatchResize: String, Codable, CaseIterable, Hashable, Sendable {
    case square, pad
}

/// What trains in segment-train: the head alone on the frozen encoder's
/// cached taps, also the encoder's units after its stride-8 tap (`last`),
/// or every encoder weight as the reference (`all`); trained units use
/// batch statistics and update their running ones, as PyTorch's train mode.
public enum Finetune: String, Codable, CaseIterable, Hashable, Sendable {
    case head, last, all
}

/// The train statistic scaling divides by: each train image against the
/// others (`leave-one-out`, the paper's) or the reference code's rank rule.
public enum TrainStatisticName: String, Codable, CaseIterable, Hashable, Sendable {
    case leaveOneOut = "leave-one-out"
    case reference
}

/// Where a stage's images are: the fields every stage that reads the
/// dataset has (`run` and `dataDigest` only enter the key).
public struct DataFields: Codable, Hashable, Sendable {
    /// The folder holding the categories, as workers see it.
    public var dataset: String
    public var category: String
    public var imageSize: Int
    /// A sweep's run label (`submit --name`/`--fresh`): new work under the same settings.
    public var run: String?
    /// The category folder's digest at submit; the worker checks its own against it.
    public var dataDigest: String?
    public init(dataset: String, category: String, imageSize: Int, run: String? = nil, dataDigest: String? = nil) {
        self.dataset = dataset; self.category = category; self.imageSize = imageSize; self.run = run; self.dataDigest = dataDigest
    }
}

/// A stage's parameters that read the dataset: its data fields and its own,
/// flat in one JSON object.
public struct OnData<Settings: Codable & Hashable & Sendable>: Codable, Hashable, Sendable {
    public var data: DataFields
    public var settings: Settings
    public init(_ data: DataFields, _ settings: Settings) { self.data = data; self.settings = settings }
    public init(from decoder: any Decoder) throws {
        data = try DataFields(from: decoder)
        settings = try Settings(from: decoder)
    }
    public func encode(to encoder: any Encoder) throws {
        try data.encode(to: encoder)
        try settings.encode(to: encoder)
    }
}

/// Each stage's own parameters.
public enum StageSettings {
    public struct None: Codable, Hashable, Sendable { public init() {} }

    public struct SegmentTrain: Codable, Hashable, Sendable {
        public var backbone: BackboneName
        public var nShot: Int
        public var epochs: Int
        public var lossSet: LossSet
        public var seed: UInt64
        /// Training knobs sweeps leave at the stage's defaults (tests shrink them).
        public var viewsPerLabelledImage: Int?, batchPairs: Int?, learningRate: Float?
        /// Labelled views cached per labelled image where a job does not say (0: a fresh view at every draw).
        public static let defaultViewsPerLabelledImage = 0
        /// What trains (nil: the head only, as before the field existed).
        public var finetune: Finetune?
        /// Draws a fresh labelled view serves on average (nil: 1, a fresh view at every draw).
        public var viewReuse: Int?
        public init(backbone: BackboneName, nShot: Int, epochs: Int, lossSet: LossSet, seed: UInt64,
                    viewsPerLabelledImage: Int? = nil, batchPairs: Int? = nil, learningRate: Float? = nil, finetune: Finetune? = nil,
                    viewReuse: Int? = nil) {
            self.backbone = backbone; self.nShot = nShot; self.epochs = epochs; self.lossSet = lossSet; self.seed = seed
            self.batchPairs = batchPairs; self.learningRate = learningRate
            // A stage default named explicitly is left out, so a sweep that names
            // it shares the segmenter (its key) with one that does not.
            self.viewsPerLabelledImage = viewsPerLabelledImage == Self.defaultViewsPerLabelledImage ? nil : viewsPerLabelledImage
            self.finetune = finetune == .head ? nil : finetune
            self.viewReuse = viewReuse == 1 ? nil : viewReuse
        }
    }

    public struct PseudoLabel: Codable, Hashable, Sendable {
        public var backbone: BackboneName
        /// Rotated views averaged with each image's own at test time
        /// (``SegmentTrain/testTimeAngles(count:rotationDegrees:)``); nil, the
        /// default and the reference's, none (0 is the same key).
        public var ttaViews: Int?
        public init(backbone: BackboneName, ttaViews: Int? = nil) {
            self.backbone = backbone; self.ttaViews = ttaViews == 0 ? nil : ttaViews
        }
    }

    public struct UNetTrain: Codable, Hashable, Sendable {
        public var unetEpochs: Int
        public var seed: UInt64
        /// The UNet's size and batch where not the stage's defaults (tests shrink them).
        public var unetWidth: Int?, unetDepth: Int?, unetBatch: Int?
        public init(unetEpochs: Int, seed: UInt64, unetWidth: Int? = nil, unetDepth: Int? = nil, unetBatch: Int? = nil) {
            self.unetEpochs = unetEpochs; self.seed = seed; self.unetWidth = unetWidth; self.unetDepth = unetDepth; self.unetBatch = unetBatch
        }
    }

    public struct PatchFeatures: Codable, Hashable, Sendable {
        public var backbone: BackboneName
        /// PatchCore's input: its side and how an image is fitted to it. Its
        /// anomaly maps are brought to the preprocessed frame afterwards.
        public var patchImageSize: Int
        public var patchResize: PatchResize
        /// Share of the train images in the memories (the less-normal-data ablation).
        public var lessNormalFraction: Double
        /// Share of the train patches kept (greedy k-center coreset); 1 keeps all.
        public var coresetFraction: Double
        /// PatchCore's search: nil exact (the reference); N: inverted lists
        /// (4 sqrt(rows) k-means lists), each query searching its N nearest.
        public var patchProbes: Int?
        /// The coreset's seed (sweeps leave it out: 0).
        public var seed: UInt64?
        /// sPRO's false-positive-rate limit (sweeps leave it out: 0.05, the reference's).
        public var fprLimit: Double?
        public init(backbone: BackboneName, patchImageSize: Int = 256, patchResize: PatchResize = .square, lessNormalFraction: Double,
                    coresetFraction: Double, patchProbes: Int? = nil, seed: UInt64? = nil, fprLimit: Double? = nil) {
            self.backbone = backbone; self.patchImageSize = patchImageSize; self.patchResize = patchResize
            self.lessNormalFraction = lessNormalFraction; self.coresetFraction = coresetFraction
            self.patchProbes = patchProbes; self.seed = seed; self.fprLimit = fprLimit
        }
    }

    public struct BankFit: Codable, Hashable, Sendable {
        public var backbone: BackboneName
        public var epsilon: Double
        public var trainStatistic: TrainStatisticName
        public var lessNormalFraction: Double
        public init(backbone: BackboneName, epsilon: Double, trainStatistic: TrainStatisticName, lessNormalFraction: Double) {
            self.backbone = backbone; self.epsilon = epsilon; self.trainStatistic = trainStatistic; self.lessNormalFraction = lessNormalFraction
        }
    }

    public struct Evaluate: Codable, Hashable, Sendable {
        public var memoryType: MemoryCombination
        public var scaleType: ScaleName
        /// nil: the sum (the paper's; absent from the key, so sums keep their jobs).
        public var combine: BankCombine?
        public init(memoryType: MemoryCombination, scaleType: ScaleName, combine: BankCombine? = nil) {
            self.memoryType = memoryType; self.scaleType = scaleType; self.combine = combine == .sum ? nil : combine
        }
    }
}

/// A stage's parameters that the job cannot be run with (a missing or
/// mistyped field): permanent, naming the field as sweeps spell it.
public struct ParameterError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

public enum JobParameters {
    /// Decodes a job's parameters (JSON, snake_case names) into the stage's type.
    public static func decode<P: Decodable>(_ type: P.Type, from json: Data, stage: String) throws -> P {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode(type, from: json)
        } catch DecodingError.keyNotFound(let key, _) {
            throw ParameterError(description: "\(stage): the job has no parameter '\(ParameterEncoder.snake(key.stringValue))'")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            throw ParameterError(description: "\(stage): parameter '\(path(context))' has the wrong type")
        } catch DecodingError.dataCorrupted(let context) {
            throw ParameterError(description: "\(stage): parameter '\(path(context))': \(context.debugDescription)")
        }
    }

    static func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map { ParameterEncoder.snake($0.stringValue) }.joined(separator: ".")
    }
}

/// Turns a flat parameters value into the name -> value map a job key
/// hashes and the database stores: snake_case names (as JSONEncoder's
/// `convertToSnakeCase`, which the worker's decoder reverses), absent
/// optionals left out, and each number keeping its type (a Double 1.0 stays
/// a double; a JSON round trip would make it an integer).
public enum ParameterEncoder {
    public static func parameters(_ value: some Encodable) -> [String: ParameterValue] {
        let storage = Storage()
        do { try value.encode(to: FlatEncoder(storage: storage, codingPath: [])) } catch {
            preconditionFailure("stage parameters must be a flat record of strings, numbers and booleans: \(error)")
        }
        return storage.values
    }

    /// A property's name as parameters spell it: "lessNormalFraction" -> "less_normal_fraction".
    public static func snake(_ name: String) -> String {
        // Swift names are ASCII: bytes, not Characters (a submit converts
        // every field of every job; Unicode case lookups were 10% of it).
        if name.utf8.allSatisfy({ $0 < 0x80 }) {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(name.utf8.count + 4)
            for b in name.utf8 {
                if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") {
                    if !bytes.isEmpty { bytes.append(UInt8(ascii: "_")) }
                    bytes.append(b + 32)
                } else {
                    bytes.append(b)
                }
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        var out = ""
        for c in name {
            if c.isUppercase { out += (out.isEmpty ? "" : "_") + c.lowercased() } else { out.append(c) }
        }
        return out
    }

    final class Storage { var values: [String: ParameterValue] = [:]; var single: ParameterValue? }

    struct Unsupported: Error, CustomStringConvertible { let description: String }

    struct FlatEncoder: Encoder {
        let storage: Storage
        var codingPath: [any CodingKey]
        var userInfo: [CodingUserInfoKey: Any] { [:] }
        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            KeyedEncodingContainer(Keyed<Key>(storage: storage, codingPath: codingPath))
        }
        func unkeyedContainer() -> any UnkeyedEncodingContainer { fatalError("stage parameters hold no lists") }
        func singleValueContainer() -> any SingleValueEncodingContainer { Single(storage: storage, codingPath: codingPath) }
    }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let storage: Storage
        var codingPath: [any CodingKey]
        func put(_ value: ParameterValue, _ key: Key) { storage.values[snake(key.stringValue)] = value }
        mutating func encodeNil(forKey key: Key) throws {}
        mutating func encode(_ value: Bool, forKey key: Key) throws { put(.bool(value), key) }
        mutating func encode(_ value: String, forKey key: Key) throws { put(.string(value), key) }
        mutating func encode(_ value: Double, forKey key: Key) throws { put(.double(value), key) }
        mutating func encode(_ value: Float, forKey key: Key) throws { put(.double(Double(value)), key) }
        mutating func encode(_ value: Int, forKey key: Key) throws { put(.int(value), key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { put(.int(Int(value)), key) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            // An enum or a wrapper: what it writes into one value.
            let inner = Storage()
            try value.encode(to: FlatEncoder(storage: inner, codingPath: codingPath + [key]))
            guard let single = inner.single else { throw Unsupported(description: "\(key.stringValue) is not a single value") }
            put(single, key)
        }
        mutating func nestedContainer<N: CodingKey>(keyedBy: N.Type, forKey key: Key) -> KeyedEncodingContainer<N> {
            fatalError("stage parameters are flat")
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer { fatalError("stage parameters are flat") }
        mutating func superEncoder() -> any Encoder { FlatEncoder(storage: storage, codingPath: codingPath) }
        mutating func superEncoder(forKey key: Key) -> any Encoder { FlatEncoder(storage: storage, codingPath: codingPath) }
    }

    struct Single: SingleValueEncodingContainer {
        let storage: Storage
        var codingPath: [any CodingKey]
        mutating func encodeNil() throws {}
        mutating func encode(_ value: Bool) throws { storage.single = .bool(value) }
        mutating func encode(_ value: String) throws { storage.single = .string(value) }
        mutating func encode(_ value: Double) throws { storage.single = .double(value) }
        mutating func encode(_ value: Float) throws { storage.single = .double(Double(value)) }
        mutating func encode(_ value: Int) throws { storage.single = .int(value) }
        mutating func encode(_ value: UInt64) throws { storage.single = .int(Int(value)) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            try value.encode(to: FlatEncoder(storage: storage, codingPath: codingPath))
        }
    }
}
