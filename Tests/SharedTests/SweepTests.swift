import Foundation
import Testing
@testable import Shared

@Suite struct SweepExpansionTests {
    static func sweep(_ categories: [String] = ["a", "b"]) -> Sweep {
        var s = Sweep(name: "s", dataset: "d", categories: categories)
        s.grid.nShot = [1, 3, 5]
        s.grid.memoryTypes = ["h", "c", "p", "hcp"].compactMap(MemoryCombination.init)
        return s
    }

    @Test func sharedStagesAreOneJob() {
        let plan = SweepExpander.expand(Self.sweep())
        func count(_ kind: StageKind) -> Int { plan.jobs.filter { $0.kind == kind }.count }
        // Per category: preprocess and patch-features once, segment-train,
        // pseudo-label and bank-fit once per n_shot, evaluate per n_shot x memory type.
        #expect(count(.preprocess) == 2 && count(.patchFeatures) == 2)
        #expect(count(.segmentTrain) == 6 && count(.pseudoLabel) == 6 && count(.bankFit) == 6)
        #expect(count(.unetTrain) == 0)
        #expect(count(.evaluate) == 24 && plan.evaluations.count == 24)
        #expect(plan.jobs.count == 46)
        // Inputs come before the jobs that read them.
        var seen = Set<JobKey>()
        for job in plan.jobs {
            #expect(job.inputs.values.allSatisfy(seen.contains))
            seen.insert(job.key)
        }
    }

    /// Dispatch orders by ``StageKind/level``, worked out from the kinds'
    /// declared readers: every edge the expander makes (UNet included) must
    /// be declared, and every declared reader made somewhere.
    @Test func theStageLevelsFollowTheEdgesTheExpanderMakes() {
        var sweep = Self.sweep(["a"])
        sweep.grid.unetEpochs = [0, 30]
        let plan = SweepExpander.expand(sweep)
        let kinds = Dictionary(plan.jobs.map { ($0.key, $0.kind) }, uniquingKeysWith: { a, _ in a })
        var made = Set<[StageKind]>()
        for job in plan.jobs {
            for parent in job.inputs.values {
                let from = kinds[parent]!
                #expect(from.readers.contains(job.kind), "\(from.rawValue) -> \(job.kind.rawValue) is not declared")
                made.insert([from, job.kind])
            }
        }
        let declared = Set(StageKind.allCases.flatMap { k in k.readers.map { [k, $0] } })
        #expect(made == declared)
        #expect(StageKind.allCases.map(\.level) == [5, 4, 3, 2, 1, 1, 0, 0])
        // A job's level is one more than its deepest reader's: a chain of that many stages follows it.
        for job in plan.jobs {
            for parent in job.inputs.values { #expect(kinds[parent]!.level > job.kind.level) }
        }
    }

    @Test func aKeyHoldsOnlyWhatItsStageReads() {
        let base = SweepExpander.expand(Self.sweep(["a"]))
        var other = Self.sweep(["a"])
        other.grid.memoryTypes = [MemoryCombination("hc")!]
        other.grid.epochs = [50]
        let changed = SweepExpander.expand(other)
        func keys(_ plan: SweepPlan, _ kind: StageKind) -> Set<JobKey> { Set(plan.jobs.filter { $0.kind == kind }.map(\.key)) }
        // Epochs reach segment-train and everything after it; neither epochs
        // nor the memory type reach preprocess or patch-features.
        #expect(keys(base, .preprocess) == keys(changed, .preprocess))
        #expect(keys(base, .patchFeatures) == keys(changed, .patchFeatures))
        #expect(keys(base, .segmentTrain).isDisjoint(with: keys(changed, .segmentTrain)))
        #expect(keys(base, .bankFit).isDisjoint(with: keys(changed, .bankFit)))
        // Expansion is deterministic.
        #expect(SweepExpander.expand(Self.sweep(["a"])).jobs == base.jobs)
    }

    /// SHA-256 of the canonical JSON, worked out independently with Python's hashlib:
    /// sha256(b'{"inputs":{},"kind":"preprocess","parameters":{"category":"a","dataset":"d","image_size":256},"version":1}').
    @Test func keyIsTheHashOfTheCanonicalJSON() {
        let key = JobKey.of(kind: .preprocess, parameters: ["dataset": .string("d"), "category": .string("a"), "image_size": .int(256)], inputs: [:])
        #expect(key.hex == "1143e1887cf73ec6f232cb26549ef7ff6475ff32949ba7930e7355ac3816d444")
        // The expander's preprocess job of that category is that job: its typed
        // parameters map to the same names and values (nothing added, numbers kept).
        #expect(SweepExpander.expand(Self.sweep(["a"])).jobs.first { $0.kind == .preprocess }?.key == key)
        #expect(JobKey(hex: key.hex) == key)
        #expect(JobKey(hex: "xyz") == nil && JobKey(hex: key.hex.uppercased()) == nil)
    }

    /// What keys are made of: JSON strings escaped as JSON requires (only
    /// where needed), Swift names in snake_case.
    @Test func canonicalStringsAndSnakeCaseNames() {
        #expect(CanonicalJSON.string("plain é") == "\"plain é\"")
        #expect(CanonicalJSON.string("a\"b\\c\nd\u{1}") == #""a\"b\\c\nd\u0001""#)
        #expect(ParameterEncoder.snake("lessNormalFraction") == "less_normal_fraction" && ParameterEncoder.snake("nShot") == "n_shot")
        #expect(ParameterEncoder.snake("URL") == "u_r_l" && ParameterEncoder.snake("Éa") == "éa")
    }

    @Test func patchAndBankBackbonesDefaultToTheSegmentationEncoder() throws {
        let plain = try Sweep.parse(Data(#"{"name": "b", "dataset": "d", "categories": ["x"], "grid": {"backbone": "resnet18"}}"#.utf8), file: "b.json")
        let split = try Sweep.parse(Data(#"{"name": "b", "dataset": "d", "categories": ["x"], "grid": {"backbone": "resnet18", "patch_backbone": "wide_resnet50_2", "bank_backbone": ["resnet50", "resnet101"]}}"#.utf8), file: "b.json")
        func backbones(_ sweep: Sweep, _ kind: StageKind) -> Set<String> {
            Set(SweepExpander.expand(sweep).jobs.filter { $0.kind == kind }.map { $0.parameters["backbone"]?.description ?? "" })
        }
        #expect(backbones(plain, .patchFeatures) == ["resnet18"] && backbones(plain, .bankFit) == ["resnet18"])
        #expect(backbones(split, .segmentTrain) == ["resnet18"] && backbones(split, .patchFeatures) == ["wide_resnet50_2"])
        #expect(backbones(split, .bankFit) == ["resnet50", "resnet101"])
        // Same backbone named twice, same keys: the default shares its jobs with a sweep that spells it out.
        let spelled = try Sweep.parse(Data(#"{"name": "b", "dataset": "d", "categories": ["x"], "grid": {"backbone": "resnet18", "patch_backbone": "resnet18"}}"#.utf8), file: "b.json")
        #expect(Set(SweepExpander.expand(spelled).jobs.map(\.key)) == Set(SweepExpander.expand(plain).jobs.map(\.key)))
        #expect(SweepExpander.expand(split).evaluations.count == 2 * 4)
        #expect(throws: SweepError.self) {
            try Sweep.parse(Data(#"{"name": "b", "dataset": "d", "categories": ["x"], "grid": {"bank_backbone": "vgg16"}}"#.utf8), file: "b.json")
        }
    }

    /// labelled_views and finetune reach segment-train only where the grid
    /// names them and not as the stage's default: absent or the default, the
    /// segmenter's key is that of a grid without the field; two values make
    /// two segmenters and results for each (the setting names both); a bad
    /// value is refused.
    @Test(arguments: [("labelled_views", "[0, 8]", "0", "views_per_labelled_image", ParameterValue.int(8), "-1"),
                      ("finetune", #"["head", "all"]"#, #""head""#, "finetune", ParameterValue.string("all"), #""encoder""#)])
    func segmentTrainSettingsOnlyWhereNamed(field: String, values: String, defaultValue: String, parameter: String,
                                            other: ParameterValue, bad: String) throws {
        func sweep(_ grid: String) throws -> Sweep {
            try Sweep.parse(Data(#"{"name": "v", "dataset": "d", "categories": ["x"]\#(grid)}"#.utf8), file: "v.json")
        }
        func segmenters(_ plan: SweepPlan) -> Set<JobKey> { Set(plan.jobs.filter { $0.kind == .segmentTrain }.map(\.key)) }
        let plainPlan = SweepExpander.expand(try sweep("")), bothPlan = SweepExpander.expand(try sweep(#", "grid": {"\#(field)": \#(values)}"#))
        let defaultPlan = SweepExpander.expand(try sweep(#", "grid": {"\#(field)": \#(defaultValue)}"#))
        #expect(plainPlan.jobs.allSatisfy { $0.parameters[parameter] == nil })
        #expect(Set(defaultPlan.jobs.map(\.key)) == Set(plainPlan.jobs.map(\.key)))
        #expect(segmenters(bothPlan).isSuperset(of: segmenters(plainPlan)) && segmenters(bothPlan).count == 2)
        #expect(Set(bothPlan.jobs.filter { $0.kind == .segmentTrain }.map { $0.parameters[parameter] }) == [nil, other])
        #expect(bothPlan.evaluations.count == 2 * plainPlan.evaluations.count)
        #expect(bothPlan.evaluations.allSatisfy { $0.setting.contains(#""\#(field)":"#) })
        #expect(defaultPlan.evaluations.allSatisfy { $0.setting.contains(#""\#(field)":"#) })
        #expect(plainPlan.evaluations.allSatisfy { !$0.setting.contains(field) })
        #expect(throws: SweepError.self) { try sweep(#", "grid": {"\#(field)": \#(bad)}"#) }
    }

    /// patch_probes 0 is exact search and tta_views 0 no test-time views:
    /// the same jobs as a grid without the field; another value adds a job
    /// of the stage that reads it (and the stages after it), its value in the key.
    @Test(arguments: [("patch_probes", StageKind.patchFeatures, 16, ["-1"]),
                      ("tta_views", StageKind.pseudoLabel, 4, ["-1", "17"])])
    func aSearchOrViewFieldOfZeroIsItsAbsence(field: String, kind: StageKind, value: Int, bad: [String]) throws {
        func plan(_ grid: String) throws -> SweepPlan {
            SweepExpander.expand(try Sweep.parse(Data(#"{"name": "v", "dataset": "d", "categories": ["x"]\#(grid)}"#.utf8), file: "v.json"))
        }
        let plain = try plan(""), zero = try plan(#", "grid": {"\#(field)": 0}"#), both = try plan(#", "grid": {"\#(field)": [0, \#(value)]}"#)
        #expect(Set(zero.jobs.map(\.key)) == Set(plain.jobs.map(\.key)))
        #expect(zero.evaluations.map(\.setting) == plain.evaluations.map(\.setting))
        let reading = both.jobs.filter { $0.kind == kind }
        #expect(reading.count == 2 && Set(reading.map { $0.parameters[field] }) == [nil, .int(value)])
        #expect(both.evaluations.count == 2 * plain.evaluations.count)
        #expect(both.evaluations.filter { $0.setting.contains(#""\#(field)":\#(value)"#) }.count == plain.evaluations.count)
        for b in bad { #expect(throws: SweepError.self) { try plan(#", "grid": {"\#(field)": \#(b)}"#) } }
    }

    /// view_reuse 1 is a fresh view at every draw, the absence of the field;
    /// another value adds a segmenter (and everything after it), its value in
    /// the key; 0 is refused, and so is reuse with cached views.
    @Test func viewReuseOfOneIsItsAbsence() throws {
        func plan(_ grid: String) throws -> SweepPlan {
            SweepExpander.expand(try Sweep.parse(Data(#"{"name": "v", "dataset": "d", "categories": ["x"]\#(grid)}"#.utf8), file: "v.json"))
        }
        let plain = try plan(""), one = try plan(#", "grid": {"view_reuse": 1}"#), both = try plan(#", "grid": {"view_reuse": [1, 5]}"#)
        #expect(Set(one.jobs.map(\.key)) == Set(plain.jobs.map(\.key)))
        #expect(one.evaluations.map(\.setting) == plain.evaluations.map(\.setting))
        let segmenters = both.jobs.filter { $0.kind == .segmentTrain }
        #expect(segmenters.count == 2 && Set(segmenters.map { $0.parameters["view_reuse"] }) == [nil, .int(5)])
        #expect(both.jobs.filter { $0.kind == .patchFeatures }.count == 1)
        #expect(both.evaluations.filter { $0.setting.contains(#""view_reuse":5"#) }.count == plain.evaluations.count)
        for bad in [#"{"view_reuse": 0}"#, #"{"view_reuse": 5, "labelled_views": [0, 8]}"#] {
            #expect(throws: SweepError.self) { try plan(#", "grid": \#(bad)"#) }
        }
        _ = try plan(#", "grid": {"view_reuse": 5, "labelled_views": 0}"#)
    }

    @Test func aCombinationOfSumIsItsAbsenceAndMaxAddsOnlyEvaluations() throws {
        func plan(_ grid: String) throws -> SweepPlan {
            SweepExpander.expand(try Sweep.parse(Data(#"{"name": "v", "dataset": "d", "categories": ["x"]\#(grid)}"#.utf8), file: "v.json"))
        }
        let plain = try plan(""), sum = try plan(#", "grid": {"combine": "sum"}"#), both = try plan(#", "grid": {"combine": ["sum", "max"]}"#)
        #expect(Set(sum.jobs.map(\.key)) == Set(plain.jobs.map(\.key)))
        #expect(sum.evaluations.map(\.setting) == plain.evaluations.map(\.setting))
        // Every stage before evaluate is shared; each evaluation gains a max twin.
        #expect(Set(both.jobs.filter { $0.kind != .evaluate }.map(\.key)) == Set(plain.jobs.filter { $0.kind != .evaluate }.map(\.key)))
        // The default grid's memory types are h, c, p and hcp: only hcp gains a maximum (one bank's is its sum).
        let evaluations = both.jobs.filter { $0.kind == .evaluate }
        let hcp = plain.jobs.filter { $0.kind == .evaluate && $0.parameters["memory_type"] == .string("hcp") }.count
        #expect(hcp > 0 && evaluations.count == plain.jobs.filter { $0.kind == .evaluate }.count + hcp)
        #expect(Set(evaluations.map { $0.parameters["combine"] }) == [nil, .string("max")])
        #expect(evaluations.filter { $0.parameters["combine"] != nil }.allSatisfy { $0.parameters["memory_type"] == .string("hcp") })
        #expect(both.evaluations.filter { $0.setting.contains(#""combine":"max""#) }.count == hcp)
        #expect(throws: SweepError.self) { try plan(#", "grid": {"combine": "mean"}"#) }
        // The headline is the sum wherever it is listed (the method as published), the maximum only alone.
        func headline(_ grid: String) throws -> String { try Sweep.parse(Data(#"{"name": "v", "dataset": "d", "categories": ["x"], "grid": \#(grid)}"#.utf8), file: "v.json").grid.headlineSetting }
        #expect(try !headline(#"{"combine": ["max", "sum"]}"#).contains("combine"))
        #expect(try headline(#"{"combine": "max"}"#).contains(#""combine":"max""#))
    }

    @Test func aRunLabelChangesEveryKeyAndNothingElse() {
        let plain = Sweep(name: "r", dataset: "d", categories: ["x", "y"])
        var labelled = plain
        labelled.run = "nightly-2026-11-30"
        let a = SweepExpander.expand(plain), b = SweepExpander.expand(labelled)
        #expect(a.jobs.count == b.jobs.count && Set(a.jobs.map(\.key)).isDisjoint(with: b.jobs.map(\.key)))
        #expect(a.evaluations.map(\.setting) == b.evaluations.map(\.setting))
    }

    @Test func aDataDigestChangesItsCategorysKeysOnlyAndReachesEveryStageThatReadsTheData() {
        let plain = Sweep(name: "r", dataset: "d", categories: ["x", "y"])
        var digested = plain
        digested.dataDigests = ["x": String(repeating: "1", count: 64)]
        let a = SweepExpander.expand(plain), b = SweepExpander.expand(digested)
        #expect(a.jobs.count == b.jobs.count)
        for (old, new) in zip(a.jobs, b.jobs) {
            #expect((old.key == new.key) == (new.category == "y"), "\(new.kind) of \(new.category)")
            // Evaluate reads only its inputs' artifacts; every other stage reads the images and checks the digest.
            #expect((new.parameters["data_digest"] != nil) == (new.category == "x" && new.kind != .evaluate), "\(new.kind)")
        }
    }

    @Test func theHeadlineSettingIsOneOfTheSweepsEvaluations() throws {
        let sweep = try Sweep.parse(Data("""
            {"name": "s", "dataset": "d", "categories": ["a"],
             "grid": {"n_shot": [1, 5], "memory_types": ["h", "hcp"], "scale_types": ["none", "max"], "loss_set": ["sup", "sup+H"]}}
            """.utf8), file: "s.json")
        let headline = sweep.grid.headlineSetting
        #expect(SweepExpander.expand(sweep).evaluations.filter { $0.setting == headline }.count == 1)
        #expect(headline.contains(#""memory_type":"hcp""#) && headline.contains(#""scale_type":"max""#)
                && headline.contains(#""n_shot":1"#) && headline.contains(#""loss_set":"sup""#), "\(headline)")
    }

    @Test func diagnosticSweepsMakeIndependentOrChainedJobs() {
        var s = Sweep(name: "load", dataset: "", categories: [])
        var d = Sweep.Diagnostic()
        d.jobs = 10; d.failEvery = 5; d.chained = true
        s.diagnostic = d
        let plan = SweepExpander.expand(s)
        #expect(plan.jobs.count == 10)
        #expect(plan.jobs.filter { $0.parameters["fail"] == .string("transient") }.count == 2)
        #expect(plan.jobs[0].inputs.isEmpty && plan.jobs[3].inputs["previous"] == plan.jobs[2].key)
    }
}

@Suite struct SweepFileTests {
    func parse(_ text: String) throws -> Sweep { try Sweep.parse(Data(text.utf8), file: "sweep.json") }

    @Test func readsAFullFileAndScalarsAsOneValueLists() throws {
        let sweep = try parse("""
            {"name": "n", "dataset": "/data/loco", "categories": ["breakfast_box"], "priority": 3, "max_attempts": 2,
             "grid": {"n_shot": [1, 5], "memory_types": "hcp", "scale_types": ["max", "none"], "epochs": 100,
                      "loss_set": ["sup", "sup+H+hist"], "less_normal_fraction": [1, 0.5], "epsilon": 1e-10}}
            """)
        #expect(sweep.name == "n" && sweep.priority == 3 && sweep.maxAttempts == 2)
        #expect(sweep.grid.nShot == [1, 5] && sweep.grid.memoryTypes == [.hcp] && sweep.grid.epochs == [100])
        #expect(sweep.grid.lessNormalFractions == [1, 0.5] && sweep.grid.epsilons == [1e-10])
        #expect(sweep.grid.backbones == [.efficientNetLite0])
    }

    @Test func anUnknownFieldIsNamedWithItsLine() {
        let text = """
            {
              "name": "n", "dataset": "d", "categories": ["c"],
              "grid": {
                "n_shots": [5]
              }
            }
            """
        #expect(throws: SweepError(file: "sweep.json", line: 4, field: "grid.n_shots",
                                   problem: "unknown field (expected one of: n_shot, memory_types, scale_types, seeds, backbone, patch_backbone, bank_backbone, image_size, epochs, loss_set, less_normal_fraction, unet_epochs, epsilon, train_statistic, coreset_fraction, patch_image_size, patch_resize, labelled_views, finetune, patch_probes, tta_views, view_reuse, combine)")) {
            try parse(text)
        }
    }

    @Test func yamlSweepsReadLikeJSONAndNameTheLineOfABadField() throws {
        let yaml = """
            # a comment
            name: y
            dataset: /data
            categories: [a, b]
            grid:
              n_shot: [1, 5]
              memory_types: hcp
              epsilon: 1e-10
            """
        let json = #"{"name": "y", "dataset": "/data", "categories": ["a", "b"], "grid": {"n_shot": [1, 5], "memory_types": "hcp", "epsilon": 1e-10}}"#
        #expect(try Sweep.parse(Data(yaml.utf8), file: "y.yaml") == Sweep.parse(Data(json.utf8), file: "y.json"))
        let bad = yaml.replacingOccurrences(of: "n_shot: [1, 5]", with: "n_shot: [1, five]")
        #expect(throws: SweepError(file: "y.yaml", line: 6, field: "grid.n_shot", problem: "must be an integer or a list of integers")) {
            try Sweep.parse(Data(bad.utf8), file: "y.yaml")
        }
        let unknown = yaml.replacingOccurrences(of: "  epsilon:", with: "  epsilom:")
        #expect(throws: SweepError.self) { try Sweep.parse(Data(unknown.utf8), file: "y.yaml") }
        #expect((try? Sweep.parse(Data(unknown.utf8), file: "y.yaml")) == nil)
        do { _ = try Sweep.parse(Data(unknown.utf8), file: "y.yaml") } catch let e as SweepError { #expect(e.line == 8 && e.field == "grid.epsilom") }
        // Broken YAML names its line too.
        do { _ = try Sweep.parse(Data("name: y\ngrid: [1, 2\n".utf8), file: "z.yaml"); Issue.record("parsed") } catch let e as SweepError {
            #expect(e.field == "(document)" && e.problem.hasPrefix("not valid YAML") && e.line != nil, "\(e)")
        }
    }

    @Test func badValuesAreRejectedBeforeAnythingRuns() {
        func problem(_ text: String) -> String? {
            do { _ = try parse(text); return nil } catch { return "\(error)" }
        }
        let head = #""name": "n", "dataset": "d", "categories": ["c"]"#
        #expect(problem("{\(head), \"grid\": {\"memory_types\": [\"hx\"]}}")?.contains("grid.memory_types: 'hx' is not a combination") == true)
        #expect(problem("{\(head), \"grid\": {\"n_shot\": 0}}")?.contains("grid.n_shot: 0 is below the minimum 1") == true)
        #expect(problem("{\(head), \"grid\": {\"n_shot\": 2.5}}")?.contains("must be an integer") == true)
        #expect(problem("{\(head), \"grid\": {\"less_normal_fraction\": 1.5}}")?.contains("1.5 is not in (0, 1]") == true)
        #expect(problem("{\(head), \"grid\": {\"epochs\": []}}")?.contains("must not be an empty list") == true)
        #expect(problem("{\(head), \"grid\": {\"loss_set\": true}}")?.contains("must be a string") == true)
        #expect(problem("{\(head), \"grid\": {\"patch_resize\": \"crop\"}}")?.contains("grid.patch_resize: 'crop' is not square or pad") == true)
        #expect(problem("{\(head), \"grid\": {\"backbone\": \"vgg16\"}}")?.contains("grid.backbone: 'vgg16' is not efficientnet-lite0, efficientnet-lite1, efficientnet-lite2, resnet18") == true)
        #expect(problem(#"{"name": "n", "categories": ["c"]}"#)?.contains("dataset: is required") == true)
        #expect(problem(#"{"name": "n", "dataset": "d"}"#)?.contains("categories: names no category") == true)
        #expect(problem(#"{"name": "n", "dataset": "d", "categories": ["../etc"]}"#)?.contains("categories: '../etc' is not a folder name inside the dataset") == true)
        #expect(problem(#"{"name": "n", "dataset": "d", "categories": ["a", "b", "a"]}"#)?.contains("categories: 'a' is listed twice") == true)
        #expect(problem("{\"name\": ")?.hasPrefix("sweep.json: (document): not valid JSON") == true)
        #expect(problem("[1]")?.contains("must be a JSON object") == true)
    }
}
