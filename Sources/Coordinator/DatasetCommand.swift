import ArgumentParser
import Foundation
import Shared
import Vision

/// `psad-coordinator dataset ...`: dataset tools.
struct DatasetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset",
        abstract: "Generate and check datasets in the MVTec LOCO AD layout.",
        subcommands: [Synth.self, Check.self, Preview.self])

    /// Writes the synthetic benchmark.
    struct Synth: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the synthetic benchmark (five categories in the MVTec LOCO AD layout).")

        @Option(help: "Output folder; one subfolder per category is (re)written.")
        var out: String

        @Option(help: "Seed; the same seed writes the same files.")
        var seed: UInt64 = 0

        @Option(help: "default (about 120/30/40/40/40 images per category) or small (tests).")
        var size: String = "default"

        @Option(name: .customLong("category"), help: "Only this category (repeatable).")
        var categories: [String] = []

        @Option(help: "reference (as the categories were designed; the defaults were chosen on it) or varied (tints, brightness, lighting, placement jitter and aspect ratio varied: the second benchmark, with another --seed).")
        var rendering: String = Rendering.reference.rawValue

        func validate() throws {
            guard Rendering(rawValue: rendering) != nil else {
                throw ValidationError("--rendering must be reference or varied, not '\(rendering)'")
            }
            guard SyntheticBenchmark.Size(rawValue: size) != nil else {
                throw ValidationError("--size must be one of \(SyntheticBenchmark.Size.allCases.map(\.rawValue).joined(separator: ", ")), not '\(size)'")
            }
            let known = SyntheticBenchmark.categories.map(\.name)
            for name in categories where !known.contains(name) {
                throw ValidationError("unknown category '\(name)'; known: \(known.joined(separator: ", "))")
            }
        }

        func run() throws {
            let root = URL(fileURLWithPath: out)
            let start = Date()
            try SyntheticBenchmark.write(to: root, seed: seed, size: SyntheticBenchmark.Size(rawValue: size)!,
                                         rendering: Rendering(rawValue: rendering)!, only: categories.isEmpty ? nil : categories) { name in
                print("wrote \(root.appendingPathComponent(name).path)")
            }
            print(String(format: "done in %.1f s", Date().timeIntervalSince(start)))
        }
    }

    /// Reads a dataset the way the stages will and reports what it found.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read categories in the MVTec LOCO AD layout with their manifests; report counts or the first problem.",
            discussion: """
                With --digest, also each folder's content digest as `submit` records it in the job keys (run it on a
                worker whose jobs are refused as "not the data this sweep was submitted with" to compare).
                """)

        @Argument(help: "Category folders.")
        var categories: [String]

        @Flag(help: "Print each folder's content digest (SHA-256 over every file) too.")
        var digest = false

        func run() throws {
            var failed = false
            for path in categories {
                let root = URL(fileURLWithPath: path)
                do {
                    let category = try LocoCategory(root: root)
                    let manifest = try CategoryManifest.load(categoryRoot: root)
                    let counts = Split.allCases.map { "\($0.rawValue)=\(category[$0].count)" }.joined(separator: " ")
                    print("\(category.name): \(manifest.classCount) classes, \(manifest.fewShot.count) labelled, \(counts)")
                    if digest {
                        let d = try DatasetDigest.of(categoryAt: root)
                        print("  digest \(d.hex) (\(d.files) files, \(d.bytes) bytes)")
                    }
                } catch {
                    failed = true
                    print("\(path): \(error)")
                }
            }
            if failed { throw ExitCode.failure }
        }
    }

    /// A picture of a few images per category: for READMEs and reports.
    struct Preview: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write one PNG showing, per category, a normal image, a logical and a structural anomaly.")

        @Argument(help: "Category folders in the MVTec LOCO AD layout.")
        var categories: [String]

        @Option(help: "The PNG to write.")
        var out: String

        @Option(help: "Index of the image shown from each split.")
        var index = 0

        @Option(help: "Row height in pixels.")
        var height = 180

        func run() throws {
            let rows = try categories.map { path -> [Image] in
                let category = try LocoCategory(root: URL(fileURLWithPath: path))
                return try [Split.train, .testLogical, .testStructural].map { split in
                    let samples = category[split]
                    return try PNG.read(samples[min(index, samples.count - 1)].url)
                }
            }
            try PNG.write(Montage.grid(rows, height: height), to: URL(fileURLWithPath: out))
            print("wrote \(out)")
        }
    }
}
