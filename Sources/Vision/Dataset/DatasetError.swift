import Foundation

/// Errors reading a dataset, its manifest or its annotations. Each names the
/// file (and the field, where there is one) and says what was expected.
public enum DatasetError: Error, CustomStringConvertible, Equatable {
    /// A folder or file the layout requires is not there.
    case missing(path: String, what: String)
    /// A split exists but holds no images.
    case emptySplit(path: String)
    /// A JSON file is malformed or a field has a bad value.
    case malformed(file: String, field: String, problem: String)
    /// A mask's size differs from its image's.
    case sizeMismatch(file: String, expected: (width: Int, height: Int), found: (width: Int, height: Int))
    /// An image or mask could not be decoded.
    case badImage(file: String, detail: String)

    public var description: String {
        switch self {
        case let .missing(path, what): "\(path): missing \(what)"
        case let .emptySplit(path): "\(path): split has no PNG images"
        case let .malformed(file, field, problem):
            field.isEmpty ? "\(file): \(problem)" : "\(file): field '\(field)': \(problem)"
        case let .sizeMismatch(file, expected, found):
            "\(file): mask is \(found.width)x\(found.height), its image is \(expected.width)x\(expected.height)"
        case let .badImage(file, detail): "\(file): \(detail)"
        }
    }

    public static func == (a: DatasetError, b: DatasetError) -> Bool { a.description == b.description }
}

extension DatasetError {
    /// Turns a `DecodingError` into a message naming the field path.
    static func from(_ error: Error, file: String) -> DatasetError {
        guard let decoding = error as? DecodingError else {
            return .malformed(file: file, field: "", problem: "\(error)")
        }
        // Field paths as the file spells them: our JSON files are snake_case.
        func snake(_ key: String) -> String {
            key.reduce(into: "") { out, ch in
                if ch.isUppercase { out += "_" + ch.lowercased() } else { out.append(ch) }
            }
        }
        func path(_ keys: [CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\(snake($0.stringValue))" }.joined()
                .trimmingCharacters(in: CharacterSet(charactersIn: "."))
        }
        switch decoding {
        case let .keyNotFound(key, context):
            let parent = path(context.codingPath)
            return .malformed(file: file, field: parent.isEmpty ? snake(key.stringValue) : "\(parent).\(snake(key.stringValue))",
                              problem: "required field is missing")
        case let .typeMismatch(type, context):
            return .malformed(file: file, field: path(context.codingPath), problem: "expected \(type)")
        case let .valueNotFound(type, context):
            return .malformed(file: file, field: path(context.codingPath), problem: "expected \(type), found null")
        case let .dataCorrupted(context):
            let underlying = (context.underlyingError as NSError?)?.localizedDescription
            return .malformed(file: file, field: path(context.codingPath),
                              problem: underlying.map { "not valid JSON (\($0))" } ?? context.debugDescription)
        @unknown default:
            return .malformed(file: file, field: "", problem: "\(error)")
        }
    }

    /// Reads and decodes a JSON file, with errors naming the file and field.
    static func decodeJSON<T: Decodable>(_ type: T.Type, from url: URL, snakeCase: Bool = true) throws -> T {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw DatasetError.missing(path: url.path, what: "file (\((error as NSError).localizedDescription))")
        }
        let decoder = JSONDecoder()
        if snakeCase { decoder.keyDecodingStrategy = .convertFromSnakeCase }
        do {
            return try decoder.decode(type, from: data)
        } catch {
            throw from(error, file: url.path)
        }
    }
}
