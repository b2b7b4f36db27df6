import Foundation
import Tensor

/// Errors loading network weights. Each names the file and the tensor.
public enum WeightError: Error, CustomStringConvertible, Equatable {
    case missingFile(path: String, install: String)
    case missingTensor(file: String, tensor: String)
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    case unreadable(String)

    public var description: String {
        switch self {
        case let .missingFile(path, install): "\(path): weights not found; install them with \(install)"
        case let .missingTensor(file, tensor): "\(file): no tensor '\(tensor)' (is this the right network?)"
        case let .shapeMismatch(file, tensor, expected, found):
            "\(file): tensor '\(tensor)' has shape \(found), the network expects \(expected)"
        case let .unreadable(detail): detail
        }
    }
}

/// Where parameters come from: a safetensors file with PyTorch's parameter
/// names, or seeded random values (for benchmarks and tests of shapes).
public final class WeightSet {
    enum Source {
        case file(SafetensorsFile)
        case random(SeededGenerator)
        case overlay([String: Tensor], over: WeightSet)
    }

    private var source: Source
    public let name: String

    /// Weights from a safetensors file.
    public init(file url: URL) throws {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw WeightError.missingFile(path: url.path, install: "ops/weights/ (see README: Backbones)")
        }
        do {
            source = .file(try SafetensorsFile(contentsOf: url))
        } catch {
            throw WeightError.unreadable("\(error)")
        }
        name = url.path
    }

    /// `tensors` (a fine-tuned part of a network, by parameter name) in
    /// place of the same names in `base`; every other name from `base`.
    public init(overlay tensors: [String: Tensor], over base: WeightSet) {
        source = .overlay(tensors, over: base)
        name = "\(base.name) with \(tensors.count) fine-tuned tensors"
    }

    /// He-initialised random weights; batch norm as the identity.
    public init(randomSeed: UInt64) {
        source = .random(SeededGenerator(seed: randomSeed))
        name = "random(\(randomSeed))"
    }

    /// The directories searched for named weight files, in order:
    /// `$PSAD_WEIGHTS` (one folder, or several separated by `:`, e.g. a
    /// shared volume before the image's own), else `~/.local/share/psad/weights`.
    public static var searchDirectories: [URL] { searchDirectories(ProcessInfo.processInfo.environment["PSAD_WEIGHTS"]) }

    static func searchDirectories(_ value: String?) -> [URL] {
        let dirs = (value ?? "").split(separator: ":").filter { !$0.isEmpty }.map { URL(fileURLWithPath: String($0)) }
        return dirs.isEmpty ? [FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".local/share/psad/weights")] : dirs
    }

    /// The first of the search directories.
    public static var defaultDirectory: URL { searchDirectories[0] }

    /// A named weight file from the first search directory that has it, with
    /// the command that installs it when none does.
    public static func installed(_ fileName: String, install: String) throws -> WeightSet {
        try WeightSet(file: try installedFile(fileName, install: install))
    }

    /// Where ``installed(_:install:)`` finds the file.
    public static func installedFile(_ fileName: String, install: String) throws -> URL {
        let candidates = searchDirectories.map { $0.appendingPathComponent(fileName) }
        guard let url = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
            throw WeightError.missingFile(path: candidates.map(\.path).joined(separator: " or "), install: install)
        }
        return url
    }

    /// The tensor `tensor`, checked against the shape the network expects.
    /// `fill` says what a random source gives: "he" (conv weights), a constant otherwise.
    func take(_ tensor: String, shape: [Int], fill: Fill = .he) throws -> Tensor {
        switch source {
        case let .file(file):
            guard file.entries.contains(where: { $0.name == tensor }) else {
                throw WeightError.missingTensor(file: name, tensor: tensor)
            }
            let t: Tensor
            do { t = try file.tensor(tensor) } catch { throw WeightError.unreadable("\(error)") }
            guard t.shape == shape else {
                throw WeightError.shapeMismatch(file: name, tensor: tensor, expected: shape, found: t.shape)
            }
            return t
        case let .overlay(tensors, base):
            guard let t = tensors[tensor] else { return try base.take(tensor, shape: shape, fill: fill) }
            guard t.shape == shape else {
                throw WeightError.shapeMismatch(file: name, tensor: tensor, expected: shape, found: t.shape)
            }
            return t
        case var .random(rng):
            defer { source = .random(rng) }
            switch fill {
            case .he:
                let fanIn = shape.dropFirst().reduce(1, *)
                return Tensor.randomNormal(shape, std: (2 / Float(max(fanIn, 1))).squareRoot(), generator: &rng)
            case let .constant(v):
                return Tensor(zeros: shape, value: v)
            }
        }
    }

    enum Fill { case he, constant(Float) }
}
