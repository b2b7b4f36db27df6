import ArgumentParser
import Foundation
import Shared
import Tensor
import Vision

/// The coordinator: keeps the sweeps' job DAG in a state directory
/// (`state.sqlite`, `blobs/`) and serves it to workers over ZeroMQ.
@main
struct PSADCoordinator: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "psad-coordinator",
        abstract: "Plans PSAD sweeps as a DAG of stage jobs and dispatches them to workers.",
        subcommands: [Serve.self, Submit.self, Status.self, Results.self, ReportCommand.self, Resume.self, Cancel.self, Explain.self, Resolve.self, Export.self, CollectGarbage.self, Keys.self,
                      Backup.self, Restore.self, Info.self, DatasetCommand.self])
}

/// `psad-coordinator info`: the native libraries and settings in use, for
/// bug reports and to check an installation.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print library versions and compute settings.")

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        let fields: [(String, String)] = [
            ("protocol", "\(ProtocolVersion.current)"),
            ("zeromq", NativeVersions.zeroMQ),
            ("libpng", PNG.libraryVersion),
            ("openblas", Compute.blasConfiguration),
            ("threads", "\(Compute.threads)"),
        ]
        if json {
            let data = try JSONSerialization.data(withJSONObject: Dictionary(uniqueKeysWithValues: fields),
                                                  options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (key, value) in fields { print("\(key): \(value)") }
        }
    }
}
