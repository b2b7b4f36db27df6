import Foundation
import Yams

/// YAML sweep files: read with Yams (libyaml) and handed on as the objects
/// JSONSerialization makes (NSNumber, NSString, NSArray, NSDictionary), so
/// one validator serves both formats.
enum YAMLDocument {
    static func load(_ text: String, file: String) throws -> Any {
        let loaded: Any?
        do { loaded = try Yams.load(yaml: text) } catch {
            throw SweepError(file: file, line: Self.line(of: error), field: "(document)", problem: "not valid YAML: \(error)")
        }
        guard let loaded else { throw SweepError(file: file, line: nil, field: "(document)", problem: "is empty") }
        let json = try plain(loaded, file: file)
        return try JSONSerialization.jsonObject(with: JSONSerialization.data(withJSONObject: json, options: [.fragmentsAllowed]),
                                                options: [.fragmentsAllowed])
    }

    /// The YAML value with only JSON's kinds of value in it.
    static func plain(_ value: Any, file: String) throws -> Any {
        switch value {
        case let d as [String: Any]: return try d.mapValues { try plain($0, file: file) }
        case let d as [AnyHashable: Any]:
            var out: [String: Any] = [:]
            for (k, v) in d {
                guard let key = k.base as? String else { throw SweepError(file: file, line: nil, field: "\(k)", problem: "keys must be strings") }
                out[key] = try plain(v, file: file)
            }
            return out
        case let a as [Any]: return try a.map { try plain($0, file: file) }
        case let b as Bool: return b
        case let i as Int: return i
        case let x as Double: return x
        case let s as String: return s
        case is NSNull: return NSNull()
        default: throw SweepError(file: file, line: nil, field: "(document)", problem: "holds a value that is not a string, number, boolean, list or mapping: \(value)")
        }
    }

    static func line(of error: Error) -> Int? {
        switch error as? YamlError {
        case .scanner(_, _, let mark, _)?, .parser(_, _, let mark, _)?, .composer(_, _, let mark, _)?: return mark.line
        default: return nil
        }
    }
}
