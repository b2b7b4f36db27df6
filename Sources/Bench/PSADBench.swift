import ArgumentParser
import Foundation
import Anomaly
import Models
import Tensor

/// Kernel benchmarks (not timed tests): `psad-bench kernels`.
/// Results go to stdout as JSON lines, one per case, so that
/// `ops/bench/kernels` can set them beside PyTorch's figures.
@main
struct PSADBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "psad-bench",
        abstract: "Benchmarks of the kernels, the backbones, the k-NN search and the sweep expansion.",
        subcommands: [Kernels.self, Backbones.self, KNN.self, Expansion.self, FineTuneStep.self, TrainProfile.self])
}

struct Kernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "sgemm, conv2d (ResNet shapes, depthwise) and the segmentation head's backward pass, in GFLOP/s.")

    @Option(help: "Threads for the kernels and OpenBLAS.")
    var threads = 2

    @Option(help: "Minimum seconds measured per case (the best repetition is reported).")
    var seconds = 1.0

    @Option(help: "Only measure sgemm of this shape, given as M,N,K.")
    var sgemmShape: String?

    @Flag(help: "Run each GEMM of a batch over all threads instead of splitting the batch by image.")
    var noSplit = false

    func run() {
        Compute.configure(threads: threads)
        Compute.splitByImage = !noSplit
        var rng = SeededGenerator(seed: 1)
        if let sgemmShape {
            let d = sgemmShape.split(separator: ",").compactMap { Int($0) }
            let a = Tensor.randomNormal([d[0], d[2]], generator: &rng), b = Tensor.randomNormal([d[2], d[1]], generator: &rng)
            report("sgemm \(d[0])x\(d[1])x\(d[2])", flops: 2.0 * Double(d[0] * d[1] * d[2]), seconds: measure { _ = Tensor.matmul(a, b) })
            return
        }

        let m = 1024, n = 1024, k = 1024
        let a = Tensor.randomNormal([m, k], generator: &rng), b = Tensor.randomNormal([k, n], generator: &rng)
        // sgemm is measured first and again last; the summary takes the
        // better figure, so a noisy neighbour at one end does not skew the ratios.
        func sgemm() { report("sgemm 1024x1024x1024", flops: 2.0 * Double(m * n * k), seconds: measure { _ = Tensor.matmul(a, b) }) }
        sgemm()
        defer { sgemm() }

        for c in ConvCase.all {
            let x = Tensor.randomNormal([c.batch, c.cin, c.size, c.size], generator: &rng)
            let w = Tensor.randomNormal([c.cout, c.cin / c.groups, c.kernel, c.kernel], std: 0.1, generator: &rng)
            let g = Conv2dGeometry(stride: 1, padding: c.kernel / 2, groups: c.groups)
            let t = measure { _ = Tensor.conv2d(x, weight: w, geometry: g) }
            report(c.name, flops: c.flops, seconds: t)
        }

        // The segmentation head (SPEC-PSAD stage 2) on stride-4 features of a
        // 256x256 image: 1x1 conv C -> C/2, ReLU, 1x1 conv C/2 -> classes;
        // backward = input and weight gradients of both convolutions.
        for (name, channels) in [("head backward effnet-lite0 178->89->10", 178),
                                 ("head backward wide-resnet 1794->897->10", 1794)] {
            let batch = 5, size = 64, hidden = channels / 2, classes = 10
            let x = Tensor.randomNormal([batch, channels, size, size], generator: &rng)
            let w1 = Tensor.randomNormal([hidden, channels, 1, 1], std: 0.05, generator: &rng)
            let w2 = Tensor.randomNormal([classes, hidden, 1, 1], std: 0.05, generator: &rng)
            let h = Tensor.conv2d(x, weight: w1).relu()
            let y = Tensor.conv2d(h, weight: w2)
            let t = measure {
                let g2 = Tensor.conv2dBackward(h, weight: w2, outputGradient: y)
                let gh = Tensor.clampBackward(g2.input, input: h, low: 0, high: .infinity)
                _ = Tensor.conv2dBackward(x, weight: w1, outputGradient: gh)
            }
            let pixels = Double(batch * size * size)
            // Two GEMMs (dW, dX) per convolution, 2 flops per multiply-add.
            let flops = 2 * 2 * pixels * Double(channels * hidden + hidden * classes)
            report(name, flops: flops, seconds: t)
        }

        // One UNet training step (unet-train's defaults: width 16, depth 4,
        // batch 8 at 256x256, 10 classes): forward, 10 CE + Dice, backward.
        // Reported in GFLOP/s of the convolutions' multiply-adds (x3 for the
        // backward pass), with the step's milliseconds.
        do {
            let net = UNet(width: 16, depth: 4, classes: 10, seed: 1)
            let batch = 8, size = 256
            let x = Tensor.randomNormal([batch, 3, size, size], generator: &rng)
            let labels = (0..<(batch * size * size)).map { Int32(($0 / 97) % 10) }
            let onehot = Tensor.oneHot(labels, batch: batch, height: size, width: size, classes: 10)
            let t = measure {
                let tape = Tape()
                let z = net.logits(x, on: tape)
                let loss = tape.weightedSum([(tape.crossEntropy(logits: z, labels: labels), 10),
                                             (tape.dice(probabilities: tape.softmaxChannels(z), target: onehot), 1)])
                tape.backward(from: loss)
            }
            report("unet train step w16 d4 batch 8 @256", flops: 3 * 2 * net.multiplyAdds(height: size, width: size) * Double(batch), seconds: t)
        }

        // segment-train's fused losses on a batch of 5: the head's stride-4
        // logits (64x64) upsampled to 256x256 inside, value and gradient; 5
        // classes as the synthetic categories, 26 as LOCO's most. No
        // arithmetic is counted (they are bound by the exponentials and the
        // planes' traffic): reported in ms.
        for classes in [5, 26] {
            let batch = 5, coarse = 64, size = 256
            let z = Tensor.randomNormal([batch, classes, coarse, coarse], std: 2, generator: &rng)
            let labels = (0..<(batch * size * size)).map { _ in Int32(rng.int(0...(classes - 1))) }
            report("losses CE + Dice, value and gradient, 5x\(classes) 64->256", flops: 0, seconds: measure {
                _ = SegmentationLoss.supervisedUpsampled(logits: z, labels: labels, height: size, width: size, ceWeight: 10, diceWeight: 1)
            })
            let fractions = Tensor(shape: [batch, classes], storage: [Float](repeating: 1 / Float(classes), count: batch * classes))
            report("losses H + hist, value and gradient, 5x\(classes) 64->256", flops: 0, seconds: measure {
                _ = SegmentationLoss.unsupervisedUpsampled(logits: z, height: size, width: size, entropyWeight: 10, fractions: fractions,
                                                           histogramClasses: Array(1..<classes), histogramWeight: 1)
            })
        }
    }

    func measure(_ body: () -> Void) -> Double { bestTime(seconds: seconds, minimumRuns: 3, body) }

    func report(_ name: String, flops: Double, seconds: Double) {
        let line: [String: Any] = ["name": name, "gflops": flops / seconds / 1e9, "ms": seconds * 1000,
                                   "threads": threads, "impl": "psad-swift"]
        let data = try! JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

/// Best wall time of repeated runs, after one warm-up, over at least `seconds`.
func bestTime(seconds: Double, minimumRuns: Int, _ body: () -> Void) -> Double {
    body()
    var best = Double.infinity, total = 0.0, runs = 0
    while total < seconds || runs < minimumRuns {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        best = min(best, elapsed)
        total += elapsed
        runs += 1
    }
    return best
}

/// The ResNet-shaped convolutions the foundation issue names (batch 8).
struct ConvCase {
    let name: String, batch: Int, cin: Int, cout: Int, size: Int, kernel: Int, groups: Int

    var flops: Double { 2.0 * Double(batch * cout * size * size * (cin / groups) * kernel * kernel) }

    static let all = [
        ConvCase(name: "conv 3x3 64->64 @64x64", batch: 8, cin: 64, cout: 64, size: 64, kernel: 3, groups: 1),
        ConvCase(name: "conv 3x3 256->256 @32x32", batch: 8, cin: 256, cout: 256, size: 32, kernel: 3, groups: 1),
        ConvCase(name: "conv 1x1 1024->256 @16x16", batch: 8, cin: 1024, cout: 256, size: 16, kernel: 1, groups: 1),
        ConvCase(name: "depthwise 3x3 128 @64x64", batch: 8, cin: 128, cout: 128, size: 64, kernel: 3, groups: 128),
    ]
}

/// Backbone forward throughput and peak memory, one network per process so
/// that the peak resident size belongs to that network alone.
struct Backbones: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Forward images/s and peak memory of a backbone at 256x256, batch 8 (random weights).")

    @Option(help: "resnet18, wide_resnet50_2 (to layer3) or efficientnet-lite0.")
    var network: String

    @Option(help: "Threads for the kernels and OpenBLAS.")
    var threads = 2

    @Option(help: "Batch size.")
    var batch = 8

    @Option(help: "Image side.")
    var size = 256

    @Option(help: "Minimum seconds measured (the best repetition is reported).")
    var seconds = 3.0

    @Flag(help: "Also time the plain whole-batch call (every GEMM over all threads) alternating with the batch split by image, which is what is reported.")
    var compareSplit = false

    func run() throws {
        Compute.configure(threads: threads)
        let weights = WeightSet(randomSeed: 1)
        let net: any Backbone
        let taps: Set<Int>
        switch network {
        case "resnet18": net = try ResNet(.resnet18, weights: weights); taps = [4, 8, 16, 32]
        case "wide_resnet50_2": net = try ResNet(.wideResnet50, weights: weights, depth: 3); taps = [4, 8, 16]
        case "efficientnet-lite0": net = try EfficientNetLite(variant: 0, weights: weights); taps = [4, 8, 16, 32]
        default: throw ValidationError("unknown network '\(network)'")
        }
        var rng = SeededGenerator(seed: 2)
        let x = Tensor.randomNormal([batch, 3, size, size], generator: &rng)
        if compareSplit {
            // Alternate the two so that both see the same machine.
            var plain = Double.infinity, split = Double.infinity
            for _ in 0..<5 {
                plain = min(plain, bestTime(seconds: seconds / 5, minimumRuns: 2) { _ = net.features(x, strides: taps) })
                split = min(split, bestTime(seconds: seconds / 5, minimumRuns: 2) { _ = net.featuresSplitByImage(x, strides: taps) })
            }
            let a = net.features(x, strides: taps), b = net.featuresSplitByImage(x, strides: taps)
            let differ = taps.map { s in zip(a[s]!.storage, b[s]!.storage).map { abs($0 - $1) }.max() ?? 0 }.max() ?? 0
            FileHandle.standardError.write(Data(String(format: "%@: plain %.1f img/s, split by image %.1f img/s (x%.2f), max difference %g\n",
                                                       network, Double(batch) / plain, Double(batch) / split, plain / split, differ).utf8))
        }
        // The batch split by image over the threads: how the stages run a backbone over many images.
        let best = bestTime(seconds: seconds, minimumRuns: 2) { _ = net.featuresSplitByImage(x, strides: taps) }
        if let resnet = net as? ResNet {
            var steps: [(String, Double)] = []
            _ = resnet.features(x, strides: taps) { steps.append(($0, $1)) }
            FileHandle.standardError.write(Data(steps.map { String(format: "%@ %.1f ms", $0.0, $0.1 * 1000) }
                .joined(separator: ", ").utf8 + [10]))
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let line: [String: Any] = ["name": network, "images_per_s": Double(batch) / best, "peak_mib": Double(usage.ru_maxrss) / 1024,
                                   "impl": "psad-swift", "threads": threads, "kernels": Compute.machineKind]
        print(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self))
    }
}

/// Exact k-NN throughput on vectors from a safetensors file (`memory`
/// [M, D], `queries` [Q, D]) — the file ops/bench/knn writes, so that faiss
/// searches the same vectors.
struct KNN: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "k-nearest-neighbour search throughput (queries/s).")

    @Option(help: "safetensors file with 'memory' and 'queries'.")
    var vectors: String

    @Option(help: "Neighbours per query.")
    var k = 9

    @Option(help: "Threads for the kernels and OpenBLAS.")
    var threads = 2

    @Option(help: "Memory rows per GEMM block.")
    var memoryChunk = 4096

    @Option(help: "Query rows per GEMM block.")
    var queryChunk = 512

    @Option(help: "Also search by inverted lists with this many probes (0: exact only); recall against the exact neighbours.")
    var probes = 0

    @Option(help: "Inverted lists (default 4 sqrt(M)).")
    var lists: Int?

    func run() throws {
        Compute.configure(threads: threads)
        let file = try SafetensorsFile(contentsOf: URL(fileURLWithPath: vectors))
        let memory = try file.tensor("memory"), queries = try file.tensor("queries")
        var before = rusage()
        getrusage(RUSAGE_SELF.rawValue, &before)
        let index = NearestNeighbors(memory: memory, queryChunk: queryChunk, memoryChunk: memoryChunk)
        var first: [[Int]] = []
        let best = bestTime(seconds: 3, minimumRuns: 2) { first = index.search(queries, k: k).indices }
        var after = rusage()
        getrusage(RUSAGE_SELF.rawValue, &after)
        let line: [String: Any] = [
            "impl": "psad-swift", "queries_per_s": Double(queries.shape[0]) / best, "ms": best * 1000,
            "peak_mib": Double(after.ru_maxrss) / 1024, "data_mib": Double(memory.count + queries.count) * 4 / 1_048_576,
            "first_neighbours": Array(first[0].prefix(3)),
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self))
        guard probes > 0 else { return }
        let started = DispatchTime.now().uptimeNanoseconds
        let ivf = InvertedLists(memory: memory, lists: lists ?? InvertedLists.defaultLists(rows: memory.shape[0]))
        let build = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        var found: [[Int]] = []
        let searched = bestTime(seconds: 3, minimumRuns: 2) { found = ivf.search(queries, k: k, probes: probes).indices }
        // recall@1: the exact nearest found first; recall@k: the share of the exact k found.
        let at1 = zip(found, first).filter { $0[0] == $1[0] }.count
        let atK = zip(found, first).reduce(0) { $0 + Set($1.0).intersection($1.1).count }
        let approximate: [String: Any] = [
            "impl": "psad-swift IVF", "lists": ivf.lists, "probes": probes, "build_s": build,
            "queries_per_s": Double(queries.shape[0]) / searched, "ms": searched * 1000,
            "recall_at_1": Double(at1) / Double(first.count), "recall_at_k": Double(atK) / Double(first.count * k),
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: approximate, options: [.sortedKeys]), as: UTF8.self))
    }
}
