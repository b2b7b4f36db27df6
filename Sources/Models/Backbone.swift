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
