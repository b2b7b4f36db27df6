import ArgumentParser
@testable import Coordinator
import Foundation
import Testing
@testable import Worker
import TestSupport
import Yams

/// The Kubernetes manifests (ops/k8s) and the container image
/// (ops/container) checked against the code that runs in them: commands
/// parse with the real command-line parsers, ports agree, every path an
/// argument names is a mounted volume, key files are keys of the Secrets
/// mounted there, and those Secrets are the ones the README creates.
@Suite struct DeploymentFilesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let k8s = root.appendingPathComponent("ops/k8s")

    struct Problem: Error, CustomStringConvertible { let description: String }

    /// Every document of every manifest the kustomization lists, by kind/name.
    static func manifests() throws -> (documents: [String: [String: Any]], kustomization: [String: Any]) {
        let kustomization = try #require(try Yams.load(yaml: String(contentsOf: k8s.appendingPathComponent("kustomization.yaml"), encoding: .utf8)) as? [String: Any])
        var documents: [String: [String: Any]] = [:]
        for file in try #require(kustomization["resources"] as? [String]) {
            for document in try Yams.load_all(yaml: String(contentsOf: k8s.appendingPathComponent(file), encoding: .utf8)) {
                let d = try #require(document as? [String: Any], "\(file): a document that is not a mapping")
                let name = try #require((d["metadata"] as? [String: Any])?["name"] as? String, "\(file): a document without a name")
                documents["\(d["kind"] as? String ?? "?")/\(name)"] = d
            }
        }
        return (documents, kustomization)
    }

    static func at(_ value: Any?, _ path: String) -> Any? {
        path.split(separator: ".").reduce(value) { v, key in
            if let i = Int(key), let a = v as? [Any], i < a.count { return a[i] }
            return (v as? [String: Any])?[String(key)]
        }
    }

    /// The Secrets the README creates: name -> file names (their keys).
    static func secretsCreatedByTheReadme() throws -> [String: Set<String>] {
        let readme = try String(contentsOf: k8s.appendingPathComponent("README.md"), encoding: .utf8)
        var secrets: [String: Set<String>] = [:]
        for line in readme.split(separator: "\n") where line.hasPrefix("kubectl create secret generic ") {
            let words = line.split(separator: " ").map(String.init)
            secrets[words[4]] = Set(words.filter { $0.hasPrefix("--from-file=") }.map { ($0.dropFirst("--from-file=".count) as NSString).lastPathComponent })
        }
        return secrets
    }

    /// The volume mounted at the folder holding `path` in `pod`, and the container's mounts.
    static func volume(holding path: String, pod: [String: Any], container: [String: Any], file: Bool) throws -> [String: Any] {
        let folder = file ? (path as NSString).deletingLastPathComponent : path
        let mounts = try #require(container["volumeMounts"] as? [[String: Any]])
        let mount = try #require(mounts.first { $0["mountPath"] as? String == folder }, "nothing is mounted at \(folder) (for \(path))")
        let volumes = (pod["volumes"] as? [[String: Any]] ?? [])
        if let v = volumes.first(where: { $0["name"] as? String == mount["name"] as? String }) { return v }
        return ["name": mount["name"] as Any, "claimTemplate": true]
    }

    /// The Secret behind `volume` holds a key named like the file `path` names.
    static func expectSecretFile(_ path: String, in volume: [String: Any], secrets: [String: Set<String>]) throws {
        let name = try #require(at(volume, "secret.secretName") as? String, "\(path) is not on a Secret volume")
        let keys = try #require(secrets[name], "the README does not create Secret \(name)")
        #expect(keys.contains((path as NSString).lastPathComponent), "Secret \(name) has \(keys.sorted()), not \((path as NSString).lastPathComponent)")
    }

    static func container(_ workload: [String: Any]?) throws -> (pod: [String: Any], container: [String: Any]) {
        let pod = try #require(at(workload, "spec.template.spec") as? [String: Any])
        let container = try #require((pod["containers"] as? [[String: Any]])?.first)
        return (pod, container)
    }

    /// What both workloads are checked against: the manifests, the kustomization, the README's Secrets, the Service.
    static func deployment() throws -> (docs: [String: [String: Any]], kustomization: [String: Any], secrets: [String: Set<String>], service: [String: Any]) {
        let (docs, kustomization) = try manifests()
        return (docs, kustomization, try secretsCreatedByTheReadme(), try #require(docs["Service/psad-coordinator"]))
    }

    /// kubernetes-validate on the PATH (pip puts it where python3's scripts go).
    static let validator = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
        .map { "\($0)/kubernetes-validate" }.first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Every manifest against the Kubernetes API's own schemas, offline
    /// (`kubernetes-validate` from PyPI, which ops/setup installs), strict
    /// (unknown fields fail); a manifest with a misspelt field is shown to fail.
    @Test(.enabled(if: validator != nil, "needs kubernetes-validate (pip install kubernetes-validate; ops/setup does)"))
    func theManifestsPassTheKubernetesSchemas() throws {
        func validate(_ file: URL) throws -> (status: Int32, output: String) {
            try runProgram(Self.validator!, ["--strict", "--kubernetes-version", "1.30.0", file.path])
        }
        let kustomization = try #require(try Yams.load(yaml: String(contentsOf: Self.k8s.appendingPathComponent("kustomization.yaml"), encoding: .utf8)) as? [String: Any])
        for file in try #require(kustomization["resources"] as? [String]) {
            let r = try validate(Self.k8s.appendingPathComponent(file))
            #expect(r.status == 0 && r.output.contains("passed"), "\(file): \(r.output)")
        }
        let broken = FileManager.default.temporaryDirectory.appendingPathComponent("psad-broken-\(UUID().uuidString).yaml")
        defer { try? FileManager.default.removeItem(at: broken) }
        try String(contentsOf: Self.k8s.appendingPathComponent("workers.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "terminationGracePeriodSeconds", with: "terminationGracePeriodSecond")
            .write(to: broken, atomically: false, encoding: .utf8)
        #expect(try validate(broken).status != 0)
    }

    /// What a pod needs before its first start: the non-root process can read
    /// its Secret files (group-readable, with fsGroup), the data volume can
    /// bind without a provisioner, the grace period covers the drain and the
    /// upload, the cache's disk is requested, the coordinator has a probe.
    @Test func podsCanStartAsTheirNonRootUser() throws {
        let (docs, _) = try Self.manifests()
        for name in ["StatefulSet/psad-coordinator", "Deployment/psad-worker"] {
            let (pod, _) = try Self.container(docs[name])
            #expect(Self.at(pod, "securityContext.fsGroup") as? Int == Self.at(pod, "securityContext.runAsUser") as? Int, "\(name)")
            for volume in pod["volumes"] as? [[String: Any]] ?? [] where volume["secret"] != nil {
                let mode = Self.at(volume, "secret.defaultMode") as? Int ?? 0o644
                #expect(mode & 0o040 != 0, "\(name): Secret volume \(volume["name"] ?? "?") mode \(String(mode, radix: 8)) is not group-readable")
            }
        }
        for name in ["psad-data", "psad-checkpoints"] {
            let claim = try #require(docs["PersistentVolumeClaim/\(name)"])
            let volume = try #require(docs["PersistentVolume/\(Self.at(claim, "spec.volumeName") as? String ?? "?")"])
            #expect(Self.at(claim, "spec.storageClassName") as? String == "" && Self.at(volume, "spec.storageClassName") as? String == "", "\(name)")
            #expect(Self.at(claim, "spec.accessModes") as? [String] == Self.at(volume, "spec.accessModes") as? [String], "\(name)")
        }
        let (workerPod, worker) = try Self.container(docs["Deployment/psad-worker"])
        let command = try #require(worker["command"] as? [String])
        let drain = try #require(command.firstIndex(of: "--drain-seconds").flatMap { Double(command[$0 + 1]) })
        #expect(Double(Self.at(workerPod, "terminationGracePeriodSeconds") as? Int ?? 0) >= drain + 120)
        #expect(Self.at(worker, "resources.requests.ephemeral-storage") != nil)
        #expect((worker["env"] as? [[String: Any]])?.contains { $0["name"] as? String == "PSAD_WEIGHTS" && ($0["value"] as? String)?.hasPrefix("/data/") == true } == true)
        let (_, coordinator) = try Self.container(docs["StatefulSet/psad-coordinator"])
        #expect(coordinator["readinessProbe"] != nil)
    }

    @Test func theCoordinatorsManifestMatchesItsCommandLine() throws {
        let (docs, kustomization, secrets, service) = try Self.deployment()
        let set = try #require(docs["StatefulSet/psad-coordinator"])
        let (pod, container) = try Self.container(set)
        // The governing Service is a headless one selecting the same pods.
        let governing = try #require(docs["Service/\(Self.at(set, "spec.serviceName") as? String ?? "?")"])
        #expect(Self.at(governing, "spec.clusterIP") as? String == "None")
        let labels = try #require(Self.at(set, "spec.template.metadata.labels") as? [String: String])
        #expect(Self.at(service, "spec.selector") as? [String: String] == labels && Self.at(set, "spec.selector.matchLabels") as? [String: String] == labels)
        #expect((container["image"] as? String)?.split(separator: ":").first.map(String.init) == Self.at(kustomization, "images.0.name") as? String)

        let command = try #require(container["command"] as? [String])
        #expect(command.first == "psad-coordinator")
        let serve = try #require(try PSADCoordinator.parseAsRoot(Array(command.dropFirst())) as? Serve, "\(command) is not `serve`")
        // The bound port is the container's port, which the Service targets by name.
        let port = try #require(Int(serve.bind.split(separator: ":").last ?? ""))
        let ports = try #require(container["ports"] as? [[String: Any]])
        let named = try #require(ports.first { $0["containerPort"] as? Int == port }, "no container port \(port)")
        #expect(Self.at(service, "spec.ports.0.targetPort") as? String == named["name"] as? String)
        // State on the claim template; the key and the allowlist from the README's Secrets.
        let state = try Self.volume(holding: try #require(serve.state.state), pod: pod, container: container, file: false)
        let template = try #require(Self.at(set, "spec.volumeClaimTemplates.0.metadata.name") as? String)
        #expect(state["claimTemplate"] as? Bool == true && state["name"] as? String == template)
        let secret = try #require(serve.curveSecret)
        try Self.expectSecretFile(secret, in: try Self.volume(holding: secret, pod: pod, container: container, file: true), secrets: secrets)
        let allow = try Self.volume(holding: try #require(serve.allow), pod: pod, container: container, file: false)
        let allowlist = try #require(Self.at(allow, "secret.secretName") as? String)
        #expect(secrets[allowlist]?.contains { $0.hasSuffix(".pub") } == true, "the allowlist Secret holds no .pub file")
        #expect(Self.at(pod, "volumes").flatMap { ($0 as? [[String: Any]])?.compactMap { Self.at($0, "persistentVolumeClaim.claimName") as? String } } == ["psad-data"])
        #expect(docs["PersistentVolumeClaim/psad-data"] != nil)
    }

    @Test func theWorkersManifestMatchesItsCommandLine() throws {
        let (docs, kustomization, secrets, service) = try Self.deployment()
        let deployment = try #require(docs["Deployment/psad-worker"])
        let (pod, container) = try Self.container(deployment)
        #expect((container["image"] as? String)?.split(separator: ":").first.map(String.init) == Self.at(kustomization, "images.0.name") as? String)
        let command = try #require(container["command"] as? [String])
        #expect(command.first == "psad-worker")
        let worker = try #require(try PSADWorker.parseAsRoot(Array(command.dropFirst())) as? PSADWorker)
        // The endpoint is the Service's name and port.
        let endpoint = try #require(worker.coordinator)
        #expect(endpoint == "tcp://\(Self.at(service, "metadata.name") as? String ?? "?"):\(Self.at(service, "spec.ports.0.port") as? Int ?? 0)")
        for file in [try #require(worker.curveServerKey), try #require(worker.curveSecret)] {
            try Self.expectSecretFile(file, in: try Self.volume(holding: file, pod: pod, container: container, file: true), secrets: secrets)
        }
        let cache = try Self.volume(holding: try #require(worker.cache), pod: pod, container: container, file: false)
        #expect(cache["emptyDir"] != nil)
        // Training states on a volume every worker mounts read-write (not the pod's own
        // cache), so a job handed back on a rollout resumes on another pod.
        let checkpoints = try Self.volume(holding: try #require(worker.checkpoints), pod: pod, container: container, file: false)
        let claim = try #require(docs["PersistentVolumeClaim/\(Self.at(checkpoints, "persistentVolumeClaim.claimName") as? String ?? "?")"],
                                 "the checkpoints are not on a claimed volume")
        #expect((Self.at(claim, "spec.accessModes") as? [String])?.contains("ReadWriteMany") == true)
        // The memory it offers is 90% of the container's limit, read from its cgroup: none is named here.
        #expect(Self.at(container, "resources.limits.memory") as? String != nil && worker.memoryMib == nil)
        // A drain (SIGTERM on rollout) gets time to finish a stage.
        #expect((pod["terminationGracePeriodSeconds"] as? Int ?? 30) >= 600)
        #expect((container["volumeMounts"] as? [[String: Any]])?.contains { $0["mountPath"] as? String == "/data" } == true)
    }

    @Test func theImagePutsTheBinariesWhereTheManifestsCallThem() throws {
        let dockerfile = try String(contentsOf: Self.root.appendingPathComponent("ops/container/Dockerfile"), encoding: .utf8)
        let copy = try #require(dockerfile.split(separator: "\n").first { $0.hasPrefix("COPY --from=build") && $0.contains(".build/release/") })
        #expect(copy.contains("psad-coordinator") && copy.contains("psad-worker") && copy.hasSuffix(" /usr/local/bin/"))
        // The weights go where the image's PSAD_WEIGHTS points.
        #expect(dockerfile.contains("RUN PSAD_WEIGHTS=/opt/psad/weights") && dockerfile.contains("ENV PSAD_WEIGHTS=/opt/psad/weights"))
    }

    /// The image's build stage without a container engine: its context
    /// reproduced in a clean folder (exactly what the COPY lines take, less
    /// .dockerignore), where the package must load (SwiftPM checks every
    /// target's folder, test targets' too) and resolve at the pinned
    /// versions, as the Dockerfile's RUN lines do before building. The full
    /// release build there is run by hand (README, "Container image").
    @Test(.timeLimit(.minutes(3)))
    func theImagesBuildContextLoadsAndResolvesAtThePinnedVersions() throws {
        let dir = try TemporaryDirectory()
        let context = dir.url.appendingPathComponent("context")
        let made = try runProgram(Self.root.appendingPathComponent("ops/container/make-context").path, [context.path])
        #expect(made.status == 0, "\(made.output)")
        let fm = FileManager.default
        for inside in ["Package.swift", "Sources/Worker/PSADWorker.swift", "Tests/TestSupport", "ops/container/pins.txt"] {
            #expect(fm.fileExists(atPath: context.appendingPathComponent(inside).path), "\(inside) is not in the context")
        }
        for outside in [".build", ".git", "Package.resolved", "state", "data"] {
            #expect(!fm.fileExists(atPath: context.appendingPathComponent(outside).path), "\(outside) is in the context")
        }
        let swift = try #require(["/opt/swift/usr/bin/swift", "/usr/bin/swift"].first { fm.isExecutableFile(atPath: $0) })
        let described = try runProgram(swift, ["package", "describe", "--type", "json"], in: context)
        #expect(described.status == 0, "\(described.output.suffix(2000))")
        let pinned = try runProgram(context.appendingPathComponent("ops/container/pin-dependencies").path, [], in: context)
        #expect(pinned.status == 0, "\(pinned.output.suffix(2000))")
        let pins = try String(contentsOf: context.appendingPathComponent("ops/container/pins.txt"), encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }.map { String($0) }
        #expect(pinned.output.split(separator: "\n").map { String($0) } == pins.sorted(), "\(pinned.output)")
    }

    /// Without Tests/ in the context (as the image once had it) the package does not load.
    @Test func aContextWithoutTheTestTargetsFoldersDoesNotLoad() throws {
        let dir = try TemporaryDirectory(), fm = FileManager.default
        for item in ["Package.swift", "Sources"] {
            try fm.copyItem(at: Self.root.appendingPathComponent(item), to: dir.url.appendingPathComponent(item))
        }
        let swift = try #require(["/opt/swift/usr/bin/swift", "/usr/bin/swift"].first { fm.isExecutableFile(atPath: $0) })
        let described = try runProgram(swift, ["package", "describe", "--type", "json"], in: dir.url)
        #expect(described.status != 0 && described.output.contains("Tests/TestSupport"), "\(described.output.suffix(2000))")
    }
}
