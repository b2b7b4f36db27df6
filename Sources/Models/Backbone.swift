import Tensor

/// A frozen ImageNet CNN used as a feature extractor.
///
/// Features are tapped by stride (4, 8, 16, 32: the output of the last block
/// at that stride); a call runs only as deep as its deepest requested tap.
public protocol Backbone: Sendable {
    var name: String { get }
    /// Channels of the feature map at each tap stride.
    var channels: [Int: Int] { get }
    /// Feature maps of a batch of normalised NCHW images, by stride.
    func features(_ images: Tensor, strides: Set<Int>) -> [Int: Tensor]
}

/// Per-channel input normalisation: (x - mean) / std on [0, 1] images.
public struct ImageNormalization: Sendable {
    public let mean: [Float], std: [Float]

    /// The ImageNet statistics torchvision's models were trained with.
    public static let imagenet = ImageNormalization(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])

    public func callAsFunction(_ x: Tensor) -> Tensor {
        Tensor.channelAffine(x, scale: std.map { 1 / $0 }, shift: zip(mean, std).map { -$0 / $1 })
    }
}

extension Backbone {
    /// ``features(_:strides:)`` with the batch split by image over the
    /// compute threads, each part's kernels and GEMMs on one thread
    /// (``Compute/splitAcrossThreads(_:_:)``), the taps joined again in image
    /// order. Each image's features are computed exactly as alone.
    public func featuresSplitByImage(_ images: Tensor, strides: Set<Int>) -> [Int: Tensor] {
        let parts = Compute.splitAcrossThreads(images.shape[0]) { range in
            features(range.count == images.shape[0] ? images : images.items(range), strides: strides)
        }
        if parts.count == 1 { return parts[0] }
        return Dictionary(uniqueKeysWithValues: strides.map { s in (s, Tensor.concatItems(parts.map { $0[s]! })) })
    }
}
