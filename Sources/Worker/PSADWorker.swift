import ArgumentParser
import Dispatch
import Foundation
import Logging
import Shared
import Stages
import Tensor

/// The worker: connects to a coordinator and runs the stage jobs it is
/// given until SIGTERM or SIGINT, which drain it (the job in hand is
/// finished and reported first; a second signal hands it back instead).
@main
struct PSADWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "psad-worker",
        abstract: "Runs PSAD stage jobs handed out by a coordinator.",
        subcommands: [MethodCommand.self, PredictCommand.self])

    @Option(help: "The coordinator's endpoint, e.g. tcp://coordinator:5555.")
    var coordinator: String?

    @Option(help: "This worker's name (default: host name and process id).")
    var id: String?

    @Option(help: "Memory offered to stages, MiB (default: the physical memory or the cgroup's limit, whichever is lower, less 10%).")
    var memoryMib: Int?

    @Option(help: "Local artifact cache (default: a folder under the system's temporary directory).")
    var cache: String?

    @Option(help: "Where training stages (segment-train, unet-train) keep their state between epochs, one file per job, so that a job stopped part of the way (this worker killed, its lease lost) goes on from its last saved epoch when it runs again (default: checkpoints/ in the cache). Workers that may take over each other's jobs can share one folder.")
    var checkpoints: String?

    @Option(help: "Seconds between a training stage's saves of its state (0: every epoch).")
    var checkpointSeconds: Double = 60

    @Flag(help: "Keep no training state between epochs.")
    var noCheckpoints = false

    @Option(name: .customLong("tag"), help: "A tag this worker offers (repeatable), e.g. --tag gpu.")
    var tags: [String] = []

    @Flag(help: "Print the resources this worker announces, as JSON, and exit.")
    var describe = false

    @Option(help: "CURVE: the coordinator's public key file.")
    var curveServerKey: String?

    @Option(help: "CURVE: this worker's secret key file (its public key must be on the coordinator's allowlist).")
    var curveSecret: String?

    @Flag(help: "Connect to a non-local endpoint without CURVE.")
    var insecure = false

    @Option(help: "Seconds to wait for the coordinator's answer about a job in hand (fetch, upload, result) before dropping the job.")
    var jobRequestTimeout: Double = 600

    @Option(help: "Seconds to wait for any answer to hello or ready before exiting with an error.")
    var coordinatorTimeout: Double = 3600

    @Option(help: "On SIGTERM, hand the running stage back if it has not finished this many seconds after the signal (default: finish it, however long; a second SIGTERM or SIGINT hands it back at once).")
    var drainSeconds: Double?

    @Option(help: "Leased jobs held ahead of the running one while jobs take under --prefetch-below-seconds (0: one job at a time).")
    var prefetch = 8

    @Option(help: "Jobs shorter than this are prefetched; a job held ahead of a stage running longer is handed back.")
    var prefetchBelowSeconds = 1.0

    @Option(help: "The machine kind this worker reports (default: its architecture and BLAS kernels, e.g. 'x86_64 OpenBLAS Zen'). Verification compares the bytes of two runs on one kind, and across kinds only metrics within a stage's tolerance.")
    var machineKind: String?

    @Flag(help: .hidden)
    var corruptOutputsForFaultTests = false

    @Flag(help: .hidden)
    var wrongResultsForFaultTests = false

    @Flag(help: .hidden)
    var headerOnlyResultsForFaultTests = false

    func validate() throws {
        if prefetch < 0 || prefetch > 64 { throw ValidationError("--prefetch takes 0 to 64 jobs, not \(prefetch)") }
        if !(prefetchBelowSeconds >= 0) { throw ValidationError("--prefetch-below-seconds must be 0 or more") }
        if !(checkpointSeconds >= 0) { throw ValidationError("--checkpoint-seconds must be 0 or more") }
        if (curveServerKey == nil) != (curveSecret == nil) { throw ValidationError("--curve-server-key and --curve-secret go together") }
        if let coordinator, curveSecret == nil, !insecure, !isLocalEndpoint(coordinator) {
            throw ValidationError("\(coordinator) is on another machine: give --curve-server-key and --curve-secret, or --insecure")
        }
    }

    func run() throws {
        // Before any thread allocates: the stages' memory stays in the process, in one arena.
        Compute.retainFreedMemory()
        var resources = WorkerResources.detect(tags: tags)
        if let memoryMib { resources.memoryBytes = UInt64(max(0, memoryMib)) << 20 }
        resources.machine = machineKind ?? Compute.machineKind
        if describe {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(resources), as: UTF8.self))
            return
        }
        guard let coordinator else { throw ValidationError("give --coordinator ENDPOINT (or --describe)") }
        let name = id ?? "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        LogSetup.bootstrap()
        var logger = Logger(label: "psad-worker")
        logger[metadataKey: "worker"] = "\(name)"
        let cacheURL = URL(fileURLWithPath: cache ?? NSTemporaryDirectory() + "psad-worker-cache")
        let draining = TerminationFlag()
        var settings = WorkerSession.Settings(endpoint: coordinator, worker: name, resources: resources)
        settings.corruptOutputs = corruptOutputsForFaultTests
        settings.wrongResults = wrongResultsForFaultTests
        settings.headerOnlyResults = headerOnlyResultsForFaultTests
        settings.drainSeconds = drainSeconds
        settings.prefetch = prefetch
        settings.prefetchBelowSeconds = prefetchBelowSeconds
        settings.jobRequestTimeoutSeconds = jobRequestTimeout
        settings.coordinatorTimeoutSeconds = coordinatorTimeout
        if !noCheckpoints {
            let folder = checkpoints.map { URL(fileURLWithPath: $0) } ?? cacheURL.appendingPathComponent("checkpoints")
            settings.checkpoints = folder
            settings.checkpointSeconds = checkpointSeconds
            TrainingCheckpoints.prune(folder, olderThanDays: 14) { logger.notice("\($0)") }
        }
        if let curveServerKey, let curveSecret {
            settings.curve = (try CurveKeyPair.readKey(curveServerKey), try CurveKeyPair.load(secretFile: curveSecret))
        }
        let session = try WorkerSession(settings: settings,
                                        cache: try ArtifactStore(root: cacheURL), logger: logger, draining: draining)
        try session.run()
    }
}
