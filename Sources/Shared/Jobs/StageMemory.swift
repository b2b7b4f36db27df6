import Foundation

/// What a category holds, as far as memory goes: counted at submit where
/// the coordinator sees the data.
public struct CategorySize: Codable, Equatable, Sendable {
    /// Images in train/good and in the three test splits together.
    public var train: Int, test: Int
    /// Part classes, background included (the manifest's `classes`).
    public var classes: Int
    /// Labelled images the manifest lists (`few_shot`); nil where not counted.
    public var labelled: Int?
    public init(train: Int, test: Int, classes: Int, labelled: Int? = nil) {
        self.train = train; self.test = test; self.classes = classes; self.labelled = labelled
    }

    /// The synthetic benchmark's default category (120 train, 120 test
    /// images, at most 10 classes): what an estimate assumes where the
    /// coordinator cannot see the data.
    public static let syntheticDefault = CategorySize(train: 120, test: 120, classes: 10)

    /// Counts the PNG images of a category folder in the MVTec LOCO AD layout
    /// and its manifest's classes (without decoding anything).
    public static func count(categoryAt root: URL) throws -> CategorySize {
        func pngs(_ split: String) -> Int {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(split).path)) ?? []
            return names.filter { $0.lowercased().hasSuffix(".png") }.count
        }
        let manifest = root.appendingPathComponent("psad-manifest.json")
        guard let data = FileManager.default.contents(atPath: manifest.path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let classes = object["classes"] as? [Any] else {
            throw DatasetDigest.DigestError(description: "\(manifest.path): no readable class list")
        }
        return CategorySize(train: pngs("train/good"),
                            test: ["test/good", "test/logical_anomalies", "test/structural_anomalies"].map(pngs).reduce(0, +),
                            classes: classes.count, labelled: (object["few_shot"] as? [Any])?.count)
    }
}

/// How much memory a stage job needs, worked out from its parameters (image
/// size, backbone) and its category's size, so that the coordinator hands a
/// job only to a worker that announced enough (DESIGN.md, Scale).
///
/// Each figure adds up the arrays the stage holds at its peak, as the code
/// in `Sources/Stages` (the stages in `Stages/Method/`) allocates them
/// (Float32 tensors, 8-bit images, Int32 masks), plus a fixed allowance for
/// the process and the backbone's forward pass. It is meant as an upper
/// bound: checked against measured peaks in the tests and BENCHMARKS.md.
public enum StageMemory {
    /// Channels of the encoder taps at strides 4, 8 and 16.
    static func channels(_ backbone: BackboneName) -> (c4: Int, c8: Int, c16: Int) {
        switch backbone {
        case .efficientNetLite0, .efficientNetLite1: (24, 40, 112)
        case .efficientNetLite2: (24, 48, 120)
        case .resnet18: (64, 128, 256)
        case .resnet50, .resnet101, .wideResnet50, .wideResnet101: (256, 512, 1024)
        }
    }

    /// Parameters of the whole network (float32 once loaded).
    static func parameters(_ backbone: BackboneName) -> Int {
        switch backbone {
        case .efficientNetLite0: 4_652_008
        case .efficientNetLite1: 5_416_680
        case .efficientNetLite2: 6_092_072
        case .resnet18: 11_689_512
        case .resnet50: 25_557_032
        case .resnet101: 44_549_160
        case .wideResnet50: 68_883_240
        case .wideResnet101: 126_886_696
        }
    }

    /// Floats a train-mode forward pass records per input pixel of one
    /// image when the encoder's units after stride 8 (`last`) or all of them
    /// train: every unit's conv, batch-norm and activation outputs (measured
    /// on the tape; FineTuningMemoryTests holds these to within 10 %).
    public static func trainedFloatsPerPixel(_ backbone: BackboneName, _ finetune: Finetune) -> Int {
        let (all, last): (Int, Int) = switch backbone {
        case .efficientNetLite0: (360, 90)
        case .efficientNetLite1: (470, 120)
        case .efficientNetLite2: (490, 130)
        case .resnet18: (160, 24)
        case .resnet50: (710, 181)
        case .resnet101: (1084, 555)
        case .wideResnet50: (893, 226)
        case .wideResnet101: (1369, 702)
        }
        return finetune == .all ? all : finetune == .last ? last : 0
    }

    /// What an estimate reads of a job's parameters (each stage has some of them).
    struct Sizing: Decodable {
        var imageSize: Int?
        var backbone: BackboneName?
        var lessNormalFraction: Double?
        var nShot: Int?
        var patchImageSize: Int?
        var finetune: Finetune?
        var viewsPerLabelledImage: Int?
        var viewReuse: Int?
    }

    /// The process itself: runtime, libraries, OpenBLAS's buffers.
    static let processBytes = 256 << 20
    /// Images the forward pass holds at once (one per compute thread; a
    /// worker on a larger node announces more memory too).
    static let imagesInFlight = 8

    public static func estimateMiB(kind: StageKind, parameters p: [String: ParameterValue], size: CategorySize?) -> Int {
        if kind == .diagnostic { return 0 }
        let n = size ?? .syntheticDefault
        if kind == .evaluate { return ((processBytes + n.test * 1024) + (1 << 20) - 1) >> 20 }
        // The upstream stages (a few per category and setting) are typed here; evaluate, the many, returned above.
        let sizing = (try? JobParameters.decode(Sizing.self, from: Data(CanonicalJSON.object(p).utf8), stage: kind.rawValue))
            ?? Sizing()
        let backbone = sizing.backbone ?? .efficientNetLite0
        let s = sizing.imageSize ?? 256, pixels = s * s
        let (c4, c8, c16) = channels(backbone)
        let taps4816 = (pixels / 16 * c4 + pixels / 64 * c8 + pixels / 256 * c16) * 4
        let taps816 = (pixels / 64 * c8 + pixels / 256 * c16) * 4
        let image = 3 * pixels, mask = 4 * pixels
        let weights = parameters(backbone) * 4
        // The largest activation of a forward pass is about 32 floats a pixel
        // (a ResNet's stem and layer1, Lite0's first expansion); input,
        // output and a convolution's tile make three.
        let forward = imagesInFlight * 3 * 32 * pixels * 4
        let kept = max(2, Int((Double(n.train) * (sizing.lessNormalFraction ?? 1)).rounded(.up)))
        var bytes = processBytes
        switch kind {
        case .preprocess:
            // One image at a time, decoded and resampled (a 1,600 px photograph as floats).
            bytes += 1600 * 1600 * 3 * 5 + mask * 2
        case .segmentTrain:
            let inputChannels = c4 + c8 + c16 + 2, hidden = inputChannels / 2
            // Cached labelled views (fresh views keep none, or the `viewReuse` most
            // recent of each labelled image; each step's five are in `forward`).
            let views = (sizing.nShot ?? 5) * ((sizing.viewsPerLabelledImage ?? StageSettings.SegmentTrain.defaultViewsPerLabelledImage)
                + (sizing.viewReuse.map { $0 > 1 ? $0 : 0 } ?? 0))
            // A step: 5 labelled views and 5 unlabelled partners through the head
            // (input, hidden and logits at stride 4, logits upsampled, each with its gradient).
            let step = 10 * ((inputChannels + 3 * hidden) * pixels / 16 + 6 * n.classes * pixels) * 4 * 2
            bytes += weights + forward + n.train * (image + taps4816) + views * (taps4816 + mask) + step
            // An encoder that trains: the same 10 images through its trained units
            // (what the tape records, twice over for the batch norms' caches and the
            // gradients of the backward pass), its weights with gradients and AdamW's
            // two moments, and (all) each image's normalised copy as its prefix.
            let finetune = sizing.finetune ?? .head
            if finetune != .head {
                bytes += 10 * trainedFloatsPerPixel(backbone, finetune) * pixels * 4 * 2 + 3 * weights
                    + (finetune == .all ? (n.train + views) * 3 * pixels * 4 : 0)
            }
        case .pseudoLabel:
            let all = n.train + n.test
            bytes += weights + forward + all * (image + mask + pixels) + imagesInFlight * 2 * n.classes * pixels * 4
        case .unetTrain:
            let all = n.train + n.test
            // UNet (width 16, four levels): about 2 x 16 floats a pixel per image and level sum, forward and backward, batch 8.
            let batch = 8 * 2 * 16 * pixels * 4 * 3
            bytes += all * (image + mask + pixels) + n.train * 3 * pixels * 4 + batch
        case .patchFeatures:
            // PatchCore's own input side (its images, taps and patches); the maps end in the preprocessed frame.
            let side = sizing.patchImageSize ?? s, pp = side * side
            let patches = pp / 64 * (c8 + c16) * 4, patchTaps = (pp / 64 * c8 + pp / 256 * c16) * 4
            // Taps of the kept train and all test images (PatchStage holds them
            // all), their patch embeddings, the memory's concatenated copy of the
            // train patches and its norms, the test maps in both frames, one k-NN block, and
            // the running nine nearest of every train patch while the train images are scored together
            // (nine (Float, Int) pairs, 144 bytes, in an array with its header, and the heap itself: about 208 bytes a patch).
            bytes += weights + imagesInFlight * 3 * 32 * max(pp, pixels) * 4 + (kept + n.test) * (3 * pp + patchTaps)
                + (2 * kept + n.test) * patches + kept * pp / 64 * 4 + n.test * (pixels + pp) * 4 * 2 + 512 * 4096 * 4
                + kept * pp / 64 * 208
        case .bankFit:
            let dims = c4 + c8 + c16
            bytes += weights + forward + max(kept, n.test) * taps4816 + (kept + n.test) * (image + mask)
                + (kept + n.test) * n.classes * (dims + 1) * 8 * 2
        case .evaluate, .diagnostic:
            break
        }
        return (bytes + (1 << 20) - 1) >> 20
    }
}
