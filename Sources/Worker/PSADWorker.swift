import ArgumentParser
import Foundation
import Shared

/// The worker. So far it reports what it would announce to a coordinator;
/// the connection, leases and stage execution arrive with the system issue.
@main
struct PSADWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "psad-worker",
        abstract: "Runs PSAD stage jobs handed out by a coordinator.",
        subcommands: [MethodCommand.self])

    @Option(name: .customLong("tag"), help: "A tag this worker offers (repeatable), e.g. --tag gpu.")
    var tags: [String] = []

    @Flag(help: "Print the resources this worker announces, as JSON, and exit.")
    var describe = false

    func run() throws {
        guard describe else {
            throw ValidationError("connecting to a coordinator is not built yet; use --describe")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(WorkerResources.detect(tags: tags)), as: UTF8.self))
    }
}
