import Foundation

/// Reads a sweep file's object field by field: a name the type does not
/// know is refused, a scalar stands for a one-value list, and each problem
/// is said in the file's terms (the field's dotted path, what it must be).
struct SweepFields<Key: CodingKey & CaseIterable & RawRepresentable> where Key.RawValue == String {
    let container: KeyedDecodingContainer<Key>
    let prefix: String

    init(_ decoder: any Decoder) throws {
        // Positions in lists are not fields: "grid.memory_types", not "grid.memory_types.Index 0".
        prefix = decoder.codingPath.filter { $0.intValue == nil }.map { $0.stringValue + "." }.joined()
        let field = String(prefix.dropLast())
        guard let any = try? decoder.container(keyedBy: AnyKey.self) else {
            throw SweepFieldProblem(field: field.isEmpty ? "(document)" : field, text: field.isEmpty ? "must be a JSON object" : "must be an object")
        }
        let allowed = Key.allCases.map(\.rawValue)
        for key in any.allKeys.map(\.stringValue).sorted() where !allowed.contains(key) {
            throw SweepFieldProblem(field: prefix + key, text: "unknown field (expected one of: \(allowed.joined(separator: ", ")))")
        }
        container = try decoder.container(keyedBy: Key.self)
    }

    func problem(_ key: Key, _ text: String) -> SweepFieldProblem { SweepFieldProblem(field: prefix + key.rawValue, text: text) }

    func written(_ key: Key) throws -> Written? {
        guard container.contains(key) else { return nil }
        return try container.decode(Written.self, forKey: key)
    }

    /// One value (a list is refused); `value` where the field is absent, required where `value` is nil.
    func one<T: SweepValue>(_ key: Key, _ type: T.Type, or value: T? = nil, atLeast minimum: T? = nil,
                            check: (T) -> String? = { _ in nil }) throws -> T {
        guard let written = try written(key) else {
            guard let value else { throw problem(key, "is required") }
            return value
        }
        guard case .one(let scalar) = written, let v = try read(key, scalar, T.self) else {
            throw problem(key, "must be \(T.noun.one)")
        }
        return try checked(key, v, minimum, check)
    }

    func optional<T: SweepValue>(_ key: Key, _ type: T.Type) throws -> T? {
        container.contains(key) ? try one(key, type) : nil
    }

    /// An object field (the grid, the diagnostic block).
    func object<T: Decodable>(_ key: Key, _ type: T.Type) throws -> T? {
        try container.decodeIfPresent(type, forKey: key)
    }

    /// A non-empty list, or a scalar as a one-value list; `value` where the field is absent.
    func list<T: SweepValue>(_ key: Key, or value: [T], atLeast minimum: T? = nil, check: (T) -> String? = { _ in nil }) throws -> [T] {
        try optionalList(key, atLeast: minimum, check: check) ?? value
    }

    func optionalList<T: SweepValue>(_ key: Key, atLeast minimum: T? = nil, check: (T) -> String? = { _ in nil }) throws -> [T]? {
        let scalars: [Scalar]
        switch try written(key) {
        case nil: return nil
        case .one(let s)?: scalars = [s]
        case .many(let list)?: scalars = list
        case .other?: throw problem(key, "must be \(T.noun.one) or a list of \(T.noun.many)")
        }
        guard !scalars.isEmpty else { throw problem(key, "must not be an empty list") }
        return try scalars.map { scalar in
            guard let v = try read(key, scalar, T.self) else { throw problem(key, "must be \(T.noun.one) or a list of \(T.noun.many)") }
            return try checked(key, v, minimum, check)
        }
    }

    func read<T: SweepValue>(_ key: Key, _ scalar: Scalar, _ type: T.Type) throws -> T? {
        do { return try T.read(scalar) } catch let invalid as SweepValueInvalid { throw problem(key, invalid.text) }
    }

    func checked<T: SweepValue>(_ key: Key, _ v: T, _ minimum: T?, _ check: (T) -> String?) throws -> T {
        if let minimum, let below = T.below(v, minimum) { throw problem(key, below) }
        if let text = check(v) { throw problem(key, text) }
        return v
    }

    struct AnyKey: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }
}

/// A field's value as the file writes it: one of JSON's scalars, a list of them, or something else.
enum Written: Decodable {
    case one(Scalar), many([Scalar]), other
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let list = try? c.decode([Scalar].self) { self = .many(list) } else if case let s = try c.decode(Scalar.self), s != .other {
            self = .one(s)
        } else { self = .other }
    }
}

enum Scalar: Decodable, Equatable {
    case bool(Bool), number(Double), string(String), other
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { self = .bool(b) } else if let x = try? c.decode(Double.self) { self = .number(x) }
        else if let s = try? c.decode(String.self) { self = .string(s) } else { self = .other }
    }
}

/// A field's problem; ``Sweep/parse(_:file:)`` adds the file and line.
struct SweepFieldProblem: Error { let field: String; let text: String }

struct SweepValueInvalid: Error { let text: String }

/// A type a sweep field holds: read from a scalar (nil: the wrong kind of
/// value; ``SweepValueInvalid``: the right kind, not a valid one).
protocol SweepValue {
    static var noun: (one: String, many: String) { get }
    static func read(_ scalar: Scalar) throws -> Self?
    /// The problem when `value` is below `minimum` (numbers only).
    static func below(_ value: Self, _ minimum: Self) -> String?
}

extension SweepValue {
    static func below(_ value: Self, _ minimum: Self) -> String? { nil }
}

extension Int: SweepValue {
    static var noun: (one: String, many: String) { ("an integer", "integers") }
    static func read(_ s: Scalar) -> Int? {
        guard case .number(let x) = s, x == x.rounded(), abs(x) < 1e15 else { return nil }
        return Int(x)
    }
    static func below(_ value: Int, _ minimum: Int) -> String? { value < minimum ? "\(value) is below the minimum \(minimum)" : nil }
}

extension Double: SweepValue {
    static var noun: (one: String, many: String) { ("a number", "numbers") }
    static func read(_ s: Scalar) -> Double? { if case .number(let x) = s { x } else { nil } }
}

extension Bool: SweepValue {
    static var noun: (one: String, many: String) { ("true or false", "true or false") }
    static func read(_ s: Scalar) -> Bool? { if case .bool(let b) = s { b } else { nil } }
}

extension String: SweepValue {
    static var noun: (one: String, many: String) { ("a non-empty string", "strings") }
    static func read(_ s: Scalar) -> String? { if case .string(let t) = s, !t.isEmpty { t } else { nil } }
}

extension MemoryCombination: SweepValue {
    static var noun: (one: String, many: String) { ("a string", "strings") }
    static func read(_ s: Scalar) throws -> MemoryCombination? {
        guard let text = String.read(s) else { return nil }
        guard let value = MemoryCombination(text) else { throw SweepValueInvalid(text: MemoryCombination.invalid(text)) }
        return value
    }
}

/// The grid's named choices: a string that must be one of the cases.
protocol SweepChoice: SweepValue, RawRepresentable, CaseIterable where RawValue == String {}

extension SweepChoice {
    static var noun: (one: String, many: String) { ("a string", "strings") }
    static func read(_ s: Scalar) throws -> Self? {
        guard let text = String.read(s) else { return nil }
        guard let value = Self(rawValue: text) else {
            let names = allCases.map(\.rawValue)
            throw SweepValueInvalid(text: "'\(text)' is not \(names.dropLast().joined(separator: ", ")) or \(names.last ?? "")")
        }
        return value
    }
}

extension BackboneName: SweepChoice {}
extension ScaleName: SweepChoice {}
extension LossSet: SweepChoice {}
extension TrainStatisticName: SweepChoice {}
extension PatchResize: SweepChoice {}
extension Finetune: SweepChoice {}
extension BankCombine: SweepChoice {}
