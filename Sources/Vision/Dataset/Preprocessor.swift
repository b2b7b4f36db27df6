/// SPEC-PSAD stage 1: crop a margin off every side, resize so the long side
/// is `targetSize`, pad bottom/right with zeros to a square. Images resample
/// smoothly, class-index masks by nearest neighbour, with the same geometry.
public struct Preprocessor: Equatable, Sendable {
    public var cropMargin: Int
    public var targetSize: Int
    /// How the cropped image meets the square: resized to `targetSize` on its
    /// long side and padded bottom/right (`pad`, SPEC-PSAD's preprocessing),
    /// or resized to `targetSize` x `targetSize` whatever its shape
    /// (`square`, how the reference feeds PatchCore).
    public var fit: Fit

    public enum Fit: String, Codable, Sendable { case pad, square }

    public init(cropMargin: Int = 0, targetSize: Int, fit: Fit = .pad) {
        precondition(cropMargin >= 0 && targetSize > 0)
        self.cropMargin = cropMargin
        self.targetSize = targetSize
        self.fit = fit
    }

    public init(_ settings: CategoryManifest.Preprocess) {
        self.init(cropMargin: settings.cropMargin ?? 0, targetSize: settings.targetSize)
    }

    /// Width and height after crop and resize, before padding.
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        if fit == .square { return (targetSize, targetSize) }
        let w = width - 2 * cropMargin, h = height - 2 * cropMargin
        let scale = Double(targetSize) / Double(max(w, h))
        return (max(1, Int((Double(w) * scale).rounded())), max(1, Int((Double(h) * scale).rounded())))
    }

    public func image(_ image: Image) -> Image { apply(image, mask: false) }

    public func mask(_ mask: Image) -> Image { apply(mask, mask: true) }

    private func apply(_ input: Image, mask: Bool) -> Image {
        let m = cropMargin
        let cropped = m > 0 ? input.cropped(top: m, left: m, bottom: m, right: m) : input
        let (w, h) = resizedSize(width: input.width, height: input.height)
        let resized = mask ? cropped.resizedNearest(width: w, height: h) : cropped.resizedSmooth(width: w, height: h)
        return resized.paddedToSquare(targetSize)
    }
}
